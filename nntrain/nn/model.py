"""The Model: a stack of layers, a loss and weight decay, with one ``loss`` method.

``model.loss(X, y)`` runs a training-mode forward and backward pass and returns
``(loss, grads)``; ``model.loss(X)`` returns class scores in evaluation mode. The
regularization convention is 0.5 * l2 * sum(W**2) over every weight matrix (never
biases), so its gradient is l2 * W, the same as ``weight_decay=l2`` in torch's SGD.
"""

from dataclasses import dataclass

import numpy as np

from nntrain.nn import functional as F
from nntrain.nn.layers import Affine, ReLU
from nntrain.random import INIT_STREAM, generator

ACTIVATION_LAYERS = {"relu": ReLU}
LOSSES = {"softmax": F.softmax_cross_entropy}


@dataclass
class LossResult:
    """What one training step measures: the total loss and its two parts, and the
    gradients keyed like ``Model.params``; ``scores``: (N, C) for train accuracy."""

    loss: float
    data_loss: float
    reg_loss: float
    grads: dict
    scores: np.ndarray


class Model:
    """Layers applied in order, then a loss on the last layer's scores."""

    def __init__(self, layers: list, loss: str = "softmax", l2: float = 0.0):
        self.layers = layers
        self.loss_name = loss
        self.l2 = l2
        self.params = {
            f"{layer.name}.{key}": value
            for layer in layers
            for key, value in layer.params.items()
        }
        self.weight_names = [
            f"{layer.name}.{key}" for layer in layers for key in layer.regularized
        ]

    @property
    def num_classes(self) -> int:
        return self.layers[-1].out_width

    def scores(self, X: np.ndarray, training: bool = False) -> np.ndarray:
        """Class scores.  X: (N, D) -> (N, C)."""
        out = X
        for layer in self.layers:
            out = layer.forward(out, training)
        return out

    def forward_backward(self, X: np.ndarray, y: np.ndarray) -> LossResult:
        """One training-mode pass.  X: (N, D), y: (N,) labels in [0, C)."""
        scores = self.scores(X, training=True)
        data_loss, dout = LOSSES[self.loss_name](scores, y)

        grads = {}
        for position in range(len(self.layers) - 1, -1, -1):
            layer = self.layers[position]
            dout, layer_grads = layer.backward(dout, need_dx=position > 0)
            for key, grad in layer_grads.items():
                grads[f"{layer.name}.{key}"] = grad

        reg_loss = 0.0
        if self.l2 > 0:
            weights = [self.params[name] for name in self.weight_names]
            reg_loss = F.l2_penalty(weights, self.l2)
            for name in self.weight_names:
                grads[name] += self.l2 * self.params[name]
        grads = {name: grads[name] for name in self.params}
        return LossResult(data_loss + reg_loss, data_loss, reg_loss, grads, scores)

    def objective(self, X: np.ndarray, y: np.ndarray) -> float:
        """The training-mode loss alone (no backward pass), for gradient checks."""
        data_loss, _ = LOSSES[self.loss_name](self.scores(X, training=True), y)
        weights = [self.params[name] for name in self.weight_names]
        return data_loss + (F.l2_penalty(weights, self.l2) if self.l2 > 0 else 0.0)

    def loss(self, X: np.ndarray, y: np.ndarray | None = None):
        """With labels: (loss, grads) in training mode. Without: scores (N, C) in
        evaluation mode."""
        if y is None:
            return self.scores(X, training=False)
        result = self.forward_backward(X, y)
        return result.loss, result.grads

    def predict(self, X: np.ndarray, batch_size: int = 4096) -> np.ndarray:
        """Class scores (N, C) in evaluation mode, computed in large batches."""
        chunks = [
            self.scores(X[start:start + batch_size])
            for start in range(0, len(X), batch_size)
        ]
        return np.concatenate(chunks) if chunks else np.zeros((0, self.num_classes))

    def set_params(self, arrays: dict) -> None:
        """Copy ``arrays`` (same names and shapes as ``params``) into the model."""
        for name, value in arrays.items():
            self.params[name][...] = value


def layer_specs(model_config: dict) -> list[tuple[str, dict]]:
    """The network as (layer type, options) pairs; the shorthand ``hidden`` expands
    to affine -> activation per width, then the output affine."""
    if model_config["layers"] is not None:
        return [next(iter(entry.items())) for entry in model_config["layers"]]
    specs = []
    for width in model_config["hidden"]:
        specs.append(("affine", {"units": width}))
        specs.append((model_config["activation"], {}))
    specs.append(("affine", {"units": None}))
    return specs


def build_model(config: dict, input_width, num_classes: int) -> Model:
    """Build the network a resolved config describes, with fresh seeded weights.

    ``input_width``: D, or the shape of one sample (flattened to D).
    """
    from nntrain.errors import ConfigError

    model_config = config["model"]
    dtype = np.dtype(config["train"]["dtype"])
    rng = generator(config["seed"], INIT_STREAM)
    width = int(np.prod(input_width))
    specs = layer_specs(model_config)
    counts = {}
    layers = []
    for position, (kind, options) in enumerate(specs):
        counts[kind] = counts.get(kind, 0) + 1
        name = f"{kind}{counts[kind]}"
        if kind == "affine":
            units = options.get("units")
            is_last = position == len(specs) - 1
            if units is None and is_last:
                units = num_classes
            elif units is None:
                raise ConfigError(f"model.layers: {name} needs units (its width)")
            elif is_last and units != num_classes:
                raise ConfigError(
                    f"model.layers: the last affine layer has {units} units but the"
                    f" data has {num_classes} classes; leave its units out"
                )
            layer = Affine(name, width, units, rng, model_config["init"],
                           model_config["init_std"], dtype)
            width = units
        else:
            layer = ACTIVATION_LAYERS[kind](name)
        layers.append(layer)
    return Model(layers, model_config["loss"], model_config["l2"])
