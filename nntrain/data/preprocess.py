"""Preprocessing steps, fitted on the training split only and saved in the checkpoint.

Each step learns its statistics from the training features with ``fit`` and applies
them to any split with ``transform``; ``state`` gives the arrays a checkpoint stores
(under ``prep/<step>.<name>``) and ``from_state`` rebuilds the step from them, so
``eval`` applies exactly what training applied. Statistics are computed in float64.
A split is never standardized with its own statistics: only ``fit`` computes any,
and the Preprocessor calls it on the training split alone.

Features that the cast to train.dtype leaves unchanged (uint8 pixels, float32 values)
are cast first, one copy, and the steps work on that copy. Others (float64 values
such as 1e8 + noise, whose float32 rounding would erase the noise) go through the
steps in float64, chunk by chunk, and are rounded to train.dtype once, at the end;
a step then fits on a ``_Streamed`` view instead of an array, which is why ``fit``
reads X only through ``len``, ``shape`` and slices of rows.

Shapes: X is (N, D); ``pca`` and ``whiten`` map D features to K components.
"""

import math

import numpy as np

from nntrain.errors import (
    EDITED_CHECKPOINT_FIX,
    CheckpointError,
    ConfigError,
    DataError,
)

# Rows per chunk when accumulating statistics, so that no step ever holds a float64
# copy of the whole training split (345 MB for Fashion-MNIST).
_CHUNK_ROWS = 1024

# The largest covariance matrix pca and whiten build, (D, D) in float64: 1 GiB,
# 11,585 features (its eigendecomposition needs two or three times that again).
# That takes time of order D^3 (about a minute at 8,000 features on two cores),
# and beyond it the memory alone fails a laptop; such data wants fewer features
# first (smaller images).
MAX_COVARIANCE_BYTES = 2**30


class _Overflow(DataError):
    """A statistic of the training split came out NaN or infinite: values near
    float64's limit (1e200, squared) overflow. The Preprocessor names the step."""

    def __init__(self):
        super().__init__("a statistic of the training data overflows float64, as"
                         " its values are too large; scale the data down (divide"
                         " it by a power of ten)")


class TransformOverflow(DataError):
    """A fitted step, or the cast to train.dtype, made values of some samples NaN
    or infinite. The message is the one for data being fitted (scale it down);
    eval and predict, whose samples must be scaled as the training data was,
    word their own from ``blamed`` and ``rows`` (the 0-based indices of the
    samples at fault, of ``total``)."""

    def __init__(self, message: str, blamed: str, X: np.ndarray):
        super().__init__(message)
        self.blamed, self.dtype, self.total = blamed, X.dtype, len(X)
        self.rows = np.flatnonzero(np.concatenate([
            ~np.isfinite(X[start:start + _CHUNK_ROWS]).all(axis=1)
            for start in range(0, len(X), _CHUNK_ROWS)
        ]))


def _finite(statistic: np.ndarray) -> np.ndarray:
    """``statistic`` ((D,) or (D, D)), unless any of it overflowed."""
    if not np.isfinite(statistic).all():
        raise _Overflow()
    return statistic


def column_mean(X: np.ndarray) -> np.ndarray:
    """Per-feature mean of X: (N, D) in float64, summed over chunks of rows, then
    corrected by the mean of the deviations from it (a second pass): the chunks'
    sums, added one after another, leave the mean of a million rows of 0.1 some
    ninety units in its last place off, which `center` would leave in every
    value and `scale` then blow up."""
    total = np.zeros(X.shape[1])
    for start in range(0, len(X), _CHUNK_ROWS):
        total += X[start:start + _CHUNK_ROWS].sum(axis=0, dtype=np.float64)
    mean = _finite(total / len(X))
    deviations = np.zeros(X.shape[1])
    for start in range(0, len(X), _CHUNK_ROWS):
        chunk = X[start:start + _CHUNK_ROWS].astype(np.float64)
        deviations += (chunk - mean).sum(axis=0)
    return mean + deviations / len(X)


def column_spread(X: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per-feature (mean, std, lowest, highest) of X: (N, D), in float64, two
    passes over chunks of rows.

    The second pass divides each feature's deviations from the mean by the power
    of two at or above its largest one, which is exact, so that their squares
    neither overflow (values near 1e200) nor underflow (a spread near 1e-160,
    whose squares lose their digits in float64's subnormal numbers). It also
    sums the deviations and corrects by them (the corrected two-pass algorithm):
    the first pass's mean of 70 rows of 0.1 is off by units in its last place.
    """
    total = np.zeros(X.shape[1])
    low, high = np.full(X.shape[1], np.inf), np.full(X.shape[1], -np.inf)
    for start in range(0, len(X), _CHUNK_ROWS):
        chunk = X[start:start + _CHUNK_ROWS]
        total += chunk.sum(axis=0, dtype=np.float64)
        np.minimum(low, chunk.min(axis=0), out=low)
        np.maximum(high, chunk.max(axis=0), out=high)
    mean = _finite(total / len(X))
    with np.errstate(over="ignore"):
        largest = _finite(np.maximum(high - mean, mean - low))  # (D,) deviations
    _, exponent = np.frexp(largest)  # (D,) ints: largest = m 2^exponent, m < 1

    deviations, squares = np.zeros(X.shape[1]), np.zeros(X.shape[1])
    for start in range(0, len(X), _CHUNK_ROWS):
        centered = X[start:start + _CHUNK_ROWS].astype(np.float64)
        centered -= mean
        np.ldexp(centered, -exponent, out=centered)  # within [-1, 1]
        deviations += centered.sum(axis=0)
        squares += np.einsum("ij,ij->j", centered, centered)
    offset = deviations / len(X)
    variance = np.maximum(squares / len(X) - offset * offset, 0.0)
    std = np.ldexp(np.sqrt(variance), exponent)
    return mean + np.ldexp(offset, exponent), std, low, high


class Center:
    """Subtract the per-feature mean of the training split: x - mean."""

    name = "center"
    # The arrays ``state`` gives, with their number of dimensions (None: any).
    kept = {"mean": 1}

    def fit(self, X: np.ndarray, input_shape=None) -> "Center":
        """X: (N, D) training features."""
        self.mean = column_mean(X)
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        """X: (N, D) float array, changed in place and returned."""
        X -= self.mean.astype(X.dtype)
        return X

    def state(self) -> dict:
        return {"mean": self.mean}

    @classmethod
    def from_state(cls, state: dict) -> "Center":
        step = cls()
        step.mean = state["mean"]
        return step

    def widths(self) -> tuple[int, int]:
        """(input width D, output width) that the fitted state implies."""
        return len(self.mean), len(self.mean)


class ImageMean(Center):
    """Subtract the mean training image, pixel by pixel.

    On images flattened to rows this is numerically the same as ``center``; the
    state is kept in the image's own shape (``prep/image_mean.image``, e.g. 28x28)
    so that it can be shown as a picture.
    """

    name = "image_mean"
    kept = {"image": None}

    def fit(self, X, input_shape=None) -> "ImageMean":
        self.mean = column_mean(X)
        self.shape = tuple(input_shape or X.shape[1:])
        return self

    def state(self) -> dict:
        return {"image": self.mean.reshape(self.shape)}

    @classmethod
    def from_state(cls, state: dict) -> "ImageMean":
        step = cls()
        step.shape = state["image"].shape
        step.mean = state["image"].reshape(-1)
        return step


class Scale:
    """Divide each feature by its training standard deviation.

    A feature that holds one value over the whole training split is constant: it
    carries no information, and its factor is 0 (no division by 0, no
    warnings). So is one whose std is at most ROUNDING_ULPS * eps * |mean|, its
    values as this step sees them (a few units in their last place), eps that of
    the type it computes in (float64 for data that float32 cannot hold
    exactly): divided by that std, its values would be a constant of 1e7 or
    more (1e15 in float64), their variation rounded away. Any other feature is
    divided by its std, however small its variation next to its size or its
    units (a year in float16, a timestamp, a length in nanometres), which after
    a `center` step is measured against values near 0. A feature constant but
    for rounding noise in data already centred (values that differ in their last
    digits) is scaled too, to noise of unit size.
    """

    name = "scale"
    kept = {"factor": 1}
    ROUNDING_ULPS = 4

    def fit(self, X: np.ndarray, input_shape=None) -> "Scale":
        """X: (N, D) training features."""
        mean, std, low, high = column_spread(X)
        eps = np.finfo(X.dtype).eps
        varies = (low != high) & (std > self.ROUNDING_ULPS * eps * np.abs(mean))
        with np.errstate(divide="ignore", over="ignore"):
            inverse = 1.0 / std
        # A std that rounds to 0, or whose inverse passes float64's range.
        beyond = np.flatnonzero((low != high) & ~np.isfinite(inverse))
        if beyond.size:
            # A spread of a few subnormal steps (below ~1e-308): no float holds
            # its inverse.
            feature = beyond[0]
            raise DataError(
                f"preprocessing step scale cannot fit the training split: feature"
                f" {feature} (counted from 0) varies, from {float(low[feature])!r} to"
                f" {float(high[feature])!r}, too little for float64 to divide by;"
                " scale the data up (multiply it by a power of ten)")
        self.factor = np.where(varies, inverse, 0.0)
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        """X: (N, D) float array, changed in place and returned."""
        X *= self.factor.astype(X.dtype)
        return X

    def state(self) -> dict:
        return {"factor": self.factor}

    @classmethod
    def from_state(cls, state: dict) -> "Scale":
        step = cls()
        step.factor = state["factor"]
        return step

    def widths(self) -> tuple[int, int]:
        return len(self.factor), len(self.factor)


class PCA:
    """Project the centred features on the top K principal directions of the
    training split: (x - mean) U_K, with U_K: (D, K) the eigenvectors of the
    covariance with the K largest eigenvalues. ``components``: K, or the smallest K
    whose eigenvalues hold at least that fraction of the total variance."""

    name = "pca"
    kept = {"mean": 1, "basis": 2, "scale": 1}
    whiten = False

    def __init__(self, components=0.99, epsilon=1e-2):
        self.components, self.epsilon = components, epsilon

    def fit(self, X: np.ndarray, input_shape=None):
        """X: (N, D) training features."""
        D = X.shape[1]
        if D * D * 8 > MAX_COVARIANCE_BYTES:
            most = math.isqrt(MAX_COVARIANCE_BYTES // 8)
            raise ConfigError(
                f"data.preprocess: {self.name} needs a {D:,} x {D:,} covariance"
                f" matrix ({D * D * 8 / 2**30:,.2f} GiB, over the 1 GiB nntrain"
                f" builds) for data of {D:,} features; use it on at most {most:,}"
                " features (reduce the data first, such as smaller images), or"
                " leave it out")
        self.mean = column_mean(X)
        covariance = np.zeros((D, D))
        for start in range(0, len(X), _CHUNK_ROWS):
            chunk = X[start:start + _CHUNK_ROWS].astype(np.float64) - self.mean
            covariance += chunk.T @ chunk
        covariance /= len(X)

        try:
            eigenvalues, eigenvectors = np.linalg.eigh(_finite(covariance))
        except np.linalg.LinAlgError:  # entries too large to decompose
            raise _Overflow() from None
        _finite(eigenvalues)
        order = np.argsort(eigenvalues)[::-1]
        eigenvalues = np.clip(eigenvalues[order], 0, None)
        keep = self._count(eigenvalues)
        self.basis = eigenvectors[:, order[:keep]]
        self.scale = np.ones(keep)
        if self.whiten:
            # Dividing by sqrt(eigenvalue) gives every direction unit variance;
            # epsilon bounds the gain on near-zero directions (noise) by
            # 1 / sqrt(epsilon), so no output explodes.
            self.scale = 1 / np.sqrt(eigenvalues[:keep] + self.epsilon)
        return self

    def _count(self, eigenvalues: np.ndarray) -> int:
        D = len(eigenvalues)
        if isinstance(self.components, int):
            if self.components > D:
                raise ConfigError(
                    f"data.preprocess: {self.name} keeps {self.components} components"
                    f" but the data has {D} features; choose at most {D}"
                )
            return self.components
        total = eigenvalues.sum()
        if total <= 0:
            return 1
        explained = np.cumsum(eigenvalues) / total
        return int(min(np.searchsorted(explained, self.components - 1e-12) + 1, D))

    def transform(self, X: np.ndarray) -> np.ndarray:
        """A new (N, K) array of X's dtype, computed chunk by chunk so that no
        centred copy of the whole of X is ever made."""
        projection = (self.basis * self.scale).astype(X.dtype)
        mean = self.mean.astype(X.dtype)
        out = np.empty((len(X), projection.shape[1]), dtype=X.dtype)
        for start in range(0, len(X), _CHUNK_ROWS):
            rows = slice(start, start + _CHUNK_ROWS)
            np.matmul(X[rows] - mean, projection, out=out[rows])
        return out

    def state(self) -> dict:
        return {"mean": self.mean, "basis": self.basis, "scale": self.scale}

    @classmethod
    def from_state(cls, state: dict):
        step = cls()
        step.mean, step.basis = state["mean"], state["basis"]
        step.scale = state["scale"]
        for key in ("mean", "scale"):  # an empty one would be blamed on the basis
            if not len(state[key]):
                raise CheckpointError(f"prep/{cls.name}.{key} is empty")
        expected = (len(step.mean), len(step.scale))
        if step.basis.shape != expected:
            raise CheckpointError(
                f"prep/{cls.name}.basis has shape {step.basis.shape}, which does not"
                f" fit its mean and scale: expected {expected}"
            )
        return step

    def widths(self) -> tuple[int, int]:
        return self.basis.shape


class Whiten(PCA):
    """PCA whitening: the PCA projection divided by sqrt(eigenvalue + epsilon), so
    every kept direction has (about) unit variance on the training split."""

    name = "whiten"
    whiten = True

    def __init__(self, components=1.0, epsilon=1e-2):
        super().__init__(components, epsilon)


STEPS = {step.name: step for step in (Center, Scale, ImageMean, PCA, Whiten)}


def step_names(steps_config: list) -> list[str]:
    """Names of a resolved ``data.preprocess`` list (strings or one-key mappings)."""
    return [
        entry if isinstance(entry, str) else next(iter(entry)) for entry in steps_config
    ]


def _exact_in(X: np.ndarray, dtype: np.dtype) -> bool:
    """Whether casting X: (N, D) to ``dtype`` keeps every value: always for a
    narrower type (uint8 to float32), else checked chunk by chunk."""
    if np.can_cast(X.dtype, dtype):
        return True
    with np.errstate(over="ignore"):  # a value past dtype's range is not kept
        return all(
            np.array_equal(X[start:start + _CHUNK_ROWS].astype(dtype),
                           X[start:start + _CHUNK_ROWS])
            for start in range(0, len(X), _CHUNK_ROWS)
        )


class _Streamed:
    """The rows of X: (N, D) passed through fitted ``steps`` in float64 as they
    are read, a chunk at a time: what the next step fits on, without a float64
    copy of the whole of X."""

    def __init__(self, X: np.ndarray, steps: list):
        self.X, self.steps = X, list(steps)
        width = steps[-1].widths()[1] if steps else X.shape[1]
        self.shape = (len(X), width)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.float64)  # the rows' type, as __getitem__ gives them

    def __len__(self) -> int:
        return len(self.X)

    def __getitem__(self, rows: slice) -> np.ndarray:
        chunk = self.X[rows].astype(np.float64)  # a copy: steps change it in place
        for step in self.steps:
            chunk = step.transform(chunk)
        return chunk


class Preprocessor:
    """The config's list of steps, applied in order."""

    def __init__(self, steps: list):
        self.steps = steps

    @classmethod
    def fit(cls, steps_config: list, X_train: np.ndarray, dtype, input_shape=None):
        """Fit each step on the output of the steps before it. X_train: (N, D)."""
        return cls.fit_transform(steps_config, X_train, dtype, input_shape)[0]

    @classmethod
    def fit_transform(cls, steps_config: list, X_train, dtype, input_shape=None):
        """(the fitted Preprocessor, X_train transformed), making one copy of the
        training split instead of two."""
        X_train, dtype = np.asarray(X_train), np.dtype(dtype)
        input_shape = input_shape or X_train.shape[1:]
        if not _exact_in(X_train, dtype):
            steps = []
            for entry in steps_config:
                steps.append(_fitted(entry, _Streamed(X_train, steps), input_shape))
                input_shape = steps[-1].widths()[1:]
            prep = cls(steps)
            return prep, prep._transform_in_float64(X_train, dtype,
                                                    "the training split")

        X = np.array(X_train, dtype=dtype)
        steps = []
        for entry in steps_config:
            step = _fitted(entry, X, input_shape)
            X = _transformed(step, X, "the training split")
            input_shape = X.shape[1:]
            steps.append(step)
        return cls(steps), X

    def transform(self, X: np.ndarray, dtype, what: str = "the data") -> np.ndarray:
        """A new (N, K) array of ``dtype``: X with every step applied. ``what``
        names X in the error when a step overflows (the test split)."""
        X, dtype = np.asarray(X), np.dtype(dtype)
        # Decided for each X, not once at fit: whether the cast loses values is a
        # property of this X. A model trained on uint8 pixels may be given float64
        # samples to predict, whose noise a float32 cast first would erase; and
        # for values the cast keeps, the two routes differ only in the rounding
        # of the arithmetic (a float32 unit in the last place), not in the values.
        if not _exact_in(X, dtype):
            return self._transform_in_float64(X, dtype, what)
        X = np.array(X, dtype=dtype)
        for step in self.steps:
            X = _transformed(step, X, what)
        return X

    def _transform_in_float64(self, X: np.ndarray, dtype: np.dtype,
                              what: str) -> np.ndarray:
        """X with every step applied in float64, chunk by chunk, each chunk
        rounded to ``dtype`` as it is written into the (N, K) result."""
        streamed = _Streamed(X, self.steps)
        out = np.empty(streamed.shape, dtype=dtype)
        with np.errstate(over="ignore", invalid="ignore"):
            for start in range(0, len(X), _CHUNK_ROWS):
                rows = slice(start, start + _CHUNK_ROWS)
                out[rows] = streamed[rows]
        feature = _non_finite_feature(out)
        if feature is not None:
            names = ", ".join(step.name for step in self.steps)
            blamed = (f"preprocessing ({names})" if names else
                      f"the cast to train.dtype {dtype}")
            raise TransformOverflow(
                f"{blamed} made feature {feature} (counted from 0) of {what} NaN or"
                f" infinite: {_overflow_cause(self.steps, dtype, dtype)}", blamed,
                out)
        return out

    def output_width(self, input_width: int) -> int:
        """K, the width of the features the model sees."""
        for step in self.steps:
            input_width = step.widths()[1]
        return input_width

    def state(self) -> dict:
        """Arrays named ``<step>.<name>``, for the checkpoint's ``prep/`` prefix."""
        return {
            f"{step.name}.{key}": value
            for step in self.steps
            for key, value in step.state().items()
        }

    @classmethod
    def from_state(cls, steps_config: list, arrays: dict, num_features: int,
                   where="the checkpoint"):
        """Rebuild the steps from checkpoint arrays, checking that their widths
        chain from ``num_features`` to the model's input. ``where``: the
        checkpoint's path, for messages."""
        names = step_names(steps_config)
        _check_state_arrays(names, arrays, where)
        steps, width = [], num_features
        for name in names:
            prefix = f"{name}."
            state = {
                key[len(prefix):]: value
                for key, value in arrays.items()
                if key.startswith(prefix)
            }
            try:
                step = STEPS[name].from_state(state)
            except KeyError as missing:
                raise CheckpointError(
                    f"{where} lacks prep/{name}.{missing.args[0]}; the file is"
                    " damaged or was edited: use another checkpoint of the run"
                    " (best.npz or last.npz)"
                ) from None
            except CheckpointError as error:  # arrays that do not fit each other
                raise CheckpointError(f"{where}: {error}; {_DAMAGED}") from None
            step_in, step_out = step.widths()
            if step_in != width or any(value.size == 0 for value in state.values()):
                raise CheckpointError(
                    f"{where}: prep/{name} takes {step_in} features where {width}"
                    " arrive: the checkpoint does not match its data; use an"
                    " unaltered checkpoint of the run (best.npz or last.npz)"
                )
            _check_vector_shapes(name, state, step_in, step_out, where)
            steps.append(step)
            width = step_out
        return cls(steps)


def _fitted(entry, X, input_shape):
    """The step a ``data.preprocess`` entry names, fitted on X: (N, D), an array
    or a ``_Streamed`` view."""
    if isinstance(entry, str):
        name, options = entry, {}
    else:
        (name, options), = entry.items()
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            return STEPS[name](**options).fit(X, input_shape)
    except _Overflow:
        raise DataError(
            f"preprocessing step {name} cannot fit the training split: its"
            " statistics overflow float64, as the values are too large;"
            " scale the data down (divide it by a power of ten)") from None


def _non_finite_feature(X: np.ndarray) -> int | None:
    """The first feature of X: (N, K) holding NaN or an infinity, or None."""
    if X.size == 0:
        return None
    # NaN and infinities survive min and max: two (K,) vectors, no (N, K) mask.
    finite = np.isfinite(X.min(axis=0)) & np.isfinite(X.max(axis=0))
    return None if finite.all() else int(np.argmin(finite))


def _transformed(step, X: np.ndarray, what: str) -> np.ndarray:
    """``step.transform(X)``, refused with a DataError when it made a value NaN or
    infinite: features near the dtype's limit overflow when shifted or projected
    (3e38 - -1e38 is past float32's 3.4e38), and training would stop on a NaN loss
    blamed on the weights. X: (N, D)."""
    with np.errstate(over="ignore", invalid="ignore"):
        X = step.transform(X)
    feature = _non_finite_feature(X)
    if feature is not None:
        raise TransformOverflow(
            f"preprocessing step {step.name} made feature {feature} (counted from"
            f" 0) of {what} NaN or infinite:"
            f" {_overflow_cause([step], X.dtype, f'{X.dtype} arithmetic')}",
            f"preprocessing step {step.name}", X)
    return X


# A whitening epsilon below this lets a near-empty direction be multiplied by more
# than 1 / sqrt(epsilon) = 1,000.
_SMALL_WHITEN_EPSILON = 1e-6


def _overflow_cause(steps, dtype, arithmetic: str) -> str:
    """Why ``steps`` made values NaN or infinite in ``dtype``, and what to do:
    values too large (scale the data down); unless whitening with a tiny epsilon
    multiplied an empty direction (of rank-deficient data) by up to
    1 / sqrt(epsilon), which no scaling mends, or scale's factor 1 / std is past
    the dtype's largest number: a feature that varies too little (scale it up)."""
    too_large = f"its values are too large for {arithmetic}"
    for step in steps:
        if getattr(step, "whiten", False) and step.epsilon < _SMALL_WHITEN_EPSILON:
            return (f"{too_large}; raise whiten's epsilon (now {step.epsilon:g}; a"
                    " direction the training data hardly fills is multiplied by up"
                    " to 1 / sqrt(epsilon)), or scale the data down")
        largest = np.finfo(dtype).max
        if step.name == "scale" and step.factor.max(initial=0) > largest:
            return (f"its std is below 1 / {largest:.3g}, so dividing by it"
                    f" overflows {arithmetic}; scale the data up (multiply it by a"
                    " power of ten)")
    return f"{too_large}; scale the data down (divide it by a power of ten)"


# How every message about a forged or damaged prep/ array ends.
_DAMAGED = EDITED_CHECKPOINT_FIX
_SHAPE_WORDS = {1: "a vector", 2: "a matrix", None: "an array of one or more"
                " dimensions"}


def _check_state_arrays(names: list[str], arrays: dict, where) -> None:
    """Each of ``arrays`` (named ``<step>.<name>``) must be one that a step of
    ``names`` keeps, float64 as every statistic is computed, with its number of
    dimensions, and finite."""
    kept = {f"{name}.{key}": ndim for name in names
            for key, ndim in STEPS[name].kept.items()}
    for key, value in arrays.items():
        if key not in kept:
            listed = ", ".join(names) or "none"
            raise CheckpointError(f"{where} holds prep/{key}, which no step of its"
                                  f" data.preprocess ({listed}) keeps; {_DAMAGED}")
        if value.dtype != np.float64:
            raise CheckpointError(f"{where}: prep/{key} is {value.dtype}, but"
                                  f" preprocessing statistics are float64; {_DAMAGED}")
        ndim = kept[key]
        if value.ndim != ndim and not (ndim is None and value.ndim >= 1):
            raise CheckpointError(f"{where}: prep/{key} has shape {value.shape}, but"
                                  f" it is {_SHAPE_WORDS[ndim]}; {_DAMAGED}")
        if not np.isfinite(value).all():
            raise CheckpointError(f"{where}: prep/{key} holds NaN or infinite"
                                  f" values; {_DAMAGED}")


def _check_vector_shapes(name: str, state: dict, step_in: int, step_out: int,
                         where) -> None:
    expected = {"mean": (step_in,), "factor": (step_in,), "scale": (step_out,)}
    for key, value in state.items():
        if key in expected and value.shape != expected[key]:
            raise CheckpointError(
                f"{where}: prep/{name}.{key} has shape {value.shape}, expected"
                f" {expected[key]}: the checkpoint does not match its data"
            )
