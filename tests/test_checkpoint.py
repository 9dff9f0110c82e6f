"""Checkpoints: round trip, no pickle, and corrupt or foreign files refused."""

import json
import re
import zlib

import numpy as np
import pytest

from nntrain.checkpoint import load_checkpoint, save_checkpoint
from nntrain.errors import BadInputError, CheckpointError


def _save(path):
    arrays = {"param": {"affine1.W": np.arange(6, dtype=np.float32).reshape(2, 3)},
              "prep": {"center.mean": np.array([0.5, 1.5])}}
    save_checkpoint(path, {"config": {"seed": 3}}, arrays)
    return arrays


def test_round_trip_with_plain_numpy_and_no_pickle(tmp_path):
    path = tmp_path / "ck.npz"
    arrays = _save(path)
    with np.load(path, allow_pickle=False) as raw:
        assert sorted(raw.files) == ["meta", "param/affine1.W", "prep/center.mean"]
        meta = json.loads(str(raw["meta"]))
    assert meta["format"] == 1 and meta["config"] == {"seed": 3}
    loaded = load_checkpoint(path)
    np.testing.assert_array_equal(loaded.group("param")["affine1.W"],
                                  arrays["param"]["affine1.W"])
    assert not list(tmp_path.glob(".*tmp"))  # no temporary file left behind


def test_truncated_file_is_refused(tmp_path):
    path = tmp_path / "ck.npz"
    _save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(path)


def test_flipped_byte_in_an_array_is_detected(tmp_path):
    path = tmp_path / "ck.npz"
    _save(path)
    # Rewrite the archive with one changed value but the old checksums.
    with np.load(path, allow_pickle=False) as raw:
        members = {key: raw[key] for key in raw.files}
    members["param/affine1.W"] = members["param/affine1.W"].copy()
    members["param/affine1.W"][0, 0] = 99
    np.savez(path, **members)
    with pytest.raises(CheckpointError, match="param/affine1.W does not match"):
        load_checkpoint(path)


@pytest.mark.parametrize("checksums", [{}, None])
def test_an_array_without_a_checksum_is_named_as_such(tmp_path, checksums):
    path = tmp_path / "ck.npz"
    _save(path)
    with np.load(path, allow_pickle=False) as raw:
        members = {key: raw[key] for key in raw.files}
    meta = json.loads(str(members["meta"]))
    meta["checksums"].pop("param/affine1.W")
    if checksums is None:
        del meta["checksums"]
    members["meta"] = np.array(json.dumps(meta))
    np.savez(path, **members)
    with pytest.raises(CheckpointError, match=re.escape(
            "'meta' holds no checksum of param/affine1.W; the file is damaged or was"
            " edited")):
        load_checkpoint(path)


def test_unknown_prefix_is_refused(tmp_path):
    path = tmp_path / "ck.npz"
    meta = json.dumps({"format": 1, "checksums": {}})
    np.savez(path, meta=np.array(meta), **{"evil/x": np.zeros(2)})
    with pytest.raises(CheckpointError, match="unknown entry 'evil/x'"):
        load_checkpoint(path)


def test_newer_format_is_refused(tmp_path):
    path = tmp_path / "ck.npz"
    np.savez(path, meta=np.array(json.dumps({"format": 99, "checksums": {}})))
    with pytest.raises(CheckpointError, match="newer"):
        load_checkpoint(path)


def test_object_array_is_refused_without_unpickling(tmp_path):
    path = tmp_path / "ck.npz"
    meta = json.dumps({"format": 1, "checksums": {}})
    np.savez(path, meta=np.array(meta),
             **{"param/x": np.array([{"a": 1}], dtype=object)})
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


@pytest.mark.parametrize("content", [b"", b"not a zip at all", b"PK\x03\x04junk"])
def test_garbage_files_are_refused(tmp_path, content):
    path = tmp_path / "ck.npz"
    path.write_bytes(content)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


@pytest.mark.parametrize("name, others", [("last.npz", "best.npz"),
                                          ("snapshot-epoch-0002.npz",
                                           "best.npz or last.npz")])
def test_an_empty_checkpoint_is_called_empty(tmp_path, name, others):
    path = tmp_path / name
    path.write_bytes(b"")

    with pytest.raises(CheckpointError, match="^" + re.escape(
            f"{path} is empty (0 bytes), as a crash or a full disk can leave a"
            f" checkpoint being written: use another checkpoint ({others})") + "$"):
        load_checkpoint(path)


def test_missing_file_and_folder_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.npz")
    with pytest.raises(CheckpointError, match="folder"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize("path, error, message", [
    ("", BadInputError, "path is empty"),
    ("a\x00b", BadInputError, "path 'a\\x00b' holds a NUL character (\\x00), which"
     " no path can"),
    (None, TypeError, "path is NoneType"),
], ids=["empty", "nul", "none"])
def test_a_path_argument_that_names_no_file_is_refused_as_restore_does(
        monkeypatch, tmp_path, path, error, message):
    # The empty path would otherwise be the current folder.
    monkeypatch.chdir(tmp_path)

    with pytest.raises(error, match="^" + re.escape(
            f"{message}; give the checkpoint's path, a str or pathlib.Path") + "$"):
        load_checkpoint(path)


def _with_format(path, version):
    """A checkpoint at ``path`` whose meta format is ``version``, with the true
    checksums of its one array: a well-formed file but for the format."""
    array = np.zeros(2, dtype=np.float32)
    checksum = format(zlib.crc32(array.view(np.uint8)), "08x")
    meta = json.dumps({"format": version, "checksums": {"param/x": checksum}})
    np.savez(path, meta=np.array(meta), **{"param/x": array})


@pytest.mark.parametrize("version, message", [
    (-3, "has checkpoint format -3, but formats start at 1"),
    (0, "has checkpoint format 0, but formats start at 1"),
    (True, "'meta' has format true, not an integer version"),
    ("1", "'meta' has format \"1\", not an integer version"),
    (1.0, "'meta' has format 1.0, not an integer version"),
])
def test_a_format_that_is_no_version_is_refused_naming_it(tmp_path, version,
                                                          message):
    path = tmp_path / "ck.npz"
    _with_format(path, version)

    with pytest.raises(CheckpointError, match=re.escape(message)):
        load_checkpoint(path)


def test_format_one_with_true_checksums_loads(tmp_path):
    path = tmp_path / "ck.npz"
    _with_format(path, 1)

    assert load_checkpoint(path).group("param")["x"].tolist() == [0.0, 0.0]
