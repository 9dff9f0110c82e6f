"""Tests of the IDX reader on tiny files written in each test's tmp_path."""

import gzip
import re
import struct
import time
from pathlib import Path

import numpy as np
import pytest

from nntrain.data.idx import load_idx_pair, read_idx, same_data
from nntrain.errors import BadInputError, DataError

TYPE_CODES = {
    "u1": 0x08, "i1": 0x09, ">i2": 0x0B, ">i4": 0x0C, ">f4": 0x0D, ">f8": 0x0E
}

FASHION = Path("/usr/share/datasets/fashion-mnist")


def idx_bytes(array: np.ndarray, big_endian_dtype: str = "u1") -> bytes:
    """The IDX encoding of ``array`` stored as ``big_endian_dtype``."""
    header = bytes([0, 0, TYPE_CODES[big_endian_dtype], array.ndim])
    dims = struct.pack(f">{array.ndim}I", *array.shape)
    return header + dims + array.astype(big_endian_dtype).tobytes()


def write(path: Path, data: bytes, compress: bool = False) -> Path:
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_round_trips_uint8_images(tmp_path, compress):
    X = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = write(tmp_path / "images", idx_bytes(X), compress)

    out = read_idx(path)

    assert out.dtype == np.uint8 and out.shape == (2, 3, 4)
    np.testing.assert_array_equal(out, X)
    out[0, 0, 0] = 7  # the result is an ordinary writable array


@pytest.mark.parametrize("code", ["i1", ">i2", ">i4", ">f4", ">f8"])
def test_read_idx_decodes_big_endian_types_to_native(tmp_path, code):
    values = np.array([[-3, 0], [1, 120]], dtype=code)
    path = write(tmp_path / "values.idx", idx_bytes(values, code))

    out = read_idx(path)

    assert out.dtype == np.dtype(code).newbyteorder("=")
    assert out.dtype.isnative
    np.testing.assert_array_equal(out, values)


def test_read_idx_detects_gzip_by_magic_not_by_name(tmp_path):
    y = np.array([3, 1, 4], dtype=np.uint8)
    plain_named_gz = write(tmp_path / "labels.gz", idx_bytes(y))
    gzip_named_plain = write(tmp_path / "labels.idx", idx_bytes(y), compress=True)

    np.testing.assert_array_equal(read_idx(plain_named_gz), y)
    np.testing.assert_array_equal(read_idx(gzip_named_plain), y)


def test_read_idx_missing_file_names_it(tmp_path):
    path = tmp_path / "nowhere.idx"

    with pytest.raises(DataError, match="nowhere.idx does not exist") as info:
        read_idx(path)

    assert isinstance(info.value, BadInputError) and info.value.exit_code == 2


def test_read_idx_wrong_magic_says_found_and_expected(tmp_path):
    path = write(tmp_path / "photo.png", b"\x89PNG\r\n\x1a\n" + bytes(20))

    with pytest.raises(DataError, match=r"photo.png is not an IDX file") as info:
        read_idx(path)

    assert "0x89504E47" in str(info.value)
    assert "0x00000803" in str(info.value)


def test_read_idx_unknown_type_code_is_wrong_magic(tmp_path):
    path = write(tmp_path / "odd.idx", bytes([0, 0, 0x0A, 1, 0, 0, 0, 1, 5]))

    with pytest.raises(DataError, match="magic number is 0x00000A01"):
        read_idx(path)


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_truncated_data_says_expected_and_actual(tmp_path, compress):
    X = np.ones((4, 5, 5), dtype=np.uint8)
    path = write(tmp_path / "short", idx_bytes(X)[:-10], compress)

    with pytest.raises(DataError, match="short is truncated") as info:
        read_idx(path)

    assert "100" in str(info.value) and "90" in str(info.value)


def test_read_idx_truncated_header(tmp_path):
    path = write(tmp_path / "stub", bytes([0, 0, 8, 3, 0, 0]))

    with pytest.raises(DataError, match="header needs 16 bytes, the file holds 6"):
        read_idx(path)


def test_read_idx_file_shorter_than_magic(tmp_path):
    path = write(tmp_path / "tiny", b"\0\0")

    with pytest.raises(DataError, match="tiny is truncated: it holds 2 bytes"):
        read_idx(path)


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_trailing_bytes_refused(tmp_path, compress):
    y = np.array([1, 2, 3], dtype=np.uint8)
    path = write(tmp_path / "long", idx_bytes(y) + b"junk", compress)

    with pytest.raises(DataError, match="long has 4 bytes after the 3 bytes"):
        read_idx(path)


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_refuses_huge_header_before_allocating(tmp_path, compress):
    # 2**32 - 1 cubed float64 values: no machine could allocate this.
    header = bytes([0, 0, 0x0E, 3]) + struct.pack(">3I", *[2**32 - 1] * 3)
    path = write(tmp_path / "bomb", header + bytes(8), compress)

    start = time.perf_counter()
    with pytest.raises(DataError, match=r"header announces shape \(4294967295, "):
        read_idx(path)

    assert time.perf_counter() - start < 0.5


def test_read_idx_corrupt_gzip(tmp_path):
    data = gzip.compress(idx_bytes(np.zeros((50, 50), dtype=np.uint8)))
    path = write(tmp_path / "broken.gz", data[:10] + b"\xff" * 20 + data[30:])

    with pytest.raises(DataError, match="broken.gz is not a valid gzip file"):
        read_idx(path)


def test_read_idx_gzip_cut_short(tmp_path):
    data = gzip.compress(idx_bytes(np.arange(200, dtype=np.uint8)))
    path = write(tmp_path / "cut.gz", data[: len(data) // 2])

    with pytest.raises(DataError, match="cut.gz"):
        read_idx(path)


def test_load_idx_pair_returns_images_and_labels(tmp_path):
    X = np.arange(3 * 2 * 2, dtype=np.uint8).reshape(3, 2, 2)
    y = np.array([0, 9, 4], dtype=np.uint8)
    images = write(tmp_path / "images", idx_bytes(X), compress=True)
    labels = write(tmp_path / "labels", idx_bytes(y))

    X_out, y_out = load_idx_pair(images, labels)

    np.testing.assert_array_equal(X_out, X)
    np.testing.assert_array_equal(y_out, y)


def test_load_idx_pair_count_mismatch_names_both_counts(tmp_path):
    images = write(tmp_path / "images", idx_bytes(np.zeros((3, 2, 2), np.uint8)))
    labels = write(tmp_path / "labels", idx_bytes(np.zeros(5, np.uint8)))

    with pytest.raises(DataError, match="holds 3 images but .* holds 5 labels"):
        load_idx_pair(images, labels)


def test_load_idx_pair_refuses_swapped_files(tmp_path):
    images = write(tmp_path / "images", idx_bytes(np.zeros((3, 2, 2), np.uint8)))
    labels = write(tmp_path / "labels", idx_bytes(np.zeros(3, np.uint8)))

    with pytest.raises(DataError, match=r"image file .* shape \(3,\), expected 3-d"):
        load_idx_pair(labels, images)


def test_load_idx_pair_refuses_2d_labels(tmp_path):
    images = write(tmp_path / "images", idx_bytes(np.zeros((3, 2, 2), np.uint8)))
    labels = write(tmp_path / "labels", idx_bytes(np.zeros((3, 1), np.uint8)))

    with pytest.raises(DataError, match=r"label file .* expected 1-d \(N,\)"):
        load_idx_pair(images, labels)


def test_load_idx_pair_refuses_non_uint8(tmp_path):
    images = write(tmp_path / "images", idx_bytes(np.zeros((3, 2, 2)), ">f4"))
    labels = write(tmp_path / "labels", idx_bytes(np.zeros(3, np.uint8)))

    with pytest.raises(DataError, match="holds float32 values, expected uint8"):
        load_idx_pair(images, labels)


@pytest.mark.parametrize("compress", [False, True])
def test_load_idx_pair_refuses_a_file_of_no_images(tmp_path, compress):
    images = write(tmp_path / "images", idx_bytes(np.zeros((0, 8, 8), np.uint8)),
                   compress)
    labels = write(tmp_path / "labels", idx_bytes(np.zeros(0, np.uint8)))

    with pytest.raises(DataError, match=re.escape(
            f"image file {images} holds no images (shape (0, 8, 8))")):
        load_idx_pair(images, labels)


def test_load_idx_pair_refuses_images_of_no_pixels(tmp_path):
    images = write(tmp_path / "images", idx_bytes(np.zeros((3, 0, 8), np.uint8)))
    labels = write(tmp_path / "labels", idx_bytes(np.zeros(3, np.uint8)))

    with pytest.raises(DataError, match=r"holds 3 images of 0x8 pixels, none at all"):
        load_idx_pair(images, labels)


def test_same_data_compares_decompressed_bytes_to_the_end(tmp_path):
    data = idx_bytes(np.arange(12, dtype=np.uint8).reshape(3, 2, 2))
    gzipped = write(tmp_path / "a.gz", data, compress=True)

    assert same_data(gzipped, write(tmp_path / "b", data))
    assert not same_data(gzipped, write(tmp_path / "short", data[:-1]))
    assert not same_data(write(tmp_path / "long", data + b"\0"), gzipped)
    assert not same_data(gzipped, write(tmp_path / "bad.gz", b"\x1f\x8b junk"))


@pytest.mark.skipif(not FASHION.is_dir(), reason="Debian's fashion-mnist not installed")
def test_load_idx_pair_reads_debian_fashion_mnist_test_set():
    X, y = load_idx_pair(
        FASHION / "t10k-images-idx3-ubyte.gz", FASHION / "t10k-labels-idx1-ubyte.gz"
    )

    assert X.shape == (10000, 28, 28) and y.shape == (10000,)
    assert y.max() == 9 and np.bincount(y).tolist() == [1000] * 10


def test_a_header_of_255_sizes_is_shown_by_its_first_few(tmp_path):
    path = tmp_path / "many-dims"
    path.write_bytes(bytes([0, 0, 0x08, 255]) + struct.pack(">255I", *[2] * 255)
                     + bytes(100))

    with pytest.raises(DataError) as caught:
        read_idx(path)

    assert str(caught.value) == (
        f"{path} is corrupt: its header announces shape (2, 2, 2, 2, ... 255 sizes),"
        " larger than any array can be; download it again.")
