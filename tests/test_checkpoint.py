"""Checkpoints: round trip, no pickle, and corrupt or foreign files refused."""

import json

import numpy as np
import pytest

from nntrain.checkpoint import load_checkpoint, save_checkpoint
from nntrain.errors import CheckpointError


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


def test_missing_file_and_folder_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.npz")
    with pytest.raises(CheckpointError, match="folder"):
        load_checkpoint(tmp_path)
