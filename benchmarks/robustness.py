"""Throw thousands of hostile inputs at each loader and print a Markdown table.

The long version of tests/test_hostile.py. For every loader (checkpoints, configs,
IDX files, .npy/.npz data) a seeded loop makes random, mutated and crafted files: the
loader must either refuse them with one of nntrain's own errors (``NNTrainError``)
or, for a mutated checkpoint, load exactly what was saved. Anything else (another
exception type, a changed array, a file created by a pickle payload) is a failure.
Each example runs twice: once timed, once under tracemalloc for its peak memory
(Python's allocations and NumPy's arrays), since tracemalloc slows the pure-Python
YAML parser several times over.

    python benchmarks/robustness.py [--examples N] [--seed S] [--only SECTION ...]

Two more sections exercise the run itself: 50 resume trials (a real SIGINT after a
random update, then --resume: every array must equal the uninterrupted run's) and
100 SIGKILLs of a training process that saves after every update (the checkpoint
left behind must load). The loaders take about 2 minutes on 2 cores with the
default 2000 examples each; the two run sections about 3 more. Each section is a
function ``(rng, count, folder) -> Row``; main() runs the ones asked for.
"""

import argparse
import gzip
import io
import struct
import tempfile
import time
import tracemalloc
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from nntrain.checkpoint import load_checkpoint, save_checkpoint
from nntrain.config import resolve_config
from nntrain.data.idx import read_idx
from nntrain.data.npfile import load_numpy_file
from nntrain.errors import NNTrainError
from nntrain.yamlio import parse_yaml

FAILURES_SHOWN = 5


@dataclass
class Row:
    """What one section tried: outcomes, the worst example's time and peak memory."""

    section: str
    tried: int = 0
    refused: int = 0
    accepted: int = 0
    failures: list = field(default_factory=list)
    worst_seconds: float = 0.0
    slowest_kind: str = ""
    worst_bytes: int = 0

    def trial(self, kind: str, call, check=None) -> None:
        """Run ``call`` twice, timed and then under tracemalloc; refusals by
        NNTrainError pass, ``check(result)`` judges the rest (a failure text or
        None)."""
        self.tried += 1
        start = time.perf_counter()
        problem = self._outcome(call, check)
        seconds = time.perf_counter() - start
        if seconds > self.worst_seconds:
            self.worst_seconds, self.slowest_kind = seconds, kind
        if problem:
            self.failures.append(f"{kind}: {problem}")

        tracemalloc.start()
        try:
            call()
        except Exception:  # judged above; this run only measures memory
            pass
        self.worst_bytes = max(self.worst_bytes, tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()

    def _outcome(self, call, check) -> str | None:
        try:
            result = call()
        except NNTrainError:
            self.refused += 1
            return None
        except Exception as error:  # what this script hunts for
            return f"{type(error).__name__}: {str(error)[:120]}"
        self.accepted += 1
        return check(result) if check else None




class CreatesFile:
    """Unpickling this creates ``path``: the payload a loader must never run."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def npy_bytes(array, allow_pickle=False) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


def forged_npy(shape, descr, data=b"") -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": descr, "fortran_order": False, "shape": shape})
    return buffer.getvalue() + data


def zip_bytes(members: dict, compression=zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def mutate(rng, data: bytes) -> bytes:
    """One to four random truncations, byte flips, insertions or deletions."""
    data = bytearray(data)
    for _ in range(rng.integers(1, 5)):
        at = int(rng.integers(0, max(len(data), 1)))
        kind = rng.integers(4)
        if kind == 0:
            del data[at:]
        elif kind == 1 and data:
            data[at] ^= int(rng.integers(1, 256))
        elif kind == 2:
            data[at:at] = bytes([int(rng.integers(256))])
        elif data:
            del data[at]
    return bytes(data)


def random_shape(rng) -> tuple:
    sizes = [0, 1, 2, 3, 7, 2**31, 2**32 - 1, 2**40, 2**62, -1]
    return tuple(int(rng.choice(sizes)) for _ in range(rng.integers(0, 4)))


DESCRS = ["<f4", "<f8", ">f8", "|u1", "|b1", "|O", "<c16", "<U8", "<U50000000", "|S3",
          "|V4", "<M8[s]", [("a", "<f8")], [("a", "|O")]]




def small_checkpoint(folder: Path) -> dict:
    """Bytes of a small checkpoint, stored and deflated, its members and its load."""
    path = folder / "valid.npz"
    arrays = {"param": {"affine1.W": np.arange(6, dtype=np.float32).reshape(2, 3),
                        "affine1.b": np.zeros(3, np.float32)},
              "optim": {"affine1.W/velocity": np.ones((2, 3))},
              "prep": {"center.mean": np.array([0.5, 1.5])}}
    save_checkpoint(path, {"config": {"seed": 3}, "history": [1.5, 2.5]}, arrays)
    with zipfile.ZipFile(path) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    return {"stored": path.read_bytes(),
            "deflated": zip_bytes(members, zipfile.ZIP_DEFLATED),
            "members": members, "loaded": load_checkpoint(path)}


def same_as(original):
    def check(loaded) -> str | None:
        if loaded.meta != original.meta:
            return "loaded with a different meta"
        for prefix, group in original.arrays.items():
            other = loaded.arrays.get(prefix, {})
            same = group.keys() == other.keys() and all(
                np.array_equal(value, other[name]) and value.dtype == other[name].dtype
                for name, value in group.items())
            if not same:
                return f"loaded different {prefix} arrays"
        return None
    return check


def checkpoint_case(rng, valid, marker) -> tuple[str, bytes, object]:
    """(kind, file bytes, check of a successful load) for one random case."""
    kind = rng.choice(["random", "mutated", "renamed", "forged", "pickle", "size-lie"])
    members = dict(valid["members"])
    if kind == "random":
        prefix = b"PK\x03\x04" * int(rng.integers(2))
        return kind, prefix + rng.bytes(rng.integers(2000)), None
    if kind == "mutated":
        source = valid["stored" if rng.random() < 0.5 else "deflated"]
        return kind, mutate(rng, source), same_as(valid["loaded"])
    if kind == "renamed":
        old = str(rng.choice(list(members)))
        new = str(rng.choice(["meta.npy", "evil/x.npy", "param/.npy", "param/x",
                              "../x.npy", old.upper(), old + ".npy"]))
        members[new] = members.pop(old)
        return kind, zip_bytes(members), same_as(valid["loaded"])
    key = str(rng.choice(["meta.npy", "param/affine1.W.npy"]))
    if kind == "forged":
        descr = DESCRS[rng.integers(len(DESCRS))]
        members[key] = forged_npy(random_shape(rng), descr, rng.bytes(rng.integers(64)))
        return kind, zip_bytes(members), None
    if kind == "pickle":
        payload = np.array([CreatesFile(marker)], dtype=object)
        members[key] = npy_bytes(payload, allow_pickle=True)
        compression = zipfile.ZIP_DEFLATED if rng.random() < 0.5 else zipfile.ZIP_STORED
        return kind, zip_bytes(members, compression), None
    data = bytearray(valid["stored"])
    entry = data.find(b"PK\x01\x02")
    field_at = entry + int(rng.choice([20, 24]))  # compressed / uncompressed size
    data[field_at:field_at + 4] = struct.pack("<I", int(rng.integers(2**32)))
    return kind, bytes(data), same_as(valid["loaded"])


def fuzz_checkpoints(rng, examples: int, folder: Path) -> Row:
    row, valid = Row("checkpoint (load_checkpoint)"), small_checkpoint(folder)
    path, marker = folder / "case.npz", folder / "payload-ran"
    for _ in range(examples):
        kind, data, check = checkpoint_case(rng, valid, marker)
        path.write_bytes(data)
        row.trial(kind, lambda: load_checkpoint(path), check)
        if marker.exists():
            row.failures.append(f"{kind}: a pickle payload ran")
            marker.unlink()
    return row




YAML_FRAGMENTS = [
    "a", "seed", "train", "epochs", ":", ": ", "- ", "[", "]", "{", "}", ",", "\n",
    "  ", "&x ", "*x", "&y ", "*y", "<<: ", "? ", "|", ">", '"', "'", "#", "!!str ",
    "!!python/object/apply:os.system ", "!!binary ", "!!set ", "1e-3", "0x_", "0b1",
    "2001-13-45", "1:20", ".inf", "null", "~", "---\n", "...\n", "%YAML 1.1\n", "\t",
    "!!bool ", "!!timestamp ", "!!int ", "!!float ", "!!omap ", "!!map ", "!!seq ",
    "\\", "\x00", "\ufeff", "9" * 50,
]


def alias_bomb(rng) -> str:
    fanout, levels = int(rng.integers(2, 12)), int(rng.integers(2, 12))
    lines = [f"l0: &l0 [{', '.join(['lol'] * fanout)}]"]
    for level in range(1, levels + 1):
        lines.append(f"l{level}: &l{level} [{', '.join([f'*l{level - 1}'] * fanout)}]")
    return "\n".join(lines) + "\n"


def deep_text(rng) -> str:
    depth = int(rng.integers(90, 20_000))
    shape = rng.integers(4)
    if shape == 0:
        return "[" * depth + "]" * depth
    if shape == 1:
        return "{a: " * depth + "1" + "}" * depth
    if shape == 2:
        return "- " * depth + "x\n"
    depth = min(depth, 900)
    lines = "".join("  " * level + f"k{level}:\n" for level in range(depth))
    return lines + "  " * depth + "1"


def random_structure(rng, depth=0):
    kind = rng.integers(6 if depth < 4 else 3)
    names = ["seed", "data", "model", "train", "optimizer", "schedule", "name",
             "hidden", "layers", "lr", "epochs", "batch_size", "affine", "units"]
    if kind == 0:
        return float(rng.choice([0.5, -1.0, 1e308, np.inf, np.nan]))
    if kind == 1:
        return int(rng.choice([0, 1, -1, 2**70]))
    if kind == 2:
        return str(rng.choice(names + ["", "adam", "relu", "he"]))
    if kind == 3:
        return [random_structure(rng, depth + 1) for _ in range(rng.integers(4))]
    return {str(rng.choice(names)): random_structure(rng, depth + 1)
            for _ in range(rng.integers(4))}


SHIPPED_CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))


def config_text(rng) -> tuple[str, str]:
    kind = rng.choice(["random", "fragments", "bomb", "deep", "huge", "structure",
                       "shipped-mutated"], p=[0.2, 0.25, 0.1, 0.1, 0.02, 0.13, 0.2])
    if kind == "shipped-mutated":
        shipped = SHIPPED_CONFIGS[rng.integers(len(SHIPPED_CONFIGS))].read_bytes()
        return kind, mutate(rng, shipped).decode("utf-8", errors="replace")
    if kind == "random":
        return kind, "".join(chr(c) for c in rng.integers(0, 0x3000, rng.integers(300)))
    if kind == "fragments":
        picks = rng.integers(len(YAML_FRAGMENTS), size=rng.integers(60))
        return kind, "".join(YAML_FRAGMENTS[i] for i in picks)
    if kind == "bomb":
        return kind, alias_bomb(rng)
    if kind == "deep":
        return kind, deep_text(rng)
    if kind == "huge":
        return kind, "a: [" + "1, " * int(rng.integers(200_000, 2_000_000)) + "]"
    return kind, yaml.safe_dump(random_structure(rng))


def fuzz_configs(rng, examples: int, folder: Path) -> Row:
    row = Row("config (parse_yaml + resolve_config)")
    for _ in range(examples):
        kind, text = config_text(rng)
        row.trial(kind, lambda text=text: resolve_config(parse_yaml(text, "fuzz")))
    return row




IDX_CODES = [0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E]


def idx_case(rng) -> tuple[str, bytes]:
    kind = rng.choice(["random", "header", "mutated"])
    if kind == "random":
        content = rng.bytes(rng.integers(600))
    elif kind == "header":
        code = int(rng.choice(IDX_CODES + [0, 0x0A, 0xFF]))
        dims = [int(rng.choice([0, 1, 2, 5, 2**16, 2**32 - 1]))
                for _ in range(rng.integers(0, 7))]
        ndim = max(0, min(255, len(dims) + int(rng.integers(-1, 2))))
        content = (bytes([0, 0, code, ndim]) + struct.pack(f">{len(dims)}I", *dims)
                   + rng.bytes(rng.integers(300)))
    else:
        images = rng.integers(0, 256, (2, 3, 4), dtype=np.uint8)
        header = bytes([0, 0, 0x08, 3]) + struct.pack(">3I", 2, 3, 4)
        content = header + images.tobytes()
    if rng.random() < 0.4:
        content = gzip.compress(content)
    if kind == "mutated":
        content = mutate(rng, content)
    return kind, content


def fuzz_idx(rng, examples: int, folder: Path) -> Row:
    row, path = Row("IDX (read_idx)"), folder / "case.idx"

    def no_bigger_than_the_file(array) -> str | None:
        room = path.stat().st_size * 1032  # deflate's largest expansion
        return None if array.nbytes <= room else f"{array.nbytes} bytes from {room}"

    for _ in range(examples):
        kind, content = idx_case(rng)
        path.write_bytes(content)
        row.trial(kind, lambda: read_idx(path), no_bigger_than_the_file)
    return row




def data_case(rng, valid, marker) -> tuple[str, str, bytes]:
    kind = rng.choice(["npz-mutated", "npy-mutated", "npy-forged", "npz-pickle"])
    X = np.arange(12, dtype=np.float64).reshape(3, 4)
    if kind == "npz-mutated":
        return kind, "npz", mutate(rng, valid)
    if kind == "npy-mutated":
        return kind, "npy", mutate(rng, npy_bytes(X))
    if kind == "npy-forged":
        descr = DESCRS[rng.integers(len(DESCRS))]
        tail = rng.bytes(rng.integers(64))
        return kind, "npy", forged_npy(random_shape(rng), descr, tail)
    payload = np.array([CreatesFile(marker)], dtype=object)
    payload = npy_bytes(payload, allow_pickle=True)
    return kind, "npz", zip_bytes({"X_train.npy": payload})


def fuzz_data_files(rng, examples: int, folder: Path) -> Row:
    row, marker = Row("data (load_numpy_file)"), folder / "payload-ran"
    buffer = io.BytesIO()
    np.savez(buffer, X_train=np.ones((5, 4)), y_train=np.arange(5))
    for _ in range(examples):
        try:
            kind, suffix, content = data_case(rng, buffer.getvalue(), marker)
        except (TypeError, ValueError):  # NumPy's own writer refused the header
            continue
        path = folder / f"case.{suffix}"
        path.write_bytes(content)
        row.trial(kind, lambda path=path: load_numpy_file(path))
        if marker.exists():
            row.failures.append(f"{kind}: a pickle payload ran")
            marker.unlink()
    return row


def _tiny_run_config(folder: Path, **train) -> dict:
    """A raw config for a 4-8-3 network on a tiny npz, with every kind of state a
    resume must carry (dropout, batch norm, Adam, a plateau schedule, averaging)."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 4))
    y = np.arange(60) % 3
    X[np.arange(60), y] += 3
    np.savez(folder / "tiny.npz", X_train=X, y_train=y)
    return {
        "data": {"name": "npz", "path": str(folder / "tiny.npz"), "validation": 10},
        "model": {"hidden": [8], "batchnorm": True, "drop_probability": 0.2},
        "optimizer": {"name": "adam", "lr": 0.01},
        "schedule": {"name": "plateau", "patience": 1, "factor": 0.5},
        "train": {"batch_size": 16, "eval_every": 3, "log_every": 1, "plots": False,
                  "average": {"kind": "exponential", "decay": 0.9}, **train},
    }


def _checkpoint_arrays(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files if key != "meta"}


def resume_trials(rng, trials: int, folder: Path) -> Row:
    """Stop a run with a real SIGINT after a random update, resume it, and compare
    every array of its last checkpoint with the uninterrupted run's."""
    import os
    import signal

    from nntrain.errors import StopRequested
    from nntrain.pipeline import fit
    from nntrain.train.resume import find_checkpoint, resumed_config
    from nntrain.train.solver import Solver

    row = Row("resume at a random update (SIGINT, then --resume)")
    config = resolve_config(_tiny_run_config(folder, epochs=6))
    fit(config, folder / "whole", quiet=True)
    expected = _checkpoint_arrays(folder / "whole" / "checkpoints" / "last.npz")
    original = Solver._step

    for trial in range(trials):
        stop_at = int(rng.integers(1, 24))  # 6 epochs of 4 updates
        run_dir = folder / f"resume-{trial}"

        def step(self, rows, stop_at=stop_at):
            original(self, rows)
            if self.progress.iteration == stop_at:
                os.kill(os.getpid(), signal.SIGINT)

        def interrupted_then_resumed(run_dir=run_dir, step=step):
            Solver._step = step
            try:
                fit(config, run_dir, quiet=True)
            except StopRequested:
                pass
            finally:
                Solver._step = original
            _, checkpoint, _ = find_checkpoint(run_dir)
            fit(resumed_config(checkpoint, [], run_dir), run_dir, quiet=True,
                resume=checkpoint)
            return _checkpoint_arrays(run_dir / "checkpoints" / "last.npz")

        def same(found, stop_at=stop_at):
            differing = [key for key in expected
                         if not np.array_equal(expected[key], found.get(key))]
            return f"stopped at {stop_at}: {differing} differ" if differing else None

        row.trial(f"stop at {stop_at}", interrupted_then_resumed, same)
    return row


def kill_trials(rng, kills: int, folder: Path) -> Row:
    """SIGKILL a training process at random moments while it saves a checkpoint
    after every update; the previous checkpoint must always load."""
    import signal
    import subprocess
    import sys

    row = Row("SIGKILL during checkpoint saves")
    raw = _tiny_run_config(folder, epochs=100000, eval_every=1)
    config_path = folder / "kill.yaml"
    config_path.write_text(yaml.safe_dump(raw))
    for kill in range(kills):
        run_dir = folder / f"kill-{kill}"
        process = subprocess.Popen(
            [sys.executable, "-m", "nntrain", "fit", str(config_path), "--out",
             str(run_dir), "--quiet"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        last = run_dir / "checkpoints" / "last.npz"
        deadline = time.monotonic() + 60
        while not last.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(float(rng.uniform(0, 0.5)))
        process.send_signal(signal.SIGKILL)
        process.wait()

        def load(last=last):
            return load_checkpoint(last)

        def survived(checkpoint, kill=kill):
            iteration = checkpoint.meta["solver"]["progress"]["iteration"]
            return None if iteration >= 1 else f"kill {kill}: empty checkpoint"

        row.trial(f"kill {kill}", load, survived)
    return row


SECTIONS = {
    "checkpoints": fuzz_checkpoints,
    "configs": fuzz_configs,
    "idx": fuzz_idx,
    "data": fuzz_data_files,
    "resume": resume_trials,
    "kills": kill_trials,
}
# The slow sections run their own numbers of trials, not --examples.
TRIALS = {"resume": 50, "kills": 100}


def print_table(rows: list[Row]) -> None:
    print("| loader | tried | refused | loaded | failures | worst time (s) |"
          " slowest case | worst peak (MB) |")
    print("|---|---:|---:|---:|---:|---:|---|---:|")
    for row in rows:
        print(f"| {row.section} | {row.tried} | {row.refused} | {row.accepted} |"
              f" {len(row.failures)} | {row.worst_seconds:.3f} | {row.slowest_kind} |"
              f" {row.worst_bytes / 2**20:.1f} |")
    for row in rows:
        for failure in row.failures[:FAILURES_SHOWN]:
            print(f"failure in {row.section}: {failure}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=2000,
                        help="examples per loader (default 2000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="*", choices=list(SECTIONS),
                        help="sections to run (default: all)")
    parser.add_argument("--quick", action="store_true",
                        help="a twentieth of every section, for a quick look")
    args = parser.parse_args(argv)

    rows = []
    with tempfile.TemporaryDirectory(prefix="nntrain-robustness-") as folder:
        for name in args.only or SECTIONS:
            rng = np.random.default_rng([args.seed, list(SECTIONS).index(name)])
            started = time.perf_counter()
            count = TRIALS.get(name, args.examples)
            if args.quick:
                count = max(1, count // 20)
            rows.append(SECTIONS[name](rng, count, Path(folder)))
            print(f"{name}: {time.perf_counter() - started:.0f} s", flush=True)
    print_table(rows)
    return 1 if any(row.failures for row in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
