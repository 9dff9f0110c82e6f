"""The run directory (the contract in the README):

  runs/NAME/
    config.yaml      the resolved config, every default filled in
    metrics.jsonl    one JSON record per line
    train.log        what the terminal showed, without the progress bar
    checkpoints/     last.npz, best.npz
    plots/           PNG figures

Every file is written through a temporary file in the same folder, fsynced and
renamed, except the two logs, which are appended to line by line.
"""

import contextlib
import errno
import json
import os
import re
import tempfile
from pathlib import Path

from nntrain.checkpoint import written_by_nntrain
from nntrain.config import config_to_yaml
from nntrain.errors import (
    ConfigError,
    FolderLockedError,
    RunDirectoryError,
    StopRequested,
    TrainingError,
)
from nntrain.fileio import (
    RUN_FOLDER_ROOM,
    path_too_long,
    shortened_path,
    temporary_glob,
    write_fix,
    write_text_atomically,
    written_by_nntrain_png,
)
from nntrain.train.signals import signals_deferred, stop_exit_code, stopped_by
from nntrain.yamlio import parse_yaml

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

# What nntrain itself writes; --force removes these and nothing else.
OWN_FILES = ("config.yaml", "metrics.jsonl", "train.log")
CHECKPOINT_PATTERNS = ("last.npz", "best.npz", "snapshot-*.npz")
# A checkpoint's temporary file is checked as a checkpoint cut short is.
OWN_CHECKPOINT_PATTERNS = (*CHECKPOINT_PATTERNS, temporary_glob("*.npz"))
OWN_PLOT_PATTERNS = ("loss.png", "accuracy.png", "learning_rate.png",
                     "update_ratios.png", "activations.png", "first_layer_weights.png",
                     "confusion_matrix.png", "worst_examples.png")
# The temporary files a kill leaves beside the run's other files (fileio's
# TEMPORARY_SUFFIX), by folder: their names alone tell they are nntrain's, and a
# file cut short may hold anything.
OWN_TEMPORARY_PATTERNS = {
    ".": tuple(temporary_glob(name) for name in ("config.yaml", "metrics.jsonl")),
    "plots": tuple(temporary_glob(name) for name in OWN_PLOT_PATTERNS),
}


# The last resort a message about a failed write offers a new run.
NEW_RUN_ELSEWHERE = "or choose another --out"


class RunDirectory:
    """Creates the folder layout and appends to the run's log files.

    ``resume``: continue the existing run in the folder. Until the resumed run's
    first checkpoint save, which commits its state, the folder keeps the state of
    the checkpoint it resumes from: the run holds its records back, and
    config.yaml is written only then. The commit is crash-safe in two steps:

    - ``checkpoint_saving``, just before the first checkpoint is written: a run
      resumed from an older checkpoint puts that checkpoint in last.npz and
      moves the later files of its run aside, the newer last.npz among them
      (``set_aside_at_first_save``); then metrics.jsonl is cut to the
      records of the checkpoint it resumes from and the held-back records are
      appended, in one atomic rewrite. Written after the save, a kill between
      the two would leave last.npz past the checkpoint beside records it no
      longer covers (those of the dropped part of the run), which no later
      resume could tell from its own;
    - ``checkpoint_saved``, once it is written: the evaluation an extension drops
      goes from metrics.jsonl, and config.yaml is written.

    A kill at any point leaves a folder that resumes to the same end: before the
    rewrite, the folder as it was but for last.npz, which holds the resumed
    checkpoint (whose resume drops the records past it); after it, last.npz holds
    that checkpoint or the new one (whose records metrics.jsonl holds, and at
    most the dropped evaluation besides, which its history leaves out). A resumed
    run that fails or stops before its first save leaves metrics.jsonl as it was.
    """

    def __init__(self, path, force: bool = False, resume: bool = False):
        self.path = Path(path)
        # The last resort a message about a failed write offers: a resumed run
        # continues in its own folder, so another --out cannot help it.
        self.resuming = resume
        self.elsewhere = ("or copy the run directory and resume the copy" if resume
                          else NEW_RUN_ELSEWHERE)
        self._lock = None
        self._dropped_tail = None  # a last line of metrics.jsonl a resume dropped
        self._cleared = False  # whether --force has removed an earlier run's files
        try:
            self._open(force, resume)
        except KeyboardInterrupt as error:
            if not self._cleared:
                raise  # the caller's "nothing was written" holds
            # A signal --force deferred until the files were gone, or one after.
            raise StopRequested(
                f"{stopped_by(error)} while --force cleared {self.path}: the earlier"
                " run's files are removed; run again", stop_exit_code(error)
            ) from None

    def _open(self, force: bool, resume: bool) -> None:
        """Lock the folder, clear or check it, and open its logs."""
        problem = path_too_long(self.path, RUN_FOLDER_ROOM)
        if problem:
            raise RunDirectoryError(f"run directory {shortened_path(self.path)}:"
                                    f" {problem}; choose a shorter one with --out")
        try:
            if self.path.is_dir():
                self._take_lock()  # before --force removes anything
            if resume:
                self._check_writable(self.path)
                if (self.path / "checkpoints").is_dir():
                    self._check_writable(self.path / "checkpoints")
                self._seal_metrics()
                _refuse_misplaced(self.path)
            else:
                self._prepare(force)
            if self._lock is None:
                self._take_lock()
        except BaseException:
            self._release_lock()
            raise
        self.checkpoints = self.path / "checkpoints"
        self.plots = self.path / "plots"
        metrics = self.path / "metrics.jsonl"
        with contextlib.ExitStack() as opened:  # undone if any step fails
            opened.callback(self._release_lock)
            self.checkpoints.mkdir(exist_ok=True)
            self._metrics = opened.enter_context(_open_log(metrics))
            self._log = opened.enter_context(_open_log(self.path / "train.log"))
            opened.pop_all()
        # A resumed run's commit, waiting for its first checkpoint save: which of
        # the records in metrics.jsonl to keep (continue_after); the config to
        # write (write_config). And the records this run holds back until
        # then (None once they are in metrics.jsonl, and for a new run).
        self._uncommitted = {} if resume else None
        self._held = [] if resume else None
        self.saved = False  # whether this run has saved a checkpoint yet
        self._set_aside = None  # files to move before it (set_aside_at_first_save)
        self._write_failed = False  # whether appending to a log failed

    def _prepare(self, force: bool) -> None:
        if self.path.exists() and not self.path.is_dir():
            # The CLI refuses an --out that is a file; this is the config's output.
            raise RunDirectoryError(f"run directory {self.path} is a file, not a"
                                    " folder; choose a folder with --out or the"
                                    " config's output")
        if self.path.is_dir() and any(self.path.iterdir()):
            # What --force would refuse is named first: passing it cannot help.
            self._check_clearable()
            if not force:
                # A run stopped before its first save has nothing to resume.
                saved = any(written_by_nntrain(path) for path in
                            self._checkpoint_files(CHECKPOINT_PATTERNS))
                resume = " --resume to continue it," if saved else ""
                raise RunDirectoryError(
                    f"run directory {self.path} is not empty; pass --force to start"
                    f" over,{resume} or --out to use another folder"
                )
            self._remove_own_files()
        self._check_writable(self.path)

    def _check_clearable(self) -> None:
        """Refuse a folder that --force could not clear for a run: an entry where
        the run keeps another kind (a file named checkpoints), a symbolic link for
        one of its folders, or a file of a run's name that no run wrote."""
        _refuse_misplaced(self.path)
        for folder in ("checkpoints", "plots"):
            if (self.path / folder).is_symlink():
                raise RunDirectoryError(
                    f"{self.path / folder} is a symbolic link; nntrain will not clear"
                    " it with --force: remove it or choose another --out"
                )
        for name in OWN_FILES:
            path = self.path / name
            if path.exists() and not self._written_by_nntrain(name):
                raise RunDirectoryError(
                    f"{path} is not a run's {name} (nntrain did not write it);"
                    " --force removes only what a run wrote: move the file, or give"
                    " --out another folder"
                )
        for path in [*self._checkpoint_files(OWN_CHECKPOINT_PATTERNS),
                     *self._dropped_files()]:
            if not written_by_nntrain(path):
                raise RunDirectoryError(
                    f"{path} is not a checkpoint nntrain wrote; --force removes only"
                    " what a run wrote: move the file, or give --out another folder"
                )
        for path in self._own_files("plots", OWN_PLOT_PATTERNS):
            if not written_by_nntrain_png(path):
                raise RunDirectoryError(
                    f"{path} is not a plot nntrain wrote; --force removes only"
                    " what a run wrote: move the file, or give --out another folder"
                )

    def _checkpoint_files(self, patterns) -> list[Path]:
        """The files in checkpoints/ that have a name of ``patterns``."""
        return self._own_files("checkpoints", patterns)

    def _dropped_folders(self) -> list[Path]:
        """The folders in checkpoints/ where resumes set aside the files of a part
        of the run they left out (dropped.py), named exactly as it names them
        (others are not nntrain's: they stay); RunDirectoryError for a symbolic
        link of that name, which --force does not follow."""
        found = sorted(path for path in
                       (self.path / "checkpoints").glob(f"{DROPPED_PREFIX}*")
                       if DROPPED_NAME.fullmatch(path.name))
        for folder in found:
            if folder.is_symlink() or not folder.is_dir():
                raise RunDirectoryError(
                    f"{folder} is not a folder nntrain made; --force removes only"
                    " what a run wrote: move it, or give --out another folder")
        return found

    def _dropped_files(self) -> list[Path]:
        """The checkpoints a resume set aside (_dropped_folders)."""
        return sorted(path for folder in self._dropped_folders()
                      for pattern in OWN_CHECKPOINT_PATTERNS
                      for path in folder.glob(pattern)
                      if path.is_file() or path.is_symlink())

    def _own_files(self, folder: str, patterns) -> list[Path]:
        """The files in the run's ``folder`` that have a name of ``patterns``."""
        folder = self.path / folder
        return sorted(path for pattern in patterns for path in folder.glob(pattern)
                      if path.is_file() or path.is_symlink())

    def _remove_own_files(self) -> None:
        """--force: delete what an earlier run wrote, and nothing else, once
        _check_clearable has passed."""
        doomed = [self.path / name for name in OWN_FILES] + self._dropped_files()
        for folder, patterns in (("checkpoints", OWN_CHECKPOINT_PATTERNS),
                                 ("plots", OWN_PLOT_PATTERNS),
                                 *OWN_TEMPORARY_PATTERNS.items()):
            for pattern in patterns:
                doomed += (self.path / folder).glob(pattern)
        doomed = [path for path in doomed if path.is_file() or path.is_symlink()]
        try:
            _remove_all_or_none(doomed)
        finally:
            # A signal that came meanwhile is raised once they are all gone or
            # all back, from within the call: the folder tells which.
            self._cleared = bool(doomed) and not any(
                path.exists() or path.is_symlink() for path in doomed)
        for folder in (".", "checkpoints", "plots"):
            # Files an earlier --force, killed while it removed them, set aside.
            for path in (self.path / folder).glob(f".*{ASIDE}"):
                with contextlib.suppress(OSError):
                    path.unlink()
        for folder in [*self._dropped_folders(), "checkpoints", "plots"]:
            try:
                (self.path / folder).rmdir()  # only when nothing else is left in it
            except OSError:
                pass

    def _written_by_nntrain(self, name: str) -> bool:
        """Whether the run's file ``name`` looks like what a run writes, so that
        --force never deletes a user's own file of that name (a hand-written
        config.yaml in the folder, say, which may be the very config being run).
        config.yaml: a resolved config, laid out exactly as nntrain writes one;
        metrics.jsonl: records that start with "kind"; train.log: beside either of
        those, or beside a run's last.npz or best.npz (checkpoints/ files are
        checked by checkpoint.written_by_nntrain)."""
        path = self.path / name
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return False
        if not text:
            return True  # a run stopped at once leaves its logs empty
        if name == "config.yaml":
            return _is_resolved_config(text)
        if name == "metrics.jsonl":
            # Every record starts so (the Solver puts "kind" first); a crash may
            # have cut even the first one short.
            marker = '{"kind": "'
            return text.startswith(marker) or marker.startswith(text)
        return (any(self._written_by_nntrain(other) and (self.path / other).exists()
                    for other in ("config.yaml", "metrics.jsonl"))
                or any((self.path / "checkpoints" / name).is_file()
                       and written_by_nntrain(self.path / "checkpoints" / name)
                       for name in ("last.npz", "best.npz")))

    def _take_lock(self) -> None:
        """Hold a lock on the folder while the run writes to it, so that a second
        run started on the same folder (with --force or --resume) is refused
        instead of mixing its files with this one's."""
        self._lock = lock_folder(self.path)

    def _check_writable(self, folder: Path) -> None:
        """Refuse, before any training, a folder the run must write to but
        cannot: the run directory, and a resumed run's checkpoints/."""
        try:
            folder.mkdir(parents=True, exist_ok=True)
            probe = tempfile.TemporaryFile(dir=folder)
            probe.close()
        except OSError as error:
            if not self.resuming:
                fix = "choose another folder with --out"
            elif error.errno in (errno.EACCES, errno.EPERM):
                fix = f"check its permissions, {self.elsewhere}"
            else:
                fix = f"{write_fix(error)}, {self.elsewhere}"
            what = "run directory " if folder == self.path else ""
            raise RunDirectoryError(f"cannot write to {what}{folder}"
                                    f" ({error.strerror}); {fix}") from None

    def _seal_metrics(self) -> None:
        """Check metrics.jsonl (RunDirectoryError naming a damaged line), and drop a
        last line cut short by a kill, which holds no record: each record a resumed
        run appends must start a line of its own."""
        path = self.path / "metrics.jsonl"
        if not (path.exists() or path.is_symlink()):
            return
        found = _read_bytes(path)
        records, self._dropped_tail = _parse_records(found, path)
        text = "".join(line + "\n" for line, _ in records)
        if found != text.encode("utf-8"):
            write_text_atomically(path, text)

    def cut_short_note(self, iteration: int) -> str | None:
        """What to tell a resumed run whose checkpoint holds ``iteration`` updates
        about the last line of metrics.jsonl cut short that it dropped: nothing
        when that line was a record past the checkpoint (a kill while it was
        written, which the resume redoes); otherwise its record is lost, since
        only the checkpoint's evaluations could rebuild it. Damage to the file can
        cut any record short."""
        if self._dropped_tail is None:
            return None
        path = self.path / "metrics.jsonl"
        found = re.match(rb'\{"kind": "[a-z]+", "iteration": (\d+),',
                         self._dropped_tail)
        if found is None:
            return (f"dropped the last line of {path}, a record cut short too soon to"
                    " tell its iteration: if the checkpoint (iteration"
                    f" {iteration}) covers it, that record is lost")
        if int(found[1]) > iteration:
            return None
        return (f"dropped the last line of {path}, a record cut short: the record of"
                f" iteration {int(found[1])}, which the checkpoint (iteration"
                f" {iteration}) covers, is lost")

    def continue_after(self, iteration: int, evaluations, saved) -> None:
        """Which records from before it a resumed run keeps once it commits: those
        of its checkpoint's ``iteration`` updates (a run killed after the checkpoint
        wrote more), and of the evaluation records ("epoch", "event") only those at
        ``evaluations``, the iterations of the evaluations it continues from. That
        drops an evaluation a killed run made after its checkpoint, and the final
        evaluation of a shorter run that this one extends (the "iter" record of
        that update stays: the update is part of the longer run). ``saved``: the
        iterations of the evaluations the checkpoint itself holds, which the
        extension's final evaluation is among: its record goes only once this
        run's first checkpoint is saved (``checkpoint_saved``)."""
        self._uncommitted["keep"] = (iteration, frozenset(evaluations),
                                     frozenset(saved))

    def records_after(self, iteration: int) -> int:
        """How many records a resumed run found in metrics.jsonl past ``iteration``
        (those its first save drops)."""
        records = read_records(self.path / "metrics.jsonl")
        return sum(record["iteration"] > iteration for _, record in records)

    def write_config(self, config: dict) -> None:
        """Write config.yaml; a resumed run's, at its first checkpoint save."""
        text = config_to_yaml(config)
        if self._uncommitted is None:
            path = self.path / "config.yaml"
            try:
                write_text_atomically(path, text)
            except OSError as error:
                raise _write_error(path, error, self.elsewhere) from None
        else:
            self._uncommitted["config"] = text

    def set_aside_at_first_save(self, future) -> None:
        """Move ``future`` (dropped.DroppedFuture), the files of the part of the run
        a resume from an older checkpoint leaves out, aside just before this run's
        first checkpoint save."""
        self._set_aside = future

    def checkpoint_saving(self) -> None:
        """A checkpoint of this run is about to be saved: a resumed run's first one
        puts its records in metrics.jsonl first (the class docstring says why),
        cut to the records of the checkpoint it resumes from."""
        if self._held is None:
            return
        future, self._set_aside = self._set_aside, None
        if future is not None:
            # First: a kill at any later point leaves a folder whose last.npz
            # resumes from the checkpoint (or from this run's save), whose resume
            # cuts the records past it and moves the later files aside again.
            future.set_aside()
        iteration, _, saved = self._uncommitted["keep"]
        self._rewrite_metrics(lambda record: _kept(record, iteration, saved),
                              self._held)
        self._uncommitted["held"] = len(self._held)
        self._held = None

    def checkpoint_saved(self) -> None:
        """A checkpoint of this run was saved: a resumed run commits to its own
        state now, dropping the evaluation an extension drops (continue_after) and
        writing its config."""
        self.saved = True
        if self._uncommitted is None:
            return
        # Committed from here on, even if a rewrite fails: the records this run
        # wrote belong to the checkpoint just saved.
        uncommitted, self._uncommitted = self._uncommitted, None
        iteration, evaluations, saved = uncommitted["keep"]
        if evaluations != saved:
            # The records this run wrote (the file's last ones) stay whole.
            self._rewrite_metrics(
                lambda record: _kept(record, iteration, evaluations),
                [], keep_last=uncommitted["held"])
        # A kill before this write leaves the old config.yaml beside the new
        # checkpoint, whose config a resume uses anyway; it writes this one.
        if "config" in uncommitted:
            config = self.path / "config.yaml"
            try:
                write_text_atomically(config, uncommitted["config"])
            except OSError as error:
                raise _rewrite_error(config, error) from None

    def _rewrite_metrics(self, keep, added: list, keep_last: int = 0) -> None:
        """Replace metrics.jsonl, in one atomic write, with the records ``keep``
        (a test of a record) keeps, but for its last ``keep_last`` ones, which
        stay, followed by the lines ``added``; a TrainingError names the file
        when that fails."""
        path = self.path / "metrics.jsonl"
        try:
            self._metrics.close()
        except OSError as error:
            raise _write_error(path, error, self.elsewhere) from None
        try:
            records = read_records(path)
            cut = len(records) - keep_last
            lines = [line for line, record in records[:cut] if keep(record)]
            lines += [line for line, _ in records[cut:]] + added
            try:
                write_text_atomically(path, "".join(line + "\n" for line in lines))
            except OSError as error:
                raise _rewrite_error(path, error) from None
        except BaseException:
            # That error ends the run, and names what failed: one from reopening
            # the file must not replace it.
            with contextlib.suppress(TrainingError):
                self._reopen_metrics(path)
            raise
        self._reopen_metrics(path)

    def _reopen_metrics(self, path: Path) -> None:
        """Append to metrics.jsonl again, once it was replaced."""
        try:
            self._metrics = open(path, "ab", buffering=0)
        except OSError as error:
            raise _rewrite_error(path, error) from None

    def record(self, record: dict) -> None:
        """Append one metrics record (a flat dict) to metrics.jsonl; a resumed run
        holds it back until its first save (checkpoint_saving). Its numbers must be
        finite (the Solver writes null for the others): JSON has no NaN."""
        line = json.dumps(record, allow_nan=False)
        if self._held is not None:
            self._held.append(line)
        else:
            self._append(self._metrics, line)

    def log(self, line: str) -> None:
        self._append(self._log, line)

    def _append(self, file, line: str) -> None:
        """Write ``line`` at the end of the log ``file`` (unbuffered, see
        _open_log), whole or not at all: a line a failed write cut short is cut
        off again, as it would read as the mark of a run killed while writing."""
        start = os.fstat(file.fileno()).st_size
        data = memoryview((line + "\n").encode("utf-8"))
        try:
            while data:
                data = data[file.write(data):]
        except OSError as error:
            self._write_failed = True
            with contextlib.suppress(OSError):
                os.ftruncate(file.fileno(), start)
            raise _write_error(file.name, error, self.elsewhere) from None

    def close(self) -> None:
        """Close the logs and release the folder. A close can fail even with
        nothing left to write (a network file system writes back then): after a
        write that failed, that failure was reported already; one seen first here
        is a TrainingError."""
        failed = None
        for file in (self._metrics, self._log):
            try:
                file.close()  # closed even when it fails
            except OSError as error:
                failed = failed or _write_error(file.name, error, self.elsewhere)
        self._release_lock()
        if failed and not self._write_failed:
            raise failed

    def _release_lock(self) -> None:
        if self._lock is not None:
            os.close(self._lock)  # which releases the lock
            self._lock = None


# The folders of checkpoints/ where a resume sets aside a dropped part of the run.
DROPPED_PREFIX = "dropped-after-iteration-"
DROPPED_NAME = re.compile(re.escape(DROPPED_PREFIX) + r"\d+(-\d+)?")

# What --force appends to the name of a file it is about to delete.
ASIDE = ".nntrain-removing"


def _remove_all_or_none(paths: list[Path]) -> None:
    """Delete ``paths``, or, when one of them cannot go, none of them
    (RunDirectoryError naming it): --force must not leave a run it could not clear
    without the files that resume it. Each is first renamed aside in its own
    folder, which fails as its removal would (a read-only folder or file system,
    a mount point); if one fails, or anything else stops the renames, those
    already renamed are put back. A signal waits until the files are all gone or
    all back: raised among the renames, it would leave some aside, where a
    resume finds no checkpoint."""
    aside = []
    with signals_deferred():
        try:
            for path in paths:
                target = path.with_name(f".{path.name}{ASIDE}")
                path.rename(target)
                aside.append((path, target))
        except OSError as error:
            reason = f"{path} ({error.strerror or error})"
            _put_back(aside, f"--force cannot remove {reason}")
            raise RunDirectoryError(
                f"--force cannot remove {reason}: {write_fix(error)}, or choose"
                " another --out; nothing was removed") from None
        except BaseException:
            _put_back(aside, "--force was interrupted")
            raise
        for _, renamed in aside:
            with contextlib.suppress(OSError):  # a later --force removes what is left
                renamed.unlink()


def _put_back(aside: list[tuple[Path, Path]], why: str) -> None:
    """Rename each (original, renamed) pair of ``aside`` back, the last first.
    Those that cannot go back are named in a RunDirectoryError that begins with
    ``why``: it replaces the error in flight, whose "nothing was removed" would
    no longer hold."""
    stuck = []
    for original, renamed in reversed(aside):
        try:
            renamed.rename(original)
        except OSError as error:
            stuck.append(f"{renamed} to {original.name}"
                         f" ({error.strerror or error})")
    if stuck:
        raise RunDirectoryError(f"{why}, and cannot put back the files it had set"
                                f" aside: rename {', '.join(reversed(stuck))} by"
                                " hand, then run again") from None


def lock_folder(path: Path) -> int | None:
    """An exclusive lock on the folder ``path``: the descriptor that holds it
    (os.close releases it), or None where it cannot be taken (Windows has no
    flock; an unreadable folder is reported by the caller's own checks).
    FolderLockedError when another process holds it. The operating system drops
    the lock when the process ends, however it ends. A file system that takes no
    locks (some network ones answer ENOLCK) gives None too: "held by another
    process" would never clear there."""
    if fcntl is None:
        return None
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        os.close(descriptor)
        if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
            return None
        raise FolderLockedError(
            f"another nntrain process is writing to {path}; wait for it to end, or"
            " give --out another folder") from None
    return descriptor


def misplaced_entry(path) -> str | None:
    """What in the run directory ``path`` has the name of a folder the run keeps
    (checkpoints, plots) or of a file it writes (config.yaml, the logs, checkpoints,
    plots) but is of another kind, as "PATH is a file, where ..."; None if nothing.
    Checked before a run starts: writing there later would fail."""
    path = Path(path)
    for name in ("checkpoints", "plots"):
        folder = path / name
        if (folder.exists() or folder.is_symlink()) and not folder.is_dir():
            return f"{folder} is {_kind(folder)}, where nntrain keeps the run's {name}"
    files = [path / name for name in OWN_FILES]
    for folder, patterns in (("checkpoints", CHECKPOINT_PATTERNS),
                             ("plots", OWN_PLOT_PATTERNS)):
        if (path / folder).is_dir():
            files += sorted(item for pattern in patterns
                            for item in (path / folder).glob(pattern))
    for file in files:
        # Not a broken symbolic link: --force removes it, a file written through
        # a temporary one replaces it, and a log is appended to through it.
        if file.exists() and not file.is_file():
            return f"{file} is {_kind(file)}, where nntrain writes a file of that name"
    return None


def _kind(path: Path) -> str:
    if path.is_dir():
        return "a folder"
    if path.is_file():
        return "a file"
    if not path.exists():
        return "a broken symbolic link"
    return "a special file (a pipe or a device)"


def missing_or_unreadable(path: Path) -> str:
    """How a checkpoint at ``path`` that does not load is lost, as notes say it:
    "missing" when nothing is there, else "unreadable" (a broken symbolic link
    is there, and unreadable)."""
    return "missing" if not (path.exists() or path.is_symlink()) else "unreadable"


def _kept(record: dict, iteration: int, evaluations) -> bool:
    """Whether a resumed run keeps ``record``, one of metrics.jsonl from before
    it, when it continues from ``iteration`` updates and the evaluations at the
    iterations ``evaluations`` (continue_after)."""
    return record["iteration"] <= iteration and (
        record.get("kind") == "iter" or record["iteration"] in evaluations)


def _rewrite_error(path, error: OSError) -> TrainingError:
    """A resumed run's file that cannot be replaced at its first save."""
    return TrainingError(f"cannot rewrite {path} ({error.strerror or error}):"
                         f" {write_fix(error)}, and resume the run again")


def _write_error(path, error: OSError, elsewhere: str) -> TrainingError:
    """A log that cannot be written: a run-time failure, as a full disk is.
    ``elsewhere``: the run's last resort (RunDirectory.elsewhere)."""
    return TrainingError(f"cannot write {path} ({error.strerror or error}):"
                         f" {write_fix(error)}, {elsewhere}")


def _open_log(path: Path):
    """``path`` opened for appending lines, unbuffered, so that a failed write
    leaves nothing in a buffer for the next one (RunDirectory._append); failing
    that, bad input naming it."""
    try:
        return open(path, "ab", buffering=0)
    except OSError as error:
        reason = error.strerror or type(error).__name__
        if path.is_symlink() and not path.exists():
            reason = "a broken symbolic link"
        raise RunDirectoryError(f"cannot append to {path} ({reason}); remove or"
                                " rename it, or make it writable") from None


def _refuse_misplaced(path: Path) -> None:
    problem = misplaced_entry(path)
    if problem:
        raise RunDirectoryError(f"{problem}; remove or rename it")


RESOLVED_SECTIONS = {"seed", "data", "model", "optimizer", "schedule", "train",
                     "output"}


def _is_resolved_config(text: str) -> bool:
    """Whether ``text`` holds every section of a resolved config and is laid out as
    config_to_yaml lays it out (block style, its order, no comments): a file written
    by hand almost never is, and one nntrain wrote always is, whatever its version."""
    try:
        parsed = parse_yaml(text, "config.yaml")
    except ConfigError:
        return False
    return (isinstance(parsed, dict) and RESOLVED_SECTIONS <= set(parsed)
            and config_to_yaml(parsed) == text)


# How the message for a damaged metrics file ends: what the user can do about it.
METRICS_FIX = "fix or delete that line, or start over with --force"


def read_records(path: Path) -> list[tuple[str, dict]]:
    """(line, record) for each record of a run's metrics.jsonl, in order.

    Every line must be a JSON object with an integer "iteration" (RunDirectoryError
    naming the line otherwise), but one: a last line without its newline that is
    not valid JSON was cut short by a run killed while writing it, and is left out.
    Blank lines are skipped.
    """
    return _parse_records(_read_bytes(path), path)[0]


def _parse_records(text: bytes, path: Path) -> tuple[list, bytes | None]:
    """read_records of a metrics.jsonl holding ``text``, and the last line it left
    out as cut short (None if none)."""
    lines = text.split(b"\n")
    torn = lines.pop()  # what follows the last newline: empty unless cut short
    records = [_parse_record(raw, number, path)
               for number, raw in enumerate(lines, 1) if raw.strip()]
    if not torn.strip():
        return records, None
    if _cut_short(torn):
        return records, torn
    records.append(_parse_record(torn, len(lines) + 1, path))
    return records, None


def _read_bytes(path: Path) -> bytes:
    # A folder, a pipe or a device in its place would fail or block the read.
    if not path.is_file():
        raise RunDirectoryError(
            f"{path} is not a file; the run's metrics.jsonl must be one: put the"
            " run's file back, or start over with --force"
        )
    try:
        return path.read_bytes()
    except OSError as error:
        raise RunDirectoryError(f"cannot read {path} ({error.strerror}); check its"
                                " permissions") from None


def _cut_short(raw: bytes) -> bool:
    """Whether ``raw`` can be the start of a record whose write was cut short:
    text that opens a JSON object but does not parse (records are ASCII)."""
    try:
        text = raw.decode("ascii")
        json.loads(text)
    except UnicodeDecodeError:
        return False
    except (ValueError, RecursionError):
        return text.lstrip().startswith("{")
    return False


def _parse_record(raw: bytes, number: int, path: Path) -> tuple[str, dict]:
    where = f"{path}, line {number}"
    try:
        line = raw.decode("utf-8")
        record = json.loads(line)
    except (ValueError, RecursionError):  # bad UTF-8 or JSON, a huge integer
        record = None
    if not isinstance(record, dict):
        raise RunDirectoryError(f"{where}: not a JSON object, as every metrics"
                                f" record is; the file is damaged: {METRICS_FIX}")
    iteration = record.get("iteration")
    # bool is a subclass of int, but true is no count of updates.
    if type(iteration) is not int or iteration < 0:
        shown = json.dumps(iteration)
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        raise RunDirectoryError(f'{where}: "iteration" is {shown}, not a count of'
                                f" updates; the file is damaged: {METRICS_FIX}")
    return line, record
