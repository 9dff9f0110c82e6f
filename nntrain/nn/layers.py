"""Layer objects: each keeps its parameters and what its backward pass needs.

The maths lives in ``functional.py``; a layer only stores named arrays between
``forward`` and ``backward``. Every layer has:
- ``name``: unique in its model, for example ``affine1``; parameter keys are
  ``<name>.<param>`` (``affine1.W``);
- ``params``: dict of trainable arrays; ``buffers``: non-trainable state a checkpoint
  keeps (batch norm's running statistics);
- ``regularized``: the names of the params that weight decay and max-norm apply to
  (weights, never biases or batch-norm parameters), with the layer's own ``l2``,
  ``l1`` and ``max_norm`` (None: the model's);
- ``out_width``: the width of its output;
- ``forward(x, training)`` and ``backward(dout, need_dx)``, the latter returning
  ``(dx, grads)`` with ``grads`` keyed like ``params``;
- ``kink_state()``: which side of each non-differentiable point the last forward
  pass was on (None for smooth layers), so the gradient checker can skip probes
  that cross one;
- ``shapes(in_width, units, **options)``: the shapes of its params and buffers,
  known without building it (a layer that keeps neither sets ``keeps_arrays =
  False`` instead).
"""

from dataclasses import dataclass

import numpy as np

from nntrain.nn import functional as F
from nntrain.nn.init import init_weights


@dataclass
class BuildContext:
    """What every layer may need when it is built."""

    init_rng: np.random.Generator | None  # None: zero weights, to be overwritten
    dropout_rng: np.random.Generator
    dtype: np.dtype
    init: str = "he"
    init_std: float = 0.01


class Layer:
    kind = ""
    regularized: tuple[str, ...] = ()
    sized = False  # True: the output width is the ``units`` option, not the input's
    # False: the layer keeps no params or buffers. A layer that keeps any must
    # define shapes(), which checkpoints are checked against before it is built.
    keeps_arrays = True

    def __init__(self, name: str, width: int):
        self.name = name
        self.out_width = width
        self.params: dict[str, np.ndarray] = {}
        # Where backward may write each param's gradient (same keys and shapes);
        # a Model replaces these with views of its one gradient vector.
        self.grads: dict[str, np.ndarray] = {}
        self.buffers: dict[str, np.ndarray] = {}
        self.l2 = self.l1 = self.max_norm = None

    def kink_state(self):
        return None

    @classmethod
    def shapes(cls, in_width: int, units: int | None = None,
               **options) -> tuple[dict, dict]:
        """(params, buffers): the shape of each array a layer built with these
        arguments keeps, known without building it."""
        if cls.keeps_arrays:
            raise NotImplementedError(f"{cls.__name__} keeps params or buffers but"
                                      " does not define shapes(); define it, or set"
                                      " keeps_arrays = False if it keeps none")
        return {}, {}


class Affine(Layer):
    """out = x W + b, with W: (D, H) and b: (H,)."""

    kind = "affine"
    regularized = ("W",)
    sized = True

    def __init__(self, name, in_width, units, context: BuildContext, init=None,
                 init_std=None, l2=None, l1=None, max_norm=None):
        super().__init__(name, units)
        self.params = {
            "W": init_weights(init or context.init, in_width, units, context.init_rng,
                              init_std or context.init_std, context.dtype),
            "b": np.zeros(units, dtype=context.dtype),
        }
        self.grads = {key: np.zeros_like(value) for key, value in self.params.items()}
        self.l2, self.l1, self.max_norm = l2, l1, max_norm
        self.x = None  # the input of the last forward pass, (N, D)

    @classmethod
    def shapes(cls, in_width, units=None, **options):
        return {"W": (in_width, units), "b": (units,)}, {}

    def forward(self, x, training):
        self.x = x
        return F.affine_forward(x, self.params["W"], self.params["b"])

    def backward(self, dout, need_dx=True):
        # The weight gradients go straight into their storage: no copy per step.
        dx, dW, db = F.affine_backward(dout, self.x, self.params["W"], need_dx,
                                       dW=self.grads["W"], db=self.grads["b"])
        return dx, {"W": dW, "b": db}


class Maxout(Layer):
    """H maxout units of k pieces each: W: (D, H * k), b: (H * k,). Takes the place
    of an affine layer plus activation."""

    kind = "maxout"
    regularized = ("W",)
    sized = True

    def __init__(self, name, in_width, units, context: BuildContext, pieces=2,
                 init=None, init_std=None, l2=None, l1=None, max_norm=None):
        super().__init__(name, units)
        self.params = {
            "W": _maxout_weights(in_width, units, pieces, context, init, init_std),
            "b": np.zeros(units * pieces, dtype=context.dtype),
        }
        self.grads = {key: np.zeros_like(value) for key, value in self.params.items()}
        self.pieces = pieces
        self.l2, self.l1, self.max_norm = l2, l1, max_norm
        self.x = self.winner = None  # (N, D) input; (N, H) index of the winning piece

    @classmethod
    def shapes(cls, in_width, units=None, pieces=2, **options):
        return {"W": (in_width, units * pieces), "b": (units * pieces,)}, {}

    def forward(self, x, training):
        self.x = x
        out, self.winner = F.maxout_forward(x, self.params["W"], self.params["b"],
                                            self.pieces)
        return out

    def backward(self, dout, need_dx=True):
        # The weight gradients go straight into their storage, as Affine's do.
        dx, dW, db = F.maxout_backward(dout, self.x, self.params["W"], self.winner,
                                       self.pieces, need_dx, dW=self.grads["W"],
                                       db=self.grads["b"])
        return dx, {"W": dW, "b": db}

    def kink_state(self):
        return self.winner


def _maxout_weights(in_width, units, pieces, context: BuildContext, init,
                    init_std) -> np.ndarray:
    """W: (D, H * k), the k pieces of unit h in columns h * k to h * k + k - 1;
    zeros when there is no init generator (a checkpoint's weights replace them)."""
    if context.init_rng is None:
        return np.zeros((in_width, units * pieces), context.dtype)
    # Each piece is an ordinary affine unit, so it is initialized like one, with
    # fan_out = units (the pieces of a unit compete; they do not add up).
    W = np.stack([
        init_weights(init or context.init, in_width, units, context.init_rng,
                     init_std or context.init_std, context.dtype)
        for _ in range(pieces)
    ], axis=2)
    return W.reshape(in_width, units * pieces)


class ReLU(Layer):
    """max(x, 0)."""

    kind = "relu"
    keeps_arrays = False

    def __init__(self, name, in_width, context=None):
        super().__init__(name, in_width)
        self.out = None  # (N, H)

    def forward(self, x, training):
        self.out = F.relu_forward(x)
        return self.out

    def backward(self, dout, need_dx=True):
        return F.relu_backward(dout, self.out), {}

    def kink_state(self):
        return self.out > 0


class LeakyReLU(Layer):
    """x for x > 0, slope * x otherwise (slope 0.01 by default)."""

    kind = "leaky_relu"
    keeps_arrays = False

    def __init__(self, name, in_width, context=None, slope=0.01):
        super().__init__(name, in_width)
        self.slope = slope
        self.x = None

    def forward(self, x, training):
        self.x = x
        return F.leaky_relu_forward(x, self.slope)

    def backward(self, dout, need_dx=True):
        return F.leaky_relu_backward(dout, self.x, self.slope), {}

    def kink_state(self):
        return self.x > 0


class ELU(Layer):
    """x for x > 0, alpha (exp(x) - 1) otherwise (alpha 1 by default)."""

    kind = "elu"
    keeps_arrays = False

    def __init__(self, name, in_width, context=None, alpha=1.0):
        super().__init__(name, in_width)
        self.alpha = alpha
        self.x = self.out = None

    def forward(self, x, training):
        self.x = x
        self.out = F.elu_forward(x, self.alpha)
        return self.out

    def backward(self, dout, need_dx=True):
        return F.elu_backward(dout, self.x, self.out, self.alpha), {}

    def kink_state(self):
        return self.x > 0


class Sigmoid(Layer):
    kind = "sigmoid"
    keeps_arrays = False

    def __init__(self, name, in_width, context=None):
        super().__init__(name, in_width)
        self.out = None

    def forward(self, x, training):
        self.out = F.sigmoid_forward(x)
        return self.out

    def backward(self, dout, need_dx=True):
        return F.sigmoid_backward(dout, self.out), {}


class Tanh(Layer):
    kind = "tanh"
    keeps_arrays = False

    def __init__(self, name, in_width, context=None):
        super().__init__(name, in_width)
        self.out = None

    def forward(self, x, training):
        self.out = F.tanh_forward(x)
        return self.out

    def backward(self, dout, need_dx=True):
        return F.tanh_backward(dout, self.out), {}


class BatchNorm(Layer):
    """Batch normalization of each of H features.

    Training: the batch's mean and biased variance normalize the batch, and the
    running statistics move towards them:
        running = momentum * running + (1 - momentum) * batch statistic
    (momentum 0.9 by default; torch writes the same rule with its momentum = 1 - ours).
    The running variance averages the same biased batch variance.
    Evaluation: the running statistics normalize, so the layer is a fixed affine map.
    """

    kind = "batchnorm"

    def __init__(self, name, in_width, context: BuildContext, momentum=0.9,
                 epsilon=1e-5):
        super().__init__(name, in_width)
        dtype = context.dtype
        self.params = {"gamma": np.ones(in_width, dtype),
                       "beta": np.zeros(in_width, dtype)}
        self.buffers = {"running_mean": np.zeros(in_width, dtype),
                        "running_var": np.ones(in_width, dtype)}
        self.momentum, self.epsilon = momentum, epsilon
        self.x_hat = self.inv_std = None  # (N, H) and (H,) from the last training pass

    @classmethod
    def shapes(cls, in_width, units=None, **options):
        vector = (in_width,)
        return ({"gamma": vector, "beta": vector},
                {"running_mean": vector, "running_var": vector})

    def forward(self, x, training):
        gamma, beta = self.params["gamma"], self.params["beta"]
        if not training:
            return F.batchnorm_forward_eval(
                x, gamma, beta, self.buffers["running_mean"],
                self.buffers["running_var"], self.epsilon)
        out, self.x_hat, self.inv_std, mean, var = F.batchnorm_forward_train(
            x, gamma, beta, self.epsilon)
        for buffer, batch_value in (("running_mean", mean), ("running_var", var)):
            running = self.buffers[buffer]
            running *= self.momentum
            running += (1 - self.momentum) * batch_value
        return out

    def backward(self, dout, need_dx=True):
        dx, dgamma, dbeta = F.batchnorm_backward(dout, self.x_hat, self.inv_std,
                                                 self.params["gamma"])
        return dx, {"gamma": dgamma, "beta": dbeta}


class LayerNorm(Layer):
    """Layer normalization of each sample over its H features, in both modes."""

    kind = "layernorm"

    def __init__(self, name, in_width, context: BuildContext, epsilon=1e-5):
        super().__init__(name, in_width)
        dtype = context.dtype
        self.params = {"gamma": np.ones(in_width, dtype),
                       "beta": np.zeros(in_width, dtype)}
        self.epsilon = epsilon
        self.x_hat = self.inv_std = None

    @classmethod
    def shapes(cls, in_width, units=None, **options):
        return {"gamma": (in_width,), "beta": (in_width,)}, {}

    def forward(self, x, training):
        out, self.x_hat, self.inv_std = F.layernorm_forward(
            x, self.params["gamma"], self.params["beta"], self.epsilon)
        return out

    def backward(self, dout, need_dx=True):
        dx, dgamma, dbeta = F.layernorm_backward(dout, self.x_hat, self.inv_std,
                                                 self.params["gamma"])
        return dx, {"gamma": dgamma, "beta": dbeta}


class Dropout(Layer):
    """Inverted dropout: in training each unit is zeroed with probability
    ``drop_probability`` (the chance of DROPPING it, not of keeping it) and the
    survivors are scaled by 1 / (1 - p); evaluation is the identity.

    Masks come from the run's seeded dropout generator. ``freeze_mask = True`` reuses
    the last mask, which is how the gradient checker probes a fixed function.
    """

    kind = "dropout"
    keeps_arrays = False

    def __init__(self, name, in_width, context: BuildContext, drop_probability=0.5):
        super().__init__(name, in_width)
        self.drop_probability = drop_probability
        self.rng = context.dropout_rng
        self.freeze_mask = False
        self.mask = None  # (N, H)

    def forward(self, x, training):
        if not training or self.drop_probability == 0:
            self.mask = None
            return x
        if not (self.freeze_mask and self.mask is not None):
            self.mask = F.dropout_mask(x.shape, self.drop_probability, self.rng,
                                       x.dtype)
        return x * self.mask

    def backward(self, dout, need_dx=True):
        return (dout if self.mask is None else dout * self.mask), {}


LAYERS = {
    layer.kind: layer
    for layer in (Affine, Maxout, ReLU, LeakyReLU, ELU, Sigmoid, Tanh, BatchNorm,
                  LayerNorm, Dropout)
}
ACTIVATIONS = ("relu", "leaky_relu", "elu", "sigmoid", "tanh")
