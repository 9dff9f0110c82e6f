"""Checkpoints: one ``.npz`` of named arrays plus a JSON ``meta``, never a pickle.

Array names by prefix (DESIGN.md's contract):
  param/<layer>.<name>     trainable arrays          (param/affine1.W)
  buffer/<layer>.<name>    non-trainable layer state (batch-norm statistics)
  optim/<param>/<slot>     update-rule state         (optim/affine1.W/velocity)
  prep/<step>.<name>       preprocessing state       (prep/center.mean)
  average/<param>          averaged weights, when kept, and beside them
  average/<layer>.<name>   batch-norm statistics measured for them
  meta                     0-d unicode array holding JSON: format, version, config,
                           data spec, counters, generator states, history, checksums
Writing goes to a temporary file in the same folder, which is flushed, fsynced and
renamed over the target, so a crash leaves either the old file or the new one.
"""

import codecs
import json
import os
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nntrain import __version__
from nntrain.arguments import path_argument
from nntrain.data.npfile import NPY_MAGIC, NpzReader, first_line
from nntrain.errors import EDITED_CHECKPOINT_FIX, CheckpointError
from nntrain.fileio import (
    publish,
    read_fix,
    temporary_for,
    too_long_paths_refused,
)
from nntrain.train.signals import signals_deferred

FORMAT = 1
PREFIXES = ("param", "buffer", "optim", "prep", "average")
# Where a run keeps the checkpoint most commands want.
EXAMPLE = str(Path("runs", "NAME", "checkpoints", "best.npz"))
# Bytes enough to tell text from a zip archive, which starts with PK.
TEXT_PROBE = 4096
# Files given as a checkpoint by mistake, told by the bytes they start with; a
# PDF before text, which a small one may decode as.
FOREIGN_KINDS = (
    (NPY_MAGIC, "a single array (.npy)"),
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"%PDF-", "a PDF document"),
    (b"\x1f\x8b", "a gzip file"),
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file"),
)


@dataclass
class Checkpoint:
    """A loaded checkpoint: ``meta`` and one dict of arrays per prefix."""

    meta: dict
    arrays: dict = field(default_factory=dict)  # prefix -> {name: array}
    path: Path | None = field(default=None, compare=False)  # for messages

    def group(self, prefix: str) -> dict:
        return self.arrays.get(prefix, {})


def _checksum(array: np.ndarray) -> str:
    return format(zlib.crc32(np.ascontiguousarray(array).view(np.uint8)), "08x")


def save_checkpoint(path, meta: dict, arrays: dict) -> None:
    """Save ``arrays`` ({prefix: {name: array}}) and ``meta`` to ``path``.

    Atomic: a temporary file in the same folder, fsynced, then renamed over ``path``.
    """
    path = Path(path)
    flat = {
        f"{prefix}/{name}": np.asarray(value)
        for prefix, group in arrays.items()
        for name, value in group.items()
    }
    meta = {
        **meta,
        "format": FORMAT,
        "nntrain_version": __version__,
        "checksums": {key: _checksum(value) for key, value in flat.items()},
    }
    flat["meta"] = np.array(json.dumps(meta))

    with temporary_for(path) as (descriptor, temporary):
        with os.fdopen(descriptor, "wb") as file:
            # A signal raised inside np.savez breaks its zip file, which then
            # reports a ValueError; after it, the stop is as clean as anywhere.
            with signals_deferred():
                np.savez(file, **flat)
            file.flush()
            os.fsync(file.fileno())
        publish(temporary, path)
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    # The rename itself is durable only once the folder's entry is on disk.
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


@too_long_paths_refused()
def load_checkpoint(path) -> Checkpoint:
    """Read and verify a checkpoint; any problem is a ``CheckpointError``.
    ``path``: a str or pathlib.Path, a leading ``~`` expanded as the shell does.

    Every member's name, dtype and declared size are checked before any array is
    read, so a forged file is refused without unpickling or allocating anything.
    """
    path = Path(path_argument("path", path, "the checkpoint's path, a str or"
                              " pathlib.Path"))
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a checkpoint;"
                              f" {checkpoint_in(path)}")
    if not path.is_file():
        if path.exists():  # a pipe or a device: reading it could block forever
            raise CheckpointError(f"{path} is not a regular file; give a checkpoint"
                                  " file (.npz)")
        raise CheckpointError(f"checkpoint not found: {path}; {_beside(path)}")
    try:
        with open(path, "rb") as file:
            start = file.read(TEXT_PROBE)
        if not start and path.suffix.lower() == ".npz":
            others = " or ".join(name for name in ("best.npz", "last.npz")
                                 if name != path.name)
            raise CheckpointError(f"{path} is empty (0 bytes), as a crash or a full"
                                  " disk can leave a checkpoint being written: use"
                                  f" another checkpoint ({others})")
        kind = _kind_of(start, Path(path))
        if kind:
            raise CheckpointError(f"{path} is {kind}, not a checkpoint; give a"
                                  f" checkpoint (.npz), such as {EXAMPLE}")
        with NpzReader(path, CheckpointError) as archive:
            _check_members(archive.headers, path)
            meta = _read_meta(archive.read("meta"), path)
            _check_complete(meta, archive.headers, path)
            arrays = {key: archive.read(key) for key in archive.headers
                      if key != "meta"}
    except CheckpointError:
        raise
    except PermissionError as error:
        raise CheckpointError(f"cannot read {path} ({error.strerror});"
                              f" {read_fix(error)}") from None
    except Exception as error:  # a damaged zip fails in many ways; all mean the same
        raise CheckpointError(
            f"{path} is not a readable checkpoint ({first_line(error)}); it may be"
            " truncated or corrupt: use another checkpoint (best.npz or last.npz)"
        ) from None

    return Checkpoint(meta, _group_and_verify(arrays, meta, path), path)


def checkpoint_in(folder: Path) -> str:
    """How to give a checkpoint instead of ``folder``: one that is there (best.npz,
    else last.npz, else another), in the folder itself or in its checkpoints
    folder; else that of a run one level down (a folder of runs); else that
    there is none."""
    own = _checkpoints_of(folder / "checkpoints") or _checkpoints_of(folder)
    if own:
        return f"give one of its checkpoints, such as {own[0]}"
    try:
        children = sorted(child for child in folder.iterdir() if child.is_dir())
    except OSError:  # an unreadable folder: none can be named
        children = []
    below = [found for child in children
             for found in _checkpoints_of(child / "checkpoints")[:1]]
    if below:
        return f"give a run's checkpoint, such as {below[0]}"
    return f"it holds no checkpoint: give a checkpoint (.npz), such as {EXAMPLE}"


def _checkpoints_of(folder: Path) -> list[Path]:
    """The checkpoints a run saves that are in ``folder`` and read as one (not a
    user's npz of that name, nor a damaged file): best.npz, last.npz, then its
    snapshots (another .npz there may be data)."""
    return [path for pattern in ("best.npz", "last.npz", "snapshot-*.npz")
            for path in sorted(folder.glob(pattern)) if is_checkpoint(path)]


def _beside(path: Path) -> str:
    """The fix for a checkpoint that is not there: the run's other checkpoint when
    it is beside it (best.npz for last.npz, or the other way), else to check the
    path."""
    other = {"best.npz": "last.npz", "last.npz": "best.npz"}.get(path.name)
    if other and is_checkpoint(path.parent / other):
        return f"{path.parent / other} is there: give that one, or check the path"
    return "check the path"


def _kind_of(start: bytes, path: Path) -> str | None:
    """What a file that starts with ``start`` is, when it is plainly no checkpoint,
    as "a PNG image"; None when it may be a damaged one (its reading then says
    so): one that starts as a zip archive (an .npz) does, and an empty or
    unrecognized one named .npz, as a crash or a full disk leaves a checkpoint."""
    if start.startswith(b"PK"):
        return None
    for magic, kind in FOREIGN_KINDS:
        if start.startswith(magic):
            return kind
    if start and _is_text(start):
        return "a text file (a config or a log?)"
    if path.suffix.lower() == ".npz":
        return None
    if not start:
        return "an empty file"
    return "a file of another kind (an .npz starts with the bytes PK)"


def _is_text(start: bytes) -> bool:
    """Whether a file that starts with ``start`` (TEXT_PROBE bytes, or all of a
    shorter file) holds text, such as a YAML config or metrics.jsonl, rather
    than a damaged archive: it decodes as UTF-8, without NUL bytes or the PK a
    zip archive starts with."""
    if not start or start.startswith(b"PK") or b"\x00" in start:
        return False
    # Not final when the probe may have cut a character in two.
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        decoder.decode(start, final=len(start) < TEXT_PROBE)
    except UnicodeDecodeError:
        return False
    return True


def is_checkpoint(path) -> bool:
    """Whether ``path`` is an .npz archive with a checkpoint's meta entry, intact or
    not beyond that: a file that no command should write over."""
    try:
        with NpzReader(path, CheckpointError) as archive:
            return "meta" in archive.headers
    except Exception:  # not an archive, or a damaged one: fails in many ways
        return False


def written_by_nntrain(path) -> bool:
    """Whether the file ``path`` looks like a checkpoint nntrain saved, read from
    the zip directory alone (no array is read), so that ``fit --force`` never
    deletes a user's .npz of a checkpoint's name: an archive holding the meta
    entry; or one cut short while it was saved (a save killed at once leaves an
    empty temporary file, a later kill one with no directory yet), whose first
    member is one a checkpoint starts with. A symbolic link counts: removing it
    loses no file."""
    path = Path(path)
    if path.is_symlink():
        return True
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
        # A user's npz may hold an array named meta too, never only prefixed ones.
        return "meta.npy" in names and all(
            name == "meta.npy" or _prefixed_member(name) for name in names)
    except (OSError, zipfile.BadZipFile, ValueError, EOFError):
        pass
    try:
        with open(path, "rb") as file:
            start = file.read(ZIP_ENTRY_START + 256)
    except OSError:
        return False
    return not start or _first_member(start) is not None


# The fixed part of a zip entry's local header, after which its name follows.
ZIP_ENTRY_START = 30


def _first_member(start: bytes) -> str | None:
    """The name of the first member of the zip that begins with ``start``, when
    it is one that a checkpoint begins with (np.savez writes the arrays in order,
    the meta last); None otherwise."""
    if len(start) < ZIP_ENTRY_START or not start.startswith(b"PK\x03\x04"):
        return None
    length = int.from_bytes(start[26:28], "little")
    name = start[ZIP_ENTRY_START:ZIP_ENTRY_START + length].decode("ascii", "replace")
    if name == "meta.npy" or _prefixed_member(name):
        return name
    return None


def _prefixed_member(name: str) -> bool:
    """Whether a zip member's ``name`` is that of a checkpoint's array, such as
    param/affine1.W.npy."""
    return name.endswith(".npy") and "/" in name and name.split("/")[0] in PREFIXES


def _check_members(headers: dict, path: Path) -> None:
    """Refuse unknown names and dtypes other than numbers, from the headers alone."""
    if "meta" not in headers:
        held = ("holds data (X_train, ...)" if {"X_train", "X_test"} & set(headers)
                else "has no 'meta' entry")
        raise CheckpointError(f"{path} {held}: not an nntrain checkpoint; give a"
                              f" checkpoint, such as {EXAMPLE}")
    for key, header in headers.items():
        if key == "meta":
            if header.shape != () or header.dtype.kind != "U":
                raise CheckpointError(f"{path}: 'meta' is not a JSON string")
            continue
        prefix, _, name = key.partition("/")
        if prefix not in PREFIXES or not name:
            raise CheckpointError(f"{path} holds an unknown entry {key!r}; refusing it")
        if header.dtype.kind not in "fiub":
            raise CheckpointError(
                f"{path}: {key} has dtype {header.dtype}; refusing it"
            )


def _read_meta(value: np.ndarray, path: Path) -> dict:
    if value.shape != () or value.dtype.kind != "U":
        raise CheckpointError(f"{path}: 'meta' is not a JSON string")
    try:
        meta = json.loads(str(value))
    except (ValueError, RecursionError):  # a bad document, huge integer, deep nesting
        raise CheckpointError(
            f"{path}: 'meta' is not valid JSON; the file is corrupt"
        ) from None
    if not isinstance(meta, dict) or "format" not in meta:
        raise CheckpointError(f"{path}: 'meta' has no format version")
    _check_format(meta["format"], path)
    checksums = meta.get("checksums", {})
    if not isinstance(checksums, dict) or not all(
        isinstance(value, str) for value in checksums.values()
    ):
        raise CheckpointError(f"{path}: 'meta' has malformed checksums; the file is"
                              " corrupt")
    return meta


def _check_format(version, path: Path) -> None:
    """A format version is an integer from 1 (the first) to FORMAT."""
    shown = json.dumps(version)
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    if type(version) is not int:  # bool is a subclass of int, but true is no version
        raise CheckpointError(f"{path}: 'meta' has format {shown}, not an integer"
                              f" version; {EDITED_CHECKPOINT_FIX}")
    if version < 1:
        raise CheckpointError(f"{path} has checkpoint format {shown}, but formats"
                              f" start at 1; {EDITED_CHECKPOINT_FIX}")
    if version > FORMAT:
        raise CheckpointError(
            f"{path} has checkpoint format {shown}, newer than this nntrain"
            f" ({__version__}, format {FORMAT}) reads; upgrade nntrain"
        )


def _check_complete(meta: dict, headers: dict, path: Path) -> None:
    missing = sorted(set(meta.get("checksums", {})) - set(headers))
    if missing:
        raise CheckpointError(f"{path} lacks the array {missing[0]}; it is incomplete:"
                              " use another checkpoint (best.npz or last.npz)")


def _group_and_verify(arrays: dict, meta: dict, path: Path) -> dict:
    checksums = meta.get("checksums", {})
    groups: dict[str, dict] = {}
    for key, value in arrays.items():
        if key not in checksums:
            raise CheckpointError(f"{path}: 'meta' holds no checksum of {key};"
                                  f" {EDITED_CHECKPOINT_FIX}")
        if checksums[key] != _checksum(value):
            raise CheckpointError(
                f"{path}: {key} does not match its checksum; the file is corrupt"
            )
        prefix, _, name = key.partition("/")
        groups.setdefault(prefix, {})[name] = value
    return groups
