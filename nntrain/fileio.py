"""Writing files so that a crash never leaves half of one: a temporary file in the
same folder, flushed, fsynced, then renamed over the target. And output folders
that cannot be made, and a ``~`` that names no home folder, reported as bad
input."""

import errno
import io
import os
import tempfile
from pathlib import Path

from nntrain.errors import BadInputError

# What to do about a file that cannot be written or removed, by the error's errno.
WRITE_FIXES = {
    errno.ENOSPC: "free some space",
    errno.EDQUOT: "free some space (the disk quota is full)",
    errno.EFBIG: "raise the file size limit (ulimit -f) or free some space",
    errno.EROFS: "remount its file system read-write",
    errno.EACCES: "check the permissions of the file and its folder",
    errno.EPERM: "check the permissions of the file and its folder",
    errno.EBUSY: "free it (a mount point or a file another program holds)",
}


def write_fix(error: OSError) -> str:
    """What the user can do about ``error``, an OSError writing or removing a
    file: free space for a full disk, permissions for a refused write, ..."""
    return WRITE_FIXES.get(error.errno, "check the file, its folder and the disk")


def expand_home(path: str) -> str:
    """``path`` with a leading ``~`` or ``~user`` expanded as a shell expands it,
    for every path the user gives (the config's path keys, the command line's
    arguments and options), also where no shell did. A ``~user`` of no known
    user is a BadInputError: a shell would leave it as written, and nntrain would
    then make a folder named ``~user``.

    Only text that itself starts with ``~`` is expanded. A relative path that
    pathlib would write with a leading ``~`` (``./~x``, a file so named) is made
    absolute instead, so that no later ``Path(...).expanduser()`` takes it for a
    home folder: relative paths are relative to the current folder anyway."""
    _refuse_undecodable(path)
    if not path.startswith("~"):
        if str(Path(path)).startswith("~"):
            return os.path.abspath(path)
        return path
    expanded = os.path.expanduser(path)
    if expanded.startswith("~"):
        user = expanded.split("/")[0]
        missing = (f"there is no user {user[1:]!r} whose home folder it could be"
                   if user != "~" else "there is no home folder (HOME is not set)")
        raise BadInputError(f"{path!r} starts with {user}, but {missing}; write the"
                            " home folder out in full (or ./"
                            f"{path} for a file or folder so named)")
    return expanded


def _refuse_undecodable(path: str) -> None:
    """A BadInputError for a path holding bytes that are not UTF-8 (Python keeps
    them as lone surrogates): no file of the run could name it, and writing it
    would fail half-way through the run's files."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        shown = path.encode("utf-8", "surrogateescape" if _escaped(path)
                            else "backslashreplace").decode("utf-8",
                                                            "backslashreplace")
        raise BadInputError(f"'{shown}' holds a byte that is not UTF-8"
                            " text; a path must be valid text: rename the file or"
                            " folder, or choose another") from None


def _escaped(path: str) -> bool:
    """Whether every lone surrogate in ``path`` stands for a byte (surrogateescape)."""
    return all(not 0xD800 <= ord(char) <= 0xDFFF or 0xDC80 <= ord(char) <= 0xDCFF
               for char in path)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def publish(temporary, path) -> None:
    """Give a finished temporary file the usual permissions and rename it into place
    (mkstemp creates files readable by their owner only)."""
    os.chmod(temporary, 0o666 & ~_umask())
    os.replace(temporary, path)


def write_text_atomically(path: Path, text: str) -> None:
    """Write ``text`` through a temporary file in the same folder and a rename."""
    write_bytes_atomically(path, text.encode("utf-8"))


def save_figure(figure, path: Path, dpi: int) -> None:
    """A matplotlib figure as a PNG at ``path``, written whole through a temporary
    file: a symbolic link already at ``path`` is replaced, never written through
    (it might point at a checkpoint)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    write_bytes_atomically(Path(path), buffer.getvalue())


def write_bytes_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` through a temporary file in the same folder and a rename."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        publish(Path(temporary), path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def make_output_folder(path, option: str) -> Path:
    """Create the folder ``path`` and its parents; one that cannot be made (a file
    in the way, a read-only place) is bad input naming it and ``option``, the
    command-line option that chooses it."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise BadInputError(f"output folder {path} is a file; give {option} a"
                            " folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise BadInputError(f"cannot create the output folder {path} ({reason});"
                            f" give {option} a folder that can be written") from None
    return path
