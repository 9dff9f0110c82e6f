"""Gradient clipping, applied in place between the backward pass and the update."""

import math

import numpy as np


def global_norm(grads: dict) -> float:
    """The L2 norm of all gradient arrays taken together."""
    return math.sqrt(sum(float(np.vdot(grad, grad)) for grad in grads.values()))


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
