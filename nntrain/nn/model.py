"""The Model: a stack of layers, a loss and regularization, with one ``loss`` method.

``model.loss(X, y)`` runs a training-mode forward and backward pass and returns
``(loss, grads)``; ``model.loss(X)`` returns class scores in evaluation mode.

Regularization applies to weight matrices only (never biases or normalization
parameters), with each layer's own strengths or the model's:
    reg_loss = sum over weights W of 0.5 * l2 * sum(W^2) + l1 * sum(|W|),
so the gradient adds l2 * W + l1 * sign(W). Without clipping, l2 alone gives the
update of ``weight_decay=l2`` in torch's SGD; with ``train.clip`` it does not, as
the solver clips the gradient with these terms in it, where torch's
``clip_grad_norm_`` runs before SGD adds the decay. ``max_norm`` is a constraint,
not a loss: after every update each unit's incoming weight vector (a column of W)
is scaled back to at most that L2 norm.
"""

from dataclasses import dataclass

import numpy as np

from nntrain.nn import functional as F
from nntrain.nn.flat import FlatArrays
from nntrain.nn.layers import LAYERS, BuildContext
from nntrain.random import DROPOUT_STREAM, INIT_STREAM, generator

LOSSES = {"softmax": F.softmax_cross_entropy, "svm": F.multiclass_hinge}


@dataclass
class LossResult:
    """What one training step measures: the total loss and its two parts, and the
    gradients keyed like ``Model.params``; ``scores``: (N, C) for train accuracy.

    ``grads`` is the model's own gradient storage, which the next backward pass
    overwrites: copy an array to keep it.
    """

    loss: float
    data_loss: float
    reg_loss: float
    grads: dict
    scores: np.ndarray


@dataclass
class Penalty:
    """The regularization of one weight array."""

    name: str
    l2: float
    l1: float
    max_norm: float | None


class Model:
    """Layers applied in order, then a loss on the last layer's scores."""

    def __init__(self, layers: list, loss: str = "softmax", l2: float = 0.0,
                 l1: float = 0.0, max_norm: float | None = None):
        self.layers = layers
        self.loss_name = loss
        # When set, the next forward pass keeps every layer's output in
        # ``outputs`` (for diagnostics); off otherwise, so nothing is held.
        self.capture_outputs = False
        self.outputs = None
        self._share_flat_storage()
        self.buffers = self._collect("buffers")
        self.penalties = [
            Penalty(f"{layer.name}.{key}",
                    l2 if layer.l2 is None else layer.l2,
                    l1 if layer.l1 is None else layer.l1,
                    max_norm if layer.max_norm is None else layer.max_norm)
            for layer in layers
            for key in layer.regularized
        ]

    def _share_flat_storage(self) -> None:
        # All parameters live in one vector and all gradients in another (see
        # flat.py), so that an update rule runs once over each; every layer's
        # ``params`` and ``grads`` become views of them.
        self.params = FlatArrays.holding(self._collect("params"))
        self.grads = self.params.zeros_like()
        for layer in self.layers:
            for key in layer.params:
                layer.params[key] = self.params[f"{layer.name}.{key}"]
                layer.grads[key] = self.grads[f"{layer.name}.{key}"]

    def __copy__(self) -> "Model":
        # A shallow copy shares the layers, and so the vectors: nothing to rebuild
        # (``__setstate__`` would point the shared layers at new vectors).
        twin = object.__new__(type(self))
        twin.__dict__.update(self.__dict__)
        return twin

    def __setstate__(self, state: dict) -> None:
        # A deep copy or an unpickled model holds separate arrays where the
        # original had views of one vector: share them again, or an update of
        # the vector would no longer reach the layers.
        self.__dict__.update(state)
        self._share_flat_storage()
        self.buffers = self._collect("buffers")

    def _collect(self, kind: str) -> dict:
        return {
            f"{layer.name}.{key}": value
            for layer in self.layers
            for key, value in getattr(layer, kind).items()
        }

    @property
    def num_classes(self) -> int:
        return self.layers[-1].out_width

    @property
    def input_width(self) -> int:
        """D, read off the first parameter (a weight matrix (D, H) or a
        normalization's (D,) scale): every layer before it keeps the width."""
        return next(iter(self.params.values())).shape[0]

    def scores(self, X: np.ndarray, training: bool = False) -> np.ndarray:
        """Class scores.  X: (N, D) -> (N, C)."""
        out = X
        outputs = [] if self.capture_outputs else None
        for layer in self.layers:
            out = layer.forward(out, training)
            if outputs is not None:
                outputs.append(out)
        self.outputs = outputs
        return out

    def regularization(self, name: str | None = None) -> float:
        """The regularization loss of the current weights, or of the array ``name``
        alone (0.0 for one without a penalty, such as a bias)."""
        total = 0.0
        for penalty in self.penalties:
            if name not in (None, penalty.name):
                continue
            W = self.params[penalty.name]
            if penalty.l2:
                total += F.l2_penalty(W, penalty.l2)
            if penalty.l1:
                total += F.l1_penalty(W, penalty.l1)
        return total

    def forward_backward(self, X: np.ndarray, y: np.ndarray) -> LossResult:
        """One training-mode pass.  X: (N, D), y: (N,) labels in [0, C)."""
        scores = self.scores(X, training=True)
        data_loss, dout = LOSSES[self.loss_name](scores, y)

        grads = self.grads
        for position in range(len(self.layers) - 1, -1, -1):
            layer = self.layers[position]
            dout, layer_grads = layer.backward(dout, need_dx=position > 0)
            for key, grad in layer_grads.items():
                # Affine and maxout layers write into their views of ``grads``;
                # the others return new arrays, copied in here.
                target = grads[f"{layer.name}.{key}"]
                if grad is not target:
                    target[...] = grad

        for penalty in self.penalties:
            W = self.params[penalty.name]
            if penalty.l2:
                F.add_l2_gradient(grads[penalty.name], W, penalty.l2)
            if penalty.l1:
                F.add_l1_gradient(grads[penalty.name], W, penalty.l1)
        reg_loss = self.regularization()
        return LossResult(data_loss + reg_loss, data_loss, reg_loss, grads, scores)

    def objective(self, X: np.ndarray, y: np.ndarray) -> float:
        """The training-mode loss alone (no backward pass), for gradient checks."""
        data_loss, _ = LOSSES[self.loss_name](self.scores(X, training=True), y)
        return data_loss + self.regularization()

    def apply_constraints(self) -> None:
        """Max-norm: rescale over-long incoming weight vectors, after an update."""
        for penalty in self.penalties:
            if penalty.max_norm is not None:
                F.max_norm_inplace(self.params[penalty.name], penalty.max_norm)

    def loss(self, X: np.ndarray, y: np.ndarray | None = None):
        """With labels: (loss, grads) in training mode, where grads is the model's
        own gradient storage, overwritten by the next call. Without: scores (N, C)
        in evaluation mode."""
        X = np.asarray(X)
        self._check_inputs(X, y)
        # In the weights' dtype, as training computes: float64 or int64 samples
        # would otherwise turn a float32 network's products into float64 ones.
        with np.errstate(over="ignore"):  # values beyond the dtype: refused below
            cast = X.astype(self.params.vector.dtype, copy=False)
        if cast is not X and (np.isfinite(X) & ~np.isfinite(cast)).any():
            raise ValueError(f"X holds values beyond {cast.dtype}'s range, the"
                             " network's dtype; rescale them as the training data"
                             " was")
        X = cast
        if y is None:
            return self.scores(X, training=False)
        if len(X) == 1 and any(layer.kind == "batchnorm" for layer in self.layers):
            # Normalized over one sample, every unit is 0: the loss would be ln C
            # whatever the weights, and the running statistics would take its
            # zero variance (training refuses such batches too).
            raise ValueError("batch norm needs at least 2 samples in training mode;"
                             " give model.loss 2 or more rows, or call it without y"
                             " for evaluation-mode scores")
        result = self.forward_backward(X, y)
        return result.loss, result.grads

    def _check_inputs(self, X, y) -> None:
        """ValueError unless X is (N, D) and y, if given, (N,) labels in [0, C).
        Only the public entry checks: the Solver's batches come from data checked
        once, when it was loaded."""
        shape = X.shape
        if len(shape) != 2 or shape[1] != self.input_width or shape[0] == 0:
            raise ValueError(f"X has shape {shape}; give (N, {self.input_width})"
                             " samples, one per row, N >= 1")
        if X.dtype.kind not in "fiu":
            raise ValueError(f"X holds {X.dtype} values; give real numbers")
        if y is None:
            return
        y = np.asarray(y)
        if y.shape != (shape[0],) or y.dtype.kind not in "iu":
            raise ValueError(f"y is {y.dtype} of shape {y.shape}; give ({shape[0]},)"
                             " integer labels, one per row of X")
        if y.size and (y.min() < 0 or y.max() >= self.num_classes):
            raise ValueError(f"y holds labels from {y.min()} to {y.max()}; a label"
                             f" is a class index in [0, {self.num_classes - 1}]")

    def predict(self, X: np.ndarray, batch_size: int = 4096) -> np.ndarray:
        """Class scores (N, C) in evaluation mode, computed in large batches."""
        chunks = [
            self.scores(X[start:start + batch_size])
            for start in range(0, len(X), batch_size)
        ]
        return np.concatenate(chunks) if chunks else np.zeros((0, self.num_classes))

    def set_arrays(self, kind: str, arrays: dict) -> None:
        """Copy ``arrays`` into ``params`` or ``buffers`` (same names and shapes)."""
        target = getattr(self, kind)
        for name, value in arrays.items():
            target[name][...] = value

    def kink_state(self) -> list:
        """Which side of each kink the last forward pass was on, layer by layer."""
        return [state for layer in self.layers
                if (state := layer.kink_state()) is not None]


def layer_specs(model_config: dict) -> list[tuple[str, dict]]:
    """The network as (layer type, options) pairs. The shorthand ``hidden`` expands,
    per width, to affine -> [batchnorm | layernorm] -> activation -> [dropout]
    (with ``activation: maxout``, one maxout layer replaces affine and activation),
    then the output affine layer."""
    if model_config["layers"] is not None:
        return [next(iter(entry.items())) for entry in model_config["layers"]]

    activation = model_config["activation"]
    activation_options = {
        "leaky_relu": {"slope": model_config["leaky_slope"]},
        "elu": {"alpha": model_config["elu_alpha"]},
    }.get(activation, {})
    specs = []
    for width in model_config["hidden"]:
        if activation == "maxout":
            specs.append(("maxout", {"units": width, "pieces": model_config["pieces"]}))
        else:
            specs.append(("affine", {"units": width}))
        if model_config["batchnorm"]:
            specs.append(("batchnorm", {"momentum": model_config["norm_momentum"],
                                        "epsilon": model_config["norm_epsilon"]}))
        if model_config["layernorm"]:
            specs.append(("layernorm", {"epsilon": model_config["norm_epsilon"]}))
        if activation != "maxout":
            specs.append((activation, dict(activation_options)))
        if model_config["drop_probability"] > 0:
            specs.append(("dropout",
                          {"drop_probability": model_config["drop_probability"]}))
    specs.append(("affine", {"units": None}))
    return specs


def build_model(config: dict, input_width, num_classes: int,
                initialize: bool = True) -> Model:
    """Build the network a resolved config describes, with fresh seeded weights.

    ``input_width``: D, or the shape of one sample (flattened to D).
    ``initialize=False``: zero weights instead, for a model whose weights a
    checkpoint is about to replace (no random draw).
    """
    config, flat_width = _checked_build_arguments(config, input_width, num_classes)
    model_config = config["model"]
    context = BuildContext(
        init_rng=generator(config["seed"], INIT_STREAM) if initialize else None,
        dropout_rng=generator(config["seed"], DROPOUT_STREAM),
        dtype=np.dtype(config["train"]["dtype"]),
        init=model_config["init"],
        init_std=model_config["init_std"],
    )
    layers = []
    for name, kind, width, units, options in _layer_plan(model_config, flat_width,
                                                         num_classes):
        if units is None:
            layers.append(LAYERS[kind](name, width, context, **options))
        else:
            layers.append(LAYERS[kind](name, width, units, context, **options))
    return Model(layers, model_config["loss"], model_config["l2"], model_config["l1"],
                 model_config["max_norm"])


def array_shapes(config: dict, input_width, num_classes: int) -> tuple[dict, dict]:
    """(params, buffers): name -> shape of every array ``build_model`` would
    make, found without making any (a checkpoint's edited config may describe a
    network larger than memory)."""
    config, flat_width = _checked_build_arguments(config, input_width, num_classes)
    params, buffers = {}, {}
    for name, kind, width, units, options in _layer_plan(config["model"],
                                                         flat_width, num_classes):
        layer_params, layer_buffers = LAYERS[kind].shapes(width, units, **options)
        params.update({f"{name}.{key}": shape for key, shape in layer_params.items()})
        buffers.update({f"{name}.{key}": shape
                        for key, shape in layer_buffers.items()})
    return params, buffers


def _checked_build_arguments(config, input_width, num_classes) -> tuple[dict, int]:
    """(the resolved config, D) after checking what build_model was given."""
    from nntrain.config import resolve_config

    if not isinstance(config, dict):
        raise TypeError(f"config is {type(config).__name__}; give a config dict, as"
                        " nntrain.load_config(path) returns")
    config = resolve_config(config)  # a hand-made dict gets checked, and defaults
    shape = tuple(np.atleast_1d(input_width))
    if not shape or not all(_is_count(n) and n >= 1 for n in shape):
        raise ValueError(f"input_width is {input_width!r}; give D, the number of"
                         " features, or the shape of one sample (positive integers)")
    if not _is_count(num_classes) or num_classes < 2:
        raise ValueError(f"num_classes is {num_classes!r}; a classifier needs an"
                         " integer number of classes >= 2")
    return config, int(np.prod(input_width))


def _layer_plan(model_config: dict, width: int, num_classes: int):
    """Yield (name, layer type, input width, units or None, options) for each
    layer of the network, ``units`` for the sized layers alone."""
    from nntrain.errors import ConfigError

    specs = layer_specs(model_config)
    counts = {}
    for position, (kind, options) in enumerate(specs):
        counts[kind] = counts.get(kind, 0) + 1
        name = f"{kind}{counts[kind]}"
        options = {key: value for key, value in options.items() if value is not None}
        units = None
        if LAYERS[kind].sized:
            is_last = position == len(specs) - 1
            # The config refuses a sized layer without units but the last
            # (config._check_layer_units): the last one's are the classes.
            units = options.pop("units", None)
            if units is None:
                units = num_classes
            elif is_last and units != num_classes:
                raise ConfigError(
                    f"model.layers: the last layer has {units} units but the data has"
                    f" {num_classes} classes; leave its units out"
                )
        yield name, kind, width, units, options
        width = width if units is None else units


def _is_count(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)
