"""A resumed run's commit of its run directory, killed at any point, and the
temporary files a kill leaves: a resume of the folder ends as an uninterrupted
run does, and --force removes those files."""

import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_config_dict
from test_resume import (
    _arrays,
    _assert_same_run,
    _raw,
    _records,
    invoke,
)

from nntrain.checkpoint import checkpoint_in, load_checkpoint
from nntrain.errors import CheckpointError
from nntrain.train.resume import find_checkpoint


def _six_epochs(tiny_npz, write_config, **train):
    """A config of 6 epochs of 4 updates, evaluated and snapshot at each end,
    whose validation accuracy goes 0.5, 0.8, 0.8, 0.9, 1.0, 1.0: the best
    evaluation of the first 3 epochs is the second, of all 6 the fifth."""
    raw = tiny_config_dict(tiny_npz)
    raw["optimizer"]["lr"] = 0.005
    raw["train"].update({"epochs": 6, "snapshot_every": 1, "plots": False, **train})
    name = "".join(f"-{key}-{value}" for key, value in train.items())
    return write_config(raw, f"six{name}.yaml")


def _assert_same_checkpoints(whole, part):
    """The same checkpoints in both runs' checkpoints/ (a resume's
    dropped-after-iteration-N folder aside), their arrays bit for bit, and the
    same records."""
    names = [sorted(path.name for path in (run / "checkpoints").glob("*.npz"))
             for run in (whole, part)]
    assert names[0] == names[1]
    for name in names[0]:
        a, b = (_arrays(run / "checkpoints" / name) for run in (whole, part))
        assert sorted(a) == sorted(b), name
        assert all(np.array_equal(a[key], b[key]) for key in a), name
    assert _records(whole) == _records(part)


def _held(path) -> int:
    return load_checkpoint(path).meta["solver"]["progress"]["iteration"]


# The files of the part of a run of _six_epochs past epoch 2 (iteration 8).
LATER = ["last.npz", "snapshot-epoch-0003.npz", "snapshot-epoch-0004.npz",
         "snapshot-epoch-0005.npz", "snapshot-epoch-0006.npz", "best.npz"]


# Runs nntrain's command line with argv[3:]. argv[1] "kill": SIGKILL right after
# update argv[2]. argv[1] "stop": SIGINT right after update argv[2] (the stop
# saves last.npz), and SIGKILL right after the argv[3]-th file replaced or
# removed from then on.
KILLED = """
import os, signal, sys
from nntrain.cli import main
from nntrain.train import solver

how, at = sys.argv[1], int(sys.argv[2])
changes = int(sys.argv.pop(3)) if how == "stop" else 0
done = [0]
step = solver.Solver._step

def killing_step(self, rows):
    step(self, rows)
    if self.progress.iteration == at:
        os.kill(os.getpid(), signal.SIGKILL if how == "kill" else signal.SIGINT)

def killing(change):
    def changed(*args, **kwargs):
        result = change(*args, **kwargs)
        done[0] += 1
        if done[0] == changes:
            os.kill(os.getpid(), signal.SIGKILL)
        return result
    return changed

solver.Solver._step = killing_step
os.replace, os.unlink = killing(os.replace), killing(os.unlink)
sys.argv = ["nntrain", *sys.argv[3:]]
main()
"""

# Runs nntrain's command line with argv[2:], killing itself with SIGKILL as it
# is about to rename its temporary file onto argv[1].
KILLED_BEFORE_RENAME = """
import os, signal, sys
from nntrain import fileio
from nntrain.cli import main

publish, name = fileio.publish, sys.argv[1]

def killing_publish(temporary, path):
    if os.path.basename(path) == name:
        os.kill(os.getpid(), signal.SIGKILL)
    publish(temporary, path)

fileio.publish = killing_publish
sys.argv = ["nntrain", *sys.argv[2:]]
main()
"""


def _killed(script, *args):
    """Run ``script`` with ``args`` in a Python of its own; it must die of SIGKILL."""
    killed = subprocess.run([sys.executable, "-c", script, *map(str, args)],
                            cwd=Path(__file__).parents[1], capture_output=True,
                            text=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr


# The resumed run's files, in order: 1 metrics.jsonl (cut, with the record of
# update 10 it held back), 2 last.npz (its first save), 3 config.yaml.
@pytest.mark.parametrize("killed_after", [1, 2, 3])
def test_a_resume_killed_around_its_first_save_keeps_no_dropped_record(
        tmp_path, tiny_npz, write_config, killed_after):
    config = write_config(_raw(tiny_npz, epochs=None, iterations=20, plots=False))
    whole, run = tmp_path / "whole", tmp_path / "run"
    assert invoke("fit", config, "--out", whole, "--quiet").exit_code == 0
    # last.npz at 9 (eval_every 3); the records of updates 10 and 11 past it.
    _killed(KILLED, "kill", 11, "fit", config, "--out", run, "--quiet")
    # The resumed run's first save is last.npz, at the stop after update 10.
    _killed(KILLED, "stop", 10, killed_after, "fit", config, "--resume", run,
            "--quiet")

    # Each update's record once: those past last.npz (9) of the killed run are
    # gone, and the resumed run's own record of update 10 is there.
    iterations = [record["iteration"] for record in _records(run)
                  if record["kind"] == "iter"]
    assert iterations == list(range(1, 11))
    assert invoke("fit", config, "--resume", run, "--quiet").exit_code == 0
    _assert_same_run(whole, run)


# The run resumed from snapshot 2 (iteration 8)'s files, in order: 1 last.npz
# (back to the snapshot, the old one linked aside first), 2 best.npz (a copy of
# the snapshot, once the later files are moved aside), 3 metrics.jsonl (cut,
# with the record of update 10, log_every 5), 4 last.npz (its first save, at
# the stop after update 10), 5 config.yaml.
@pytest.mark.parametrize("killed_after", [1, 2, 3, 4, 5])
def test_a_resume_from_a_snapshot_killed_around_its_first_save_resumes(
        tmp_path, tiny_npz, write_config, killed_after):
    config = _six_epochs(tiny_npz, write_config)
    whole, part = tmp_path / "whole", tmp_path / "part"
    assert invoke("fit", _six_epochs(tiny_npz, write_config, epochs=3), "--out",
                  whole, "--quiet").exit_code == 0
    assert invoke("fit", config, "--out", part, "--quiet").exit_code == 0
    checkpoints = part / "checkpoints"
    snapshot = checkpoints / "snapshot-epoch-0002.npz"
    later = {name: (checkpoints / name).read_bytes() for name in LATER}

    _killed(KILLED, "stop", 10, killed_after, "fit", config, "--resume", snapshot,
            "--set", "train.epochs=3", "--quiet")

    assert _held(checkpoints / "last.npz") == (8 if killed_after < 4 else 10)
    resumed = invoke("fit", config, "--resume", part, "--set", "train.epochs=3",
                     "--quiet")
    assert resumed.exit_code == 0, resumed.output
    _assert_same_checkpoints(whole, part)
    # Nothing of the dropped part of the run is lost: it is all set aside (a kill
    # after last.npz moved leaves the rest to the next resume's folder, -8-2).
    aside = sorted(checkpoints.glob("dropped-after-iteration-8*"))
    assert [folder.name for folder in aside] == (
        ["dropped-after-iteration-8", "dropped-after-iteration-8-2"][
            :2 if killed_after == 1 else 1])
    assert {path.name: path.read_bytes() for folder in aside
            for path in folder.iterdir()} == later


def test_a_resume_from_a_snapshot_killed_before_its_first_save_changes_nothing(
        tmp_path, tiny_npz, write_config):
    config = _six_epochs(tiny_npz, write_config)
    whole, part = tmp_path / "whole", tmp_path / "part"
    assert invoke("fit", _six_epochs(tiny_npz, write_config, epochs=7), "--out",
                  whole, "--quiet").exit_code == 0
    assert invoke("fit", config, "--out", part, "--quiet").exit_code == 0
    before = (part / "metrics.jsonl").read_bytes()

    # Updates 9 and 10 of the shorter run, before its first save at 12.
    _killed(KILLED, "kill", 10, "fit", config, "--resume",
            part / "checkpoints" / "snapshot-epoch-0002.npz", "--set",
            "train.epochs=3", "--quiet")

    assert (part / "metrics.jsonl").read_bytes() == before
    # The folder is the run of 6 epochs still, which extends as it would have.
    extended = invoke("fit", config, "--resume", part, "--set", "train.epochs=7",
                      "--quiet")
    assert extended.exit_code == 0, extended.output
    _assert_same_checkpoints(whole, part)


@pytest.mark.parametrize("folder, name", [(".", "config.yaml"),
                                          ("plots", "loss.png")])
def test_force_removes_the_temporary_file_a_kill_left(tmp_path, tiny_npz,
                                                      write_config, folder, name):
    config = write_config(_raw(tiny_npz, epochs=1))
    run = tmp_path / "run"
    _killed(KILLED_BEFORE_RENAME, name, "fit", config, "--out", run, "--quiet")
    left = list((run / folder).glob(f".{name}.*"))
    assert [path.suffix for path in left] == [".tmp"]

    again = invoke("fit", config, "--out", run, "--force", "--quiet")

    assert again.exit_code == 0, again.output
    assert not left[0].exists()


def test_a_temporary_checkpoint_a_kill_left_is_never_taken_for_one(
        tmp_path, tiny_npz, write_config):
    config = write_config(_raw(tiny_npz, epochs=1, plots=False))
    run = tmp_path / "run"
    assert invoke("fit", config, "--out", run, "--quiet").exit_code == 0
    checkpoints = run / "checkpoints"
    # A whole checkpoint, as a kill before its rename leaves it.
    leftover = checkpoints / ".snapshot-epoch-0009.npz.k3x9_q2a.tmp"
    leftover.write_bytes((checkpoints / "last.npz").read_bytes())
    (checkpoints / "last.npz").unlink()
    (checkpoints / "best.npz").unlink()

    assert checkpoint_in(run).startswith("it holds no checkpoint")
    with pytest.raises(CheckpointError, match="no checkpoint in"):
        find_checkpoint(run)
    assert invoke("fit", config, "--out", run, "--force", "--quiet").exit_code == 0
    assert not leftover.exists()
    assert _held(checkpoints / "last.npz") == 4  # the new run's (4 updates)


def test_force_leaves_a_users_file_that_only_looks_temporary(
        tmp_path, tiny_npz, write_config):
    config = write_config(_raw(tiny_npz, epochs=1))
    run = tmp_path / "run"
    assert invoke("fit", config, "--out", run, "--quiet").exit_code == 0
    # nntrain's: 8 characters of mkstemp's alphabet; the others are a user's.
    own = [run / ".config.yaml.ab_4z9q0.tmp", run / "plots" / ".loss.png.x1y2z3w4.tmp"]
    users = [run / ".config.yaml.mine.tmp", run / ".metrics.jsonl.backup-01.tmp",
             run / "plots" / ".loss.png.ABCDEFGH.tmp",
             run / "plots" / ".loss.png.old.copy.tmp"]
    (run / "plots").mkdir(exist_ok=True)
    for path in own + users:
        path.write_text("kept?\n", encoding="utf-8")

    again = invoke("fit", config, "--out", run, "--force", "--quiet")

    assert again.exit_code == 0, again.output
    assert [path.exists() for path in own + users] == [False] * 2 + [True] * 4
