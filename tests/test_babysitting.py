"""Watching a run: start-of-run checks, sanity, diagnostics, warnings, early
stopping and the non-finite guard."""

import json
import math
import re

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import tiny_arrays, tiny_config_dict

from nntrain.checkpoint import load_checkpoint
from nntrain.cli import cli
from nntrain.config import resolve_config
from nntrain.nn.model import build_model
from nntrain.pipeline import fit
from nntrain.train import checks
from nntrain.train.checks import expected_first_loss
from nntrain.train.diagnostics import (
    Watcher,
    layer_statistics,
    update_ratios,
    weight_decay_cause,
    weight_snapshot,
)


def invoke(*args):
    return CliRunner().invoke(cli, [str(arg) for arg in args])


def records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text()
            .splitlines()]


def test_expected_first_loss_is_ln_c_for_softmax_and_c_minus_1_for_svm():
    assert expected_first_loss("softmax", 10)[0] == pytest.approx(math.log(10))
    assert expected_first_loss("svm", 10)[0] == 9.0


def test_digits_with_small_weights_starts_within_0_05_of_ln_10(tmp_path):
    result = invoke("fit", "configs/digits.yaml", "--out", tmp_path / "run",
                    "--set", "model.init=small", "--set", "train.epochs=1")
    assert result.exit_code == 0, result.output
    line = next(line for line in result.stdout.splitlines()
                if line.startswith("first loss:"))
    data_loss = float(line.split("(data ")[1].split()[0])
    assert abs(data_loss - math.log(10)) < 0.05
    assert "warning" not in result.stderr
    assert "training samples per class" in result.stdout
    assert "affine1" in result.stdout  # parameters per layer


def test_small_weights_with_a_far_off_first_loss_warn(tmp_path, write_npz,
                                                      write_config):
    # Huge unscaled inputs make even small weights (std 0.01) give large scores.
    arrays = tiny_arrays()
    arrays["X_train"] = arrays["X_train"] * 1e4
    raw = tiny_config_dict(write_npz("big.npz", **arrays))
    raw["data"]["preprocess"] = []
    raw["model"].update(init="small", init_std=0.01)
    result = invoke("fit", write_config(raw), "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert "far from ln(3)" in result.stderr
    assert "although the weights start small" in result.stderr


def test_a_large_init_std_is_not_called_small(tmp_path, tiny_npz, write_config):
    # init 'small' with std 5 starts large: the far-off first loss is its doing,
    # not the loss's, the labels' or the preprocessing's.
    raw = tiny_config_dict(tiny_npz)
    raw["model"].update(init="small", init_std=5.0)
    result = invoke("fit", write_config(raw), "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert "although the weights start small" not in result.stderr


@pytest.mark.parametrize("init_std, warned", [(1e10, True), (5.0, False)])
def test_starting_weights_that_make_the_first_loss_huge_are_warned_of(
        tmp_path, tiny_npz, write_config, init_std, warned):
    # Scores of 1e10 and more give a loss of that size; std 5 on standardized
    # data gives a few times ln 3, as He weights may.
    raw = tiny_config_dict(tiny_npz)
    raw["model"].update(init="small", init_std=init_std)

    result = invoke("fit", write_config(raw), "--out", tmp_path / "run")

    assert result.exit_code == 0, result.output
    line = next(line for line in result.stdout.splitlines()
                if line.startswith("first loss:"))
    data_loss = float(line.split("(data ")[1].split()[0])
    assert (data_loss > 1000 * math.log(3)) == warned
    warning = re.search(r"warning: the first data loss \S+ is over 1,000 times"
                        r" ln\(3\) = 1\.0986: the scores start huge; check the"
                        r" data's scale \(data\.preprocess\) and the starting"
                        r" weights \(model\.init, model\.init_std\)", result.stderr)
    assert bool(warning) == warned, result.stderr


def test_sanity_reaches_100_percent_on_50_digits():
    result = invoke("sanity", "configs/digits.yaml")
    assert result.exit_code == 0, result.output
    assert "passed: 100% training accuracy" in result.stdout


def test_sanity_fails_with_exit_1_when_it_cannot_learn():
    result = invoke("sanity", "configs/digits.yaml", "--set", "optimizer.lr=1e-9",
                    "--max-iterations", "20")
    assert result.exit_code == 1
    assert "did not reach 100%" in result.stderr


def test_diverging_sgd_on_digits_exits_1_in_the_first_epoch(tmp_path):
    out = tmp_path / "run"
    result = invoke("fit", "configs/digits.yaml", "--out", out, "--quiet",
                    "--set", "optimizer.name=sgd", "--set", "optimizer.lr=1e3")
    assert result.exit_code == 1
    message = result.stderr.splitlines()[-1]
    assert "became nan" in message or "became inf" in message
    assert "(epoch 1)" in message and "lower optimizer.lr" in message
    assert not (out / "checkpoints" / "last.npz").exists()


@pytest.mark.parametrize("overrides, cause", [
    (["model.init=small", "model.init_std=1e30"],
     r"the loss became nan at iteration 1 \(epoch 1\); no update has run yet, so"
     r" the starting weights are likely too large \(model.init small,"
     r" model.init_std 1e\+30\): lower model.init_std"),
    (["model.l2=1e308"],
     r"the loss became inf at iteration 1 .*; no update has run yet, but the L2"
     r" penalty on affine1.W overflows: l2 = 1e\+308 is far too strong; lower"
     r" model.l2"),
    (["model.l1=1e300"],
     r"the gradient of affine1.W became inf at iteration 1 .*; no update has run"
     r" yet, but the L1 penalty on affine1.W overflows: l1 = 1e\+300 .*lower"
     r" model.l1"),
])
def test_non_finite_before_any_update_blames_init_or_penalty_not_the_rate(
        tmp_path, tiny_config, overrides, cause):
    settings = [arg for override in overrides for arg in ("--set", override)]
    result = invoke("fit", tiny_config, "--out", tmp_path / "run", "--quiet",
                    *settings)

    assert result.exit_code == 1, result.output
    message = result.stderr.splitlines()[-1]
    assert re.search(cause, message), message
    assert "optimizer.lr" not in message


def test_non_finite_before_any_update_with_scaled_init_blames_the_data(
        tmp_path, write_npz, write_config):
    # he weights are scaled to the inputs: features of 3e38 overflow float32 in
    # the first product, which no smaller init_std would cure.
    arrays = tiny_arrays()
    arrays["X_train"] = arrays["X_train"] / np.abs(arrays["X_train"]).max() * 3e38
    raw = tiny_config_dict(write_npz("huge.npz", **arrays))
    raw["data"]["preprocess"] = []
    raw["model"]["init"] = "he"

    result = invoke("fit", write_config(raw), "--out", tmp_path / "run", "--quiet")

    assert result.exit_code == 1, result.output
    message = result.stderr.splitlines()[-1]
    assert ("no update has run yet, and model.init he scales the starting weights"
            " to the inputs, so the data's scale is at fault: its values reach"
            " 3e+38, too large for float32 arithmetic") in message, message
    assert "init_std" not in message


def test_non_finite_after_updates_with_a_huge_first_loss_blames_the_data(
        tmp_path, write_npz, write_config):
    # float64 features of 1e155 give a first loss near 1e155 and gradients whose
    # squared norm overflows a few updates later: no learning rate is at fault.
    arrays = tiny_arrays()
    arrays["X_train"] = arrays["X_train"] * 1e155
    raw = tiny_config_dict(write_npz("huge.npz", **arrays))
    raw["data"]["preprocess"] = []
    raw["train"]["dtype"] = "float64"

    result = invoke("fit", write_config(raw), "--out", tmp_path / "run", "--quiet")

    assert result.exit_code == 1, result.output
    message = result.stderr.splitlines()[-1]
    assert re.search(r"the first data loss was \d\.\d+e\+15\d, far above the 1\.1"
                     r" \(ln\(3\)\) of small starting weights: the data's scale"
                     r" \(its values reach \d\.\d+e\+15\d\) or the starting"
                     r" weights \(model.init he\) are at fault, not the learning"
                     r" rate", message), message
    assert "lower optimizer.lr" not in message


def test_a_huge_first_loss_from_the_penalty_alone_still_blames_the_rate(
        tmp_path, tiny_config):
    # l2 = 999 on 1024 x 1024 he weights: a first loss near 2e6, nearly all of it
    # the penalty's; lr * l2 = 10 then makes plain SGD blow the weights up. The
    # data (its loss near ln 3) is not at fault, the rate is.
    result = invoke("fit", tiny_config, "--out", tmp_path / "run", "--quiet",
                    "--set", "model.hidden=[1024, 1024]", "--set", "model.l2=999",
                    "--set", "optimizer={name: sgd, lr: 0.01}")

    assert result.exit_code == 1, result.output
    message = result.stderr.splitlines()[-1]
    assert "the learning rate 0.01 is likely too high" in message, message
    assert "first data loss" not in message


def test_a_rate_the_schedule_raised_blames_the_schedule(tmp_path, tiny_config):
    result = invoke("fit", tiny_config, "--out", tmp_path / "run", "--quiet",
                    "--set", "schedule={name: exponential, gamma: 1.0e+300}",
                    "--set", "train.epochs=3")

    assert result.exit_code == 1, result.output
    message = result.stderr.splitlines()[-1]
    assert re.search(r"the learning rate \S+, which the schedule raised from"
                     r" optimizer\.lr 0\.01, is likely too high: change the"
                     r" schedule's settings, or lower optimizer\.lr", message), message


@pytest.mark.parametrize("rate, raised", [
    (0.1 * 3 / 3, False),  # a warmup's last step: 0.10000000000000002
    (0.2, True),
])
def test_a_rate_a_hair_above_the_base_is_not_called_raised(rate, raised):
    from types import SimpleNamespace

    from nntrain.config import resolve_config
    from nntrain.nn.model import build_model
    from nntrain.train.solver import Solver

    model = build_model(resolve_config({"train": {"epochs": 1}}), 4, 3)
    stub = SimpleNamespace(model=model, _first_data_loss=None,
                           rule=SimpleNamespace(lr=rate),
                           schedule=SimpleNamespace(base_lr=0.1),
                           _weight_decay=lambda: None, _largest_input=lambda: 1.0,
                           X_train=np.ones((1, 4), np.float32))

    cause = Solver._cause(stub, updated=True)

    assert ("which the schedule raised" in cause) is raised, cause


@pytest.mark.parametrize("overrides, kind", [
    (["model.l2=1e38", "optimizer.lr=1e-10"], "l2"),
    (["model.l1=1e38"], "l1"),
])
def test_non_finite_after_updates_blames_a_huge_penalty_not_the_rate(
        tmp_path, overrides, kind):
    settings = [arg for override in overrides for arg in ("--set", override)]
    result = invoke("fit", "configs/digits.yaml", "--out", tmp_path / "run",
                    "--quiet", *settings)

    assert result.exit_code == 1, result.output
    message = result.stderr.splitlines()[-1]
    assert re.search(rf"became (nan|inf) at iteration [2-9]\d* .*; {kind} = 1e\+38"
                     rf" is far stronger than any useful penalty .*: lower"
                     rf" model\.{kind}", message), message
    assert "optimizer.lr" not in message


def test_a_good_checkpoint_survives_a_later_divergence(tmp_path, tiny_npz,
                                                       write_config):
    raw = tiny_config_dict(tiny_npz)
    raw["optimizer"] = {"name": "sgd", "lr": 0.01}
    raw["schedule"] = {"name": "step", "step_epochs": 2, "gamma": 1e12}
    raw["train"]["epochs"] = 6
    out = tmp_path / "run"
    result = invoke("fit", write_config(raw), "--out", out, "--quiet")
    assert result.exit_code == 1, result.output
    last = load_checkpoint(out / "checkpoints" / "last.npz")
    assert last.meta["solver"]["progress"]["epoch"] == 2
    for value in last.group("param").values():
        assert np.isfinite(value).all()


def test_early_stopping_ends_an_overfitting_run_and_best_holds_the_best(tmp_path,
                                                                        tiny_npz):
    raw = tiny_config_dict(tiny_npz)
    raw["model"] = {"hidden": [64]}
    raw["optimizer"] = {"name": "adam", "lr": 0.05}
    raw["train"].update(epochs=60, monitor="val_loss",
                        early_stopping={"patience": 2})
    result = fit(resolve_config(raw), tmp_path / "run", quiet=True)
    losses = [record["val_loss"] for record in result.history]

    assert result.progress.epoch < 60
    best = int(np.argmin(losses))
    # It stopped two evaluations after the last improvement.
    assert len(losses) == best + 3
    events = [r for r in records(tmp_path / "run") if r["kind"] == "event"]
    assert events and events[-1]["event"] == "early_stop"

    evaluation = invoke("eval", tmp_path / "run" / "checkpoints" / "best.npz",
                        "--split", "val", "--json")
    assert json.loads(evaluation.stdout)["loss"] == pytest.approx(losses[best],
                                                                  rel=1e-5)


def test_diagnostics_join_the_epoch_records(tmp_path, tiny_npz):
    raw = tiny_config_dict(tiny_npz)
    raw["model"] = {"hidden": [8], "activation": "tanh"}
    raw["train"].update(batch_size=50)
    fit(resolve_config(raw), tmp_path / "run", quiet=True)
    epoch = [r for r in records(tmp_path / "run") if r["kind"] == "epoch"][0]
    for key in ("update_ratio/affine1.W", "update_ratio/affine2.W",
                "act_mean/tanh1", "act_std/tanh1", "saturated_fraction/tanh1",
                "grad_norm/affine1.W", "grad_norm/affine2.b"):
        assert key in epoch, key
    assert 0 < epoch["update_ratio/affine1.W"] < 1


def test_diagnostic_gradient_norms_are_taken_before_clipping(tmp_path, tiny_npz):
    # The per-array norms of an evaluation's last update add up (in squares) to
    # that update's logged grad_norm, which is the norm before clipping: clipped
    # ones would add up to the threshold, 1e-6.
    raw = tiny_config_dict(tiny_npz)
    raw["train"].update(clip={"norm": 1e-6}, log_every=1)
    fit(resolve_config(raw), tmp_path / "run", quiet=True)
    logged = {r["iteration"]: r["grad_norm"] for r in records(tmp_path / "run")
              if r["kind"] == "iter"}
    epochs = [r for r in records(tmp_path / "run") if r["kind"] == "epoch"]
    assert len(epochs) == 3
    for epoch in epochs:
        squares = sum(value**2 for key, value in epoch.items()
                      if key.startswith("grad_norm/"))
        assert math.sqrt(squares) == pytest.approx(logged[epoch["iteration"]],
                                                   rel=1e-5)
        assert math.sqrt(squares) > 1e-3


def test_diagnostics_skip_a_short_last_batch_for_the_update_before(tmp_path,
                                                                    tiny_npz):
    # 50 training samples in batches of 32 and 18: 18 samples are too few for the
    # dead fraction, so each evaluation's diagnostics come from the epoch's first
    # update. Its logged gradient norm is the root of their squared sum.
    raw = tiny_config_dict(tiny_npz)
    raw["train"].update(batch_size=32, log_every=1)
    fit(resolve_config(raw), tmp_path / "run", quiet=True)
    logged = {r["iteration"]: r["grad_norm"] for r in records(tmp_path / "run")
              if r["kind"] == "iter"}
    epochs = [r for r in records(tmp_path / "run") if r["kind"] == "epoch"]
    assert [r["iteration"] for r in epochs] == [2, 4, 6]
    for epoch in epochs:
        assert "dead_fraction/relu1" in epoch
        squares = sum(value**2 for key, value in epoch.items()
                      if key.startswith("grad_norm/"))
        assert math.sqrt(squares) == pytest.approx(
            logged[epoch["iteration"] - 1], rel=1e-5)
        assert math.sqrt(squares) != pytest.approx(logged[epoch["iteration"]],
                                                   rel=1e-3)


def test_diagnostics_can_be_switched_off(tmp_path, tiny_npz):
    raw = tiny_config_dict(tiny_npz)
    raw["train"]["diagnostics"] = False
    fit(resolve_config(raw), tmp_path / "run", quiet=True)
    assert not any("/" in key for r in records(tmp_path / "run") for key in r)


class _Layer:
    def __init__(self, name, kind):
        self.name, self.kind, self.sized = name, kind, False


class _Model:
    def __init__(self, *layers):
        self.layers = layers


def test_dead_and_saturated_fractions_count_units():
    out_relu = np.zeros((40, 4))
    out_relu[:, 0] = 1.0  # one live unit of four
    out_tanh = np.full((40, 2), 0.995)
    out_tanh[:, 1] = 0.2  # one saturated unit of two
    stats = layer_statistics(_Model(_Layer("relu1", "relu"), _Layer("tanh1", "tanh")),
                             [out_relu, out_tanh])
    assert stats["dead_fraction/relu1"] == 0.75
    assert stats["saturated_fraction/tanh1"] == 0.5


def test_watcher_warns_once_per_problem():
    said = []
    watcher = Watcher(said.append)
    watcher.check_diagnostics({"update_ratio/affine1.W": 1e-7,
                               "dead_fraction/relu1": 0.9})
    watcher.check_diagnostics({"update_ratio/affine1.W": 1e-7})
    assert len(said) == 2
    assert "too low" in said[0] and "dead" in said[1]

    for train, val in [(0.8, 0.9), (0.85, 0.88), (0.9, 0.86)]:
        watcher.check_curve(train, val)
    assert "overfitting" in said[-1]


@pytest.mark.parametrize("lr, schedule, warned", [
    (1e-6, {"name": "constant"}, True),
    # The schedule takes 0.01 to 1e-6 from epoch 2: its own doing, no warning.
    (0.01, {"name": "step", "step_epochs": 1, "gamma": 1e-4}, False),
])
def test_a_tiny_update_ratio_is_blamed_on_the_rate_unless_the_schedule_lowered_it(
        tmp_path, tiny_npz, write_config, lr, schedule, warned):
    raw = tiny_config_dict(tiny_npz)
    raw["optimizer"] = {"name": "sgd", "lr": lr}
    raw["schedule"] = schedule
    raw["train"]["plots"] = False

    result = invoke("fit", write_config(raw), "--out", tmp_path / "run")

    assert result.exit_code == 0, result.output
    assert ("the learning rate looks too low" in result.stderr) == warned


def test_a_tiny_update_ratio_under_clipping_names_the_clip_too(tmp_path, tiny_npz,
                                                               write_config):
    raw = tiny_config_dict(tiny_npz)
    raw["optimizer"] = {"name": "sgd", "lr": 0.1}
    raw["train"].update(clip={"norm": 1e-6}, plots=False)

    result = invoke("fit", write_config(raw), "--out", tmp_path / "run")

    assert result.exit_code == 0, result.output
    assert ("far below ~1e-3: the learning rate looks too low (raise optimizer.lr),"
            " or train.clip holds the steps back (raise its threshold)"
            ) in result.stderr


def test_no_overfitting_warning_without_a_gap_between_the_accuracies():
    # Validation accuracy slipping a sample while train accuracy, still below or
    # level with it, rises, is noise.
    said = []
    watcher = Watcher(said.append)
    for train, val in [(0.9167, 0.9792), (0.9479, 0.9722), (0.9792, 0.9653)]:
        watcher.check_curve(train, val)
    assert said == []


@pytest.mark.parametrize("warmup, warned", [(11, False), (12, True)])
def test_a_warmup_as_long_as_the_run_is_a_warning(tmp_path, tiny_npz, write_config,
                                                  warmup, warned):
    raw = tiny_config_dict(tiny_npz)  # 3 epochs of 4 updates: 12 in all
    raw["schedule"] = {"name": "cosine", "warmup": warmup}
    result = invoke("fit", write_config(raw), "--out", tmp_path / "run")

    assert result.exit_code == 0, result.output
    expected = (f"warning: schedule.warmup is {warmup} updates but the run has 12: the"
                " rate climbs all run and the cosine never starts; lower"
                " schedule.warmup")
    assert (expected in result.stderr.splitlines()) is warned


# Batch norm and batches of one sample. The tiny dataset keeps 50 training rows
# (60 less 10 for validation): batches of 7 leave 1 for the last batch of an epoch.
def _batchnorm_run(tiny_npz, write_config, **train):
    raw = tiny_config_dict(tiny_npz)
    raw["model"] = {"hidden": [8], "batchnorm": True}
    raw["train"].update(plots=False, **train)
    return write_config(raw)


@pytest.mark.parametrize("samples, batch_size, full_batch, found", [
    (50, 7, False, ("the last batch of each epoch holds 1 (50 training samples,"
                    " train.batch_size 7)", "such as 6 or 8")),
    (41, 8, False, ("holds 1 (41 training samples, train.batch_size 8)",
                    "such as 7 or 9")),
    (41, 2, False, ("holds 1 (41 training samples, train.batch_size 2)",
                    "such as 3")),
    (50, 1, False, ("train.batch_size is 1", "set train.batch_size to 2 or more")),
    (1, 8, False, ("the training split holds 1 sample", "data.validation")),
    (1, 8, True, ("the training split holds 1 sample", "data.validation")),
    (50, 16, False, None),
    (50, 64, False, None),  # one batch of all 50
    (50, 7, True, None),  # L-BFGS: the whole split is one batch
])
def test_lone_sample_batch_names_the_batch_of_one_and_a_batch_size_without(
        samples, batch_size, full_batch, found):
    config = resolve_config({"model": {"hidden": [3], "batchnorm": True},
                             "train": {"epochs": 1}})
    model = build_model(config, 4, 2)
    result = checks.lone_sample_batch(model, samples, batch_size, full_batch)
    if found is None:
        assert result is None
        return
    problem, fix = result
    assert problem.startswith("batch norm needs at least 2 samples per batch: ")
    assert found[0] in problem and found[1] in fix


@pytest.mark.parametrize("model", [{"hidden": [3]},
                                   {"hidden": [3], "layernorm": True}])
def test_lone_sample_batch_concerns_batch_norm_alone(model):
    config = resolve_config({"model": model, "train": {"epochs": 1}})
    assert checks.lone_sample_batch(build_model(config, 4, 2), 50, 7, False) is None


@pytest.mark.parametrize("overrides, message", [
    (["train.batch_size=7"], r"the last batch of each epoch holds 1 \(50 training"
                             r" samples, train.batch_size 7\); choose another"
                             r" train.batch_size, such as 6 or 8$"),
    # Iterations mode batches its epochs the same way, even a run too short to
    # reach the last batch (extended later, it would).
    (["train.batch_size=7", "train.epochs=null", "train.iterations=3"],
     r"holds 1 \(50 training samples, train.batch_size 7\)"),
    # The training split is what the validation split leaves: 51 rows here.
    (["train.batch_size=10", "data.validation=9"],
     r"holds 1 \(51 training samples, train.batch_size 10\)"),
    (["train.batch_size=1"], r"train.batch_size is 1; set train.batch_size to 2"),
])
def test_fit_refuses_batch_norm_with_a_batch_of_one_sample(tmp_path, tiny_npz,
                                                           write_config, overrides,
                                                           message):
    config = _batchnorm_run(tiny_npz, write_config)
    args = [arg for text in overrides for arg in ("--set", text)]
    result = invoke("fit", config, "--out", tmp_path / "run", *args)

    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1
    assert re.search(r"^error: batch norm needs at least 2 samples per batch: .*"
                     + message, result.stderr.strip()), result.stderr
    assert not (tmp_path / "run").exists()


def test_batch_norm_with_a_batch_size_that_leaves_no_batch_of_one_trains(
        tmp_path, tiny_npz, write_config):
    config = _batchnorm_run(tiny_npz, write_config, batch_size=8, epochs=1)
    result = invoke("fit", config, "--out", tmp_path / "run", "--quiet")
    assert result.exit_code == 0, result.output


def test_lbfgs_trains_batch_norm_on_the_whole_split(tmp_path, tiny_npz):
    raw = tiny_config_dict(tiny_npz)
    raw["model"] = {"hidden": [8], "batchnorm": True}
    raw["optimizer"] = {"name": "lbfgs"}
    raw["train"] = {"iterations": 2, "batch_size": 7, "dtype": "float64",
                    "plots": False}
    fit(resolve_config(raw), tmp_path / "run", quiet=True)
    assert (tmp_path / "run" / "checkpoints" / "last.npz").is_file()


def test_a_run_begun_with_a_batch_of_one_resumes_with_a_warning(
        tmp_path, tiny_npz, write_config, monkeypatch):
    config = _batchnorm_run(tiny_npz, write_config, batch_size=7, epochs=1)
    with monkeypatch.context() as earlier:  # an nntrain that did not refuse it
        earlier.setattr(checks, "refuse_lone_sample_batches", lambda *args: None)
        begun = invoke("fit", config, "--out", tmp_path / "run", "--quiet")
    assert begun.exit_code == 0, begun.output

    result = invoke("fit", config, "--resume", tmp_path / "run", "--set",
                    "train.epochs=2")

    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines()
                if line.startswith("warning: batch norm")]
    assert warnings == [
        "warning: batch norm needs at least 2 samples per batch: the last batch of"
        " each epoch holds 1 (50 training samples, train.batch_size 7), which an"
        " earlier nntrain let this run start with: it gets no gradient before batch"
        " norm, and a zero variance in the running statistics, once an epoch; to"
        " avoid it, start the run over and choose another train.batch_size, such as"
        " 6 or 8"]
    meta = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.npz").meta
    assert meta["solver"]["progress"]["epoch"] == 2


class _Penalized:
    """A model stand-in for update_ratios: one weight array and its penalty."""

    def __init__(self, W):
        self.params = {"affine1.W": W}
        self.penalties = [type("Penalty", (), {"name": "affine1.W"})()]


def test_update_ratios_measure_weights_too_small_for_float32_squares():
    # Sixteen entries of 1e-30 have the norm 4e-30; their float32 squares (1e-60)
    # underflow to 0, which made the weights look zero and the ratio infinite.
    model = _Penalized(np.full((4, 4), 1e-30, np.float32))
    before = weight_snapshot(model)
    model.params["affine1.W"] *= np.float32(2.0)

    stats = update_ratios(model, before)

    assert stats["weight_norm/affine1.W"] == pytest.approx(4e-30, rel=1e-6)
    assert stats["update_ratio/affine1.W"] == pytest.approx(1.0, rel=1e-6)


BLAMES_THE_WEIGHTS = ("so the learning rate is not the cause; check model.init,"
                      " model.init_std and model.max_norm")


@pytest.mark.parametrize("stats, warning", [
    ({"update_ratio/a.W": math.inf, "weight_norm/a.W": 0.0, "grad_norm/a.W": 0.0},
     "is inf, far above ~1e-3: its weights are zero, and so is their gradient, "
     + BLAMES_THE_WEIGHTS),
    ({"update_ratio/a.W": 0.3, "weight_norm/a.W": 2e-30, "grad_norm/a.W": 1.0},
     "is 3.0e-01, far above ~1e-3: its weights are nearly zero (norm 2.0e-30), "
     + BLAMES_THE_WEIGHTS),
    # model.max_norm holds the weights near zero and crushes the updates with them.
    ({"update_ratio/a.W": 1e-7, "weight_norm/a.W": 4e-30, "grad_norm/a.W": 1.0},
     "is 1.0e-07, far below ~1e-3: its weights are nearly zero (norm 4.0e-30), "
     + BLAMES_THE_WEIGHTS),
    ({"update_ratio/a.W": 0.0, "weight_norm/a.W": 1.0, "grad_norm/a.W": 0.0},
     "is 0.0e+00, far below ~1e-3: its gradient is exactly zero, so no learning"
     " rate moves it: nothing reaches it from the loss (a normalization over a"
     " single unit, or inputs that are all zero after preprocessing?); check the"
     " model and the data"),
    ({"update_ratio/a.W": 0.3, "weight_norm/a.W": 1.0, "grad_norm/a.W": 1.0},
     "is 3.0e-01, far above ~1e-3: the learning rate looks too high (lower"
     " optimizer.lr)"),
    # Diagnostics saved before weight norms were measured: the rate, as before.
    ({"update_ratio/a.W": 1e-7, "grad_norm/a.W": 1.0},
     "is 1.0e-07, far below ~1e-3: the learning rate looks too low (raise"
     " optimizer.lr)"),
])
def test_update_ratio_warnings_blame_the_rate_only_when_it_can_be_the_cause(
        stats, warning):
    said = []
    Watcher(said.append).check_diagnostics(stats)
    assert said == [f"the update/weight ratio of a.W {warning}"]


def test_an_update_ratio_that_adamws_decay_alone_explains_blames_the_decay():
    said = []
    # Each update multiplies the weights by 1 - 0.5: a ratio of 0.5 by itself.
    Watcher(said.append).check_diagnostics(
        {"update_ratio/a.W": 0.3, "weight_norm/a.W": 1.0, "grad_norm/a.W": 1.0},
        decay=0.5)
    assert said == ["the update/weight ratio of a.W is 3.0e-01, far above ~1e-3:"
                    " adamw's weight decay alone changes the weights by lr *"
                    " optimizer.weight_decay = 0.5 of their norm at every update;"
                    " lower optimizer.weight_decay (its default is 0.01)"]


@pytest.mark.parametrize("weight_decay, factor, effect", [
    (1000, "0", "zeroes them"),
    (1500, "-0.5", "flips their sign"),
    (1e4, "-9", "flips their sign and makes them grow"),
])
def test_weight_decay_at_or_past_one_over_lr_is_named_with_the_factor(
        weight_decay, factor, effect):
    assert weight_decay_cause(1e-3, weight_decay) == (
        f"optimizer.weight_decay {weight_decay:g} at the learning rate 0.001 makes"
        f" every update multiply the parameters by 1 - lr * weight_decay = {factor},"
        f" which {effect}: lower optimizer.weight_decay below 1 / lr = 1000"
        " (adamw's default is 0.01)")


@pytest.mark.parametrize("lr, weight_decay", [(1e-3, 999), (1e-3, 0.0),
                                              (1e-3, None), (None, 1e4)])
def test_weight_decay_below_one_over_lr_is_not_blamed(lr, weight_decay):
    assert weight_decay_cause(lr, weight_decay) is None


def test_a_loss_that_adamws_weight_decay_blows_up_blames_the_decay_not_the_rate(
        tmp_path, tiny_config):
    result = invoke("fit", tiny_config, "--out", tmp_path / "run", "--set",
                    "optimizer={name: adamw, lr: 0.01, weight_decay: 1e4}",
                    "--set", "model.l2=0", "--set", "train.plots=false")

    assert result.exit_code == 1, result.output
    fix = ("optimizer.weight_decay 10000 at the learning rate 0.01 makes every"
           " update multiply the parameters by 1 - lr * weight_decay = -99, which"
           " flips their sign and makes them grow: lower optimizer.weight_decay"
           " below 1 / lr = 100 (adamw's default is 0.01)")
    lines = result.stderr.splitlines()
    assert lines[0] == f"warning: {fix}"
    assert lines[-1].startswith("error: the loss became ")
    assert f"; {fix}. No checkpoint holds it" in lines[-1]
    assert "optimizer.lr" not in result.stderr


def test_a_zero_gradient_is_named_even_after_the_schedule_lowered_the_rate():
    said = []
    Watcher(said.append).check_diagnostics(
        {"update_ratio/a.W": 0.0, "weight_norm/a.W": 1.0, "grad_norm/a.W": 0.0},
        rate_lowered=True)
    assert len(said) == 1 and "its gradient is exactly zero" in said[0]


@pytest.mark.parametrize("overrides, cause", [
    # 1e-300 is 0 in float32: zero weights give zero gradients through ReLU.
    (["model.init=small", "model.init_std=1e-300"],
     "inf, far above ~1e-3: its weights are zero, and so is their gradient"),
    # A layer norm over one unit outputs its bias alone, 0: no gradient passes.
    (["model.hidden=[1]", "model.layernorm=true"],
     "0.0e+00, far below ~1e-3: its gradient is exactly zero"),
])
def test_runs_whose_weights_cannot_move_do_not_blame_the_rate(tmp_path, tiny_config,
                                                              overrides, cause):
    settings = [arg for override in overrides for arg in ("--set", override)]
    result = invoke("fit", tiny_config, "--out", tmp_path / "run", *settings)

    assert result.exit_code == 0, result.output
    ratios = [line for line in result.stderr.splitlines() if "update/weight" in line]
    assert [line.split(" is ", 1)[0] for line in ratios] == [
        "warning: the update/weight ratio of affine1.W",
        "warning: the update/weight ratio of affine2.W"]
    for line in ratios:
        assert cause in line, line
        assert "optimizer.lr" not in line, line


# Settings that do not apply: warnings, not errors (a search may vary the setting
# that decides). Each is written out from the wording.
def _resolved(**model):
    return resolve_config({"model": model, "train": {"epochs": 1}})


@pytest.mark.parametrize("model, expected", [
    ({"leaky_slope": 0.2}, "model.leaky_slope has no effect with activation relu;"
                           " set model.activation=leaky_relu to use it"),
    ({"activation": "tanh", "elu_alpha": 2.0},
     "model.elu_alpha has no effect with activation tanh; set model.activation=elu"
     " to use it"),
    ({"pieces": 3}, "model.pieces has no effect with activation relu; set"
                    " model.activation=maxout to use it"),
    ({"init_std": 0.5}, "model.init_std has no effect with init he; set"
                        " model.init=small to use it"),
    ({"layernorm": True, "norm_momentum": 0.5},
     "model.norm_momentum has no effect without batch norm; set"
     " model.batchnorm=true to use it"),
    ({"norm_epsilon": 1e-3}, "model.norm_epsilon has no effect without batch or"
                             " layer norm; set model.batchnorm=true or"
                             " model.layernorm=true to use it"),
])
def test_a_model_setting_that_does_not_apply_is_named(model, expected):
    assert checks.ineffective_settings(_resolved(**model)) == [expected]


@pytest.mark.parametrize("model", [
    {"activation": "leaky_relu", "leaky_slope": 0.2},
    {"activation": "elu", "elu_alpha": 2.0},
    {"activation": "maxout", "pieces": 3},
    {"init": "small", "init_std": 0.5},
    {"batchnorm": True, "norm_momentum": 0.5, "norm_epsilon": 1e-3},
    {"layernorm": True, "norm_epsilon": 1e-3},
    {"leaky_slope": 0.01},  # the default: nothing was set
])
def test_a_model_setting_in_use_is_no_warning(model):
    assert checks.ineffective_settings(_resolved(**model)) == []


def test_settings_an_explicit_network_does_not_use_are_named():
    layers = [{"affine": {"units": 8, "init_std": 0.1}}, {"relu": {}},
              {"affine": {"init": "small", "init_std": 0.1}}]
    config = _resolved(hidden=None, layers=layers, activation="elu", init_std=0.1)

    assert checks.ineffective_settings(config) == [
        "model.activation has no effect with model.layers (it belongs to the"
        " model.hidden shorthand); give the layers in model.layers the options"
        " instead",
        "model.layers[0].affine.init_std has no effect with init he; set"
        " model.layers[0].affine.init=small to use it",
        "model.init_std has no effect: no layer of model.layers uses the 'small'"
        " initializer without an init_std of its own; set model.init=small, or a"
        " layer's init, to use it",
    ]


def test_the_models_init_std_is_in_use_where_a_layer_takes_it():
    layers = [{"affine": {"units": 8, "init": "he"}}, {"relu": {}}, {"affine": {}}]
    config = _resolved(hidden=None, layers=layers, init="small", init_std=0.1)

    assert checks.ineffective_settings(config) == []


@pytest.mark.parametrize("model, weight_decay, key", [
    ({"l2": 1e-3}, 0.01, "model.l2"),
    ({"hidden": None, "layers": [{"affine": {"units": 8, "l2": 0.1}}, {"relu": {}},
                                 {"affine": {}}]}, 0.01, "model.layers[0].affine.l2"),
    ({"l2": 1e-3}, 0.0, None),
    ({"l2": 0.0}, 0.01, None),
])
def test_adamw_beside_an_l2_penalty_is_a_warning_naming_both(model, weight_decay,
                                                             key):
    config = resolve_config({"model": model, "train": {"epochs": 1},
                             "optimizer": {"name": "adamw",
                                           "weight_decay": weight_decay}})

    expected = None if key is None else (
        f"optimizer.weight_decay (adamw's decoupled decay) and {key} (an L2 penalty"
        " in the loss) both shrink the weights, and the run applies both; set"
        f" {key} to 0, or use optimizer adam with the L2 penalty")
    assert checks.double_decay_check(config) == expected


@pytest.mark.parametrize("train, expected", [
    ({"epochs": 30, "batch_size": 32},
     "lbfgs works on the whole training split: each iteration counts as an epoch"
     " (train.epochs 30 = 30 L-BFGS iterations), and train.batch_size is not used;"
     " train.dtype float64 suits its line search better"),
    ({"iterations": 5, "dtype": "float64"},
     "lbfgs works on the whole training split: train.iterations counts L-BFGS"
     " iterations, and train.batch_size is not used"),
])
def test_lbfgs_says_how_it_counts_and_that_it_takes_no_batches(train, expected):
    config = resolve_config({"optimizer": {"name": "lbfgs"}, "train": train})

    assert checks.full_batch_note(config) == expected
    assert checks.full_batch_note(_resolved()) is None


@pytest.mark.parametrize("flags", [[], ["--quiet"]])
def test_a_setting_without_effect_is_warned_once_and_logged(tmp_path, tiny_npz,
                                                            write_config, flags):
    raw = tiny_config_dict(tiny_npz)
    raw["model"]["leaky_slope"] = 0.2
    raw["train"]["plots"] = False
    out = tmp_path / "run"
    warning = ("warning: model.leaky_slope has no effect with activation relu; set"
               " model.activation=leaky_relu to use it")

    result = invoke("fit", write_config(raw), "--out", out, *flags)

    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines().count(warning) == (0 if flags else 1)
    assert (out / "train.log").read_text().splitlines().count(warning) == 1


def test_an_lbfgs_run_notes_how_it_counts(tmp_path, tiny_npz, write_config):
    raw = tiny_config_dict(tiny_npz)
    raw["optimizer"] = {"name": "lbfgs"}
    raw["train"].update(epochs=2, plots=False)

    result = invoke("fit", write_config(raw), "--out", tmp_path / "run")

    assert result.exit_code == 0, result.output
    assert ("note: lbfgs works on the whole training split: each iteration counts"
            " as an epoch (train.epochs 2 = 2 L-BFGS iterations), and"
            " train.batch_size is not used; train.dtype float64 suits its line"
            " search better") in result.stderr.splitlines()
    assert "Done: 2 epochs, 2 iterations" in result.stdout


def test_snapshots_asked_of_lbfgs_are_named():
    config = resolve_config({"optimizer": {"name": "lbfgs"},
                             "train": {"epochs": 3, "snapshot_every": 1}})
    mini_batch = resolve_config({"train": {"epochs": 3, "snapshot_every": 1}})

    assert checks.lbfgs_snapshot_check(config) == (
        "train.snapshot_every has no effect with optimizer lbfgs, which keeps only"
        " best.npz and last.npz; leave it out, or use a mini-batch rule to keep"
        " snapshots")
    assert checks.lbfgs_snapshot_check(mini_batch) is None


def test_maxout_outputs_get_activation_statistics_and_affine_ones_none():
    config = resolve_config({"model": {"hidden": [6], "activation": "maxout"},
                             "train": {"epochs": 1}})
    model = build_model(config, 4, 3)
    X = np.random.default_rng(0).normal(size=(40, 4)).astype(np.float32)
    model.capture_outputs = True
    model.scores(X, training=True)
    [maxout] = [i for i, layer in enumerate(model.layers) if layer.kind == "maxout"]
    # Its output, recomputed: the larger of each unit's two pieces.
    W, b = model.params["maxout1.W"], model.params["maxout1.b"]
    pieces = (X.astype(np.float64) @ W + b).reshape(40, 6, 2)
    expected = pieces.max(axis=2)

    stats = layer_statistics(model, model.outputs)

    assert sorted(stats) == ["act_mean/maxout1", "act_std/maxout1"]
    np.testing.assert_allclose(stats["act_mean/maxout1"], expected.mean(), rtol=1e-5)
    np.testing.assert_allclose(stats["act_std/maxout1"], expected.std(), rtol=1e-5)
    assert model.layers[maxout].name == "maxout1"
