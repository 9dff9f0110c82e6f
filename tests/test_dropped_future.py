"""A resume from an older checkpoint of a run moves the files of the part of
the run it leaves out into checkpoints/dropped-after-iteration-N/."""

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
from click.testing import CliRunner
from conftest import tiny_config_dict

from nntrain.checkpoint import load_checkpoint
from nntrain.cli import cli

LATER = ["last.npz", "snapshot-epoch-0003.npz", "snapshot-epoch-0004.npz",
         "snapshot-epoch-0005.npz", "snapshot-epoch-0006.npz", "best.npz"]


def invoke(*args):
    return CliRunner().invoke(cli, [str(arg) for arg in args])


def _six_epochs(tiny_npz, write_config, name="six.yaml", **optimizer):
    """6 epochs of 4 updates, evaluated and snapshot at each end; validation
    accuracy 0.5, 0.8, 0.8, 0.9, 1.0, 1.0: the best of the first 3 epochs is
    the second (iteration 8), of all 6 the fifth (iteration 20)."""
    raw = tiny_config_dict(tiny_npz)
    raw["optimizer"].update({"lr": 0.005, **optimizer})
    raw["train"].update({"epochs": 6, "snapshot_every": 1, "plots": False})
    return write_config(raw, name)


def _held(path) -> int:
    return load_checkpoint(path).meta["solver"]["progress"]["iteration"]


def _run(tmp_path, tiny_npz, write_config):
    config = _six_epochs(tiny_npz, write_config)
    run = tmp_path / "run"
    assert invoke("fit", config, "--out", run, "--quiet").exit_code == 0
    assert _held(run / "checkpoints" / "best.npz") == 20
    return config, run, run / "checkpoints"


def test_a_resume_from_an_older_snapshot_moves_the_later_files_aside(
        tmp_path, tiny_npz, write_config):
    config, run, folder = _run(tmp_path, tiny_npz, write_config)
    later = {name: (folder / name).read_bytes() for name in LATER}
    aside = folder / "dropped-after-iteration-8"

    result = invoke("fit", config, "--resume", folder / "snapshot-epoch-0002.npz",
                    "--set", "train.epochs=3")

    assert result.exit_code == 0, result.output
    assert (f"note: at its first save this run moves the files of the part of the"
            f" run past iteration 8 into {aside} (nothing is deleted):"
            f" {', '.join(LATER)}\n") in result.stderr
    assert ("note: best.npz then gets a copy of snapshot-epoch-0002.npz, which"
            " holds the best evaluation this run keeps (iteration 8)\n"
            ) in result.stderr
    assert sorted(path.name for path in aside.iterdir()) == sorted(LATER)
    assert all((aside / name).read_bytes() == content
               for name, content in later.items())
    assert sorted(path.name for path in folder.glob("*.npz")) == [
        "best.npz", "last.npz", "snapshot-epoch-0001.npz",
        "snapshot-epoch-0002.npz", "snapshot-epoch-0003.npz"]
    best, kept = (np.load(folder / name) for name in
                  ("best.npz", "snapshot-epoch-0002.npz"))
    assert all(np.array_equal(best[key], kept[key])
               for key in kept.files if key != "meta")
    assert _held(folder / "last.npz") == 12
    # The run's ensemble glob and its --force see the moved files no more, or
    # as nntrain's.
    assert invoke("fit", config, "--out", run, "--force",
                  "--quiet").exit_code == 0
    assert not aside.exists()


def test_a_resume_leaves_a_users_copy_and_another_runs_checkpoint(
        tmp_path, tiny_npz, write_config):
    config, run, folder = _run(tmp_path, tiny_npz, write_config)
    other = tmp_path / "other"
    assert invoke("fit", _six_epochs(tiny_npz, write_config, "other.yaml", lr=0.002),
                  "--out", other, "--quiet").exit_code == 0
    keep, foreign = folder / "snapshot-keep.npz", folder / "snapshot-epoch-0009.npz"
    shutil.copyfile(folder / "best.npz", keep)
    shutil.copyfile(other / "checkpoints" / "last.npz", foreign)
    before = {path: path.read_bytes() for path in (keep, foreign)}

    result = invoke("fit", config, "--resume", folder / "snapshot-epoch-0002.npz",
                    "--set", "train.epochs=3", "--quiet")

    assert result.exit_code == 0, result.output
    assert all(path.read_bytes() == content for path, content in before.items())
    assert sorted(path.name for path in (folder / "dropped-after-iteration-8")
                  .iterdir()) == sorted(LATER)


# Runs nntrain's command line with argv[1:], sending itself SIGINT at the first
# record after the note naming the files a resume moves: the stop's save of
# last.npz is the run's first save.
STOPPED_AFTER_NOTE = """
import os, signal, sys
from nntrain.cli import main
from nntrain.train.report import Reporter
from nntrain.train.rundir import RunDirectory

note, record, noted = Reporter.note, RunDirectory.record, []

def noting(self, text):
    note(self, text)
    noted.append("moves the files" in text)

def stopping(self, line):
    record(self, line)
    if any(noted):
        noted.clear()
        os.kill(os.getpid(), signal.SIGINT)

Reporter.note, RunDirectory.record = noting, stopping
sys.argv = ["nntrain", *sys.argv[1:]]
main()
"""


def test_a_stop_right_after_the_note_loses_no_file(tmp_path, tiny_npz,
                                                   write_config):
    config, run, folder = _run(tmp_path, tiny_npz, write_config)
    later = {name: (folder / name).read_bytes() for name in LATER}
    command = ["fit", config, "--resume", folder / "snapshot-epoch-0002.npz",
               "--set", "train.epochs=3"]

    stopped = subprocess.run(
        [sys.executable, "-c", STOPPED_AFTER_NOTE, *map(str, command)],
        cwd=Path(__file__).parents[1], capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})

    assert stopped.returncode == 128 + signal.SIGINT, stopped.stderr
    aside = folder / "dropped-after-iteration-8"
    for name, content in later.items():
        assert content in [path.read_bytes() for path in (folder / name,
                                                          aside / name)
                           if path.is_file()], name
    assert (aside / "snapshot-epoch-0004.npz").is_file()  # the stop's save moved it
    assert invoke("fit", config, "--resume", run).exit_code == 0


def test_force_leaves_a_users_folder_that_only_looks_dropped(
        tmp_path, tiny_npz, write_config):
    config, run, folder = _run(tmp_path, tiny_npz, write_config)
    assert invoke("fit", config, "--resume", folder / "snapshot-epoch-0002.npz",
                  "--set", "train.epochs=3", "--quiet").exit_code == 0
    again = invoke("fit", config, "--resume", folder / "snapshot-epoch-0001.npz",
                   "--set", "train.epochs=3", "--quiet")
    assert again.exit_code == 0, again.output
    users = [folder / "dropped-after-iteration-mybackup",
             folder / "dropped-after-iteration-4-2-1",
             folder / "dropped-after-iteration-"]
    for user in users:
        user.mkdir()
        shutil.copyfile(folder / "best.npz", user / "best.npz")
    own = ["dropped-after-iteration-4", "dropped-after-iteration-8"]
    assert sorted(path.name for path in folder.glob("dropped-*")) == sorted(
        own + [user.name for user in users])
    (folder / "dropped-after-iteration-4").rename(
        folder / "dropped-after-iteration-4-2")

    result = invoke("fit", config, "--out", run, "--force", "--quiet")

    assert result.exit_code == 0, result.output
    assert sorted(path.name for path in folder.glob("dropped-*")) == sorted(
        user.name for user in users)
    assert all(sorted(path.name for path in user.iterdir()) == ["best.npz"]
               for user in users)
