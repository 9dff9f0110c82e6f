"""The training loop's counting, evaluation points and checkpoints."""

import json

import numpy as np
import pytest

from nntrain.checkpoint import load_checkpoint
from nntrain.config import load_config
from nntrain.errors import TrainingError
from nntrain.nn.model import build_model
from nntrain.optim.rules import build_rule
from nntrain.optim.schedules import Constant
from nntrain.train.rundir import RunDirectory
from nntrain.train.solver import Solver


class RecordingSchedule(Constant):
    """A constant rate that remembers every (epoch, iteration) it was asked about."""

    def __init__(self, lr):
        super().__init__(lr)
        self.calls = []

    def rate(self, epoch, iteration):
        self.calls.append((epoch, iteration))
        return self.base_lr


def _solver(overrides, num_samples=10, run=None):
    config = load_config(None, ["model.hidden=[3]", *overrides])
    rng = np.random.default_rng(0)
    X = rng.standard_normal((num_samples, 2)).astype(np.float32)
    y = np.arange(num_samples) % 2
    model = build_model(config, 2, 2)
    rule = build_rule(config["optimizer"])
    schedule = RecordingSchedule(rule.lr)
    data = (X, y, X[:4], y[:4])
    solver = Solver(model, rule, schedule, data, config["train"], config["seed"],
                    run=run)
    return solver, schedule


def test_last_partial_batch_is_kept_three_iterations_per_epoch():
    solver, schedule = _solver(["train.epochs=5", "train.batch_size=4"])
    progress = solver.train()
    assert progress.iteration == 15
    assert progress.epoch == 5
    assert solver.rule.steps == 15
    # The schedule saw every update, numbered 0..14, with its epoch.
    assert schedule.calls == [(1 + i // 3, i) for i in range(15)]


def test_every_sample_is_seen_once_per_epoch(monkeypatch):
    solver, _ = _solver(["train.epochs=2", "train.batch_size=4"], num_samples=10)
    seen = []
    original = solver.model.forward_backward

    def spy(X, y):
        seen.append(X.copy())
        return original(X, y)

    monkeypatch.setattr(solver.model, "forward_backward", spy)
    solver.train()
    sizes = [len(batch) for batch in seen]
    assert sizes == [4, 4, 2, 4, 4, 2]
    first_epoch = np.concatenate(seen[:3])
    np.testing.assert_array_equal(np.sort(first_epoch, axis=0),
                                  np.sort(solver.X_train, axis=0))


def test_iterations_mode_stops_mid_epoch_and_evaluates_every_eval_every():
    solver, schedule = _solver(["train.iterations=7", "train.batch_size=4",
                                "train.eval_every=2"])
    progress = solver.train()
    assert progress.iteration == 7
    assert progress.epoch == 3  # 3 + 3 + 1 updates
    # evaluations at 2, 4, 6 and one more after the last update
    assert [r["iteration"] for r in solver.history] == [2, 4, 6, 7]


def test_iterations_mode_default_evaluates_once_per_epoch_worth():
    solver, _ = _solver(["train.iterations=9", "train.batch_size=4"])
    solver.train()
    assert [r["iteration"] for r in solver.history] == [3, 6, 9]


def test_non_finite_loss_stops_with_training_error():
    solver, _ = _solver(["train.epochs=1", "train.batch_size=4"])
    solver.X_train[0, 0] = np.inf
    solver.X_train[1:] = np.inf
    with pytest.raises(TrainingError, match="no update has run yet.*the data"):
        solver.train()


def test_a_parameter_an_update_made_nan_is_named_with_that_update(monkeypatch):
    solver, _ = _solver(["train.epochs=2", "train.batch_size=4"])
    step = solver.rule.step

    def poisoning_step(params, grads):
        step(params, grads)
        if solver.rule.steps == 3:
            params["affine2.W"][0, 0] = np.nan

    monkeypatch.setattr(solver.rule, "step", poisoning_step)
    with pytest.raises(TrainingError,
                       match=r"^parameter affine2.W became nan at iteration 3 "):
        solver.train()


def test_run_writes_metrics_records_and_loadable_checkpoints(tmp_path):
    run = RunDirectory(tmp_path / "run")
    solver, _ = _solver(["train.epochs=2", "train.batch_size=4", "train.log_every=1"],
                        run=run)
    solver.train()
    run.close()
    records = [json.loads(line) for line in
               (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    iters = [r for r in records if r["kind"] == "iter"]
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert [r["iteration"] for r in iters] == [1, 2, 3, 4, 5, 6]
    assert [r["epoch"] for r in iters] == [1, 1, 1, 2, 2, 2]
    assert len(epochs) == 2
    for key in ("lr", "loss", "data_loss", "reg_loss", "train_accuracy", "val_loss",
                "val_accuracy", "seconds"):
        assert key in epochs[0]

    last = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.npz")
    for name, value in solver.model.params.items():
        np.testing.assert_array_equal(last.group("param")[name], value)
    assert last.meta["solver"]["progress"]["iteration"] == 6
    assert (tmp_path / "run" / "checkpoints" / "best.npz").is_file()
