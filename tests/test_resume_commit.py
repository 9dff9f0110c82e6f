"""The temporary files a kill leaves: --force removes them, and nothing takes
them for a checkpoint."""

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from test_resume import (
    _raw,
    invoke,
)

from nntrain.checkpoint import checkpoint_in, load_checkpoint
from nntrain.errors import CheckpointError
from nntrain.train.resume import find_checkpoint


def _held(path) -> int:
    return load_checkpoint(path).meta["solver"]["progress"]["iteration"]


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
