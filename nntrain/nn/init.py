"""Weight initializers. Biases always start at zero.

Each draws W: (fan_in, fan_out) from a zero-mean normal whose standard deviation is:
- ``small``:  the given ``std`` (0.01 by default), whatever the layer's size;
- ``xavier``: sqrt(1 / fan_in), the form the classic lecture notes use (Glorot
  and Bengio, 2010, average fan_in and fan_out instead);
- ``glorot``: sqrt(2 / (fan_in + fan_out)), Glorot and Bengio's own form
  (http://proceedings.mlr.press/v9/glorot10a.html);
- ``he``:     sqrt(2 / fan_in), which keeps the variance of ReLU activations steady
  from layer to layer (He et al., 2015, https://arxiv.org/abs/1502.01852).
Values are drawn in float64 and then cast, so float32 and float64 runs with the same
seed start from the same weights up to rounding.
"""

import numpy as np


def weight_std(scheme: str, fan_in: int, fan_out: int, std: float) -> float:
    """The standard deviation ``scheme`` gives a (fan_in, fan_out) weight matrix."""
    if scheme == "small":
        return std
    if scheme == "xavier":
        return float(np.sqrt(1.0 / fan_in))
    if scheme == "glorot":
        return float(np.sqrt(2.0 / (fan_in + fan_out)))
    if scheme == "he":
        return float(np.sqrt(2.0 / fan_in))
    raise ValueError(f"unknown initializer {scheme!r}")


def init_weights(scheme, fan_in, fan_out, rng, std=0.01, dtype=np.float32):
    """A new (fan_in, fan_out) weight matrix of ``dtype``; zeros when ``rng`` is
    None, for weights about to be overwritten (a checkpoint's): no draw, and no
    float64 copy twice their size."""
    if rng is None:
        return np.zeros((fan_in, fan_out), dtype)
    scale = weight_std(scheme, fan_in, fan_out, std)
    # A std beyond dtype's range casts to inf: training stops on it before any
    # update and names the weights and model.init_std, so numpy's warning would
    # only add noise.
    with np.errstate(over="ignore", invalid="ignore"):
        return (rng.standard_normal((fan_in, fan_out)) * scale).astype(dtype)
