"""Reading IDX files, the format MNIST and Fashion-MNIST ship in.

An IDX file is a 4-byte magic number, the size of each dimension, then the values
in C order::

    bytes 0-1   zero
    byte  2     type code, a key of ``IDX_DTYPES``
    byte  3     number of dimensions, ndim >= 1
    then        ndim sizes, each a big-endian uint32
    then        the values, big-endian when wider than one byte

A file may be gzipped; gzip is recognised by its magic bytes 1f 8b, not by its name.
Shape letters: N examples, H rows and W columns of an image.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from nntrain.errors import DataError

IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

GZIP_MAGIC = b"\x1f\x8b"

# Deflate cannot expand data by more than 1032:1, so a gzipped file of n bytes holds
# at most 1032 * n bytes. A header announcing more is refused before reading on.
_MAX_GZIP_RATIO = 1032

# Data is read in chunks so that memory grows with what the file really holds, not
# with what its header claims.
_CHUNK_BYTES = 1 << 20

_MAX_ARRAY_BYTES = np.iinfo(np.intp).max


def is_gzip(path: str | os.PathLike) -> bool:
    """Whether the file starts with the gzip magic bytes 1f 8b."""
    with open(path, "rb") as f:
        return f.read(2) == GZIP_MAGIC


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file, gzipped or not.

    Parameters
    ----------
    path : the file to read.

    Returns
    -------
    array : (d0, d1, ...) the values, shaped and typed as the header says, in native
        byte order.

    Raises
    ------
    DataError : the file is missing, not IDX, corrupt, truncated or too long.
    """
    path = Path(path)
    stream, compressed = _open(path)

    try:
        with stream:
            # The most data bytes the file can hold; _parse subtracts the header.
            size = path.stat().st_size
            capacity = size * _MAX_GZIP_RATIO if compressed else size
            return _parse(stream, path, capacity, compressed)
    except (OSError, EOFError, zlib.error) as err:
        if compressed:
            message = f"{path} is not a valid gzip file ({err}); download it again."
        else:
            message = f"Could not read {path} ({err}); check the file's permissions."
        raise DataError(message) from err


def load_idx_pair(
    images_path: str | os.PathLike, labels_path: str | os.PathLike
) -> tuple[np.ndarray, np.ndarray]:
    """Read matching image and label IDX files.

    Returns
    -------
    X : (N, H, W) uint8 images.
    y : (N,) uint8 labels.

    Raises
    ------
    DataError : either file is unreadable, has the wrong rank or dtype, holds no
        images or images of no pixels, or the two hold different numbers of
        examples.
    """
    X = read_idx(images_path)
    y = read_idx(labels_path)

    _check_array(X, images_path, "image", ndim=3, axes="(N, H, W)")
    _check_array(y, labels_path, "label", ndim=1, axes="(N,)")
    _check_images_hold_pixels(X, images_path)

    if len(X) != len(y):
        raise DataError(
            f"{images_path} holds {len(X)} images but {labels_path} holds {len(y)} "
            "labels; use the label file that belongs to these images."
        )
    return X, y


def same_data(first: str | os.PathLike, second: str | os.PathLike) -> bool:
    """Whether two files hold the same bytes once decompressed (each may be gzipped
    or not); False when either cannot be read to its end."""
    try:
        stream_a, _ = _open(Path(first))
        stream_b, _ = _open(Path(second))
        with stream_a, stream_b:
            while chunk := _read_up_to(stream_a, _CHUNK_BYTES):
                if chunk != _read_up_to(stream_b, _CHUNK_BYTES):
                    return False
            return not stream_b.read(1)
    except (OSError, EOFError, zlib.error):
        return False


def _open(path: Path) -> tuple[BinaryIO, bool]:
    """Open ``path`` for reading, decompressing on the fly when it is gzipped."""
    if path.exists() and not (path.is_file() or path.is_dir()):
        # A pipe or device would block or never end; folders get the message below.
        raise DataError(f"IDX file {path} is not a regular file; give the path of"
                        " an IDX file")
    try:
        compressed = is_gzip(path)
    except FileNotFoundError:
        raise DataError(
            f"IDX file {path} does not exist; check the path, or fetch the data "
            "with 'nntrain data download NAME'."
        ) from None
    except OSError as err:
        raise DataError(
            f"Cannot open IDX file {path} ({err.strerror}); check that it is a "
            "readable file."
        ) from err

    stream = gzip.open(path, "rb") if compressed else open(path, "rb")
    return stream, compressed


def _shape_text(shape: tuple) -> str:
    """``shape`` as a message shows it: a damaged header may announce 255 sizes,
    of which the first few say enough."""
    if len(shape) <= 6:
        return str(shape)
    return f"({', '.join(str(size) for size in shape[:4])}, ... {len(shape)} sizes)"


def _parse(stream: BinaryIO, path: Path, capacity: int, compressed: bool) -> np.ndarray:
    """Read header and data from ``stream``, refusing sizes the file cannot hold."""
    dtype, shape = _read_header(stream, path)
    n_bytes = math.prod(shape) * dtype.itemsize
    # NumPy refuses a shape whose sizes multiply past its index range even when
    # another size is 0 and the array would be empty.
    if math.prod(size for size in shape if size) * dtype.itemsize > _MAX_ARRAY_BYTES:
        raise DataError(
            f"{path} is corrupt: its header announces shape {_shape_text(shape)},"
            " larger than any "
            "array can be; download it again."
        )
    if not compressed:
        capacity -= 4 + 4 * len(shape)

    if n_bytes > capacity:
        room = "this small gzip file holds at most" if compressed else "the file holds"
        raise DataError(
            f"{path} is truncated: its header announces shape {_shape_text(shape)} of "
            f"{dtype.name}, {n_bytes} bytes of data, but {room} {capacity}; "
            "download it again."
        )

    data = _read_up_to(stream, n_bytes)
    if len(data) < n_bytes:
        raise DataError(
            f"{path} is truncated: expected {n_bytes} bytes of data after the "
            f"header, found {len(data)}; download it again."
        )

    extra = _count_rest(stream, _CHUNK_BYTES)
    if extra:
        amount = f"more than {_CHUNK_BYTES}" if extra > _CHUNK_BYTES else str(extra)
        raise DataError(
            f"{path} has {amount} bytes after the {n_bytes} bytes of data its header "
            "announces; the file is damaged, download it again."
        )

    # Swap wide types to native order once here rather than in every later operation;
    # bytes need no swap and stay a view of ``data``, which is writable.
    array = np.frombuffer(data, dtype).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=False)


def _read_header(stream: BinaryIO, path: Path) -> tuple[np.dtype, tuple[int, ...]]:
    """Read the magic number and dimension sizes; return the dtype and shape."""
    magic = stream.read(4)
    if len(magic) < 4:
        raise DataError(
            f"{path} is truncated: it holds {len(magic)} bytes, fewer than the "
            "4-byte IDX magic number; download it again."
        )

    code, ndim = magic[2], magic[3]
    if magic[:2] != b"\0\0" or code not in IDX_DTYPES or ndim == 0:
        codes = ", ".join(f"{c:02X}" for c in IDX_DTYPES)
        raise DataError(
            f"{path} is not an IDX file: its magic number is 0x{magic.hex().upper()}, "
            f"expected 0x0000TTNN with type code TT one of {codes} and NN >= 1 "
            "dimensions (0x00000803 for MNIST images); check the path."
        )

    sizes = stream.read(4 * ndim)
    if len(sizes) < 4 * ndim:
        raise DataError(
            f"{path} is truncated: its header needs {4 + 4 * ndim} bytes, the file "
            f"holds {4 + len(sizes)}; download it again."
        )
    return IDX_DTYPES[code], struct.unpack(f">{ndim}I", sizes)


def _read_up_to(stream: BinaryIO, n_bytes: int) -> bytearray:
    """Read ``n_bytes``, or fewer if the stream ends first."""
    data = bytearray()
    while len(data) < n_bytes:
        chunk = stream.read(min(_CHUNK_BYTES, n_bytes - len(data)))
        if not chunk:
            break
        data += chunk
    return data


def _count_rest(stream: BinaryIO, limit: int) -> int:
    """Number of bytes left in ``stream``, counted without keeping them, up to just
    past ``limit``: a gzip bomb's trailing gigabytes are not worth decompressing."""
    count = 0
    while count <= limit and (chunk := stream.read(_CHUNK_BYTES)):
        count += len(chunk)
    return count


def _check_array(
    array: np.ndarray, path: str | os.PathLike, role: str, ndim: int, axes: str
):
    """Refuse an image or label array that is not uint8 of rank ``ndim``."""
    if array.ndim != ndim:
        raise DataError(
            f"The {role} file {path} holds an array of shape {array.shape}, expected "
            f"{ndim}-d {axes}; check that image and label files are not swapped."
        )
    if array.dtype != np.uint8:
        raise DataError(
            f"The {role} file {path} holds {array.dtype} values, expected uint8; "
            "use the MNIST-style file of unsigned bytes."
        )


def _check_images_hold_pixels(X: np.ndarray, path: str | os.PathLike) -> None:
    """Refuse (0, H, W) and (N, 0, W) images: a valid header can announce them, but
    nothing can be learnt from them and later steps divide by their size."""
    if len(X) == 0:
        raise DataError(
            f"The image file {path} holds no images (shape {X.shape}); use a file"
            " with at least one image, or download it again."
        )
    if X.size == 0:
        raise DataError(
            f"The image file {path} holds {len(X)} images of {X.shape[1]}x"
            f"{X.shape[2]} pixels, none at all; its header is damaged, download it"
            " again."
        )
