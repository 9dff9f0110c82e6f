"""Shared fixtures: tiny datasets and configs written into each test's tmp_path.

Nothing here reads /usr/share/datasets or the user's cache; every array is made by
the test itself, small enough that a whole fit takes a fraction of a second.
"""

import contextlib
import gzip
import signal
import struct
from pathlib import Path

import numpy as np
import pytest
import yaml

# The tiny npz dataset: C = 3 classes of D = 4 features, 60 training rows and 15
# test rows, blobs far apart so that a 4-8-3 network learns them in a few epochs.
# Feature 3 has a large offset and feature 1 a small spread, so preprocessing matters.
TINY_CLASSES = 3
TINY_FEATURES = 4
TINY_TRAIN = 60
TINY_TEST = 15
TINY_VALIDATION = 10
TINY_BATCH = 16


def tiny_arrays(seed: int = 0) -> dict:
    """X_train (60, 4) float64, y_train (60,), X_test (15, 4), y_test (15,)."""
    rng = np.random.default_rng(seed)
    centers = np.array([[3.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 3.0]])

    def blob(count):
        y = np.arange(count) % TINY_CLASSES
        X = np.empty((count, TINY_FEATURES))
        X[:, :3] = centers[y] + rng.normal(scale=0.7, size=(count, 3))
        X[:, 1] *= 0.01
        X[:, 3] = 50.0 + rng.normal(size=count)
        return X, y.astype(np.int64)

    X_train, y_train = blob(TINY_TRAIN)
    X_test, y_test = blob(TINY_TEST)
    return {"X_train": X_train, "y_train": y_train, "X_test": X_test, "y_test": y_test}


@pytest.fixture
def write_npz(tmp_path):
    """write_npz(name="data.npz", **arrays) -> the path of a new .npz in tmp_path."""

    def write(name: str = "data.npz", **arrays) -> Path:
        path = tmp_path / name
        np.savez(path, **arrays)
        return path

    return write


@pytest.fixture
def tiny_npz(write_npz) -> Path:
    """The tiny dataset of ``tiny_arrays`` as an npz with its own test split."""
    return write_npz("tiny.npz", **tiny_arrays())


def tiny_config_dict(npz_path) -> dict:
    """A raw config that trains a 4-8-3 network on ``npz_path`` for 3 epochs."""
    return {
        "seed": 0,
        "data": {"name": "npz", "path": str(npz_path), "validation": TINY_VALIDATION},
        "model": {"hidden": [8]},
        "optimizer": {"name": "adam", "lr": 0.01},
        "train": {"epochs": 3, "batch_size": TINY_BATCH, "log_every": 5},
    }


@pytest.fixture
def write_config(tmp_path):
    """write_config(content, name="config.yaml"): content is YAML text or a dict."""

    def write(content, name: str = "config.yaml") -> Path:
        path = tmp_path / name
        text = content if isinstance(content, str) else yaml.safe_dump(content)
        path.write_text(text, encoding="utf-8")
        return path

    return write


@pytest.fixture
def tiny_config(write_config, tiny_npz) -> Path:
    """A config file for the tiny npz: hidden [8], 3 epochs of batch 16."""
    return write_config(tiny_config_dict(tiny_npz), "tiny.yaml")


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of a uint8 array: magic 0x000008NN, sizes, then the bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I",
                                                           *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


@pytest.fixture
def write_idx_dataset(tmp_path):
    """write_idx_dataset(folder, train=(X, y), test=(X, y), compress=True) writes
    the four MNIST-style files; X: (N, H, W) uint8, y: (N,) uint8."""

    def write(folder, train, test, compress: bool = True) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        names = {
            "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
            "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
        }
        for split, (X, y) in {"train": train, "test": test}.items():
            for stem, array in zip(names[split], (X, y)):
                data = idx_bytes(array)
                if compress:
                    (folder / f"{stem}.gz").write_bytes(gzip.compress(data))
                else:
                    (folder / stem).write_bytes(data)
        return folder

    return write


@pytest.fixture(autouse=True)
def _no_plots_after_fit(request, monkeypatch):
    """Drawing a run's PNGs takes seconds; tests of fit skip it unless they are
    marked ``@pytest.mark.plots``. The plots module has its own tests."""
    if request.node.get_closest_marker("plots") is None:
        import nntrain.pipeline

        monkeypatch.setattr(nntrain.pipeline, "_write_plots", lambda path, rep: None)


@contextlib.contextmanager
def hang_ends_after(seconds: float):
    """An exception in the block after ``seconds``: a read that blocks for good
    (of a pipe) fails the test instead of stopping the suite."""
    class Hang(Exception):  # not an OSError, which a read in the block may catch
        pass

    def stop(signum, frame):
        raise Hang(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
