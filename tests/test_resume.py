"""Nothing lost: exact resume, graceful stop on signals, crash-safe checkpoints and
determinism."""

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from conftest import tiny_arrays, tiny_config_dict

from nntrain.checkpoint import load_checkpoint, save_checkpoint
from nntrain.cli import cli
from nntrain.config import resolve_config
from nntrain.errors import StopRequested, TrainingError
from nntrain.pipeline import fit
from nntrain.prepare import prepare_data
from nntrain.restore import restore
from nntrain.train.resume import find_checkpoint, resumed_config, threads_note
from nntrain.train.rundir import RunDirectory
from nntrain.train.solver import Solver


def invoke(*args):
    return CliRunner().invoke(cli, [str(arg) for arg in args])


def _raw(tiny_npz, **train):
    raw = tiny_config_dict(tiny_npz)
    # Every piece of state a resume must carry: dropout and batch-norm generators
    # and statistics, Adam's moments, a plateau schedule, early stopping.
    raw["model"] = {"hidden": [8], "batchnorm": True, "drop_probability": 0.2}
    raw["schedule"] = {"name": "plateau", "patience": 1, "factor": 0.5}
    raw["train"].update({"early_stopping": {"patience": 50}, "log_every": 1,
                         "eval_every": 3,
                         "average": {"kind": "exponential", "decay": 0.9}, **train})
    return raw


def _arrays(path):
    with np.load(path, allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files if key != "meta"}


def _records(run_dir):
    records = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        record.pop("seconds")
        records.append(record)
    return records


def _assert_same_run(first, second):
    a, b = _arrays(first / "checkpoints" / "last.npz"), _arrays(
        second / "checkpoints" / "last.npz")
    assert sorted(a) == sorted(b)
    for key in a:
        assert np.array_equal(a[key], b[key]), key
    assert _records(first) == _records(second)
    meta_a = load_checkpoint(first / "checkpoints" / "last.npz").meta["solver"]
    meta_b = load_checkpoint(second / "checkpoints" / "last.npz").meta["solver"]
    for key in ("progress", "schedule", "dropout_state", "optimizer_steps",
                "running_means", "divergence"):
        assert meta_a[key] == meta_b[key], key
    without_time = [{k: v for k, v in r.items() if k != "seconds"}
                    for r in meta_a["history"]]
    assert without_time == [{k: v for k, v in r.items() if k != "seconds"}
                            for r in meta_b["history"]]


def _extend_by_cli(config, run, iterations: int) -> None:
    """`fit --resume RUN --set train.iterations=N`, which must succeed."""
    extended = invoke("fit", config, "--resume", run, "--set",
                      f"train.iterations={iterations}", "--quiet")
    assert extended.exit_code == 0, extended.output


def _fit_straight(config, run, iterations: int) -> None:
    """The same config trained that long from the start, into ``run``."""
    straight = invoke("fit", config, "--out", run, "--quiet", "--set",
                      f"train.iterations={iterations}")
    assert straight.exit_code == 0, straight.output


def _interrupt_at(monkeypatch, iteration):
    """Send this process a real SIGINT right after update ``iteration``: the run
    stops through the same path as a Ctrl-C."""
    original = Solver._step

    def step(self, rows):
        original(self, rows)
        if self.progress.iteration == iteration:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(Solver, "_step", step)


@pytest.mark.parametrize("stop_at, train", [
    (8, {}), (10, {}),  # an epoch boundary (4 updates an epoch), mid-epoch
    # Batches of 32 and 18: the diagnostics of each epoch's evaluation come from
    # its first update, which the stop falls after.
    (3, {"batch_size": 32, "eval_every": None}),
])
def test_resumed_run_equals_the_uninterrupted_one(tmp_path, tiny_npz, monkeypatch,
                                                  stop_at, train):
    config = resolve_config(_raw(tiny_npz, epochs=5, **train))
    whole = tmp_path / "whole"
    fit(config, whole, quiet=True)

    part = tmp_path / "part"
    with monkeypatch.context() as patch:
        _interrupt_at(patch, stop_at)
        with pytest.raises(StopRequested) as stopped:
            fit(config, part, quiet=True)
    assert stopped.value.exit_code == 130
    _, checkpoint, _ = find_checkpoint(part)
    assert checkpoint.meta["solver"]["progress"]["iteration"] == stop_at
    fit(resumed_config(checkpoint, [], part), part, quiet=True, resume=checkpoint)

    _assert_same_run(whole, part)


def test_a_finished_run_extended_trains_on_from_where_it_ended(tmp_path, tiny_npz):
    part = tmp_path / "part"
    fit(resolve_config(_raw(tiny_npz, epochs=None, iterations=10)), part, quiet=True)
    _, checkpoint, _ = find_checkpoint(part)
    config = resumed_config(checkpoint, ["train.iterations=20"], part)
    fit(config, part, quiet=True, resume=checkpoint)
    meta = load_checkpoint(part / "checkpoints" / "last.npz").meta["solver"]
    assert meta["progress"]["iteration"] == 20
    iterations = [r["iteration"] for r in _records(part) if r["kind"] == "iter"]
    assert iterations == list(range(1, 21))


def _extend(run_dir, *overrides):
    """Resume the run in ``run_dir`` with ``overrides`` (its new length)."""
    _, checkpoint, _ = find_checkpoint(run_dir)
    config = resumed_config(checkpoint, list(overrides), run_dir)
    fit(config, run_dir, quiet=True, resume=checkpoint)


@pytest.mark.parametrize("short, longer", [
    # eval_every 3 (from _raw): neither 10 nor 20 updates is an evaluation point,
    # so both runs end with a final evaluation.
    ({"epochs": None, "iterations": 10}, {"iterations": 20}),
    # 4 updates an epoch: 8 and 16 updates, neither a multiple of 3.
    ({"epochs": 2}, {"epochs": 4}),
    # Evaluated once an epoch: 10 updates end mid-epoch, 20 at an epoch's end.
    ({"epochs": None, "iterations": 10, "eval_every": None}, {"iterations": 20}),
    # The shorter run ends at an evaluation point: there is nothing to drop.
    ({"epochs": 2, "eval_every": None}, {"epochs": 4}),
    # Batches of 32 and 18: the longer run measures the diagnostics of its first
    # evaluation at update 1, where the shorter one ended.
    ({"epochs": None, "iterations": 1, "eval_every": None, "batch_size": 32},
     {"iterations": 4}),
])
def test_a_finished_run_extended_equals_one_that_long_from_the_start(
        tmp_path, tiny_npz, short, longer):
    part = tmp_path / "part"
    fit(resolve_config(_raw(tiny_npz, **short)), part, quiet=True)
    _extend(part, *(f"train.{key}={value}" for key, value in longer.items()))

    whole = tmp_path / "whole"
    fit(resolve_config(_raw(tiny_npz, **{**short, **longer})), whole, quiet=True)

    _assert_same_run(whole, part)


def test_an_extended_run_stopped_and_resumed_equals_the_uninterrupted_one(
        tmp_path, tiny_npz, monkeypatch):
    part = tmp_path / "part"
    fit(resolve_config(_raw(tiny_npz, epochs=None, iterations=10)), part, quiet=True)
    with monkeypatch.context() as patch:
        _interrupt_at(patch, 14)  # mid-epoch, between evaluation points
        with pytest.raises(StopRequested):
            _extend(part, "train.iterations=20")
    _extend(part)

    whole = tmp_path / "whole"
    fit(resolve_config(_raw(tiny_npz, epochs=None, iterations=20)), whole, quiet=True)

    _assert_same_run(whole, part)


def test_a_per_epoch_schedule_in_iterations_mode_resumes_and_extends_exactly(
        tmp_path, tiny_npz, monkeypatch):
    # Its "epoch" is the eval_every period (3 updates), not the pass over the data
    # (4 updates): a stop at 5 and an end at 10 both fall inside a period.
    def config(iterations):
        raw = _raw(tiny_npz, epochs=None, iterations=iterations)
        raw["schedule"] = {"name": "exponential", "gamma": 0.5}
        return resolve_config(raw)

    part = tmp_path / "part"
    with monkeypatch.context() as patch:
        _interrupt_at(patch, 5)
        with pytest.raises(StopRequested):
            fit(config(10), part, quiet=True)
    _extend(part)
    _extend(part, "train.iterations=20")

    whole = tmp_path / "whole"
    fit(config(20), whole, quiet=True)

    _assert_same_run(whole, part)
    rates = [r["lr"] for r in _records(whole) if r["kind"] == "iter"]
    assert rates == pytest.approx([0.01 * 0.5 ** (i // 3) for i in range(20)])


def test_an_extended_cosine_run_notes_where_its_rate_jumps(tmp_path, tiny_npz,
                                                          write_config):
    # A cosine spans the whole run: extended from 10 updates to 20, the 11th uses
    # 0.1 (1 + cos(pi 10 / 20)) / 2 = 0.05, where the shorter curve had reached 0.
    raw = _raw(tiny_npz, epochs=None, iterations=10, plots=False)
    raw["schedule"] = {"name": "cosine"}
    raw["optimizer"] = {"name": "sgd", "lr": 0.1}
    config = write_config(raw)
    run = tmp_path / "run"
    assert invoke("fit", config, "--out", run, "--quiet").exit_code == 0

    result = invoke("fit", config, "--resume", run, "--set", "train.iterations=20")

    assert result.exit_code == 0, result.output
    assert ("note: the cosine schedule now spans 20 updates instead of 10: from"
            " iteration 11 its rate is 0.05 (the shorter curve's 0)") in result.stderr
    rates = {r["iteration"]: r["lr"] for r in _records(run) if r["kind"] == "iter"}
    assert rates[10] == pytest.approx(0.1 * (1 + np.cos(np.pi * 9 / 10)) / 2)
    assert rates[11] == pytest.approx(0.05)

    same_length = invoke("fit", config, "--resume", run)
    assert "cosine schedule" not in same_length.output


def test_a_shortened_cosine_run_says_the_updates_before_followed_the_longer_curve(
        tmp_path, tiny_npz, write_config, monkeypatch):
    # Stopped after 10 of 20 updates, resumed as a run of 15: the 11th update uses
    # 0.1 (1 + cos(pi 10 / 15)) / 2 = 0.025, where the 20-update curve is at 0.05.
    raw = _raw(tiny_npz, epochs=None, iterations=20, plots=False)
    raw["schedule"] = {"name": "cosine"}
    raw["optimizer"] = {"name": "sgd", "lr": 0.1}
    config = write_config(raw)
    run = tmp_path / "run"
    with monkeypatch.context() as patch:
        _interrupt_at(patch, 10)
        assert invoke("fit", config, "--out", run, "--quiet").exit_code == 130

    result = invoke("fit", config, "--resume", run, "--set", "train.iterations=15")

    assert result.exit_code == 0, result.output
    assert ("note: the cosine schedule now spans 15 updates instead of 20: from"
            " iteration 11 its rate is 0.025 (the longer curve's 0.05); the updates"
            " before followed the longer curve, so this run differs from one this"
            " long from the start\n") in result.stderr


@pytest.mark.parametrize("schedule", [{"name": "cosine", "warmup": 12},
                                      {"name": "cosine", "floor": 0.1}])
def test_an_extended_cosine_run_that_matches_a_longer_one_gives_no_note(
        tmp_path, tiny_npz, write_config, schedule):
    # Ended within its warmup, or with its floor at lr, the shorter run followed
    # the longer one's curve: the extension equals a run that long from the start.
    raw = _raw(tiny_npz, epochs=None, iterations=10, plots=False)
    raw["schedule"] = schedule
    raw["optimizer"] = {"name": "sgd", "lr": 0.1}
    part, whole = tmp_path / "part", tmp_path / "whole"
    assert invoke("fit", write_config(raw, "short.yaml"), "--out", part,
                  "--quiet").exit_code == 0

    result = invoke("fit", write_config(raw, "short.yaml"), "--resume", part,
                    "--set", "train.iterations=20")

    assert result.exit_code == 0, result.output
    assert "cosine schedule" not in result.output
    raw["train"]["iterations"] = 20
    fit(resolve_config(raw), whole, quiet=True)
    _assert_same_run(whole, part)


def test_an_extended_run_drops_the_final_evaluation_of_the_shorter_one(
        tmp_path, tiny_npz, write_config):
    config = write_config(_raw(tiny_npz, epochs=None, iterations=10, plots=False))
    run = tmp_path / "run"
    assert invoke("fit", config, "--out", run, "--quiet").exit_code == 0
    assert [r["iteration"] for r in _records(run) if r["kind"] == "epoch"] == [
        3, 6, 9, 10]

    result = invoke("fit", config, "--resume", run, "--set", "train.iterations=20")

    assert result.exit_code == 0, result.output
    assert ("note: the evaluation the shorter run made after its last update"
            " (iteration 10) is dropped: this run evaluates every 3 iterations, as"
            " one this long from the start would\n") in result.stderr
    records = _records(run)
    assert [r["iteration"] for r in records if r["kind"] == "epoch"] == [
        3, 6, 9, 12, 15, 18, 20]
    # The "iter" record of update 10 stays: that update is part of the longer run.
    assert [r["iteration"] for r in records if r["kind"] == "iter"] == list(
        range(1, 21))


def test_a_resume_dropping_an_evaluation_keeps_the_iter_record_before_it(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    written = [{"kind": "iter", "iteration": 9}, {"kind": "epoch", "iteration": 9},
               {"kind": "iter", "iteration": 10}, {"kind": "epoch", "iteration": 10},
               {"kind": "event", "iteration": 10, "event": "early_stop"}]
    metrics = run / "metrics.jsonl"
    metrics.write_text("".join(json.dumps(record) + "\n" for record in written))

    directory = RunDirectory(run, resume=True)
    # The evaluation at 10, the checkpoint's own, is dropped.
    directory.continue_after(10, [9], [9, 10])
    directory.record({"kind": "iter", "iteration": 11})
    directory.checkpoint_saving()
    directory.checkpoint_saved()
    directory.close()

    assert [json.loads(line) for line in metrics.read_text().splitlines()] == (
        written[:3] + [{"kind": "iter", "iteration": 11}])


def _best_from_a_dropped_evaluation(tmp_path, tiny_npz, write_config):
    """A finished run of 10 updates (eval_every 3) whose best.npz holds the weights
    of its final evaluation, at 10, though the best evaluation an extension keeps
    is at 9: (its config file, its folder, its best.npz)."""
    raw = tiny_config_dict(tiny_npz)
    raw["train"].update(epochs=None, iterations=10, eval_every=3, plots=False,
                        monitor="val_loss")
    config = write_config(raw)
    run = tmp_path / "run"
    assert invoke("fit", config, "--out", run, "--quiet").exit_code == 0
    last, best = run / "checkpoints" / "last.npz", run / "checkpoints" / "best.npz"
    assert load_checkpoint(best).meta["solver"]["progress"]["iteration"] == 10
    # The final evaluation had the lowest validation loss. Had the loss risen after
    # iteration 9, no evaluation of the longer run would beat iteration 9's; a best
    # value of 0 from before the final evaluation stands for that.
    checkpoint = load_checkpoint(last)
    before = checkpoint.meta["solver"]["before_final_evaluation"]["progress"]
    before.update(best_value=0.0, best_epoch=3, best_iteration=9)
    save_checkpoint(last, checkpoint.meta, checkpoint.arrays)
    return config, run, best


def _holds_iteration_10(best):
    return (f"Best val_loss 0.0000 at epoch 3 (iteration 9), but {best} holds the"
            " weights of iteration 10, which the shorter run's final evaluation"
            " found better (those of the best iteration were not kept).")


def test_an_extension_says_when_best_npz_holds_a_dropped_evaluations_weights(
        tmp_path, tiny_npz, write_config):
    config, run, best = _best_from_a_dropped_evaluation(tmp_path, tiny_npz,
                                                        write_config)

    result = invoke("fit", config, "--resume", run, "--set", "train.iterations=20")

    assert result.exit_code == 0, result.output
    assert _holds_iteration_10(best) in result.stdout
    assert load_checkpoint(best).meta["solver"]["progress"]["iteration"] == 10


@pytest.mark.parametrize("how", ["extended again", "stopped and resumed"])
def test_the_summary_says_what_best_npz_holds_after_any_number_of_resumes(
        tmp_path, tiny_npz, write_config, monkeypatch, how):
    config, run, best = _best_from_a_dropped_evaluation(tmp_path, tiny_npz,
                                                        write_config)
    if how == "extended again":
        first = invoke("fit", config, "--resume", run, "--set",
                       "train.iterations=20", "--quiet")
        assert first.exit_code == 0, first.output
        result = invoke("fit", config, "--resume", run, "--set",
                        "train.iterations=30")
    else:
        with monkeypatch.context() as patch:
            _interrupt_at(patch, 14)
            stopped = invoke("fit", config, "--resume", run, "--set",
                             "train.iterations=20", "--quiet")
        assert stopped.exit_code == 130, stopped.output
        result = invoke("fit", config, "--resume", run)

    assert result.exit_code == 0, result.output
    assert _holds_iteration_10(best) in result.stdout
    assert load_checkpoint(best).meta["solver"]["progress"]["iteration"] == 10


def _short_run(tiny_npz, write_config, run):
    """A finished run of 10 updates that ends with a final evaluation (eval_every
    3): (its config file, its files as they were)."""
    config = write_config(_raw(tiny_npz, epochs=None, iterations=10, plots=False))
    assert invoke("fit", config, "--out", run, "--quiet").exit_code == 0
    return config, _run_files(run)


def _run_files(run):
    return {name: (run / name).read_bytes()
            for name in ("config.yaml", "metrics.jsonl")}


def _fail_after_update_11(monkeypatch, run):
    original = Solver._step

    def step(self, rows):
        original(self, rows)
        if self.progress.iteration == 11:  # recorded, before the save at 12
            raise TrainingError("the loss became inf at iteration 12")

    monkeypatch.setattr(Solver, "_step", step)


def _put_nan_in_last_npz(monkeypatch, run):
    last = run / "checkpoints" / "last.npz"
    checkpoint = load_checkpoint(last)
    next(iter(checkpoint.arrays["param"].values()))[...] = np.nan
    save_checkpoint(last, checkpoint.meta, checkpoint.arrays)  # refused on resume


@pytest.mark.parametrize("fail, code", [(_fail_after_update_11, 1),
                                        (_put_nan_in_last_npz, 2)])
def test_a_failed_extension_leaves_the_run_directory_as_it_was(
        tmp_path, tiny_npz, write_config, monkeypatch, fail, code):
    run = tmp_path / "run"
    config, files = _short_run(tiny_npz, write_config, run)
    fail(monkeypatch, run)

    result = invoke("fit", config, "--resume", run, "--set", "train.iterations=20")

    assert result.exit_code == code, result.output
    # Its final evaluation's records kept, its config still the one of 10 updates.
    assert _run_files(run) == files


# Runs nntrain's command line with argv[2:], killing itself with SIGKILL at the
# point argv[1] names, in an extension from 10 updates to 20 (eval_every 3).
KILLED_AT = """
import os, signal, sys
from nntrain.cli import main
from nntrain.train import rundir, solver

def kill(*args):
    os.kill(os.getpid(), signal.SIGKILL)

point = sys.argv[1]
if point == "update 12":  # update 11 recorded; the first save is at 12
    step = solver.Solver._step
    def killing_step(self, rows):
        if self.progress.iteration == 11:
            kill()
        step(self, rows)
    solver.Solver._step = killing_step
elif point == "first save":  # last.npz at 12 saved; metrics.jsonl not cut yet
    rundir.RunDirectory.checkpoint_saved = kill
elif point == "config":  # metrics.jsonl cut; config.yaml not written yet
    write = rundir.write_text_atomically
    def killing_write(path, text):
        if path.name == "config.yaml":
            kill()
        write(path, text)
    rundir.write_text_atomically = killing_write
sys.argv = ["nntrain", *sys.argv[2:]]
main()
"""


@pytest.mark.parametrize("point", ["update 12", "first save", "config"])
def test_an_extension_killed_at_any_point_leaves_a_run_that_resumes(
        tmp_path, tiny_npz, write_config, point):
    run, whole = tmp_path / "run", tmp_path / "whole"
    config, files = _short_run(tiny_npz, write_config, run)
    records = _records(run)

    killed = subprocess.run(
        [sys.executable, "-c", KILLED_AT, point, "fit", str(config), "--resume",
         str(run), "--set", "train.iterations=20", "--quiet"],
        cwd=Path(__file__).parents[1], capture_output=True, text=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr

    longer = ["--set", "train.iterations=20"]
    if point == "update 12":
        # Killed before its first save: the run of 10 updates, as it was, but for
        # the killed run's record of update 11, which the next resume drops.
        again = invoke("fit", config, "--resume", run)
        assert "is from a finished run (10 iterations" in again.stdout
        assert [r for r in _records(run) if r["iteration"] <= 10] == records
        assert (run / "config.yaml").read_bytes() == files["config.yaml"]
    else:
        longer = []  # last.npz holds the longer run, which goes on by itself
    resumed = invoke("fit", config, "--resume", run, "--quiet", *longer)
    assert resumed.exit_code == 0, resumed.output

    _fit_straight(config, whole, iterations=20)
    _assert_same_run(whole, run)
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["train"]["iterations"] == 20


def test_a_checkpoint_saved_at_an_evaluation_holds_its_early_stopping_count(
        tmp_path, tiny_npz, write_config):
    raw = tiny_config_dict(tiny_npz)
    # No evaluation gains 100 on the first: the ones at 6, 9 and 12 are bad, and
    # the third ends the run at 12.
    raw["train"].update(epochs=None, iterations=6, eval_every=3, plots=False,
                        monitor="val_loss",
                        early_stopping={"patience": 3, "min_delta": 100.0})
    config = write_config(raw)
    part, whole = tmp_path / "part", tmp_path / "whole"
    assert invoke("fit", config, "--out", part, "--quiet").exit_code == 0
    saved = load_checkpoint(part / "checkpoints" / "last.npz").meta["solver"]
    assert saved["progress"]["bad_evaluations"] == 1

    _extend_by_cli(config, part, iterations=30)
    _fit_straight(config, whole, iterations=30)

    _assert_same_run(whole, part)
    assert [r["iteration"] for r in _records(part) if r["kind"] == "event"] == [12]


def test_a_stop_during_the_last_update_waits_for_the_final_evaluation(
        tmp_path, tiny_npz, monkeypatch):
    config = resolve_config(_raw(tiny_npz, epochs=None, iterations=10, plots=False))
    part, whole = tmp_path / "part", tmp_path / "whole"
    with monkeypatch.context() as patch:
        _interrupt_at(patch, 10)  # not an evaluation point: eval_every is 3
        with pytest.raises(StopRequested) as stopped:
            fit(config, part, quiet=True)
    assert stopped.value.exit_code == 130
    fit(config, whole, quiet=True)

    _assert_same_run(whole, part)
    best = [_arrays(run / "checkpoints" / "best.npz") for run in (whole, part)]
    assert all(np.array_equal(best[0][key], best[1][key]) for key in best[0])


def test_a_resume_makes_the_final_evaluation_its_checkpoint_lacks(
        tmp_path, tiny_npz, write_config, monkeypatch):
    # Without diagnostics: the final record's are measured during the last update,
    # and no checkpoint keeps them.
    config = write_config(_raw(tiny_npz, epochs=None, iterations=10, plots=False,
                               diagnostics=False))
    part, whole = tmp_path / "part", tmp_path / "whole"
    with monkeypatch.context() as patch:
        # A checkpoint saved after the last update, before the final evaluation:
        # what a stop there left before, or a kill after a snapshot there.
        patch.setattr(Solver, "_final_evaluation",
                      lambda self: self.save(self.run.checkpoints / "last.npz"))
        assert invoke("fit", config, "--out", part, "--quiet").exit_code == 0

    result = invoke("fit", config, "--resume", part)

    assert result.exit_code == 0, result.output
    assert ("note: the run was stopped after its last update, before the evaluation"
            " that follows it; it makes that evaluation now\n") in result.stderr
    assert invoke("fit", config, "--out", whole, "--quiet").exit_code == 0
    _assert_same_run(whole, part)


def test_same_config_and_seed_give_identical_files(tmp_path, tiny_npz):
    for name in ("a", "b"):
        fit(resolve_config(_raw(tiny_npz, epochs=3)), tmp_path / name, quiet=True)
    _assert_same_run(tmp_path / "a", tmp_path / "b")


def test_resume_through_the_cli_extends_epochs_and_refuses_other_changes(
        tmp_path, tiny_npz, write_config):
    config = write_config(_raw(tiny_npz, epochs=2))
    run = tmp_path / "run"
    assert invoke("fit", config, "--out", run, "--quiet").exit_code == 0

    finished = invoke("fit", config, "--resume", run)
    assert finished.exit_code == 0 and "nothing to do" in finished.stdout

    refused = invoke("fit", config, "--resume", run, "--set", "optimizer.lr=1")
    assert refused.exit_code == 2
    assert ("only train.epochs, train.iterations, train.threads and data.path (where"
            " the data lies now) may change") in refused.stderr

    # A bad new length is the override's fault, not the checkpoint's.
    bad_length = invoke("fit", config, "--resume", run, "--set", "train.epochs=0")
    assert bad_length.exit_code == 2
    assert bad_length.stderr.startswith("error: --set train.epochs=0: invalid"
                                        " train.epochs: 0")

    extended = invoke("fit", config, "--resume", run, "--set", "train.epochs=4",
                      "--quiet")
    assert extended.exit_code == 0, extended.output
    meta = load_checkpoint(run / "checkpoints" / "last.npz").meta
    assert meta["solver"]["progress"]["epoch"] == 4

    # The thread count may change too (a smaller machine), with a warning.
    fewer_threads = invoke("fit", config, "--resume", run, "--set", "train.epochs=5",
                           "--set", "train.threads=1")
    assert fewer_threads.exit_code == 0, fewer_threads.output
    assert "train.threads is now 1 (it was null)" in fewer_threads.output
    meta = load_checkpoint(run / "checkpoints" / "last.npz").meta
    assert meta["solver"]["progress"]["epoch"] == 5
    assert meta["config"]["train"]["threads"] == 1


def test_resume_of_a_run_directory_skips_a_damaged_last_checkpoint(tmp_path,
                                                                    tiny_npz,
                                                                    write_config):
    config = write_config(_raw(tiny_npz, epochs=3))
    run = tmp_path / "run"
    assert invoke("fit", config, "--out", run, "--quiet").exit_code == 0
    last = run / "checkpoints" / "last.npz"
    last.write_bytes(last.read_bytes()[:100])

    path, _, notes = find_checkpoint(run)
    assert path.name == "best.npz"
    assert any("skipped last.npz" in note for note in notes)


def _start_fit(tmp_path, tiny_npz, epochs=100000, extra=()):
    raw = tiny_config_dict(tiny_npz)
    raw["train"].update(epochs=epochs, eval_every=1, plots=False)
    config = tmp_path / "long.yaml"
    config.write_text(yaml.safe_dump(raw))
    run = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "nntrain", "fit", str(config), "--out", str(run),
         "--quiet", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return process, config, run


def _wait_for_checkpoint(run, process, timeout=60):
    deadline = time.monotonic() + timeout
    while not (run / "checkpoints" / "last.npz").exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    time.sleep(0.3)


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130),
                                          (signal.SIGTERM, 143)])
def test_signal_saves_last_checkpoint_and_exits_with_its_code(tmp_path, tiny_npz,
                                                               signum, code):
    process, config, run = _start_fit(tmp_path, tiny_npz)
    _wait_for_checkpoint(run, process)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)

    assert process.returncode == code, stderr
    assert "--resume" in stderr and "Traceback" not in stderr
    checkpoint = load_checkpoint(run / "checkpoints" / "last.npz")
    assert checkpoint.meta["solver"]["progress"]["iteration"] > 0


def test_sigkill_during_saves_always_leaves_a_loadable_checkpoint(tmp_path,
                                                                 tiny_npz):
    # eval_every=1 saves last.npz after every update; kill at varied moments.
    for trial in range(3):
        folder = tmp_path / f"trial{trial}"
        folder.mkdir()
        process, _, run = _start_fit(folder, tiny_npz)
        _wait_for_checkpoint(run, process)
        time.sleep(0.05 * trial)
        os.kill(process.pid, signal.SIGKILL)
        process.communicate(timeout=60)
        checkpoint = load_checkpoint(run / "checkpoints" / "last.npz")
        assert checkpoint.meta["solver"]["progress"]["iteration"] >= 1
        leftovers = [p.name for p in (run / "checkpoints").iterdir()
                     if p.name not in ("last.npz", "best.npz")]
        # A kill mid-write may leave a temporary file, never a damaged checkpoint.
        assert all(name.endswith(".tmp") for name in leftovers), leftovers


def test_a_full_disk_while_saving_is_one_line_and_exit_1(tmp_path, tiny_npz,
                                                         write_config, monkeypatch):
    import errno

    import nntrain.train.solver

    def full_disk(path, meta, arrays):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(nntrain.train.solver, "save_checkpoint", full_disk)
    result = invoke("fit", write_config(_raw(tiny_npz, epochs=2)), "--out",
                    tmp_path / "run", "--quiet")
    assert result.exit_code == 1
    # The first evaluation is the best so far: best.npz is saved before last.npz.
    assert result.stderr.strip().splitlines() == [
        f"error: cannot write {tmp_path / 'run' / 'checkpoints' / 'best.npz'} (No"
        " space left on device): free some space, or choose another --out; the run"
        " has no checkpoint yet to resume from"]


def test_a_resumed_runs_failed_save_says_to_resume_a_copy(tmp_path, tiny_npz,
                                                        write_config, monkeypatch):
    import errno

    import nntrain.train.solver

    config = write_config(_raw(tiny_npz, epochs=2))
    run = tmp_path / "run"
    assert invoke("fit", config, "--out", run, "--quiet").exit_code == 0

    def full_disk(path, meta, arrays):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(nntrain.train.solver, "save_checkpoint", full_disk)
    result = invoke("fit", config, "--resume", run, "--set", "train.epochs=3",
                    "--quiet")

    # Another --out is refused for a resumed run: the message must not offer it.
    assert result.exit_code == 1
    assert re.fullmatch(
        re.escape(f"error: cannot write {run / 'checkpoints'}/") + r"\w+\.npz"
        + re.escape(" (No space left on device): free some space, or copy the run"
                    " directory and resume the copy; ") + "[^\n]+\n", result.stderr)


def test_a_resume_into_an_unwritable_checkpoints_folder_stops_before_training(
        tmp_path, tiny_npz, write_config, monkeypatch):
    import tempfile

    config = write_config(_raw(tiny_npz, epochs=2))
    run = tmp_path / "run"
    assert invoke("fit", config, "--out", run, "--quiet").exit_code == 0
    before = (run / "metrics.jsonl").read_bytes()
    make_file = tempfile.TemporaryFile

    def refused_in_checkpoints(*args, dir=None, **options):
        # What a folder without write permission does for a user other than root,
        # which the tests may run as.
        if dir is not None and Path(dir).name == "checkpoints":
            raise PermissionError(13, "Permission denied")
        return make_file(*args, dir=dir, **options)

    monkeypatch.setattr(tempfile, "TemporaryFile", refused_in_checkpoints)
    result = invoke("fit", config, "--resume", run, "--set", "train.epochs=3")

    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"error: cannot write to {run / 'checkpoints'} (Permission denied); check"
        " its permissions, or copy the run directory and resume the copy"]
    assert (run / "metrics.jsonl").read_bytes() == before


def test_resume_refuses_to_continue_in_another_folder(tmp_path, tiny_npz,
                                                      write_config):
    config = write_config(_raw(tiny_npz, epochs=2))
    run = tmp_path / "run"
    assert invoke("fit", config, "--out", run, "--quiet").exit_code == 0
    result = invoke("fit", config, "--resume", run, "--out", tmp_path / "elsewhere",
                    "--set", "train.epochs=3")
    assert result.exit_code == 2
    assert "continues in its own run directory" in result.stderr
    assert not (tmp_path / "elsewhere").exists()


@pytest.mark.parametrize("given, kept, overrides, note", [
    (1, 2, [], "sets train.threads: 1; the resumed run keeps the checkpoint's 2;"
               " add --set train.threads=1 to change it"),
    (None, 2, [], "sets train.threads: null; the resumed run keeps the checkpoint's"
                  " 2; add --set train.threads=null to change it"),
    (2, 2, [], None),
    (1, 3, ["train.threads=3"], None),  # the --set decides, and is warned about
])
def test_a_config_file_setting_other_threads_gets_a_note(given, kept, overrides,
                                                         note):
    assert threads_note({"train": {"threads": given}}, {"train": {"threads": kept}},
                        overrides) == note


def test_fit_refuses_a_path_in_place_of_a_config(tmp_path, tiny_config):
    with pytest.raises(TypeError, match=r"^config is PosixPath; give a config dict,"
                       r" as nntrain\.load_config\(path\) returns"):
        fit(tiny_config, tmp_path / "run")


def test_fit_fills_in_the_defaults_of_a_hand_made_config(tmp_path, tiny_npz):
    raw = tiny_config_dict(tiny_npz)  # no schedule, no init, ...
    result = fit(raw, tmp_path / "run", quiet=True)
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["schedule"] == {"name": "constant"}
    assert result.history[-1]["epoch"] == 3


@pytest.fixture
def finished_run(tmp_path, tiny_npz, write_config):
    """A finished 2-epoch run of the tiny data: (its config file, its folder)."""
    raw = tiny_config_dict(tiny_npz)
    raw["train"].update(epochs=2, plots=False)
    config = write_config(raw)
    run = tmp_path / "run"
    result = invoke("fit", config, "--out", run, "--quiet")
    assert result.exit_code == 0, result.output
    return config, run


def _append(path, data: bytes):
    with open(path, "ab") as file:
        file.write(data)


def _replace_line(path, number, text):
    lines = path.read_text().splitlines()
    lines[number - 1] = text
    path.write_text("".join(line + "\n" for line in lines))


@pytest.mark.parametrize("damage, message", [
    (lambda m: _append(m, b"\x80\xb3\xff junk\n\x00\x9c\n"),
     r"metrics\.jsonl, line 4: not a JSON object, as every metrics record is; the"
     r" file is damaged: fix or delete that line, or start over with --force"),
    (lambda m: _append(m, b"[1, 2]\n"), r"metrics\.jsonl, line 4: not a JSON object"),
    (lambda m: _replace_line(m, 2, '{"kind": "epoch", "iteration": "x"}'),
     r'metrics\.jsonl, line 2: "iteration" is "x", not a count of updates'),
    (lambda m: _replace_line(m, 1, '{"kind": "iter", "iteration": -3}'),
     r'metrics\.jsonl, line 1: "iteration" is -3, not a count of updates'),
    # Only a last line without its newline can be a write cut short by a kill.
    (lambda m: _append(m, b'{"kind": "iter", "itera\n'),
     r"metrics\.jsonl, line 4: not a JSON object"),
    (lambda m: (m.unlink(), m.mkdir()),
     r"metrics\.jsonl is not a file; the run's metrics\.jsonl must be one"),
])
def test_a_resume_refuses_a_damaged_metrics_file_naming_the_line(finished_run,
                                                                 damage, message):
    config, run = finished_run
    metrics = run / "metrics.jsonl"
    # Epoch records at iterations 4 and 8, an iter record at 5.
    assert len(metrics.read_text().splitlines()) == 3
    damage(metrics)
    before = metrics.read_bytes() if metrics.is_file() else None

    result = invoke("fit", config, "--resume", run, "--set", "train.epochs=3")

    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert re.search(message, result.stderr), result.stderr
    if before is not None:
        assert metrics.read_bytes() == before


def test_a_resume_drops_a_last_line_cut_short_by_a_kill(finished_run):
    config, run = finished_run
    metrics = run / "metrics.jsonl"
    whole = metrics.read_text()
    _append(metrics, b'{"kind": "iter", "iteration": 9, "lo')

    result = invoke("fit", config, "--resume", run, "--set", "train.epochs=3",
                    "--quiet")

    assert result.exit_code == 0, result.output
    text = metrics.read_text()
    assert text.startswith(whole) and text.endswith("}\n")
    assert [json.loads(line)["iteration"] for line in text.splitlines()] == [
        4, 5, 8, 10, 12]


def test_a_resume_without_metrics_says_that_file_is_missing(finished_run):
    config, run = finished_run
    (run / "metrics.jsonl").unlink()

    result = invoke("fit", config, "--resume", run, "--set", "train.epochs=3")

    assert result.exit_code == 2
    assert result.stderr == (
        f"error: {(run / 'metrics.jsonl').resolve()} is missing, so the run's"
        " records are gone; put the file back, or start over with --force (an"
        " empty metrics.jsonl resumes the run without its earlier records)\n")


def _move_data(tiny_npz, tmp_path):
    moved = tmp_path / "moved" / "tiny.npz"
    moved.parent.mkdir()
    tiny_npz.rename(moved)
    return moved


def test_a_resumed_run_finds_its_moved_data_through_set_data_path(
        finished_run, tiny_npz, tmp_path, monkeypatch):
    config, run = finished_run
    moved = _move_data(tiny_npz, tmp_path)

    lost = invoke("fit", config, "--resume", run, "--set", "train.epochs=3")
    assert lost.exit_code == 2
    assert lost.stderr == (f"error: npz file not found: {tiny_npz}; if the data"
                           " moved, pass its new place with --set data.path=NEW\n")

    monkeypatch.chdir(moved.parent)  # a relative path is stored absolute
    resumed = invoke("fit", config, "--resume", run, "--set", "train.epochs=3",
                     "--set", "data.path=tiny.npz", "--quiet")
    assert resumed.exit_code == 0, resumed.output
    meta = load_checkpoint(run / "checkpoints" / "last.npz").meta
    assert meta["solver"]["progress"]["epoch"] == 3
    assert meta["config"]["data"]["path"] == str(moved)
    assert yaml.safe_load((run / "config.yaml").read_text())["data"]["path"] == str(
        moved)


def test_a_resume_refuses_other_data_of_the_same_shape(finished_run, tiny_npz,
                                                       write_npz):
    config, run = finished_run
    other = write_npz("other.npz", **tiny_arrays(seed=1))
    records = (run / "metrics.jsonl").read_bytes()

    result = invoke("fit", config, "--resume", run, "--set", "train.epochs=3",
                    "--set", f"data.path={other}")

    assert result.exit_code == 2
    assert result.stderr == (
        f"error: the data in {other} is not the data the checkpoint was trained on"
        " (its train split holds other samples or labels); resume with --set"
        " data.path=NEW pointing at the data the run was trained on\n")
    assert (run / "metrics.jsonl").read_bytes() == records


def test_a_resume_refuses_data_whose_test_split_alone_differs(finished_run,
                                                               write_npz):
    config, run = finished_run
    arrays = tiny_arrays()
    arrays["X_test"][0, 0] += 1.0  # the split a resumed run does not load
    other = write_npz("other.npz", **arrays)

    result = invoke("fit", config, "--resume", run, "--set", "train.epochs=3",
                    "--set", f"data.path={other}")

    assert result.exit_code == 2, result.output
    assert ("(its test split holds other samples or labels); resume with --set"
            " data.path=NEW") in result.stderr


def test_a_resume_takes_a_config_file_that_sets_no_length(finished_run,
                                                          write_config):
    config, run = finished_run
    raw = yaml.safe_load(config.read_text())
    del raw["train"]["epochs"]  # the checkpoint and --set give the run's length
    lengthless = write_config(raw, "lengthless.yaml")

    finished = invoke("fit", lengthless, "--resume", run)
    extended = invoke("fit", lengthless, "--resume", run, "--set", "train.epochs=3",
                      "--quiet")

    assert finished.exit_code == 0, finished.output
    assert finished.stderr == ""  # no note: only the length differs
    assert "is from a finished run" in finished.stdout
    assert extended.exit_code == 0, extended.output
    meta = load_checkpoint(run / "checkpoints" / "last.npz").meta
    assert meta["solver"]["progress"]["epoch"] == 3


def test_a_resume_refuses_the_same_arrays_with_other_class_names(finished_run,
                                                                  write_npz):
    config, run = finished_run
    named = write_npz("named.npz", **tiny_arrays(), class_names=["a", "b", "c"])
    last = (run / "checkpoints" / "last.npz").read_bytes()

    result = invoke("fit", config, "--resume", run, "--set", "train.epochs=3",
                    "--set", f"data.path={named}")

    assert result.exit_code == 2
    assert result.stderr == (
        f"error: the data in {named} is not the data the checkpoint was trained on"
        " (class 0 is named 'a' in the data, '0' in the checkpoint); resume with"
        " --set data.path=NEW pointing at the data the run was trained on\n")
    assert (run / "checkpoints" / "last.npz").read_bytes() == last


def test_eval_refuses_the_same_arrays_with_other_class_names(finished_run,
                                                             write_npz):
    _, run = finished_run
    best = run / "checkpoints" / "best.npz"
    named = write_npz("named.npz", **tiny_arrays(), class_names=["0", "1", "two"])
    same = write_npz("same.npz", **tiny_arrays(), class_names=["0", "1", "2"])

    result = invoke("eval", best, "--data", named)

    assert result.exit_code == 2
    assert result.stderr == (
        f"error: the data in {named} is not the data the checkpoint was trained on"
        " (class 2 is named 'two' in the data, '2' in the checkpoint); point --data"
        " at the data the checkpoint was trained on\n")
    assert invoke("eval", best, "--data", same).exit_code == 0


def test_predict_names_the_classes_as_the_checkpoint_recorded(
        tmp_path, write_npz, write_config):
    named = write_npz("named.npz", **tiny_arrays(), class_names=["a", "b", "c"])
    raw = tiny_config_dict(named)
    raw["train"].update(epochs=1, plots=False)
    run = tmp_path / "run"
    assert invoke("fit", write_config(raw), "--out", run, "--quiet").exit_code == 0
    samples = tmp_path / "samples.npy"
    np.save(samples, tiny_arrays()["X_test"][:2])

    result = invoke("predict", run / "checkpoints" / "best.npz", samples)

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == "index,class,name,p_a,p_b,p_c"


def test_data_checks_skip_class_names_a_spec_does_not_record(finished_run,
                                                             write_npz):
    _, run = finished_run
    restored = restore(run / "checkpoints" / "best.npz")
    spec = {key: value for key, value in restored.data.items()
            if key != "class_names"}
    named = write_npz("named.npz", **tiny_arrays(), class_names=["a", "b", "c"])
    config = {**restored.config, "data": {**restored.config["data"],
                                          "path": str(named)}}

    prepared = prepare_data(config, restored.preprocessor, spec=spec)

    assert prepared.dataset.class_names == ("a", "b", "c")


def test_eval_of_a_run_whose_data_moved_says_to_pass_data(finished_run, tiny_npz,
                                                          tmp_path, write_npz):
    _, run = finished_run
    best = run / "checkpoints" / "best.npz"
    moved = _move_data(tiny_npz, tmp_path)

    lost = invoke("eval", best)
    assert lost.exit_code == 2
    assert lost.stderr == (f"error: npz file not found: {tiny_npz}; if the data"
                           " moved, pass its new place with --data PATH\n")
    assert invoke("eval", best, "--data", moved).exit_code == 0
    other = invoke("eval", best, "--data", write_npz("o.npz", **tiny_arrays(seed=1)))
    assert other.exit_code == 2
    assert ("(its test split holds other samples or labels); point --data at the"
            " data the checkpoint was trained on") in other.stderr


@pytest.mark.parametrize("trained, given, words", [
    ("<f4", "<f8", "float64, where its run read float32 (save the arrays again as"
                   " float32: X.astype(np.float32))"),
    (">f4", "<f4", "float32, little-endian, where its run read float32, big-endian"
                   " (save the arrays again as float32, big-endian:"
                   " X.astype('>f4'))"),
    ("<f4", ">f4", "float32, big-endian, where its run read float32, little-endian"
                   " (save the arrays again as float32, little-endian:"
                   " X.astype(np.float32))"),
    ("<f4", ">f8", "float64, big-endian, where its run read float32, little-endian"
                   " (save the arrays again as float32, little-endian:"
                   " X.astype(np.float32))"),
])
def test_eval_of_the_same_values_in_another_type_or_byte_order_names_both(
        tmp_path, write_npz, write_config, trained, given, words):
    def saved_as(name, dtype):
        return write_npz(name, **{
            key: value.astype(np.float32).astype(dtype) if key.startswith("X")
            else value for key, value in tiny_arrays().items()})

    raw = tiny_config_dict(saved_as("trained.npz", trained))
    raw["train"].update(epochs=1, plots=False)
    run = tmp_path / "run"
    assert invoke("fit", write_config(raw), "--out", run, "--quiet").exit_code == 0
    other = saved_as("given.npz", given)

    result = invoke("eval", run / "checkpoints" / "best.npz", "--data", other)

    assert result.exit_code == 2
    assert result.stderr == (
        f"error: the data in {other} holds the values of the checkpoint's test split,"
        f" but as {words}; point --data at the data the checkpoint was trained on\n")


def test_eval_of_data_without_the_runs_x_val_says_it_may_lack_it(
        tmp_path, write_npz, write_config):
    arrays = tiny_arrays()
    with_val = {**arrays, "X_val": arrays["X_test"][:6], "y_val": arrays["y_test"][:6]}
    raw = tiny_config_dict(write_npz("val.npz", **with_val))
    raw["train"].update(epochs=1, plots=False)
    run = tmp_path / "run"
    assert invoke("fit", write_config(raw), "--out", run, "--quiet").exit_code == 0
    without = write_npz("noval.npz", **arrays)
    trained = len(arrays["y_train"])

    result = invoke("eval", run / "checkpoints" / "best.npz", "--data", without)

    assert result.exit_code == 2
    assert result.stderr == (
        f"error: the data in {without} holds {trained} training samples, the"
        " checkpoint's training split alone, and no X_val (its run also had 6"
        " validation samples: an X_val and y_val this file lacks?); point --data at"
        " the data the checkpoint was trained on\n")


def test_a_finished_run_of_iterations_is_told_to_set_train_iterations(
        tmp_path, tiny_npz, write_config):
    raw = tiny_config_dict(tiny_npz)
    raw["train"].update(epochs=None, iterations=6, plots=False)
    config = write_config(raw)
    run = tmp_path / "run"
    assert invoke("fit", config, "--out", run, "--quiet").exit_code == 0

    result = invoke("fit", config, "--resume", run)

    assert result.exit_code == 0
    assert result.stdout == (
        f"{run / 'checkpoints' / 'last.npz'} is from a finished run (6 iterations,"
        " epoch 2): nothing to do. To train longer, extend it past those: --set"
        " train.iterations=N with N > 6\n")
    extended = invoke("fit", config, "--resume", run, "--set", "train.iterations=7",
                      "--quiet")
    assert extended.exit_code == 0, extended.output


def test_a_run_early_stopping_ended_is_not_told_to_extend_it(tmp_path, tiny_npz,
                                                              write_config):
    raw = tiny_config_dict(tiny_npz)
    # No evaluation lowers the validation loss by 100: the second one ends the run.
    raw["train"].update(epochs=5, plots=False, monitor="val_loss",
                        early_stopping={"patience": 1, "min_delta": 100.0})
    config = write_config(raw)
    run = tmp_path / "run"
    assert invoke("fit", config, "--out", run, "--quiet").exit_code == 0

    result = invoke("fit", config, "--resume", run, "--set", "train.epochs=9")

    assert result.exit_code == 0
    assert result.stdout == (
        f"{run / 'checkpoints' / 'last.npz'} is from a run that early stopping"
        " ended (8 iterations, epoch 2): nothing to do, and it cannot train on. To"
        " train longer, start it over with --force and a larger"
        " train.early_stopping.patience (or none)\n")


def test_a_run_its_final_evaluation_stopped_early_can_be_extended(
        tmp_path, tiny_npz, write_config):
    raw = tiny_config_dict(tiny_npz)
    # No evaluation lowers the validation loss by 100, so the second one ends the
    # run: with 4 updates and eval_every 3 that is the final evaluation, after
    # update 4, which a run of 8 updates does not make; it stops after update 6.
    raw["train"].update(epochs=None, iterations=4, eval_every=3, plots=False,
                        log_every=1, monitor="val_loss",
                        early_stopping={"patience": 1, "min_delta": 100.0})
    config = write_config(raw)
    part, whole = tmp_path / "part", tmp_path / "whole"
    assert invoke("fit", config, "--out", part, "--quiet").exit_code == 0
    assert [r["kind"] for r in _records(part) if r["iteration"] == 4] == [
        "iter", "epoch", "event"]

    unchanged = invoke("fit", config, "--resume", part)
    assert unchanged.exit_code == 0
    assert ("is from a finished run (4 iterations, epoch 1): nothing to do. To"
            " train longer, extend it past those: --set train.iterations=N with"
            " N > 4") in unchanged.stdout
    _extend_by_cli(config, part, iterations=8)
    _fit_straight(config, whole, iterations=8)

    assert _records(part) == _records(whole)
    assert [r["kind"] for r in _records(whole) if r["kind"] != "iter"] == [
        "epoch", "epoch", "event"]


def test_commands_printed_to_paste_quote_their_paths(tmp_path, tiny_npz,
                                                     write_config, monkeypatch):
    raw = tiny_config_dict(tiny_npz)
    raw["train"].update(epochs=2, plots=False)
    config = write_config(raw)
    run = tmp_path / "my run's"
    done = invoke("fit", config, "--out", run)
    assert done.exit_code == 0, done.output
    best = shlex.quote(str(run / "checkpoints" / "best.npz"))
    assert f"Measure it on the test split with: nntrain eval {best}\n" in done.stdout

    other = tmp_path / "stopped run"
    with monkeypatch.context() as patch:
        _interrupt_at(patch, 3)
        stopped = invoke("fit", config, "--out", other, "--quiet")
    assert stopped.exit_code == 130
    command = stopped.stderr.split("Resume with: ")[1].strip()
    assert shlex.split(command) == ["nntrain", "fit", str(other / "config.yaml"),
                                    "--resume", str(other)]


@pytest.mark.plots
def test_the_plot_command_printed_without_matplotlib_quotes_its_path(tmp_path,
                                                                     monkeypatch):
    from nntrain.pipeline import _write_plots

    for name in [name for name in sys.modules if name.split(".")[0] == "matplotlib"]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    lines = []
    reporter = type("Lines", (), {"line": staticmethod(lines.append)})()
    _write_plots(tmp_path / "a run", reporter)
    assert lines[0].endswith(
        f"then: nntrain plot {shlex.quote(str(tmp_path / 'a run'))})")


def test_an_empty_resume_is_refused_not_taken_for_the_current_folder(
        finished_run, monkeypatch):
    config, run = finished_run
    monkeypatch.chdir(run / "checkpoints")  # holds .npz files a resume could take

    result = invoke("fit", config, "--resume", "", "--set", "train.epochs=3")

    assert result.exit_code == 2
    assert result.stderr == ("error: --resume is empty; give a checkpoint file or a"
                             " run directory\n")


# Runs nntrain's command line with argv[4:]; at the save of the file argv[1] names
# at iteration argv[2], argv[3] says what happens: "kill" (SIGKILL before that
# save), "full disk" (that write fails), or "old order" (last.npz saved first and a
# kill before best.npz: what an earlier nntrain left).
KILLED_AT_SAVE = """
import errno, os, sys
from nntrain.cli import main
from nntrain.train import solver

name, at, how = sys.argv[1], int(sys.argv[2]), sys.argv[3]
save, write = solver.Solver.save, solver.save_checkpoint

def killing_save(self, path):
    if path.name == name and self.progress.iteration == at:
        if how == "old order":
            save(self, path.parent / "last.npz")
        os._exit(137)
    save(self, path)

def failing_write(path, meta, arrays):
    if path.name == name and meta["solver"]["progress"]["iteration"] == at:
        raise OSError(errno.ENOSPC, "No space left on device")
    write(path, meta, arrays)

if how == "full disk":
    solver.save_checkpoint = failing_write
else:
    solver.Solver.save = killing_save
sys.argv = ["nntrain", *sys.argv[4:]]
main()
"""


@pytest.mark.parametrize("at", [9, 15])  # each evaluation improves; 15 is the last
@pytest.mark.parametrize("name, how, code", [
    ("best.npz", "kill", 137), ("last.npz", "kill", 137),
    ("best.npz", "full disk", 1), ("last.npz", "full disk", 1),
    ("best.npz", "old order", 137)])
def test_a_stop_between_an_evaluations_saves_leaves_a_run_that_resumes(
        tmp_path, tiny_npz, write_config, name, how, code, at):
    raw = tiny_config_dict(tiny_npz)
    raw["train"].update(epochs=None, iterations=15, eval_every=3, plots=False,
                        monitor="val_loss")
    config = write_config(raw)
    run, whole = tmp_path / "run", tmp_path / "whole"
    assert invoke("fit", config, "--out", whole, "--quiet").exit_code == 0
    history = load_checkpoint(whole / "checkpoints" / "last.npz").meta["solver"][
        "history"]
    losses = [record["val_loss"] for record in history]
    assert losses == sorted(losses, reverse=True)

    stopped = subprocess.run(
        [sys.executable, "-c", KILLED_AT_SAVE, name, str(at), how, "fit",
         str(config), "--out", str(run), "--quiet"],
        cwd=Path(__file__).parents[1], capture_output=True, text=True, timeout=120)
    assert stopped.returncode == code, stopped.stderr
    resumed = invoke("fit", config, "--resume", run)

    assert resumed.exit_code == 0, resumed.output
    best = run / "checkpoints" / "best.npz"
    if "is from a finished run (15 iterations" not in resumed.stdout:
        assert f"(iteration 15), saved in {best}." in resumed.stdout
    _assert_same_run(whole, run)
    held = [_arrays(folder / "checkpoints" / "best.npz") for folder in (whole, run)]
    assert sorted(held[0]) == sorted(held[1])
    assert all(np.array_equal(held[0][key], held[1][key]) for key in held[0])
    assert load_checkpoint(best).meta["solver"]["progress"]["iteration"] == 15


@pytest.mark.skipif(sys.platform == "win32", reason="no folder lock on Windows")
def test_the_repair_of_an_unfinished_save_waits_for_the_folders_lock(
        tmp_path, tiny_npz, write_config):
    from nntrain.train.rundir import lock_folder

    raw = tiny_config_dict(tiny_npz)
    raw["train"].update(epochs=None, iterations=15, eval_every=3, plots=False,
                        monitor="val_loss")
    config = write_config(raw)
    run = tmp_path / "run"
    stopped = subprocess.run(
        [sys.executable, "-c", KILLED_AT_SAVE, "best.npz", "9", "old order", "fit",
         str(config), "--out", str(run), "--quiet"],
        cwd=Path(__file__).parents[1], capture_output=True, text=True, timeout=120)
    assert stopped.returncode == 137, stopped.stderr
    best = run / "checkpoints" / "best.npz"
    before = best.read_bytes()

    lock = lock_folder(run)  # as a run still writing to the folder holds it
    try:
        blocked = invoke("fit", config, "--resume", run)
    finally:
        os.close(lock)

    assert blocked.exit_code == 2
    assert blocked.stderr.splitlines()[-1] == (
        f"error: another nntrain process is writing to {run.resolve()}; wait for it"
        " to end, or give --out another folder")
    assert best.read_bytes() == before
    assert invoke("fit", config, "--resume", run).exit_code == 0
    assert load_checkpoint(best).meta["solver"]["progress"]["iteration"] >= 9


def test_a_run_directory_resumes_from_last_npz_before_newer_files_and_keeps_it(
        tmp_path, tiny_npz, write_config):
    # A resume from an older snapshot that stopped early leaves last.npz older
    # than the snapshots and best.npz of the part of the run it dropped.
    from nntrain.train import resume as resuming

    raw = tiny_config_dict(tiny_npz)
    raw["train"].update(epochs=None, iterations=12, eval_every=3, plots=False,
                        snapshot_every=1, monitor="val_loss")
    config = write_config(raw)
    run = tmp_path / "run"
    assert invoke("fit", config, "--out", run, "--quiet").exit_code == 0
    checkpoints = run / "checkpoints"
    snapshot = sorted(checkpoints.glob("snapshot-*.npz"))[0]
    shutil.copyfile(snapshot, checkpoints / "last.npz")
    at = load_checkpoint(snapshot).meta["solver"]["progress"]["iteration"]
    best = load_checkpoint(checkpoints / "best.npz")
    assert best.meta["solver"]["progress"]["iteration"] > at
    before = (checkpoints / "last.npz").read_bytes()

    chosen, _, notes = resuming.find_checkpoint(run)
    repaired = resuming.complete_saves(checkpoints / "best.npz", best)

    assert chosen == checkpoints / "last.npz"
    assert len(notes) == 1
    assert notes[0].startswith(f"resuming from last.npz (iteration {at}), the run's"
                               " latest state; newer ")
    assert "best.npz" in notes[0] and notes[0].endswith(" not used")
    assert repaired == []
    assert (checkpoints / "last.npz").read_bytes() == before


def test_a_resume_from_an_older_checkpoint_says_what_it_discards(
        tmp_path, tiny_npz, write_config):
    raw = tiny_config_dict(tiny_npz)
    raw["train"].update(epochs=None, iterations=12, eval_every=3, plots=False,
                        snapshot_every=1)
    config = write_config(raw)
    run = tmp_path / "run"
    assert invoke("fit", config, "--out", run, "--quiet").exit_code == 0
    snapshot = sorted((run / "checkpoints").glob("snapshot-*.npz"))[0]
    at = load_checkpoint(snapshot).meta["solver"]["progress"]["iteration"]
    past = sum(record["iteration"] > at for record in _records(run))
    assert at < 12 and past > 1

    result = invoke("fit", config, "--resume", snapshot, "--set",
                    "train.iterations=20")

    assert result.exit_code == 0, result.output
    assert (f"note: {snapshot.name} (iteration {at}) is older than last.npz"
            f" (iteration 12); at its first save this run replaces last.npz and"
            f" drops the {past} records of metrics.jsonl past iteration {at}\n"
            ) in result.stderr
    again = invoke("fit", config, "--resume", run, "--set", "train.iterations=30")
    assert again.exit_code == 0, again.output
    assert "is older than last.npz" not in again.output


# Runs ``python -m nntrain`` with argv[2:], sending itself the signal argv[1]
# names once the run directory is made, before the first update.
SIGNALLED_AT_START = """
import os, signal, sys, time
from nntrain import __main__ as entry
from nntrain.train import solver

signum = getattr(signal, sys.argv[1])

def train(self):
    os.kill(os.getpid(), signum)
    time.sleep(60)

solver.Solver.train = train
sys.argv = ["nntrain", *sys.argv[2:]]
entry.main()
"""


def _signalled_at_start(name, *args):
    return subprocess.run(
        [sys.executable, "-c", SIGNALLED_AT_START, name, *map(str, args)],
        cwd=Path(__file__).parents[1], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("name, code", [("SIGTERM", 143), ("SIGINT", 130)])
def test_a_run_stopped_before_its_first_checkpoint_says_it_has_none(
        tmp_path, tiny_config, name, code):
    run = tmp_path / "run"
    stopped = _signalled_at_start(name, "fit", tiny_config, "--out", run, "--quiet")

    assert stopped.returncode == code, stopped.stderr
    assert stopped.stderr.splitlines() == [
        f"stopped by {name} before the run saved its first checkpoint: {run} holds"
        " nothing to resume; start over with the same command and --force"]
    assert list((run / "checkpoints").iterdir()) == []

    resumed = CliRunner().invoke(cli, ["fit", str(tiny_config), "--resume",
                                       str(run)])
    assert resumed.exit_code == 2, resumed.output
    assert resumed.stderr == (
        f"error: no checkpoint in {run / 'checkpoints'}; give a checkpoint file or"
        " the run directory of a run that saved one, or start over with --force"
        " in place of --resume\n")


def test_a_resume_stopped_before_its_first_checkpoint_leaves_the_run_as_it_was(
        tmp_path, tiny_npz, write_config):
    run = tmp_path / "run"
    config, files = _short_run(tiny_npz, write_config, run)
    saved = {path.name: path.read_bytes()
             for path in (run / "checkpoints").iterdir()}

    stopped = _signalled_at_start("SIGTERM", "fit", config, "--resume", run, "--set",
                                  "train.iterations=20", "--quiet")

    assert stopped.returncode == 143, stopped.stderr
    assert stopped.stderr.splitlines() == [
        f"stopped by SIGTERM before the resumed run saved a checkpoint: {run} is as"
        " it was; resume it again with the same command"]
    assert _run_files(run) == files
    assert saved == {path.name: path.read_bytes()
                     for path in (run / "checkpoints").iterdir()}


def test_a_checkpoint_without_the_first_data_loss_resumes_without_one(tmp_path,
                                                                      tiny_npz):
    # Written before nntrain kept it: the resumed run's first update is not the
    # run's, so its loss must not pass for the first one in later checkpoints.
    run = tmp_path / "run"
    fit(resolve_config(_raw(tiny_npz, epochs=1)), run, quiet=True)
    last = run / "checkpoints" / "last.npz"
    checkpoint = load_checkpoint(last)
    first = checkpoint.meta["solver"]["divergence"].pop("first_data_loss")
    assert first > 0
    save_checkpoint(last, checkpoint.meta, checkpoint.arrays)

    _extend(run, "train.epochs=2")

    divergence = load_checkpoint(last).meta["solver"]["divergence"]
    assert divergence["first_data_loss"] is None


@pytest.mark.parametrize("stop_at, where", [
    (8, "the end of epoch 2"), (10, "epoch 3, 2 batches into it")])
def test_a_resume_says_where_in_its_epoch_it_starts(tmp_path, tiny_npz, monkeypatch,
                                                    write_config, stop_at, where):
    config = write_config(_raw(tiny_npz, epochs=5, plots=False))
    run = tmp_path / "run"
    with monkeypatch.context() as patch:
        _interrupt_at(patch, stop_at)
        assert invoke("fit", config, "--out", run).exit_code == 130

    result = invoke("fit", config, "--resume", run)

    assert result.exit_code == 0, result.output
    assert f"resuming at iteration {stop_at} ({where})" in result.output


SNAPSHOTS = ["snapshot-epoch-0001.npz", "snapshot-epoch-0002.npz",
             "snapshot-epoch-0003.npz"]


def _snapshot_run(tiny_npz, write_config):
    """A config of 3 epochs of 4 updates, evaluated and snapshot at each end."""
    return write_config(_raw(tiny_npz, epochs=3, eval_every=None, snapshot_every=1,
                             plots=False))


def _assert_same_snapshots(whole, part):
    """The snapshots of ``part`` are those of ``whole``: arrays bit for bit, and
    the solver state but for the wall time."""
    names = [sorted(path.name for path in (run / "checkpoints").glob("snapshot-*"))
             for run in (whole, part)]
    assert names == [SNAPSHOTS, SNAPSHOTS]
    for name in SNAPSHOTS:
        a, b = (_arrays(run / "checkpoints" / name) for run in (whole, part))
        assert sorted(a) == sorted(b)
        assert all(np.array_equal(a[key], b[key]) for key in a), name
        meta = [load_checkpoint(run / "checkpoints" / name).meta["solver"]
                for run in (whole, part)]
        for solver_meta in meta:
            solver_meta.pop("seconds")
            for record in solver_meta["history"]:
                record.pop("seconds")
        assert meta[0] == meta[1], name


def test_a_second_signal_before_an_epochs_snapshot_loses_no_snapshot(
        tmp_path, tiny_npz, write_config, monkeypatch):
    config = _snapshot_run(tiny_npz, write_config)
    whole, part = tmp_path / "whole", tmp_path / "part"
    assert invoke("fit", config, "--out", whole, "--quiet").exit_code == 0
    snapshot = Solver._snapshot

    def second_signal(self):
        if self.progress.epoch == 2:  # the first one came after update 8
            os.kill(os.getpid(), signal.SIGINT)
        snapshot(self)

    with monkeypatch.context() as patch:
        _interrupt_at(patch, 8)
        patch.setattr(Solver, "_snapshot", second_signal)
        result = invoke("fit", config, "--out", part, "--quiet")
    assert result.exit_code == 130, result.output
    assert "stopped at once by a second SIGINT" in result.stderr

    assert invoke("fit", config, "--resume", part, "--quiet").exit_code == 0
    _assert_same_snapshots(whole, part)
    _assert_same_run(whole, part)


# Runs nntrain's command line with argv[2:], killing itself with SIGKILL just
# before or after (argv[1]) it saves snapshot-epoch-0002.npz.
KILLED_AT_SNAPSHOT = """
import os, signal, sys
from nntrain.cli import main
from nntrain.train import solver

save = solver.Solver.save

def killing_save(self, path):
    due = path.name == "snapshot-epoch-0002.npz"
    if due and sys.argv[1] == "before":
        os.kill(os.getpid(), signal.SIGKILL)
    save(self, path)
    if due:
        os.kill(os.getpid(), signal.SIGKILL)

solver.Solver.save = killing_save
sys.argv = ["nntrain", *sys.argv[2:]]
main()
"""


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_kill_at_an_epochs_snapshot_loses_no_snapshot(tmp_path, tiny_npz,
                                                        write_config, when):
    config = _snapshot_run(tiny_npz, write_config)
    whole, part = tmp_path / "whole", tmp_path / "part"
    assert invoke("fit", config, "--out", whole, "--quiet").exit_code == 0
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_AT_SNAPSHOT, when, "fit", str(config),
         "--out", str(part), "--quiet"],
        cwd=Path(__file__).parents[1], capture_output=True, text=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    # last.npz, the commit point, still holds epoch 1: the resume redoes epoch 2.
    last = load_checkpoint(part / "checkpoints" / "last.npz")
    assert last.meta["solver"]["progress"]["iteration"] == 4

    assert invoke("fit", config, "--resume", part, "--quiet").exit_code == 0
    _assert_same_snapshots(whole, part)
    _assert_same_run(whole, part)


def test_a_signal_in_the_evaluation_early_stopping_ends_at_stops_the_run(
        tmp_path, tiny_npz, monkeypatch):
    # No evaluation lowers the validation loss by 100: the second one, after
    # update 8, ends the run. The signal comes while it is made.
    raw = _raw(tiny_npz, epochs=10, eval_every=None, plots=False, monitor="val_loss",
               early_stopping={"patience": 1, "min_delta": 100.0})
    evaluate = Solver._evaluate

    def signalled(self, *args):
        if self.progress.iteration == 8:
            os.kill(os.getpid(), signal.SIGINT)
        evaluate(self, *args)

    run = tmp_path / "run"
    monkeypatch.setattr(Solver, "_evaluate", signalled)
    with pytest.raises(StopRequested) as stopped:
        fit(resolve_config(raw), run, quiet=True)

    assert stopped.value.exit_code == 130
    assert str(stopped.value).startswith("stopped by SIGINT at iteration 8;")
    solver_meta = load_checkpoint(run / "checkpoints" / "last.npz").meta["solver"]
    assert solver_meta["progress"]["iteration"] == 8
    assert solver_meta["stopped_early"]


def test_a_length_shorter_than_the_checkpoint_is_not_called_a_finished_run(
        tmp_path, tiny_npz, write_config, monkeypatch):
    config = write_config(_raw(tiny_npz, epochs=None, iterations=12, plots=False))
    run = tmp_path / "run"
    with monkeypatch.context() as patch:
        _interrupt_at(patch, 8)
        assert invoke("fit", config, "--out", run, "--quiet").exit_code == 130

    result = invoke("fit", config, "--resume", run, "--set", "train.iterations=5")

    assert result.exit_code == 0, result.output
    assert result.stdout == (
        f"{run / 'checkpoints' / 'last.npz'} is at 8 iterations, epoch 2: past the"
        " length asked for (train.iterations 5), but short of its run's own"
        " (train.iterations 12): nothing to do. To go on, ask for more (--set"
        " train.iterations=N with N > 8), or keep the checkpoint's own length to"
        " train on to train.iterations 12\n")


def test_a_checkpoint_saved_before_an_extension_says_how_to_reach_it(
        tmp_path, tiny_npz, write_config):
    config = write_config(_raw(tiny_npz, epochs=1, eval_every=None, snapshot_every=1,
                               plots=False))
    run = tmp_path / "run"
    assert invoke("fit", config, "--out", run, "--quiet").exit_code == 0
    assert invoke("fit", config, "--resume", run, "--set", "train.epochs=2",
                  "--quiet").exit_code == 0
    snapshot = run / "checkpoints" / "snapshot-epoch-0001.npz"

    result = invoke("fit", config, "--resume", snapshot)

    assert result.exit_code == 0, result.output
    assert result.stdout == (
        f"{snapshot} is from a finished run (4 iterations, epoch 1): nothing to do."
        " To train longer, extend it past those: --set train.epochs=N with N > 1"
        " (its run directory's config.yaml sets train.epochs 2, a length set after"
        " this checkpoint was saved, which keeps its own: --set train.epochs=2"
        " trains it on to that)\n")
