"""Learning-rate schedules and gradient clipping against hand-computed values."""

import json
import math

import numpy as np
import pytest
from conftest import tiny_config_dict

from nntrain.config import load_config, resolve_config
from nntrain.optim.clipping import clip_gradients
from nntrain.optim.schedules import build_schedule


def _schedule(name, total=100, **settings):
    return build_schedule({"name": name, **settings}, 1.0, total)


def test_per_epoch_schedule_gives_epoch_e_the_rate_for_e():
    halving = _schedule("exponential", gamma=0.5)
    assert [halving.rate(epoch, 0) for epoch in (1, 2, 3)] == [1.0, 0.5, 0.25]


def test_step_schedule_multiplies_every_step_epochs():
    step = _schedule("step", step_epochs=2, gamma=0.1)
    rates = [step.rate(epoch, 0) for epoch in range(1, 6)]
    assert rates == pytest.approx([1.0, 1.0, 0.1, 0.1, 0.01])


def test_inverse_time_is_one_over_t():
    schedule = _schedule("inverse_time", decay=1.0)
    assert [schedule.rate(e, 0) for e in (1, 2, 4)] == pytest.approx([1, 1 / 2, 1 / 4])


def test_cosine_with_warmup_reaches_lr_then_the_floor():
    schedule = _schedule("cosine", total=14, floor=0.1, warmup=4)
    assert [schedule.rate(1, t) for t in range(4)] == pytest.approx(
        [0.25, 0.5, 0.75, 1.0])
    assert schedule.rate(1, 4) == pytest.approx(1.0)
    assert schedule.rate(1, 9) == pytest.approx(0.1 + 0.9 * (1 + math.cos(
        math.pi / 2)) / 2)
    assert schedule.rate(1, 14) == pytest.approx(0.1)


def test_plateau_reduces_after_patience_evaluations_without_improvement():
    schedule = _schedule("plateau", factor=0.5, patience=2, floor=0.2)
    for improved, expected in [(True, 1.0), (False, 1.0), (False, 0.5),
                               (False, 0.5), (True, 0.5), (False, 0.5),
                               (False, 0.25), (False, 0.25), (False, 0.2)]:
        schedule.observe(0.0, improved)
        assert schedule.rate(1, 0) == expected
    assert schedule.state() == {"current": 0.2, "bad_evaluations": 0}


def test_solver_logs_the_rate_each_epoch_uses(tmp_path):
    from nntrain.pipeline import fit

    config = load_config(None, [
        "train.epochs=3", "train.batch_size=512", "model.hidden=[4]",
        "schedule.name=exponential", "schedule.gamma=0.5", "optimizer.name=sgd",
        "optimizer.lr=0.1",
    ])
    result = fit(config, tmp_path / "run", quiet=True)
    assert [record["lr"] for record in result.history] == pytest.approx(
        [0.1, 0.05, 0.025])


def _rates_per_update(tmp_path, tiny_npz, schedule, **train):
    """The rate of each update of an SGD run on the tiny data (4 updates an epoch:
    50 training samples in batches of 16), from its "iter" records."""
    from nntrain.pipeline import fit

    raw = tiny_config_dict(tiny_npz)
    raw["optimizer"] = {"name": "sgd", "lr": 0.1}
    raw["schedule"] = schedule
    raw["train"].update({"log_every": 1, "plots": False, **train})
    fit(resolve_config(raw), tmp_path / "run", quiet=True)
    records = [json.loads(line) for line in
               (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    return [record["lr"] for record in records if record["kind"] == "iter"]


HALVING = {"name": "exponential", "gamma": 0.5}


def test_iterations_mode_steps_a_per_epoch_schedule_every_eval_every(tmp_path,
                                                                     tiny_npz):
    rates = _rates_per_update(tmp_path, tiny_npz, HALVING, epochs=None,
                              iterations=10, eval_every=3)
    assert rates == pytest.approx([0.1] * 3 + [0.05] * 3 + [0.025] * 3 + [0.0125])


def test_iterations_mode_step_schedule_counts_eval_every_periods(tmp_path,
                                                                 tiny_npz):
    step = {"name": "step", "step_epochs": 2, "gamma": 0.1}
    rates = _rates_per_update(tmp_path, tiny_npz, step, epochs=None, iterations=7,
                              eval_every=2)
    assert rates == pytest.approx([0.1] * 4 + [0.01] * 3)


@pytest.mark.parametrize("train", [
    # By default iterations mode evaluates once an epoch: its periods are epochs.
    {"epochs": None, "iterations": 10},
    # Epochs mode keeps true epochs, however often it evaluates.
    {"epochs": 3, "eval_every": 3},
])
def test_per_epoch_schedule_steps_on_true_epochs_otherwise(tmp_path, tiny_npz,
                                                          train):
    rates = _rates_per_update(tmp_path, tiny_npz, HALVING, **train)
    expected = [0.1] * 4 + [0.05] * 4 + [0.025] * 4
    assert rates == pytest.approx(expected[:len(rates)])
    assert len(rates) == (train.get("iterations") or 12)


def test_clip_by_global_norm_scales_every_array_and_reports_the_norm_before():
    grads = {"a": np.array([3.0, 0.0]), "b": np.array([[4.0]])}
    norm = clip_gradients(grads, {"norm": 1.0})
    assert norm == pytest.approx(5.0)
    np.testing.assert_allclose(grads["a"], [3 / (5 + 1e-6), 0])
    np.testing.assert_allclose(grads["b"], [[4 / (5 + 1e-6)]])


def test_clip_by_norm_leaves_small_gradients_alone():
    grads = {"a": np.array([0.3, 0.4])}
    assert clip_gradients(grads, {"norm": 1.0}) == pytest.approx(0.5)
    np.testing.assert_array_equal(grads["a"], [0.3, 0.4])


def test_clip_by_value_clamps_each_entry():
    grads = {"a": np.array([-5.0, 0.5, 2.0])}
    clip_gradients(grads, {"value": 1.0})
    np.testing.assert_array_equal(grads["a"], [-1.0, 0.5, 1.0])


def test_clipping_measures_and_scales_the_gradient_with_the_l2_term_in_it(tmp_path,
                                                                         tiny_npz):
    from nntrain.checkpoint import load_checkpoint
    from nntrain.nn.model import build_model
    from nntrain.pipeline import fit
    from nntrain.prepare import prepare_data

    # One full-batch SGD update (50 training rows, batches of 64), clipped hard.
    raw = tiny_config_dict(tiny_npz)
    raw["model"]["l2"] = 0.5
    raw["optimizer"] = {"name": "sgd", "lr": 0.1}
    raw["train"].update(epochs=None, iterations=1, batch_size=64, log_every=1,
                        dtype="float64", clip={"norm": 0.01}, plots=False)
    fit(resolve_config(raw), tmp_path / "run", quiet=True)

    # The same start without the penalty gives the data gradient g; the penalty's
    # is 0.5 W on each weight matrix. Clipped: lr * 0.01 / (|g + 0.5 W| + 1e-6).
    raw["model"]["l2"] = 0.0
    config = resolve_config(raw)
    X, y = prepare_data(config).splits["train"]
    model = build_model(config, X.shape[1], 3)
    start = {name: value.copy() for name, value in model.params.items()}
    _, grads = model.loss(X, y)
    for name in ("affine1.W", "affine2.W"):
        grads[name] += 0.5 * start[name]
    norm = math.sqrt(sum(np.vdot(grad, grad) for grad in grads.values()))
    step = 0.1 * 0.01 / (norm + 1e-6)

    records = [json.loads(line) for line in
               (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["grad_norm"] == pytest.approx(norm, rel=1e-12)
    trained = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.npz")
    for name, value in trained.group("param").items():
        np.testing.assert_allclose(value, start[name] - step * grads[name],
                                   rtol=1e-10, atol=1e-14)


def test_clipping_measures_float32_gradients_whose_squares_overflow():
    # 3e19 and 4e19: squares past float32's 3.4e38, norm 5e19 (in the float32
    # values' own digits); clipped to norm 1 they become 0.6 and 0.8.
    first, second = (float(np.float32(value)) for value in (3e19, 4e19))
    grads = {"W": np.array([first, second], dtype=np.float32),
             "b": np.zeros(2, dtype=np.float32)}

    norm = clip_gradients(grads, {"norm": 1.0})

    assert norm == pytest.approx(np.hypot(first, second), rel=1e-12)
    np.testing.assert_allclose(grads["W"], [0.6, 0.8], rtol=1e-6)
