"""Reading the samples ``nntrain predict`` classifies."""

from pathlib import Path

import numpy as np

from nntrain.data.datasets import beyond_dtype
from nntrain.data.npfile import load_numpy_file
from nntrain.errors import DataError
from nntrain.train.report import counted

# Array names tried, in order, in an .npz given to predict.
NPZ_SAMPLE_KEYS = ("X", "X_test", "images")


def read_samples(path, num_features: int, dtype=None,
                 input_shape=None) -> np.ndarray:
    """Samples from a .npy or .npz file as an (N, D) array, D = ``num_features``.

    Accepts (N, D) rows or (N, *input_shape) images (the shape the model was
    trained on, such as (N, H, W)), or one sample: (D,) or ``input_shape``.
    ``dtype``: the float type the model computes in; values beyond its range are
    refused (None skips that check).
    """
    path = Path(path)
    loaded = load_numpy_file(path)
    X = _pick_array(loaded, path) if isinstance(loaded, dict) else loaded
    shape = tuple(input_shape) if input_shape else (num_features,)
    X = _as_rows(np.asarray(X), num_features, shape, path)
    # Cast, such values would be infinite and their probabilities NaN.
    problem = dtype is not None and beyond_dtype(X, dtype)
    if problem:
        raise DataError(f"{path}: samples hold {problem}; they must fit the model's"
                        " train.dtype, as its training data did: rescale them")
    return X


def _pick_array(arrays: dict, path: Path) -> np.ndarray:
    found = [key for key in NPZ_SAMPLE_KEYS if key in arrays]
    if len(found) > 1:
        # Which one the user meant is a guess: X_test beside X may be other data.
        names = f"{', '.join(found[:-1])} and {found[-1]}"
        raise DataError(f"{path} holds {names}, each of which predict would take"
                        " for the samples; save only the array to classify")
    if found:
        return arrays[found[0]]
    if len(arrays) == 1:
        return next(iter(arrays.values()))
    raise DataError(
        f"{path} holds {sorted(arrays)}; name the samples array one of"
        f" {', '.join(NPZ_SAMPLE_KEYS)}"
    )


def _as_rows(X: np.ndarray, num_features: int, input_shape: tuple,
             path: Path) -> np.ndarray:
    if X.dtype.kind not in "fiu":
        raise DataError(f"{path}: samples must be numbers, not {X.dtype}; save"
                        " them as a float or integer array")
    if X.size == 0:
        raise DataError(f"{path} holds no samples; save at least one")
    # Only the shapes the model was trained on: a reshape of anything with the
    # right number of values would classify scrambled images without a word.
    sample_shapes = {(num_features,), input_shape}
    if X.shape in sample_shapes:
        X = X.reshape(1, num_features)
    elif X.ndim >= 2 and X.shape[1:] in sample_shapes:
        X = X.reshape(len(X), num_features)
    else:
        inputs = counted(num_features, "feature")
        raise DataError(f"{path}: samples of shape {X.shape} do not match the"
                        f" model's input of {inputs}; give"
                        f" {_expected_shapes(num_features, input_shape)}")
    if X.dtype.kind == "f" and not np.isfinite(X).all():
        raise DataError(f"{path}: samples hold NaN or infinite values; remove those"
                        " samples, or replace the values, before predicting")
    return X


def _expected_shapes(num_features: int, input_shape: tuple) -> str:
    """'an (N, 64) or (N, 8, 8) array, or one sample of shape (64,) or (8, 8)'."""
    flat = (num_features,)
    rows = [f"(N, {num_features})"]
    one = [str(flat)]
    if input_shape != flat:
        rows.append("(N, " + ", ".join(map(str, input_shape)) + ")")
        one.append(str(input_shape))
    return (f"an {' or '.join(rows)} array, or one sample of shape"
            f" {' or '.join(one)}")
