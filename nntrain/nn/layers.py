"""Layer objects: each keeps its parameters and what its backward pass needs.

The maths lives in ``functional.py``; a layer only stores named arrays between
``forward`` and ``backward``. Every layer has:
- ``name``: unique in its model, for example ``affine1``; parameter keys are
  ``<name>.<param>`` (``affine1.W``);
- ``params``: dict of trainable arrays (empty for activations);
- ``regularized``: the names of the params that weight decay applies to (weights,
  never biases);
- ``forward(x, training)`` and ``backward(dout, need_dx)``, the latter returning
  ``(dx, grads)`` with ``grads`` keyed like ``params``.
"""

import numpy as np

from nntrain.nn import functional as F
from nntrain.nn.init import init_weights


class Affine:
    """out = x W + b, with W: (D, H) and b: (H,)."""

    kind = "affine"
    regularized = ("W",)

    def __init__(self, name, in_width, units, rng, init="he", init_std=0.01,
                 dtype=np.float32):
        self.name = name
        self.params = {
            "W": init_weights(init, in_width, units, rng, init_std, dtype),
            "b": np.zeros(units, dtype=dtype),
        }
        self.x = None  # the input of the last forward pass, (N, D)

    @property
    def out_width(self) -> int:
        return self.params["b"].shape[0]

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        self.x = x
        return F.affine_forward(x, self.params["W"], self.params["b"])

    def backward(self, dout: np.ndarray, need_dx: bool = True):
        dx, dW, db = F.affine_backward(dout, self.x, self.params["W"], need_dx)
        return dx, {"W": dW, "b": db}


class ReLU:
    """max(x, 0), elementwise."""

    kind = "relu"
    regularized = ()

    def __init__(self, name):
        self.name = name
        self.params = {}
        self.out = None  # the output of the last forward pass, (N, H)

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        self.out = F.relu_forward(x)
        return self.out

    def backward(self, dout: np.ndarray, need_dx: bool = True):
        return F.relu_backward(dout, self.out), {}
