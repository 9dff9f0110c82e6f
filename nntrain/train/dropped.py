"""Setting aside the files of the part of a run that a resume from an older
checkpoint of it (a snapshot, best.npz) leaves out.

Nothing is deleted: just before the resumed run's first checkpoint save, a
newer last.npz goes into ``checkpoints/dropped-after-iteration-N/`` (N: the
resumed checkpoint's iteration) as last.npz gets the resumed checkpoint, then
the later snapshots and a best.npz holding a later evaluation are renamed into
that folder, one atomic rename each, so a kill at any point leaves every file in
place or in that folder. Only the run's own files move: named as the trainer
names its snapshots, not symbolic links, loading as checkpoints of the same
config (but for what a resume may change) trained on the same data.
"""

import errno
import os
import re
from dataclasses import dataclass
from pathlib import Path

from nntrain.checkpoint import load_checkpoint
from nntrain.errors import CheckpointError, ConfigError, TrainingError
from nntrain.fileio import write_bytes_atomically, write_fix
from nntrain.restore import migrate_config
from nntrain.train.resume import differs, saved_config
from nntrain.train.rundir import DROPPED_PREFIX

SNAPSHOT_NAME = re.compile(r"snapshot-epoch-\d{4,}\.npz")


@dataclass
class DroppedFuture:
    """The files a resumed run moves aside. ``folder``: where they go;
    ``files``: {path: its identity when found}, a file replaced since then stays;
    ``best``: the bytes best.npz gets once moved (the resumed checkpoint, holding
    the best evaluation the run keeps), None to leave it absent; ``last``: the
    bytes last.npz gets (the resumed checkpoint) when it holds a later iteration,
    its file then among ``files``."""

    iteration: int
    folder: Path
    files: dict
    best: bytes | None = None
    last: bytes | None = None

    def set_aside(self) -> None:
        """Move each file into ``folder``, never over a file already there."""
        try:
            self.folder.mkdir(exist_ok=True)
            last = self.folder.parent / "last.npz"
            if self.last is not None:
                # First, and with no moment when last.npz is missing (a resume of
                # the run folder would take its newest checkpoint, a dropped one):
                # the old file gets a second name in the folder, then last.npz is
                # replaced. From here on last.npz resumes from the checkpoint.
                if self._movable(last):
                    _link(last, self.folder / last.name)
                write_bytes_atomically(last, self.last)
            for path in self.files:
                if path != last and self._movable(path):
                    path.rename(self.folder / path.name)
            best = self.folder.parent / "best.npz"
            if self.best is not None and not best.exists():
                write_bytes_atomically(best, self.best)
        except OSError as error:
            raise TrainingError(
                f"cannot move the files of the dropped part of the run into"
                f" {self.folder} ({error.strerror or error}): {write_fix(error)};"
                " every file is still in checkpoints/ or in that folder") from None

    def _movable(self, path: Path) -> bool:
        """Whether ``path`` is the file found, not yet in ``folder``."""
        target = self.folder / path.name
        return (path in self.files and _identity(path) == self.files[path]
                and not (target.exists() or target.is_symlink()))


def _link(path: Path, target: Path) -> None:
    """Give the file at ``path`` the name ``target`` too; a copy where the file
    system has no hard links."""
    try:
        os.link(path, target)
    except OSError as error:
        if error.errno == errno.EEXIST:
            raise
        write_bytes_atomically(target, path.read_bytes())


def dropped_future(checkpoint, folder: Path, progress,
                   last: bytes | None = None) -> DroppedFuture | None:
    """The files of the run in its checkpoints ``folder`` that hold a later
    iteration than ``checkpoint`` (loaded from that folder): last.npz when
    ``last``, the bytes it gets, is given (its file, not a symbolic link, is
    kept), its snapshots past it, and best.npz when it holds a later evaluation.
    ``progress``: the state the resumed run continues from. None when there are
    none."""
    own = checkpoint.meta["solver"]["progress"]
    resumed = Path(checkpoint.path).resolve()
    names = sorted(path for path in folder.iterdir()
                   if SNAPSHOT_NAME.fullmatch(path.name)) + [folder / "best.npz"]
    files = {}
    if last is not None and not (folder / "last.npz").is_symlink():
        files[folder / "last.npz"] = _identity(folder / "last.npz")
    for path in names:
        if path.is_symlink() or not path.is_file() or path.resolve() == resumed:
            continue
        held = _loaded(path)
        if (held is not None and _held_iteration(held) > own["iteration"]
                and _same_run(held, checkpoint)):
            files[path] = _identity(path)
    if not files and last is None:
        return None
    future = DroppedFuture(own["iteration"], _free_folder(folder, own["iteration"]),
                           files, last=last)
    if folder / "best.npz" in files and _holds_kept_best(own, progress):
        future.best = Path(checkpoint.path).read_bytes()
    return future


def _holds_kept_best(own: dict, progress) -> bool:
    """Whether the resumed checkpoint (its saved progress ``own``) saved the best
    evaluation the resumed run keeps."""
    return (progress.best_iteration is not None
            and own["iteration"] == progress.best_iteration
            == own.get("last_eval_iteration")
            and own.get("best_value") == progress.best_value)


def _free_folder(folder: Path, iteration: int) -> Path:
    """dropped-after-iteration-N, or -N-2, -N-3... when an earlier resume made
    that one."""
    name = f"{DROPPED_PREFIX}{iteration}"
    found, count = folder / name, 1
    while found.exists() or found.is_symlink():
        count += 1
        found = folder / f"{name}-{count}"
    return found


def _identity(path: Path) -> tuple | None:
    """What changes when the file at ``path`` is replaced; None when absent."""
    try:
        found = path.stat()
    except OSError:
        return None
    return found.st_ino, found.st_mtime_ns, found.st_size


def _loaded(path: Path):
    try:
        return load_checkpoint(path)
    except CheckpointError:
        return None


def _held_iteration(checkpoint) -> int:
    try:
        iteration = checkpoint.meta["solver"]["progress"]["iteration"]
    except (KeyError, TypeError):
        return -1
    return iteration if isinstance(iteration, int) else -1


def _same_run(checkpoint, other) -> bool:
    """Whether two checkpoints were trained with the same config, but for what a
    resume may change, on the same data (its fingerprints)."""
    if checkpoint.meta.get("data") != other.meta.get("data"):
        return False
    try:
        configs = [migrate_config(saved_config(held, held.path), held.path,
                                  warn=False) for held in (checkpoint, other)]
    except (CheckpointError, ConfigError):
        return False
    return not differs(*configs)
