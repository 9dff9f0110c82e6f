"""Setting aside the files of the part of a run that a resume from an older
checkpoint of it (a snapshot, best.npz) leaves out.

Nothing is deleted: just before the resumed run's first checkpoint save, the
later snapshots and a best.npz holding a later evaluation are renamed into
``checkpoints/dropped-after-iteration-N/`` (N: the resumed checkpoint's
iteration), one atomic rename each, so a kill at any point leaves every file in
place or in that folder. Only the run's own files move: named as the trainer
names its snapshots, not symbolic links, loading as checkpoints of the same
config (but for what a resume may change) trained on the same data.
"""

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
    the best evaluation the run keeps), None to leave it absent."""

    iteration: int
    folder: Path
    files: dict
    best: bytes | None = None

    def set_aside(self) -> None:
        """Rename each file into ``folder``, never over a file already there."""
        try:
            self.folder.mkdir(exist_ok=True)
            for path, identity in self.files.items():
                target = self.folder / path.name
                if _identity(path) == identity and not target.exists():
                    path.rename(target)
            best = self.folder.parent / "best.npz"
            if self.best is not None and not best.exists():
                write_bytes_atomically(best, self.best)
        except OSError as error:
            raise TrainingError(
                f"cannot move the files of the dropped part of the run into"
                f" {self.folder} ({error.strerror or error}): {write_fix(error)};"
                " every file is still in checkpoints/ or in that folder") from None


def dropped_future(checkpoint, folder: Path, progress) -> DroppedFuture | None:
    """The files of the run in its checkpoints ``folder`` that hold a later
    iteration than ``checkpoint`` (loaded from that folder): its snapshots past
    it, and best.npz when it holds a later evaluation. ``progress``: the state
    the resumed run continues from. None when there are none."""
    own = checkpoint.meta["solver"]["progress"]
    resumed = Path(checkpoint.path).resolve()
    names = sorted(path for path in folder.iterdir()
                   if SNAPSHOT_NAME.fullmatch(path.name)) + [folder / "best.npz"]
    files = {}
    for path in names:
        if path.is_symlink() or not path.is_file() or path.resolve() == resumed:
            continue
        held = _loaded(path)
        if (held is not None and _held_iteration(held) > own["iteration"]
                and _same_run(held, checkpoint)):
            files[path] = _identity(path)
    if not files:
        return None
    future = DroppedFuture(own["iteration"], _free_folder(folder, own["iteration"]),
                           files)
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
