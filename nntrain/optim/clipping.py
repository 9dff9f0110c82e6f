"""Gradient clipping, applied in place between the backward pass and the update."""

import math

import numpy as np

from nntrain.nn.functional import rescaled_norm


def global_norm(grads: dict) -> float:
    """The L2 norm of all gradient arrays taken together."""
    return math.sqrt(sum(_squared_norm(grad) for grad in grads.values()))


def _squared_norm(grad: np.ndarray) -> float:
    """The sum of the squares of ``grad``'s entries, as a Python float.

    Summed in the array's own dtype, which is fast; an array whose squares pass
    that dtype's range (entries past 1.8e19 in float32) is summed again in
    float64, divided by its largest entry, as its norm would otherwise be inf and
    blamed on the data. An array holding inf or NaN gives inf or NaN as before.
    """
    with np.errstate(over="ignore"):
        squared = float(np.vdot(grad, grad))
    if not math.isinf(squared):
        return squared
    norm = rescaled_norm(grad)
    return squared if math.isnan(norm) else norm * norm


def clip_gradients(grads: dict, clip: dict | None) -> float:
    """Clip ``grads`` in place as ``clip`` says; return their global norm before.

    ``{"norm": M}``: if the global norm exceeds M, scale every array by
    M / (norm + 1e-6) (torch's clip_grad_norm_ convention; the 1e-6 keeps a zero
    norm from dividing by zero). ``{"value": M}``: clamp every entry to [-M, M].
    """
    norm = global_norm(grads)
    if not clip:
        return norm
    if "norm" in clip:
        scale = clip["norm"] / (norm + 1e-6)
        if scale < 1:
            for grad in grads.values():
                grad *= grad.dtype.type(scale)
    else:
        limit = clip["value"]
        for grad in grads.values():
            np.clip(grad, -limit, limit, out=grad)
    return norm
