"""Reading the samples ``nntrain predict`` classifies."""

from pathlib import Path

import numpy as np

from nntrain.data.datasets import beyond_dtype
from nntrain.data.npfile import load_numpy_file
from nntrain.errors import DataError

# Array names tried, in order, in an .npz given to predict.
NPZ_SAMPLE_KEYS = ("X", "X_test", "images")


def read_samples(path, num_features: int, dtype=None) -> np.ndarray:
    """Samples from a .npy or .npz file as an (N, D) array, D = ``num_features``.

    Accepts (N, D), (N, H, W) images with H * W = D, or one sample of D values.
    ``dtype``: the float type the model computes in; values beyond its range are
    refused (None skips that check).
    """
    path = Path(path)
    loaded = load_numpy_file(path)
    X = _pick_array(loaded, path) if isinstance(loaded, dict) else loaded
    X = _as_rows(np.asarray(X), num_features, path)
    # Cast, such values would be infinite and their probabilities NaN.
    problem = dtype is not None and beyond_dtype(X, dtype)
    if problem:
        raise DataError(f"{path}: samples hold {problem}, which this model computes"
                        " in; rescale them")
    return X


def _pick_array(arrays: dict, path: Path) -> np.ndarray:
    for key in NPZ_SAMPLE_KEYS:
        if key in arrays:
            return arrays[key]
    if len(arrays) == 1:
        return next(iter(arrays.values()))
    raise DataError(
        f"{path} holds {sorted(arrays)}; name the samples array one of"
        f" {', '.join(NPZ_SAMPLE_KEYS)}"
    )


def _as_rows(X: np.ndarray, num_features: int, path: Path) -> np.ndarray:
    if X.dtype.kind not in "fiu":
        raise DataError(f"{path}: samples must be numbers, not {X.dtype}")
    if X.size == 0:
        raise DataError(f"{path} holds no samples")
    if X.size == num_features:
        X = X.reshape(1, num_features)
    elif X.ndim >= 2 and int(np.prod(X.shape[1:])) == num_features:
        X = X.reshape(len(X), num_features)
    else:
        raise DataError(
            f"{path}: samples of shape {X.shape} do not have the {num_features}"
            " features the model takes"
        )
    if X.dtype.kind == "f" and not np.isfinite(X).all():
        raise DataError(f"{path}: samples hold NaN or infinite values")
    return X
