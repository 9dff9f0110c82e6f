"""Full-batch L-BFGS: it minimizes, logs one record per iteration, and saves the same
checkpoints as every other run."""

import json

import numpy as np
import pytest
from conftest import tiny_config_dict

from nntrain.config import load_config, resolve_config
from nntrain.errors import ConfigError
from nntrain.optim import lbfgs
from nntrain.pipeline import fit, restore

pytest.importorskip("scipy")


def test_flatten_and_assign_round_trip():
    params = {"a": np.arange(6.0).reshape(2, 3), "b": np.array([7.0, 8.0])}
    vector = lbfgs.flatten(params)
    np.testing.assert_array_equal(vector, [0, 1, 2, 3, 4, 5, 7, 8])
    lbfgs.assign(params, vector * 2)
    np.testing.assert_array_equal(params["b"], [14.0, 16.0])


def test_minimize_finds_the_bottom_of_a_quadratic_bowl():
    A = np.array([[3.0, 1.0], [1.0, 2.0]])
    b = np.array([1.0, -1.0])
    seen = []

    def objective(w):
        return 0.5 * w @ A @ w - b @ w, A @ w - b

    result = lbfgs.minimize(objective, np.zeros(2), 50, 5,
                            lambda w, loss: seen.append(loss))
    np.testing.assert_allclose(result.x, np.linalg.solve(A, b), atol=1e-6)
    assert seen == sorted(seen, reverse=True)  # the loss never goes up


def test_lbfgs_run_logs_every_iteration_and_its_checkpoint_evaluates(tiny_npz,
                                                                      tmp_path):
    raw = tiny_config_dict(tiny_npz)
    raw["optimizer"] = {"name": "lbfgs", "history": 5}
    raw["train"] = {"iterations": 15, "log_every": 1, "dtype": "float64"}
    config = resolve_config(raw)
    result = fit(config, tmp_path / "run", quiet=True)

    records = [json.loads(line) for line in
               (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    iters = [r for r in records if r["kind"] == "iter"]
    assert [r["iteration"] for r in iters] == list(range(1, len(iters) + 1))
    assert all("lr" not in r for r in records)  # L-BFGS has no learning rate
    assert iters[-1]["loss"] < iters[0]["loss"]
    assert result.history[-1]["train_accuracy"] == 1.0

    restored = restore(tmp_path / "run" / "checkpoints" / "last.npz")
    assert restored.checkpoint.meta["solver"]["progress"]["iteration"] == len(iters)


@pytest.mark.parametrize("overrides, message", [
    (["model.drop_probability=0.2"], "remove dropout"),
    (["schedule.name=cosine"], "schedule.name to constant"),
    (["train.clip={norm: 1.0}"], "train.clip"),
    (["train.average={kind: polyak}"], "train.average to null"),
])
def test_lbfgs_refuses_settings_it_cannot_honour(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, ["optimizer.name=lbfgs", "train.iterations=5", *overrides])
