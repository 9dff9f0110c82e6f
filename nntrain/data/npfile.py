"""Reading .npy / .npz files safely: no pickle, no allocation the file cannot back, and
one clear error for every way the file can be wrong.

The data readers and the checkpoint loader share ``read_npy`` and ``NpzReader``. Both
read each array's header first, from a bounded prefix, and compare the size it declares
with what the file holds, so a forged header (shape (2**40,) in a 1 kB file) is refused
before NumPy allocates the array. Errors are raised as the caller's type (``DataError``
for data, ``CheckpointError`` for checkpoints) and name the file and the array.
"""

import io
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nntrain.errors import DataError, DataLocationError
from nntrain.fileio import read_fix

NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK\x03\x04"
# A zip without members starts with its end-of-directory record: np.savez(path).
EMPTY_ZIP_MAGIC = b"PK\x05\x06"

# NumPy's own limit on a header it parses without trusting the file.
MAX_HEADER_BYTES = 10_000
# Magic string and version (8 bytes), header length (2 or 4 bytes), the header.
_PREFIX_BYTES = 12 + MAX_HEADER_BYTES
# Deflate expands data by at most 1032:1; a member claiming more lies about its size.
MAX_DEFLATE_RATIO = 1032
_COMPRESSIONS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
_HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


@dataclass(frozen=True)
class ArrayHeader:
    """What a .npy header declares: ``offset`` bytes of header, then the data."""

    shape: tuple[int, ...]
    dtype: np.dtype
    offset: int

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def read_header(stream, size: int, where: str, error=DataError,
                exact: bool = False) -> ArrayHeader:
    """The header of the .npy data in ``stream``, which holds ``size`` bytes in all.

    Reads at most ``_PREFIX_BYTES``. Raises ``error`` naming ``where`` when the header
    is damaged, declares object arrays, or declares more data than the rest of the
    stream holds (with ``exact``, other than the rest of the stream holds).
    """
    head = io.BytesIO(stream.read(min(size, _PREFIX_BYTES)))
    try:
        version = np.lib.format.read_magic(head)
        if version not in _HEADER_READERS:
            raise ValueError(f".npy format version {version} is not supported")
        shape, _, dtype = _HEADER_READERS[version](head, MAX_HEADER_BYTES)
    except Exception as exc:  # NumPy raises ValueError; forged headers find others
        raise error(f"{where} has a damaged array header ({first_line(exc)});"
                    " the file is corrupt") from None

    if dtype.hasobject:
        raise error(f"{where} holds object arrays, which nntrain refuses to load"
                    " (unpickling them could run code); save numbers as numeric"
                    " arrays and text as a string array: np.array(names, dtype=str)")
    header = ArrayHeader(shape, dtype, head.tell())
    room = size - header.offset
    wrong = header.nbytes != room if exact else header.nbytes > room
    if min(shape, default=0) < 0 or wrong:
        raise error(
            f"{where} declares shape {shape} of {dtype}, {header.nbytes} bytes, but"
            f" {room} bytes follow its header; the file is truncated or corrupt"
        )
    return header


def read_npy(path, error=DataError) -> np.ndarray:
    """The array of the .npy file ``path``, its header checked before reading."""
    path = Path(path)
    with open(path, "rb") as file:
        read_header(file, path.stat().st_size, str(path), error)
        file.seek(0)
        return np.lib.format.read_array(file, allow_pickle=False,
                                        max_header_size=MAX_HEADER_BYTES)


class NpzReader:
    """The arrays of an .npz archive, every member's header checked on opening.

    ``headers`` maps each array name (member name without ``.npy``) to its
    ``ArrayHeader``; ``read(name)`` reads one array. Problems with an array are raised
    as ``error``; a damaged zip, or one whose directory declares sizes the file cannot
    hold, raises ``zipfile.BadZipFile`` (or what else ``zipfile`` raises), for the
    caller to word.

    >>> with NpzReader("data.npz") as archive:
    ...     X = archive.read("X_train")
    """

    def __init__(self, path, error=DataError):
        self.path = Path(path)
        self._error = error
        self._zip = zipfile.ZipFile(self.path)
        try:
            self._members = self._check_directory(self.path.stat().st_size)
            self.headers = {name: self._read_header(name) for name in self._members}
        except BaseException:
            self._zip.close()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def close(self) -> None:
        self._zip.close()

    def read(self, name: str) -> np.ndarray:
        try:
            with self._zip.open(self._members[name]) as stream:
                return np.lib.format.read_array(stream, allow_pickle=False,
                                                max_header_size=MAX_HEADER_BYTES)
        except Exception as exc:  # a bad CRC, a short member, ...: all are damage
            raise self._error(f"{self._where(name)} cannot be read"
                              f" ({first_line(exc)}); the file is truncated or"
                              " corrupt") from None

    def _where(self, name: str) -> str:
        return f"{self.path}: {name if name.isprintable() else repr(name)}"

    def _check_directory(self, archive_size: int) -> dict:
        """{name: ZipInfo}, refusing members whose sizes the archive cannot back.

        These are faults of the zip itself, raised as ``zipfile.BadZipFile`` like
        the ones ``zipfile`` finds, for the caller to word as damage.
        """
        members = {}
        for info in self._zip.infolist():
            name = info.filename.removesuffix(".npy")
            if name in members or not info.filename.endswith(".npy"):
                problem = "appears twice" if name in members else "is not a .npy array"
                raise zipfile.BadZipFile(f"member {info.filename!r} {problem}")
            if info.flag_bits & 0x1 or info.compress_type not in _COMPRESSIONS:
                raise zipfile.BadZipFile(
                    f"member {info.filename!r} is encrypted or compressed with method"
                    f" {info.compress_type}"
                )
            _check_sizes(info, archive_size)
            members[name] = info

        stored = sum(info.compress_size for info in members.values())
        if stored > archive_size:
            raise zipfile.BadZipFile(f"its members declare {stored} bytes in an"
                                     f" archive of {archive_size}")
        return members

    def _read_header(self, name: str) -> ArrayHeader:
        info = self._members[name]
        # Exact: the zip checks a member's CRC only when it is read to its end.
        with self._zip.open(info) as stream:
            return read_header(stream, info.file_size, self._where(name), self._error,
                               exact=True)


def _check_sizes(info: zipfile.ZipInfo, archive_size: int) -> None:
    if info.compress_type == zipfile.ZIP_STORED:
        fits = info.file_size == info.compress_size <= archive_size
    else:
        fits = (info.compress_size <= archive_size
                and info.file_size <= MAX_DEFLATE_RATIO * info.compress_size)
    if not fits:
        raise zipfile.BadZipFile(
            f"member {info.filename!r} declares {info.file_size} bytes"
            f" ({info.compress_size} stored) in an archive of {archive_size}"
        )


def first_line(exc: Exception) -> str:
    """The first line of an exception's message, for one-line errors."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def load_numpy_file(path, what="input file", kinds=".npy/.npz") -> np.ndarray | dict:
    """The array of a .npy file, or {name: array} of an .npz; a DataError otherwise.

    ``what`` and ``kinds`` word the errors: "npz file not found: ...".
    """
    path = Path(path)
    wanted = f"an {' or '.join(kinds.split('/'))} file"  # "an .npy or .npz file"
    if path.exists() and not (path.is_file() or path.is_dir()):
        # A pipe or device would block or never end; folders get the message below.
        raise DataError(f"{path} is not a regular file; give {wanted}")
    try:
        with open(path, "rb") as file:
            magic = file.read(6)
    except FileNotFoundError:
        raise DataLocationError(f"{what} not found: {path}", "check the path"
                                ) from None
    except IsADirectoryError:
        raise DataError(f"{path} is a folder; give {wanted}") from None
    except OSError as error:
        raise DataError(f"cannot read {path} ({error.strerror});"
                        f" {read_fix(error)}") from None
    if magic.startswith(EMPTY_ZIP_MAGIC):
        raise DataError(f"{path} is an .npz that holds no arrays; save the arrays"
                        " in it with np.savez(path, NAME=array, ...)")
    if not (magic.startswith(NPY_MAGIC) or magic.startswith(ZIP_MAGIC)):
        raise DataError(f"{path} is not a readable {kinds} file (it is neither .npy"
                        " nor .npz); save arrays with np.save or np.savez")

    try:
        if magic.startswith(NPY_MAGIC):
            return read_npy(path)
        with NpzReader(path) as archive:
            return {name: archive.read(name) for name in archive.headers}
    except DataError:
        raise
    except Exception as error:  # a damaged zip fails in many ways; all mean the same
        raise DataError(f"{path} is not a readable {kinds} file ({first_line(error)});"
                        " it may be truncated or corrupt") from None
