"""Hostile inputs: nothing a user loads runs code, hangs, or eats memory.

Crafted checkpoints, configs and data files are refused with nntrain's own errors,
named and on one line, within a time bound (generous: it only catches hangs) and a
memory bound measured with tracemalloc. Hypothesis then throws random and mutated
files at each loader: only ``NNTrainError`` may escape, and a mutated checkpoint that
still loads must give back exactly what was saved. benchmarks/robustness.py runs the
long version.
"""

import gzip
import io
import json
import os
import struct
import time
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nntrain.checkpoint import load_checkpoint, save_checkpoint
from nntrain.config import load_config, resolve_config
from nntrain.data.idx import read_idx
from nntrain.data.npfile import load_numpy_file
from nntrain.errors import CheckpointError, ConfigError, DataError, NNTrainError
from nntrain.yamlio import MAX_DEPTH, MAX_VALUES, parse_yaml

SECONDS = 20.0  # a hang, not a slow or busy machine (tests run side by side)
MEGABYTES = 50
# Derandomized: the same examples every run, so a failure reproduces; the benchmark
# draws fresh ones from its --seed.
FUZZ = settings(max_examples=200, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


def refused_within_bounds(call, error=NNTrainError) -> NNTrainError:
    """Run ``call``, expect ``error``; check time, peak memory and a one-line text."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(error) as caught:
            call()
    finally:
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert elapsed < SECONDS, f"took {elapsed:.1f} s"
    assert peak < MEGABYTES * 2**20, f"peak {peak / 2**20:.0f} MB"
    assert "\n" not in str(caught.value)
    return caught.value




class CreatesFile:
    """Unpickling this opens ``path`` for writing, creating the file: the payload."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def npy_bytes(array, allow_pickle=False) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


def forged_npy(shape, descr="<f8", data=b"") -> bytes:
    """A .npy member whose header declares ``shape`` and ``descr``, then ``data``."""
    buffer = io.BytesIO()
    header = {"descr": descr, "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue() + data


def meta_npy(checksums=None) -> bytes:
    meta = {"format": 1, "config": {}, "checksums": checksums or {}}
    return npy_bytes(np.array(json.dumps(meta)))


def write_zip(path, members: dict, compression=zipfile.ZIP_STORED):
    """An .npz of raw members {name: .npy bytes}; ``.npy`` is added to each name."""
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(f"{name}.npy", data)
    return path


def pickle_payload(marker) -> bytes:
    return npy_bytes(np.array([CreatesFile(marker)], dtype=object), allow_pickle=True)


def test_the_pickle_payload_does_create_a_file_when_unpickled(tmp_path):
    # The oracle for the tests below: loading it the unsafe way runs the payload.
    marker = tmp_path / "created"
    np.load(io.BytesIO(pickle_payload(marker)), allow_pickle=True)
    assert marker.exists()


@pytest.mark.parametrize("key", ["param/affine1.W", "meta", "evil/x"])
@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED],
                         ids=["stored", "deflated"])
def test_checkpoint_with_a_pickled_object_is_refused_and_runs_nothing(
        tmp_path, key, compression):
    marker = tmp_path / "created"
    members = {"meta": meta_npy(), key: pickle_payload(marker)}
    path = write_zip(tmp_path / "evil.npz", members, compression)

    error = refused_within_bounds(lambda: load_checkpoint(path), CheckpointError)

    assert not marker.exists()
    assert key in str(error) or "unknown entry 'evil/x'" in str(error)


def test_checkpoint_object_array_error_names_the_key(tmp_path):
    marker = tmp_path / "created"
    path = write_zip(tmp_path / "evil.npz",
                     {"meta": meta_npy(), "param/affine1.W": pickle_payload(marker)})

    with pytest.raises(CheckpointError, match=r"param/affine1\.W holds object arrays"):
        load_checkpoint(path)
    assert not marker.exists()


def test_data_npz_with_a_pickled_object_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "created"
    path = write_zip(tmp_path / "data.npz", {"X_train": pickle_payload(marker)})

    error = refused_within_bounds(lambda: load_numpy_file(path), DataError)

    assert "X_train holds object arrays" in str(error) and not marker.exists()


@pytest.mark.parametrize("shape", [(2**40,), (2**31, 2**31), (1 << 62, 4)])
def test_checkpoint_header_declaring_more_than_the_file_is_refused(tmp_path, shape):
    path = write_zip(tmp_path / "huge.npz", {
        "meta": meta_npy(), "param/affine1.W": forged_npy(shape, data=b"\0" * 64)})

    error = refused_within_bounds(lambda: load_checkpoint(path), CheckpointError)

    assert "param/affine1.W declares shape" in str(error)


def test_checkpoint_meta_declaring_a_huge_string_is_refused(tmp_path):
    path = write_zip(tmp_path / "huge.npz", {"meta": forged_npy((), "<U50000000")})

    error = refused_within_bounds(lambda: load_checkpoint(path), CheckpointError)

    assert "meta declares shape" in str(error)


def test_data_npy_header_declaring_more_than_the_file_is_refused(tmp_path):
    path = tmp_path / "huge.npy"
    path.write_bytes(forged_npy((2**40, 784), "|u1", b"\0" * 100))

    error = refused_within_bounds(lambda: load_numpy_file(path), DataError)

    assert "declares shape (1099511627776, 784)" in str(error)


def zip_lying_about_size(tmp_path, compression):
    """A zip whose directory claims its one member holds 2**40 bytes."""
    path = write_zip(tmp_path / "lie.npz", {"meta": meta_npy()}, compression)
    data = bytearray(path.read_bytes())
    entry = data.find(b"PK\x01\x02")  # the central directory's entry
    data[entry + 24:entry + 28] = struct.pack("<I", 0xFFFFFFF0)  # uncompressed size
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED],
                         ids=["stored", "deflated"])
def test_zip_directory_declaring_more_than_the_file_is_refused(tmp_path, compression):
    path = zip_lying_about_size(tmp_path, compression)

    error = refused_within_bounds(lambda: load_checkpoint(path), CheckpointError)

    assert "'meta.npy' declares 4294967280 bytes" in str(error)


def test_checkpoint_members_that_overlap_are_refused(tmp_path):
    # Two directory entries for one stored member: a zip bomb's trick.
    path = write_zip(tmp_path / "one.npz", {"meta": meta_npy()})
    data = path.read_bytes()
    start = data.find(b"PK\x01\x02")
    end = data.find(b"PK\x05\x06")
    entry = bytearray(data[start:end])
    entry[46:46 + len(b"meta.npy")] = b"mexa.npy"
    record = bytearray(data[end:])
    size = struct.unpack("<I", record[12:16])[0]
    record[8:12] = struct.pack("<HH", 2, 2)
    record[12:16] = struct.pack("<I", size + len(entry))
    path.write_bytes(data[:end] + bytes(entry) + bytes(record))

    with pytest.raises(CheckpointError):
        load_checkpoint(path)


@pytest.mark.parametrize("descr, shape", [
    ("<c16", (2,)), ("<U4", (2,)), ("|S4", (2,)), ("|V8", (2,)),
    ([("a", "<f8")], (2,)), ("<M8[s]", (2,)),
])
def test_checkpoint_array_of_a_wrong_dtype_is_refused_by_name(tmp_path, descr, shape):
    data = b"\0" * (np.dtype(descr).itemsize * 2)
    path = write_zip(tmp_path / "dtype.npz", {
        "meta": meta_npy(), "param/affine1.W": forged_npy(shape, descr, data)})

    with pytest.raises(CheckpointError, match=r"param/affine1\.W has dtype"):
        load_checkpoint(path)


def test_checkpoint_member_that_is_not_an_array_is_refused(tmp_path):
    path = tmp_path / "extra.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("meta.npy", meta_npy())
        archive.writestr("param/x.pkl", b"\x80\x04K\x01.")

    with pytest.raises(CheckpointError, match=r"'param/x\.pkl' is not a \.npy array"):
        load_checkpoint(path)


def test_checkpoint_meta_nested_thousands_deep_is_refused(tmp_path):
    meta = "[" * 100_000 + "]" * 100_000
    path = write_zip(tmp_path / "deep.npz", {"meta": npy_bytes(np.array(meta))})

    refused_within_bounds(lambda: load_checkpoint(path), CheckpointError)


def test_checkpoint_with_malformed_checksums_is_refused(tmp_path):
    meta = json.dumps({"format": 1, "checksums": [["param/x"]]})
    path = write_zip(tmp_path / "sums.npz", {"meta": npy_bytes(np.array(meta))})

    with pytest.raises(CheckpointError, match="malformed checksums"):
        load_checkpoint(path)


def test_compressed_checkpoint_still_loads(tmp_path):
    saved = save_small_checkpoint(tmp_path / "ck.npz")
    with np.load(saved, allow_pickle=False) as raw:
        members = {key: raw[key] for key in raw.files}
    np.savez_compressed(tmp_path / "small.npz", **members)

    loaded = load_checkpoint(tmp_path / "small.npz")

    np.testing.assert_array_equal(loaded.group("param")["affine1.W"],
                                  members["param/affine1.W"])


def test_idx_shape_numpy_cannot_hold_is_refused_even_when_empty(tmp_path):
    path = tmp_path / "empty"
    path.write_bytes(bytes([0, 0, 0x08, 4]) + struct.pack(">4I", 0, *[2**32 - 1] * 3))

    with pytest.raises(DataError, match="larger than any array can be"):
        read_idx(path)


def test_idx_gzip_bomb_after_the_data_is_refused_without_inflating_it(tmp_path):
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: gzip framing
    header = bytes([0, 0, 0x08, 1]) + struct.pack(">I", 3) + b"abc"
    zeros = b"\0" * 2**24
    body = compressor.compress(header) + b"".join(
        compressor.compress(zeros) for _ in range(64))  # 1 GiB inflated, ~1 MB here
    path = tmp_path / "bomb.gz"
    path.write_bytes(body + compressor.flush())

    error = refused_within_bounds(lambda: read_idx(path), DataError)

    assert "more than 1048576 bytes after the 3 bytes of data" in str(error)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
@pytest.mark.parametrize("loader", [load_checkpoint, read_idx, load_numpy_file])
def test_a_named_pipe_is_refused_not_waited_on(tmp_path, loader):
    path = tmp_path / "pipe"
    os.mkfifo(path)

    error = refused_within_bounds(lambda: loader(path))

    assert "is not a regular file" in str(error)




def billion_laughs(levels: int = 9) -> str:
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, levels + 1):
        aliases = ", ".join([f"*l{level - 1}"] * 9)
        lines.append(f"l{level}: &l{level} [{aliases}]")
    return "\n".join(lines) + "\n"


def test_python_tag_is_refused_clearly_and_runs_nothing(tmp_path):
    marker = tmp_path / "created"
    text = f"seed: !!python/object/apply:os.system ['touch {marker}']\n"

    error = refused_within_bounds(lambda: parse_yaml(text, "cfg"), ConfigError)

    assert "!!python/object/apply:os.system on line 1 is not allowed" in str(error)
    assert not marker.exists()


def test_alias_bomb_is_refused(tmp_path):
    text = billion_laughs()

    error = refused_within_bounds(lambda: parse_yaml(text, "bomb.yaml"), ConfigError)

    assert f"more than {MAX_VALUES} values" in str(error)


def test_alias_bomb_in_a_config_file_is_refused(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(billion_laughs() + "train: {epochs: *l9}\n")

    refused_within_bounds(lambda: load_config(path), ConfigError)


def test_recursive_alias_is_refused():
    error = refused_within_bounds(lambda: parse_yaml("a: &a [1, *a]\n", "cfg"))

    assert "alias *a on line 1" in str(error)


def test_a_few_aliases_still_work():
    text = "base: &base {lr: 0.1, momentum: 0.9}\ncopy: *base\nmerged: {<<: *base}\n"

    parsed = parse_yaml(text, "cfg")

    assert parsed["copy"] == parsed["merged"] == {"lr": 0.1, "momentum": 0.9}


@pytest.mark.parametrize("text", [
    "[" * 5000 + "]" * 5000,
    "{a: " * 5000 + "1" + "}" * 5000,
    "- " * 5000 + "x\n",
    "".join("  " * level + f"k{level}:\n" for level in range(300)) + "  " * 300 + "1",
    "? " * 5000 + "x\n",
], ids=["flow-lists", "flow-mappings", "block-lists", "block-mappings", "keys"])
def test_nesting_thousands_deep_is_refused(text):
    error = refused_within_bounds(lambda: parse_yaml(text, "deep.yaml"), ConfigError)

    assert f"nested deeper than {MAX_DEPTH} levels" in str(error)


def test_nesting_a_little_is_fine():
    assert parse_yaml("[" * 50 + "]" * 50, "cfg") is not None


def test_file_of_many_megabytes_is_refused(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("seed: 0\n" + "# filler\n" * 600_000)

    error = refused_within_bounds(lambda: load_config(path), ConfigError)

    assert "too large for a config" in str(error)


def test_text_of_many_megabytes_is_refused_before_parsing():
    text = "a: [" + "1, " * 2_000_000 + "]"

    error = refused_within_bounds(lambda: parse_yaml(text, "--set a"), ConfigError)

    assert "too long for a config" in str(error)


@pytest.mark.parametrize("text", [
    "a: 2001-13-45\n", "a: 0b_\n", "a: 0x_\n", "a: " + "9" * 5000 + "\n",
    "{[1, 2]: x}\n", "{{a: 1}: x}\n", "a: !!bool x\n", "a: !!timestamp x\n",
    "!!set a\n",
], ids=["date", "binary", "hex", "long-integer", "list-key", "mapping-key", "bool-tag",
        "timestamp-tag", "set-tag"])
def test_values_python_cannot_build_are_config_errors(text):
    with pytest.raises(ConfigError, match=r"\bline 1\b"):
        parse_yaml(text, "cfg")




def save_small_checkpoint(path):
    arrays = {"param": {"affine1.W": np.arange(6, dtype=np.float32).reshape(2, 3),
                        "affine1.b": np.zeros(3, np.float32)},
              "optim": {"affine1.W/velocity": np.ones((2, 3))},
              "prep": {"center.mean": np.array([0.5, 1.5])}}
    save_checkpoint(path, {"config": {"seed": 3}, "history": [1.5, 2.5]}, arrays)
    return path


@pytest.fixture(scope="module")
def valid(tmp_path_factory):
    """The bytes of a small valid checkpoint, stored and deflated, and its load."""
    folder = tmp_path_factory.mktemp("valid")
    stored = save_small_checkpoint(folder / "stored.npz")
    with np.load(stored, allow_pickle=False) as raw:
        np.savez_compressed(folder / "deflated.npz", **{k: raw[k] for k in raw.files})
    return {"stored": stored.read_bytes(),
            "deflated": (folder / "deflated.npz").read_bytes(),
            "loaded": load_checkpoint(stored)}


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def assert_loads_the_original_or_is_refused(path, original):
    try:
        loaded = load_checkpoint(path)
    except NNTrainError:
        return
    assert loaded.meta == original.meta
    assert loaded.arrays.keys() == original.arrays.keys()
    for prefix, group in original.arrays.items():
        assert group.keys() == loaded.arrays[prefix].keys()
        for name, value in group.items():
            assert np.array_equal(loaded.arrays[prefix][name], value)
            assert loaded.arrays[prefix][name].dtype == value.dtype


@FUZZ
@given(data=st.binary(max_size=2000), prefix=st.sampled_from([b"", b"PK\x03\x04"]))
def test_fuzz_checkpoint_random_bytes(scratch, data, prefix):
    path = scratch / "random.npz"
    path.write_bytes(prefix + data)
    with pytest.raises(NNTrainError):
        load_checkpoint(path)


# A mutation is (kind, position in [0, 1), byte): kinds truncate, flip, insert, delete.
mutations = st.lists(
    st.tuples(st.sampled_from(["truncate", "flip", "insert", "delete"]),
              st.floats(0, 1, exclude_max=True), st.integers(1, 255)),
    min_size=1, max_size=4)


def mutate(data: bytes, steps) -> bytes:
    data = bytearray(data)
    for kind, where, value in steps:
        at = int(where * len(data)) if data else 0
        if kind == "truncate":
            del data[at:]
        elif kind == "flip" and data:
            data[at] ^= value
        elif kind == "insert":
            data[at:at] = bytes([value])
        elif data:
            del data[at]
    return bytes(data)


@FUZZ
@given(kind=st.sampled_from(["stored", "deflated"]), steps=mutations)
def test_fuzz_checkpoint_mutations(valid, scratch, kind, steps):
    path = scratch / "mutated.npz"
    path.write_bytes(mutate(valid[kind], steps))
    assert_loads_the_original_or_is_refused(path, valid["loaded"])


member_names = st.one_of(
    st.sampled_from(["meta", "param/affine1.W", "param/", "evil/x", "param/x/../../y",
                     "", "meta.npy", "/etc/passwd", "param/" + "a" * 300]),
    st.text(max_size=20))


@FUZZ
@given(index=st.integers(0, 4), name=member_names, duplicate=st.booleans())
# Writing a duplicate member on purpose makes zipfile warn.
@pytest.mark.filterwarnings("ignore:Duplicate name:UserWarning")
def test_fuzz_checkpoint_member_renames(valid, scratch, index, name, duplicate):
    source = io.BytesIO(valid["stored"])
    path = scratch / "renamed.npz"
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(path, "w") as new:
        infos = old.infolist()
        for position, info in enumerate(infos):
            data = old.read(info)
            if position == index % len(infos):
                try:
                    new.writestr(name + ".npy" if duplicate else name, data)
                except (IndexError, ValueError):  # zipfile refuses "" and a few more
                    return
                if not duplicate:
                    continue
            new.writestr(info.filename, data)
    assert_loads_the_original_or_is_refused(path, valid["loaded"])


descrs = st.one_of(
    st.sampled_from(["<f4", "<f8", "|O", "<c16", "<U8", "|S3", "|V4", "<M8[s]",
                     "|b1", ">i8", "<f2", "", "x", "<U999999999"]),
    st.lists(st.tuples(st.text(max_size=3), st.sampled_from(["<f8", "|O"])),
             min_size=1, max_size=2))
shapes = st.lists(st.integers(-2, 2**63), max_size=4).map(tuple)


@FUZZ
@given(descr=descrs, shape=shapes, key=st.sampled_from(["meta", "param/affine1.W"]),
       tail=st.binary(max_size=64))
def test_fuzz_checkpoint_forged_headers(scratch, descr, shape, key, tail):
    path = scratch / "forged.npz"
    try:
        member = forged_npy(shape, descr, tail)
    except (TypeError, ValueError):  # NumPy's writer itself refuses some headers
        return
    write_zip(path, {"meta": meta_npy({key: "00000000"}), key: member})
    with pytest.raises(NNTrainError):
        load_checkpoint(path)


yaml_fragments = st.sampled_from([
    "a", "seed", "train", "epochs", ":", ": ", "- ", "[", "]", "{", "}", ",", "\n",
    "  ", "&x ", "*x", "&y ", "*y", "<<: ", "? ", "|", ">", '"', "'", "#", "!!str ",
    "!!python/name:os.system ", "!!binary ", "!!set ", "1e-3", "0x_", "0b1",
    "2001-13-45", "1:20", ".inf", "null", "~", "---\n", "...\n", "%YAML 1.1\n",
    "!!bool ", "!!timestamp ", "!!int ", "!!float ", "!!omap ", "!!map ", "!!seq ",
    "\t", "\\", "\x00", "\ufeff", "9" * 50,
])


@FUZZ
@given(text=st.one_of(st.text(max_size=300),
                      st.lists(yaml_fragments, max_size=60).map("".join)))
def test_fuzz_yaml_text(text):
    try:
        raw = parse_yaml(text, "fuzz")
        resolve_config(raw)
    except NNTrainError:
        pass


SHIPPED = Path(__file__).parents[1] / "configs"


@FUZZ
@given(name=st.sampled_from(sorted(path.name for path in SHIPPED.glob("*.yaml"))),
       steps=mutations)
def test_fuzz_shipped_config_mutations(name, steps):
    text = mutate((SHIPPED / name).read_bytes(), steps).decode("utf-8", "replace")
    try:
        resolve_config(parse_yaml(text, name))
    except NNTrainError:
        pass


config_names = st.sampled_from([
    "seed", "data", "model", "optimizer", "schedule", "train", "output", "name",
    "path", "validation", "preprocess", "hidden", "layers", "activation", "init",
    "loss", "l2", "lr", "momentum", "epochs", "iterations", "batch_size", "dtype",
    "affine", "units", "relu", "dropout", "adam", "sgd", "step", "gamma", "clip",
])
scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                    st.floats(), st.text(max_size=8), config_names)
structures = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(config_names, inner, max_size=4)),
    max_leaves=25)


@FUZZ
@given(raw=st.dictionaries(config_names, structures, max_size=6))
def test_fuzz_config_structures(raw):
    for candidate in (raw, parse_yaml(yaml.safe_dump(raw), "fuzz")):
        try:
            resolve_config(candidate)
        except NNTrainError:
            pass


IDX_CODES = [0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E]


@FUZZ
@given(data=st.binary(max_size=600), gzipped=st.booleans())
def test_fuzz_idx_random_bytes(scratch, data, gzipped):
    path = scratch / "random.idx"
    path.write_bytes(gzip.compress(data) if gzipped else data)
    try:
        array = read_idx(path)
    except NNTrainError:
        return
    assert array.nbytes <= len(data)


@FUZZ
@given(code=st.sampled_from(IDX_CODES + [0, 0x0A, 0xFF]),
       dims=st.lists(st.integers(0, 2**32 - 1) | st.integers(0, 5), max_size=6),
       ndim_delta=st.integers(-1, 1), data=st.binary(max_size=300),
       gzipped=st.booleans())
def test_fuzz_idx_headers(scratch, code, dims, ndim_delta, data, gzipped):
    ndim = max(0, min(255, len(dims) + ndim_delta))
    content = bytes([0, 0, code, ndim]) + struct.pack(f">{len(dims)}I", *dims) + data
    path = scratch / "header.idx"
    path.write_bytes(gzip.compress(content) if gzipped else content)
    try:
        array = read_idx(path)
    except NNTrainError:
        return
    assert array.nbytes <= len(content)


@FUZZ
@given(steps=mutations, gzipped=st.booleans())
def test_fuzz_idx_mutations(scratch, steps, gzipped):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    content = bytes([0, 0, 0x08, 3]) + struct.pack(">3I", 2, 3, 4) + images.tobytes()
    if gzipped:
        content = gzip.compress(content)
    path = scratch / "mutated.idx"
    path.write_bytes(mutate(content, steps))
    try:
        read_idx(path)
    except NNTrainError:
        pass


@FUZZ
@given(steps=mutations)
def test_fuzz_data_npz_mutations(valid, scratch, steps):
    path = scratch / "data.npz"
    path.write_bytes(mutate(valid["stored"], steps))
    try:
        load_numpy_file(path)
    except NNTrainError:
        pass


def test_fuzz_leaves_no_stray_files(scratch):
    # The loaders only read: nothing but the files the tests wrote is there.
    assert {entry.name for entry in os.scandir(scratch)} <= {
        "random.npz", "mutated.npz", "renamed.npz", "forged.npz", "random.idx",
        "header.idx", "mutated.idx", "data.npz"}
