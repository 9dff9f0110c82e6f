"""The run directory when its files cannot be written or removed, or were damaged:
one line naming the file and what to do, and a folder that still resumes.

The tests run as root, whom permissions do not stop, so a read-only folder, a
mount point or a full disk is simulated by making the call fail with its errno.
"""

import errno
import json
import os
import signal
import zlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import tiny_config_dict

from nntrain.checkpoint import load_checkpoint
from nntrain.cli import cli
from nntrain.errors import StopRequested
from nntrain.train import rundir


def invoke(*args):
    return CliRunner().invoke(cli, [str(arg) for arg in args])


def assert_one_line_error(result, code, message):
    """Exit status ``code`` and exactly ``message`` on stderr, after "error: "."""
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.stderr.splitlines() == [f"error: {message}"]


def _files(run):
    return {path.relative_to(run): path.read_bytes()
            for path in sorted(run.rglob("*")) if path.is_file()}


def _iterations(run):
    text = (run / "metrics.jsonl").read_text()
    return [json.loads(line)["iteration"] for line in text.splitlines()]


@pytest.fixture
def config(tiny_npz, write_config):
    """The tiny config, 3 epochs of 4 updates, an evaluation at each epoch's end
    and an "iter" record every 5 updates: records at 4, 5, 8, 10, 12."""
    raw = tiny_config_dict(tiny_npz)
    raw["train"]["plots"] = False
    return write_config(raw)


@pytest.fixture
def run(tmp_path, config):
    """A finished run of ``config``."""
    run = tmp_path / "run"
    result = invoke("fit", config, "--out", run, "--quiet")
    assert result.exit_code == 0, result.output
    assert _iterations(run) == [4, 5, 8, 10, 12]
    return run


def _refuse_changes_in(monkeypatch, folder, code):
    """Renaming or deleting an entry of ``folder`` fails with errno ``code``, as
    in a read-only folder (EROFS) or for a mount point (EBUSY)."""

    def refusing(original):
        def call(self, *args, **kwargs):
            if self.parent == folder:
                raise OSError(code, os.strerror(code), str(self))
            return original(self, *args, **kwargs)
        return call

    for name in ("rename", "replace", "unlink"):
        monkeypatch.setattr(Path, name, refusing(getattr(Path, name)))


@pytest.mark.parametrize("name, code, fix", [
    ("checkpoints/last.npz", errno.EROFS, "remount its file system read-write"),
    ("config.yaml", errno.EBUSY,
     "free it (a mount point or a file another program holds)"),
])
def test_force_that_cannot_clear_the_folder_removes_nothing(
        run, config, monkeypatch, name, code, fix):
    before = _files(run)
    _refuse_changes_in(monkeypatch, (run / name).parent, code)

    result = invoke("fit", config, "--out", run, "--quiet", "--force")

    assert_one_line_error(result, 2, f"--force cannot remove {run / name}"
                                     f" ({os.strerror(code)}): {fix}, or choose"
                                     " another --out; nothing was removed")
    assert _files(run) == before


def test_force_removes_what_a_force_killed_while_removing_set_aside(run, config):
    for name in ("config.yaml", "checkpoints/best.npz"):
        path = run / name
        path.rename(path.with_name(f".{path.name}{rundir.ASIDE}"))

    result = invoke("fit", config, "--out", run, "--quiet", "--force")

    assert result.exit_code == 0, result.output
    assert not list(run.rglob(f".*{rundir.ASIDE}"))
    assert _iterations(run) == [4, 5, 8, 10, 12]


def _rename_calling(monkeypatch, run, actions):
    """Path.rename of a file in ``run`` first calls ``actions[n]``, when there is
    one, on its n-th call (from 1)."""
    original, calls = Path.rename, []

    def rename(self, target):
        if run in self.parents:
            calls.append(self)
            actions.get(len(calls), lambda: None)()
        return original(self, target)

    monkeypatch.setattr(Path, "rename", rename)


def _raise(error):
    def action():
        raise error
    return action


def test_force_stopped_while_it_sets_files_aside_puts_them_back(
        run, monkeypatch):
    before = _files(run)
    _rename_calling(monkeypatch, run, {3: _raise(KeyboardInterrupt())})

    with pytest.raises(KeyboardInterrupt):
        rundir.RunDirectory(run, force=True)

    assert _files(run) == before


def test_a_signal_while_force_sets_files_aside_waits_until_all_are_removed(
        run, monkeypatch):
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _rename_calling(monkeypatch, run,
                        {3: lambda: signal.raise_signal(signal.SIGINT)})
        with pytest.raises(StopRequested) as stopped:
            rundir.RunDirectory(run, force=True)
    finally:
        signal.signal(signal.SIGINT, previous)

    assert _files(run) == {}
    # The old run is gone: the stop says so, not "nothing was written".
    assert str(stopped.value) == (f"stopped by SIGINT while --force cleared {run}:"
                                  " the earlier run's files are removed; run again")
    assert stopped.value.exit_code == 130


def test_fit_stopped_while_force_clears_says_the_old_run_is_gone(
        run, config, monkeypatch):
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _rename_calling(monkeypatch, run,
                        {2: lambda: signal.raise_signal(signal.SIGINT)})
        result = invoke("fit", config, "--out", run, "--force")
    finally:
        signal.signal(signal.SIGINT, previous)

    assert result.exit_code == 130
    assert result.stderr == (f"stopped by SIGINT while --force cleared {run}: the"
                             " earlier run's files are removed; run again\n")
    assert not (run / "checkpoints" / "last.npz").exists()


def test_force_that_cannot_put_files_back_names_them(run, config, monkeypatch):
    failing = OSError(errno.EROFS, os.strerror(errno.EROFS))
    refused = OSError(errno.EACCES, os.strerror(errno.EACCES))
    # config.yaml, metrics.jsonl go aside; train.log fails; metrics.jsonl comes
    # back; config.yaml does not.
    _rename_calling(monkeypatch, run, {3: _raise(failing), 5: _raise(refused)})

    result = invoke("fit", config, "--out", run, "--quiet", "--force")

    aside = run / f".config.yaml{rundir.ASIDE}"
    assert_one_line_error(
        result, 2, f"--force cannot remove {run / 'train.log'} (Read-only file"
                   f" system), and cannot put back the files it had set aside:"
                   f" rename {aside} to config.yaml (Permission denied) by hand,"
                   " then run again")
    assert aside.is_file() and (run / "metrics.jsonl").is_file()


class _SizeLimited:
    """A log opened under a file size limit (ulimit -f) of ``limit`` bytes, as an
    unbuffered file behaves: a write past the limit writes what fits, and the next
    one fails with EFBIG."""

    def __init__(self, file, limit: int):
        self._file, self._limit = file, limit
        self.name = file.name

    def write(self, data) -> int:
        room = self._limit - os.fstat(self._file.fileno()).st_size
        if room <= 0:
            raise OSError(errno.EFBIG, os.strerror(errno.EFBIG))
        return self._file.write(data[:room])

    def fileno(self) -> int:
        return self._file.fileno()

    def close(self) -> None:
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *error):
        self.close()


def test_a_full_metrics_file_is_one_line_exit_1_and_the_run_resumes(
        tmp_path, run, config, monkeypatch):
    limited = tmp_path / "limited"
    # Room for the records of updates 4 and 5 and part of the next one.
    limit = len(b"".join((run / "metrics.jsonl").read_bytes().splitlines(True)[:2]))
    open_log = rundir._open_log
    with monkeypatch.context() as patch:
        patch.setattr(rundir, "_open_log", lambda path: (
            _SizeLimited(open_log(path), limit + 20) if path.name == "metrics.jsonl"
            else open_log(path)))
        result = invoke("fit", config, "--out", limited, "--quiet")

    metrics = limited / "metrics.jsonl"
    assert_one_line_error(result, 1, f"cannot write {metrics} (File too large):"
                                     " raise the file size limit (ulimit -f) or"
                                     " free some space, or choose another --out")
    # The record that did not fit is not left cut short: that marks a kill.
    text = metrics.read_text()
    assert len(text) <= limit + 20 and text.endswith("\n")
    assert [json.loads(line)["iteration"] for line in text.splitlines()] == [4, 5]
    resumed = invoke("fit", config, "--resume", limited, "--quiet")
    assert resumed.exit_code == 0, resumed.output
    assert _iterations(limited) == [4, 5, 8, 10, 12]


@pytest.mark.parametrize("name, code, fix", [
    ("config.yaml", errno.EROFS, "remount its file system read-write"),
    ("config.yaml", errno.EACCES, "check the permissions of the file and its folder"),
    ("metrics.jsonl", errno.ENOSPC, "free some space"),
])
def test_a_resumed_run_that_cannot_replace_a_file_names_that_file(
        run, config, monkeypatch, name, code, fix):
    write = rundir.write_text_atomically

    def failing(path, text):
        if path.name == name:
            raise OSError(code, os.strerror(code))
        write(path, text)

    with monkeypatch.context() as patch:
        patch.setattr(rundir, "write_text_atomically", failing)
        result = invoke("fit", config, "--resume", run, "--set", "train.epochs=4",
                        "--quiet")

    assert_one_line_error(result, 1, f"cannot rewrite {run / name}"
                                     f" ({os.strerror(code)}): {fix}, and resume the"
                                     " run again")
    again = invoke("fit", config, "--resume", run, "--set", "train.epochs=4",
                   "--quiet")
    assert again.exit_code == 0, again.output
    assert _iterations(run) == [4, 5, 8, 10, 12, 15, 16]


@pytest.mark.parametrize("name, at, kept", [
    ("best.npz", 4, "the run has no checkpoint yet to resume from"),
    # best.npz was saved before it, at the same evaluation.
    ("last.npz", 4, "the checkpoints saved before are intact"),
    ("last.npz", 8, "the previous last.npz is intact"),
])
def test_a_failed_save_says_which_checkpoint_is_left(tmp_path, config, monkeypatch,
                                                      name, at, kept):
    from nntrain.train import solver

    write = solver.save_checkpoint

    def failing(path, meta, arrays):
        if path.name == name and meta["solver"]["progress"]["iteration"] == at:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        write(path, meta, arrays)

    monkeypatch.setattr(solver, "save_checkpoint", failing)
    run = tmp_path / "run"

    result = invoke("fit", config, "--out", run, "--quiet")

    assert_one_line_error(result, 1, f"cannot write {run / 'checkpoints' / name}"
                                     f" ({os.strerror(errno.ENOSPC)}): free some"
                                     f" space, or choose another --out; {kept}")


DAMAGES = {"missing": lambda path: path.unlink(),
           "unreadable": lambda path: path.write_bytes(b"PK\x03\x04 cut short")}


@pytest.mark.parametrize("lost", DAMAGES)
def test_a_resume_rebuilds_a_lost_best_npz_from_a_last_npz_that_holds_the_best(
        run, config, lost):
    best, last = run / "checkpoints" / "best.npz", run / "checkpoints" / "last.npz"
    progress = load_checkpoint(last).meta["solver"]["progress"]
    # Validation accuracy 1.0 at the last evaluation: none can beat it.
    assert (progress["best_iteration"], progress["best_value"]) == (12, 1.0)
    weights = load_checkpoint(best).arrays["param"]
    DAMAGES[lost](best)

    result = invoke("fit", config, "--resume", run, "--set", "train.epochs=4")

    assert result.exit_code == 0, result.output
    assert (f"note: {best} was {lost}; it is rebuilt from last.npz, which holds the"
            " run's best evaluation (iteration 12)\n") in result.stderr
    assert f"(iteration 12), saved in {best}." in result.stdout
    assert (f"note: {best} was {lost}; it is rebuilt from last.npz, which holds the"
            " run's best evaluation (iteration 12)\n"
            ) in (run / "train.log").read_text()
    rebuilt = load_checkpoint(best)
    assert rebuilt.meta["solver"]["progress"]["iteration"] == 12
    assert all((rebuilt.arrays["param"][name] == value).all()
               for name, value in weights.items())


def test_a_resume_refused_for_its_data_leaves_a_lost_best_npz_alone(
        run, config, tmp_path):
    # The rebuild waits for the data's checks: a resume that fails before it
    # starts changes nothing, so its note cannot be lost.
    best = run / "checkpoints" / "best.npz"
    best.unlink()
    before = _files(run)
    missing = tmp_path / "missing.npz"

    result = invoke("fit", config, "--resume", run, "--set", "train.epochs=4",
                    "--set", f"data.path={missing}")

    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"error: npz file not found: {missing}")
    assert len(result.stderr.splitlines()) == 1
    assert _files(run) == before


def test_a_signal_while_a_resume_shows_its_notes_says_the_run_is_as_it_was(
        run, tiny_npz, write_config, monkeypatch):
    from nntrain.train.report import Reporter

    def interrupted(self, text):
        raise KeyboardInterrupt

    other = tiny_config_dict(tiny_npz)
    other["seed"] += 1  # "differs from the checkpoint's config": a note
    before = _files(run)
    monkeypatch.setattr(Reporter, "note", interrupted)

    result = invoke("fit", write_config(other), "--resume", run, "--set",
                    "train.epochs=4")

    assert result.exit_code == 130, result.output
    assert result.stderr == ("stopped by SIGINT before the resumed run saved a"
                             f" checkpoint: {run} is as it was; resume it again"
                             " with the same command\n")
    log = before.pop(Path("train.log"))  # which logs the stop
    assert _files(run) == {**before, Path("train.log"): log + result.stderr.encode()}


@pytest.mark.parametrize("code, fix", [
    (errno.ENOSPC, "free some space"),
    (errno.EROFS, "remount its file system read-write"),
])
def test_a_resume_that_cannot_rebuild_best_npz_says_why(run, config, monkeypatch,
                                                         code, fix):
    from nntrain.train import resume

    def failing(path, data):
        raise OSError(code, os.strerror(code))

    best = run / "checkpoints" / "best.npz"
    best.unlink()
    monkeypatch.setattr(resume, "write_bytes_atomically", failing)

    result = invoke("fit", config, "--resume", run, "--set", "train.epochs=4",
                    "--quiet")

    assert_one_line_error(result, 1, f"cannot write {best} ({os.strerror(code)}):"
                                     f" {fix}, and resume again; the file is as it"
                                     " was")
    assert not best.exists()


@pytest.mark.parametrize("lost", DAMAGES)
def test_a_resume_warns_that_a_lost_best_npz_is_lost_and_points_eval_elsewhere(
        tmp_path, config, lost):
    run = tmp_path / "run"
    assert invoke("fit", config, "--out", run, "--quiet", "--set",
                  "train.epochs=5").exit_code == 0
    best, last = run / "checkpoints" / "best.npz", run / "checkpoints" / "last.npz"
    progress = load_checkpoint(last).meta["solver"]["progress"]
    assert (progress["best_iteration"], progress["iteration"]) == (12, 20)
    DAMAGES[lost](best)

    result = invoke("fit", config, "--resume", run, "--set", "train.epochs=6")

    assert result.exit_code == 0, result.output
    assert (f"warning: {best} is {lost}: the weights of the run's best evaluation"
            " (iteration 12) are lost; this run saves best.npz again when an"
            " evaluation beats its val_accuracy of 1.0000\n") in result.stderr
    assert (f"(iteration 12), but {best} is missing or unreadable (those weights"
            " are lost). Measure the final weights on the test split with:"
            f" nntrain eval {last}\n") in result.stdout
    assert invoke("eval", last).exit_code == 0


def _cut_last_line(metrics, keep: int) -> None:
    """Cut the last line of ``metrics`` after its first ``keep`` bytes."""
    lines = metrics.read_bytes().splitlines(True)
    metrics.write_bytes(b"".join(lines[:-1]) + lines[-1][:keep])


def test_a_resume_notes_a_record_the_checkpoint_covers_that_was_cut_short(
        run, config):
    metrics = run / "metrics.jsonl"
    _cut_last_line(metrics, 39)  # the evaluation at update 12, the checkpoint's
    assert metrics.read_bytes().endswith(b'{"kind": "epoch", "iteration": 12, "epo')

    result = invoke("fit", config, "--resume", run, "--set", "train.epochs=4")

    assert result.exit_code == 0, result.output
    assert (f"note: dropped the last line of {metrics}, a record cut short: the"
            " record of iteration 12, which the checkpoint (iteration 12) covers,"
            " is lost\n") in result.stderr
    assert _iterations(run) == [4, 5, 8, 10, 15, 16]


def test_a_resume_notes_a_line_cut_short_before_its_iteration(run, config):
    metrics = run / "metrics.jsonl"
    _cut_last_line(metrics, 12)

    result = invoke("fit", config, "--resume", run, "--set", "train.epochs=4")

    assert result.exit_code == 0, result.output
    assert (f"note: dropped the last line of {metrics}, a record cut short too"
            " soon to tell its iteration: if the checkpoint (iteration 12) covers"
            " it, that record is lost\n") in result.stderr


def test_a_resume_drops_a_record_past_its_checkpoint_cut_short_without_a_note(
        run, config):
    metrics = run / "metrics.jsonl"
    with open(metrics, "ab") as file:  # a kill while the run wrote update 13's
        file.write(b'{"kind": "iter", "iteration": 13, "epoch": 4, "lr"')

    result = invoke("fit", config, "--resume", run, "--set", "train.epochs=4")

    assert result.exit_code == 0, result.output
    assert "dropped the last line" not in result.output
    assert _iterations(run) == [4, 5, 8, 10, 12, 15, 16]


def test_a_new_run_that_cannot_write_its_config_says_so(tmp_path, config,
                                                        monkeypatch):
    def full_disk(path, text):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(rundir, "write_text_atomically", full_disk)
    run = tmp_path / "run"

    result = invoke("fit", config, "--out", run, "--quiet")

    assert_one_line_error(result, 1, f"cannot write {run / 'config.yaml'}"
                                     f" ({os.strerror(errno.ENOSPC)}): free some"
                                     " space, or choose another --out")


class _FailsToClose:
    """A log whose close fails with ENOSPC, as a close on a network file system
    that writes back at close can."""

    def __init__(self, file):
        self._file, self.name = file, file.name

    def write(self, data) -> int:
        return self._file.write(data)

    def fileno(self) -> int:
        return self._file.fileno()

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __enter__(self):
        return self

    def __exit__(self, *error):
        self.close()


def _train_log_fails_to_close(monkeypatch):
    open_log = rundir._open_log
    monkeypatch.setattr(rundir, "_open_log", lambda path: (
        _FailsToClose(open_log(path)) if path.name == "train.log"
        else open_log(path)))


def test_a_log_that_fails_to_close_after_the_run_is_one_line_exit_1(
        tmp_path, config, monkeypatch):
    _train_log_fails_to_close(monkeypatch)
    run = tmp_path / "run"

    result = invoke("fit", config, "--out", run, "--quiet")

    assert_one_line_error(result, 1, f"cannot write {run / 'train.log'} (No space"
                                     " left on device): free some space, or choose"
                                     " another --out")


def test_a_log_that_fails_to_close_as_a_stop_ends_the_run_leaves_the_stop(
        tmp_path, config, monkeypatch):
    from nntrain.train.solver import Solver

    _train_log_fails_to_close(monkeypatch)
    step = Solver._step

    def interrupted_step(self, rows):
        step(self, rows)
        if self.progress.iteration == 2:
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(Solver, "_step", interrupted_step)
    run = tmp_path / "run"

    result = invoke("fit", config, "--out", run)

    assert result.exit_code == 130, result.output
    assert result.stderr.splitlines()[-2:] == [
        f"warning: cannot write {run / 'train.log'} (No space left on device): free"
        " some space, or choose another --out",
        f"stopped by SIGINT at iteration 2; the state is saved in"
        f" {run / 'checkpoints' / 'last.npz'}. Resume with: nntrain fit"
        f" {run / 'config.yaml'} --resume {run}"]


@pytest.mark.parametrize("rewrite, reopen, reported", [
    # The rewrite fails first: its error, not the reopening's, ends the run.
    (errno.ENOSPC, errno.EACCES, errno.ENOSPC),
    (None, errno.EACCES, errno.EACCES),
], ids=["rewrite-then-reopen", "reopen"])
def test_a_resumed_run_whose_metrics_fail_twice_at_its_commit_names_the_first(
        run, config, monkeypatch, rewrite, reopen, reported):
    write, committing = rundir.write_text_atomically, []

    def rewriting(path, text):
        if path.name == "metrics.jsonl":
            committing.append(path)
            if rewrite:
                raise OSError(rewrite, os.strerror(rewrite))
        write(path, text)

    def reopening(path, *args, **kwargs):
        if committing and Path(path).name == "metrics.jsonl":
            raise OSError(reopen, os.strerror(reopen))
        return open(path, *args, **kwargs)

    monkeypatch.setattr(rundir, "write_text_atomically", rewriting)
    monkeypatch.setattr(rundir, "open", reopening, raising=False)

    result = invoke("fit", config, "--resume", run, "--set", "train.epochs=4",
                    "--quiet")

    fix = {errno.ENOSPC: "free some space",
           errno.EACCES: "check the permissions of the file and its folder"}
    assert_one_line_error(result, 1, f"cannot rewrite {run / 'metrics.jsonl'}"
                                     f" ({os.strerror(reported)}): {fix[reported]},"
                                     " and resume the run again")


@pytest.mark.parametrize("name", ["best.npz", "last.npz", "snapshot-3.npz",
                                  ".best.npz.abc12_yz.tmp"])
@pytest.mark.parametrize("flags", [["--force"], []])
@pytest.mark.parametrize("arrays", [{"precious": np.arange(5)},
                                    {"meta": np.array("{}"), "x": np.arange(5)}],
                         ids=["no-meta", "a-meta-array"])
def test_fit_with_or_without_force_names_a_users_npz_of_a_checkpoints_name(
        tmp_path, config, name, flags, arrays):
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    with open(out / "checkpoints" / name, "wb") as file:
        np.savez(file, **arrays)
    kept = _files(out)

    result = invoke("fit", config, "--out", out, "--quiet", *flags)

    assert_one_line_error(result, 2, f"{out / 'checkpoints' / name} is not a"
                                     " checkpoint nntrain wrote; --force removes"
                                     " only what a run wrote: move the file, or"
                                     " give --out another folder")
    assert _files(out) == kept


def test_force_removes_a_checkpoint_save_cut_short(run, config):
    # A save killed before the zip directory was written: its first entry's local
    # header names a checkpoint's first array; one killed at once leaves it empty.
    whole = (run / "checkpoints" / "last.npz").read_bytes()
    assert whole.startswith(b"PK\x03\x04") and whole[30:49] == b"param/affine1.W.npy"
    (run / "checkpoints" / ".last.npz.cut45678.tmp").write_bytes(whole[:200])
    (run / "checkpoints" / ".best.npz.none0000.tmp").write_bytes(b"")

    result = invoke("fit", config, "--out", run, "--quiet", "--force")

    assert result.exit_code == 0, result.output
    assert sorted(path.name for path in (run / "checkpoints").iterdir()) == [
        "best.npz", "last.npz"]


def test_fit_without_force_offers_resume_only_for_a_runs_checkpoint(tmp_path,
                                                                     config):
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "mine.npz").write_bytes(b"PK\x05\x06" + bytes(18))

    result = invoke("fit", config, "--out", out, "--quiet")

    assert_one_line_error(result, 2, f"run directory {out} is not empty; pass"
                                     " --force to start over, or --out to use"
                                     " another folder")


def _png(*chunks: tuple[bytes, bytes]) -> bytes:
    """A PNG of a 1x1 grey image whose chunks ``chunks`` (type, data) come before
    its image data, as a program other than nntrain may write one."""
    def chunk(kind, data):
        crc = zlib.crc32(kind + data).to_bytes(4, "big")
        return len(data).to_bytes(4, "big") + kind + data + crc

    header = chunk(b"IHDR", (1).to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0]))
    return (b"\x89PNG\r\n\x1a\n" + header
            + b"".join(chunk(kind, data) for kind, data in chunks)
            + chunk(b"IDAT", zlib.compress(b"\x00\x80")) + chunk(b"IEND", b""))


def test_force_removes_the_plots_a_run_wrote(run, config):
    Figure = pytest.importorskip("matplotlib.figure").Figure

    from nntrain.fileio import save_figure

    plots = run / "plots"
    plots.mkdir()
    save_figure(Figure(figsize=(1, 1)), plots / "loss.png", dpi=10)
    # What nntrain wrote before it named itself: Matplotlib's own "Software".
    Figure(figsize=(1, 1)).savefig(plots / "accuracy.png", dpi=10)

    result = invoke("fit", config, "--out", run, "--quiet", "--force")

    assert result.exit_code == 0, result.output
    assert not plots.exists()  # removed, and no plots were asked for


@pytest.mark.parametrize("chunks", [[], [(b"tEXt", b"Software\x00GIMP 2.10")]])
@pytest.mark.parametrize("flags", [["--force"], []])
def test_fit_with_or_without_force_names_a_users_png_of_a_plots_name(
        run, config, chunks, flags):
    (run / "plots").mkdir()
    (run / "plots" / "loss.png").write_bytes(_png(*chunks))
    kept = _files(run)

    result = invoke("fit", config, "--out", run, "--quiet", *flags)

    assert_one_line_error(result, 2, f"{run / 'plots' / 'loss.png'} is not a plot"
                                     " nntrain wrote; --force removes only what a"
                                     " run wrote: move the file, or give --out"
                                     " another folder")
    assert _files(run) == kept
