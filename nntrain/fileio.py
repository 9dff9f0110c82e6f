"""Writing files so that a crash never leaves half of one: a temporary file in the
same folder, flushed, fsynced, then renamed over the target. And output folders
that cannot be made, and a ``~`` that names no home folder, reported as bad
input."""

import errno
import io
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

from nntrain.errors import BadInputError
from nntrain.train.signals import signals_deferred

# What to do about a file that cannot be written or removed, by the error's errno.
WRITE_FIXES = {
    errno.ENOSPC: "free some space",
    errno.EDQUOT: "free some space (the disk quota is full)",
    errno.EFBIG: "raise the file size limit (ulimit -f) or free some space",
    errno.EROFS: "remount its file system read-write",
    errno.EACCES: "check the permissions of the file and its folder",
    errno.EPERM: "check the permissions of the file and its folder",
    errno.EBUSY: "free it (a mount point or a file another program holds)",
    errno.ENAMETOOLONG: "shorten the path",
}

# Bytes kept free below a run folder for the longest path nntrain writes in it:
# checkpoints/dropped-after-iteration-N/.snapshot-epoch-N.npz.XXXXXXXX.tmp, about
# 90 bytes with counts of ten digits. A study's trials are run folders one more
# level down (trial-0000/).
RUN_FOLDER_ROOM = 128
STUDY_FOLDER_ROOM = RUN_FOLDER_ROOM + 32


def path_too_long(path, room: int) -> str | None:
    """Why the folder ``path`` cannot hold files whose paths run ``room`` bytes
    below it: a name in it longer than the file system allows, or the whole path
    with that room beyond the system's limit. None when they fit. Checked before
    a run or study writes anything, as a write that fails half way leaves a
    folder without its config."""
    # As given: the system limits the path a call is passed, which a relative
    # one keeps short under a deep working folder.
    given = os.fsencode(str(path))
    name_max, path_max = _path_limits(os.fsencode(os.path.abspath(path)))
    longest = max(len(name) for name in given.split(b"/"))
    if longest > name_max:
        return (f"a name in it is {longest:,} bytes long, over the {name_max:,} the"
                " file system allows")
    if len(given) + room >= path_max:
        return (f"it is {len(given):,} bytes long, so the files written in it"
                f" would reach the {path_max:,} bytes the system allows for a path")
    return None


@contextmanager
def too_long_paths_refused():
    """A block (or, as a decorator, a function of the Python API) in which a path
    too long for the system is bad input, as the command line reports it, not
    the OSError that pathlib's exists() and is_dir() let through."""
    try:
        yield
    except OSError as error:
        if error.errno != errno.ENAMETOOLONG:
            raise
        raise BadInputError(too_long_message(error.filename)) from None


def too_long_message(path) -> str:
    """The one line for a path (``path``, or None when unknown) that is too long
    for the system."""
    text = "" if path is None else os.fsdecode(path)
    return (f"a path is too long for this system ({len(text):,} characters:"
            f" {shortened_path(text)}); Linux allows 255 bytes for a name in a path"
            " and 4,096 for the whole: choose a shorter one")


def shortened_path(path, keep: int = 60) -> str:
    """``path`` quoted for a message, its middle left out when it is longer than
    ``keep`` characters (a path too long for the system runs to thousands)."""
    text = str(path)
    if len(text) <= keep:
        return repr(text)
    return f"{text[:keep // 2]!r}...{text[-keep // 2:]!r}"


def _path_limits(absolute: bytes) -> tuple[int, int]:
    """(longest name, longest path) in bytes, asked of the nearest existing folder
    above ``absolute``; Linux's usual 255 and 4,096 where the system cannot say."""
    folder = absolute
    while not os.path.isdir(folder) and os.path.dirname(folder) != folder:
        folder = os.path.dirname(folder)
    try:
        return os.pathconf(folder, "PC_NAME_MAX"), os.pathconf(folder, "PC_PATH_MAX")
    except (OSError, ValueError, AttributeError):  # AttributeError: no pathconf
        return 255, 4096


# What to do about a file that cannot be read, by the error's errno.
READ_FIXES = {
    errno.EACCES: "check its permissions and those of its folders",
    errno.EPERM: "check its permissions and those of its folders",
    errno.ELOOP: "its symbolic links form a loop: fix them",
    errno.ENOTDIR: "a part of its path is a file, not a folder: check the path",
}


def read_fix(error: OSError) -> str:
    """What the user can do about ``error``, an OSError reading a file."""
    return READ_FIXES.get(error.errno, "check the path and the disk")


def write_fix(error: OSError) -> str:
    """What the user can do about ``error``, an OSError writing or removing a
    file: free space for a full disk, permissions for a refused write, ..."""
    return WRITE_FIXES.get(error.errno, "check the file, its folder and the disk")


def absolute_data_path(path: str, key: str = "data.path") -> str:
    """``path``, a data path the user gave as ``key``, absolute, its ``~`` and
    symbolic links resolved: stored so, eval, predict and a study's trials find
    the data from any folder. A ``~user`` of no known user, or links that loop,
    are a BadInputError, as is a NUL, which no path holds."""
    if "\x00" in path:
        raise BadInputError(f"{key} {path!r} holds a NUL character (\\x00), which no"
                            " path can; remove it")
    try:
        return str(Path(expand_home(path)).resolve())
    except (RuntimeError, OSError) as error:  # RuntimeError: Python 3.12 and older
        if isinstance(error, OSError) and error.errno != errno.ELOOP:
            raise
        raise BadInputError(f"{key} {path}: its symbolic links form a loop; fix"
                            " them, or give the data's own path") from None


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
    (it might point at a checkpoint). Its "Software" text entry names nntrain, so
    that ``fit --force`` can tell it from a user's PNG (written_by_nntrain_png)."""
    from matplotlib import __version__ as matplotlib_version

    from nntrain import __version__

    software = f"nntrain {__version__} (Matplotlib {matplotlib_version})"
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, metadata={"Software": software})
    write_bytes_atomically(Path(path), buffer.getvalue())


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# The "Software" values of PNGs nntrain wrote: its own, and Matplotlib's default,
# which plots written before nntrain named itself carry. A PNG a user made with
# Matplotlib therefore counts as nntrain's too; one from any other program does not.
NNTRAIN_PNG_SOFTWARE = (b"nntrain ", b"Matplotlib version")


def written_by_nntrain_png(path) -> bool:
    """Whether the file ``path`` is a PNG that nntrain wrote, read from the chunks
    before the image data alone (a few hundred bytes; no pixel is decoded): one
    with a "Software" text entry of NNTRAIN_PNG_SOFTWARE. A symbolic link counts:
    removing it loses no file."""
    path = Path(path)
    if path.is_symlink():
        return True
    if not path.is_file():
        return False  # a pipe would block the read
    try:
        with open(path, "rb") as file:
            start = file.read(4096)
    except OSError:
        return False
    if not start.startswith(PNG_SIGNATURE):
        return False
    offset = len(PNG_SIGNATURE)
    while offset + 8 <= len(start):
        length = int.from_bytes(start[offset:offset + 4], "big")
        kind = start[offset + 4:offset + 8]
        if kind == b"IDAT":
            break
        data = start[offset + 8:offset + 8 + length]
        if kind == b"tEXt" and data.startswith(b"Software\x00"):
            return data[len(b"Software\x00"):].startswith(NNTRAIN_PNG_SOFTWARE)
        offset += 12 + length  # length, type, data, CRC
    return False


# Every temporary file nntrain writes on its way to a file NAME is named
# ".NAME.XXXXXXXX.tmp" (mkstemp's random part), in NAME's folder: a kill before
# the rename leaves one, which ``fit --force`` removes (temporary_glob) and which
# no glob of a run's files ("*.npz", "snapshot-*.npz", "*.png") matches.
TEMPORARY_SUFFIX = ".tmp"
# mkstemp's random part: 8 of these characters (tempfile._RandomNameSequence).
_RANDOM_PART = "[abcdefghijklmnopqrstuvwxyz0123456789_]" * 8


def temporary_glob(name: str) -> str:
    """The glob pattern of the temporary files written on the way to the file
    ``name`` (itself a name or a glob pattern, such as ``snapshot-*.npz``)."""
    return f".{name}.{_RANDOM_PART}{TEMPORARY_SUFFIX}"


def temporary_file(path: Path) -> tuple[int, Path]:
    """(descriptor, path) of a new temporary file for ``path``, in its folder and
    named as TEMPORARY_SUFFIX says."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                                             suffix=TEMPORARY_SUFFIX)
    return descriptor, Path(temporary)


@contextmanager
def temporary_for(path: Path):
    """A block given (descriptor, path) of a new temporary file for ``path``
    (temporary_file), which is deleted when the block raises. A signal while the
    file is made waits until its name is known, or it would be left behind."""
    temporary = None
    try:
        with signals_deferred():
            descriptor, temporary = temporary_file(path)
        yield descriptor, temporary
    except BaseException:
        if temporary is not None:
            temporary.unlink(missing_ok=True)
        raise


def write_bytes_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` through a temporary file in the same folder and a rename."""
    with temporary_for(path) as (descriptor, temporary):
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        publish(temporary, path)


@contextmanager
def folders_removed_on_error(path):
    """A block that may create the folder ``path`` and its parents: when the block
    raises, those of them it created that are still empty are removed again, so
    a refused command leaves no trace."""
    # Each leading part of the path as written ("new/../figures" makes "new"
    # too), from the top down.
    parts = Path(path).parts
    prefixes = [Path(*parts[:count]) for count in range(1, len(parts) + 1)]
    created = [folder for folder in prefixes
               if not (folder.exists() or folder.is_symlink())]
    try:
        yield
    except BaseException:
        for folder in reversed(created):
            try:
                folder.rmdir()
            except OSError:  # not empty (a figure written), gone, or a ".."
                pass
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
