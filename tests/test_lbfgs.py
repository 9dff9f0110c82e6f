"""Full-batch L-BFGS: it minimizes, logs one record per iteration, and saves the same
checkpoints as every other run."""

import json
import re
import shutil

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from conftest import tiny_config_dict

from nntrain.checkpoint import load_checkpoint, save_checkpoint
from nntrain.cli import cli
from nntrain.config import config_to_yaml, load_config, resolve_config
from nntrain.errors import CheckpointWarning, ConfigError
from nntrain.optim import lbfgs
from nntrain.pipeline import fit
from nntrain.prepare import prepare_data
from nntrain.restore import restore
from nntrain.train.resume import resumed_config

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
    (["model.max_norm=0.1"], "set model.max_norm to null"),
    (["model.hidden=null", "model.layers=[{affine: {units: 5}}, {relu: {}},"
      " {affine: {max_norm: 2}}]"], r"remove model\.layers\[2\]\.affine\.max_norm"),
])
def test_lbfgs_refuses_settings_it_cannot_honour(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, ["optimizer.name=lbfgs", "train.iterations=5", *overrides])


# Before train.average was refused with optimizer lbfgs, such runs were accepted and
# kept no average (the average of L-BFGS was never updated). Their checkpoints are
# forged here from a current one by setting train.average in its stored config.
OLD_AVERAGE = {"kind": "polyak", "decay": 0.999}


def invoke(*args):
    return CliRunner().invoke(cli, [str(arg) for arg in args])


@pytest.fixture
def lbfgs_runs(tmp_path, tiny_npz):
    """Two copies of a finished 4-iteration L-BFGS run: (as written, with its
    checkpoints' config setting train.average as an older nntrain let it)."""
    raw = tiny_config_dict(tiny_npz)
    raw["optimizer"] = {"name": "lbfgs", "history": 5}
    raw["train"] = {"iterations": 4, "dtype": "float64", "plots": False}
    fit(resolve_config(raw), tmp_path / "plain", quiet=True)
    old = tmp_path / "old"
    shutil.copytree(tmp_path / "plain", old)
    for path in (old / "checkpoints").glob("*.npz"):
        checkpoint = load_checkpoint(path)
        checkpoint.meta["config"]["train"]["average"] = OLD_AVERAGE
        save_checkpoint(path, checkpoint.meta, checkpoint.arrays)
    config = yaml.safe_load((old / "config.yaml").read_text())
    config["train"]["average"] = OLD_AVERAGE
    (old / "config.yaml").write_text(config_to_yaml(config))
    return tmp_path / "plain", old


def test_an_older_lbfgs_checkpoint_with_train_average_evaluates_and_predicts(
        lbfgs_runs, tmp_path, tiny_npz):
    plain, old = (run / "checkpoints" / "best.npz" for run in lbfgs_runs)
    results = [invoke("eval", path, "--json") for path in (plain, old)]
    assert results[1].exit_code == 0, results[1].output
    assert results[1].stderr == ""
    evaluations = [json.loads(result.stdout) for result in results]
    evaluations[1]["checkpoint"] = str(plain)
    assert evaluations[1] == evaluations[0]

    np.save(tmp_path / "samples.npy", np.load(tiny_npz)["X_test"])
    predictions = [invoke("predict", path, tmp_path / "samples.npy")
                   for path in (plain, old)]
    assert predictions[1].exit_code == 0, predictions[1].output
    assert predictions[1].stdout == predictions[0].stdout
    assert restore(old).config["train"]["average"] is None


def test_eval_average_of_an_older_lbfgs_checkpoint_says_it_has_no_average(
        lbfgs_runs):
    result = invoke("eval", lbfgs_runs[1] / "checkpoints" / "last.npz", "--average")
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert ("holds no averaged weights: its run used optimizer lbfgs, which never"
            " averages them") in result.stderr
    assert "leave out --average" in result.stderr


def test_an_older_lbfgs_checkpoint_with_train_average_resumes_without_it(
        lbfgs_runs):
    plain, old = lbfgs_runs
    with pytest.raises(ConfigError, match="set train.average to null"):
        load_config(old / "config.yaml")  # a new run may not use it

    # The command an interrupted run prints: its own config.yaml, the run folder.
    results = [invoke("fit", run / "config.yaml", "--resume", run, "--set",
                      "train.iterations=7") for run in (plain, old)]

    assert results[1].exit_code == 0, results[1].output
    warnings = [line for line in results[1].stderr.splitlines()
                if line.startswith("warning:")]
    assert warnings == [f"warning: {old / 'checkpoints' / 'last.npz'} sets"
                        " train.average with optimizer lbfgs, which never averaged"
                        " its weights; it is resumed as a run without"
                        " train.average"]
    ends = [load_checkpoint(run / "checkpoints" / "last.npz") for run in lbfgs_runs]
    assert ends[1].meta["config"]["train"]["average"] is None
    assert ends[1].meta["solver"]["progress"]["iteration"] == 7
    assert not ends[1].group("average")
    for name, value in ends[0].group("param").items():
        assert np.array_equal(ends[1].group("param")[name], value), name
    assert load_config(old / "config.yaml")["train"]["average"] is None


def test_an_older_lbfgs_checkpoint_with_max_norm_evaluates_and_resumes_without_it(
        lbfgs_runs):
    # Earlier nntrain accepted max_norm beside lbfgs and never applied it (the
    # weights reached norms above the cap); forged here as in lbfgs_runs.
    plain, old = lbfgs_runs
    shutil.rmtree(old)
    shutil.copytree(plain, old)
    for path in (old / "checkpoints").glob("*.npz"):
        checkpoint = load_checkpoint(path)
        checkpoint.meta["config"]["model"]["max_norm"] = 0.001
        save_checkpoint(path, checkpoint.meta, checkpoint.arrays)
    last = old / "checkpoints" / "last.npz"

    assert restore(last).config["model"]["max_norm"] is None
    with pytest.warns(CheckpointWarning, match=re.escape(
            f"{last} sets max_norm with optimizer lbfgs, which never applied it; it"
            " is resumed as a run without max_norm")):
        config = resumed_config(load_checkpoint(last), ["train.iterations=6"], last)
    result = fit(config, old, resume=old, quiet=True)

    assert result.progress.iteration == 6
    assert load_checkpoint(last).meta["config"]["model"]["max_norm"] is None


def test_lbfgs_with_batch_norm_keeps_the_full_batch_statistics_of_its_weights(
        tiny_npz, tmp_path):
    # One batch: the running statistics must be that batch's own mean and biased
    # variance at the final weights (a momentum average over a handful of passes
    # would still hold much of the initial 0 and 1).
    raw = tiny_config_dict(tiny_npz)
    raw["optimizer"] = {"name": "lbfgs"}
    raw["model"] = {"hidden": [8], "batchnorm": True}
    raw["train"] = {"iterations": 5, "dtype": "float64"}
    config = resolve_config(raw)
    fit(config, tmp_path / "run", quiet=True)

    saved = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.npz")
    params, buffers = saved.group("param"), saved.group("buffer")
    X_train = prepare_data(config, splits=("train",)).splits["train"][0]
    hidden = X_train @ params["affine1.W"] + params["affine1.b"]
    np.testing.assert_allclose(buffers["batchnorm1.running_mean"],
                               hidden.mean(axis=0), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(buffers["batchnorm1.running_var"],
                               hidden.var(axis=0), rtol=1e-10)


def test_lbfgs_keeps_the_first_data_loss_for_the_non_finite_guard(tiny_npz,
                                                                  tmp_path):
    # The data loss at the starting weights, penalty left out: that of a fresh
    # model of the same seed, on the same training split.
    from nntrain.nn.model import build_model

    raw = tiny_config_dict(tiny_npz)
    raw["optimizer"] = {"name": "lbfgs"}
    raw["model"] = {"hidden": [8], "l2": 0.5}
    raw["train"] = {"iterations": 3, "dtype": "float64"}
    config = resolve_config(raw)
    fit(config, tmp_path / "run", quiet=True)

    X, y = prepare_data(config, splits=("train",)).splits["train"]
    model = build_model(config, X.shape[1], 3)
    saved = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.npz")
    result = model.forward_backward(X, y)
    assert saved.meta["solver"]["divergence"]["first_data_loss"] == pytest.approx(
        result.data_loss, rel=1e-12)
    assert result.reg_loss > 0.01  # so the total would not match


def test_lbfgs_without_scipy_is_refused_before_the_run_folder_is_written(
        tiny_npz, tmp_path, monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None
                        if name == "scipy" else real_find_spec(name, *args))
    raw = tiny_config_dict(tiny_npz)
    raw["optimizer"] = {"name": "lbfgs"}
    raw["train"] = {"iterations": 3}

    with pytest.raises(ConfigError, match=re.escape(
            "optimizer.name lbfgs needs scipy: pip install 'nntrain[lbfgs]'")):
        fit(resolve_config(raw), tmp_path / "run", quiet=True)

    assert not (tmp_path / "run").exists()


def test_lbfgs_that_stops_before_its_first_iteration_saves_its_starting_weights(
        tmp_path):
    # Identical rows with both labels: the gradient at the start is exactly zero
    # (a zero-mean softmax with uniform scores), so scipy stops at iteration 0.
    X = np.ones((4, 3))
    y = np.array([0, 1, 0, 1])
    path = tmp_path / "flat.npz"
    np.savez(path, X_train=X, y_train=y, X_val=X[:2], y_val=y[:2], X_test=X[:2],
             y_test=y[:2])
    raw = {"data": {"name": "npz", "path": str(path)},
           "optimizer": {"name": "lbfgs"},
           "train": {"iterations": 5, "dtype": "float64", "plots": False}}
    (tmp_path / "flat.yaml").write_text(yaml.safe_dump(raw))
    result = invoke("fit", tmp_path / "flat.yaml", "--out", tmp_path / "run")

    assert result.exit_code == 0, result.output
    assert "after 0 iterations" in result.output
    best = load_checkpoint(tmp_path / "run" / "checkpoints" / "best.npz")
    assert best.meta["solver"]["progress"]["iteration"] == 0
    records = [json.loads(line) for line in
               (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    # Two equally likely classes and uniform scores: the loss is ln 2 exactly.
    assert records == [{**records[0], "kind": "epoch", "iteration": 0,
                        "val_accuracy": 0.5}]
    assert records[0]["val_loss"] == pytest.approx(np.log(2), abs=1e-12)

    # No update was made, so there is no shorter run's evaluation to drop: a
    # longer run stops at the same point and keeps the one record.
    resumed = invoke("fit", tmp_path / "flat.yaml", "--out", tmp_path / "run",
                     "--resume", tmp_path / "run", "--set", "train.iterations=8")
    assert resumed.exit_code == 0, resumed.output
    assert "dropped" not in resumed.output
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == records
