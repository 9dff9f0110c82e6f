"""Start-of-run checks, printed before training: the data, the network, whether
the first loss is the one small random weights should give, and the cores; and
batches too small for batch norm, refused before training.

With weights near zero every class score is near zero, the softmax is uniform and
the data loss is ln C; every SVM margin is 1, so the hinge loss is C - 1. Plus the
regularization loss of the starting weights.
"""

import math
import os

import numpy as np

from nntrain.config import SCHEMA
from nntrain.errors import ConfigError
from nntrain.evaluate import measure
from nntrain.nn.layers import BatchNorm
from nntrain.train.report import counted, short_number

FIRST_LOSS_SAMPLES = 1000
FAR_OFF = 0.1  # relative difference from the expected first loss that is "far off"
# A first data loss this many times the small weights' one comes from scores that
# start huge, whatever the initializer: He or Xavier weights on standardized data
# start within a few times it.
HUGE_FIRST_LOSS = 1000


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity where the system tells
    it (``taskset``, a container's CPU set), else the machine's count."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def expected_first_loss(loss_name: str, num_classes: int) -> tuple[float, str]:
    """The data loss of near-zero weights, and how it is derived."""
    if loss_name == "svm":
        return float(num_classes - 1), f"C - 1 = {num_classes - 1}"
    return math.log(num_classes), f"ln({num_classes})"


# The largest init_std of the 'small' initializer under which the scores start
# near 0, so that the first loss is the one small weights give (ln C): the default.
SMALL_INIT_STD = 0.01


def starts_small(config: dict) -> bool:
    """True when every weight layer starts with the 'small' initializer and a
    std of at most SMALL_INIT_STD (model.init_std 1 is 'small' by name only)."""
    model = config["model"]
    if model["layers"] is None:
        settings = [(model["init"], model["init_std"])]
    else:
        settings = [(options.get("init") or model["init"],
                     options.get("init_std") or model["init_std"])
                    for entry in model["layers"] for kind, options in entry.items()
                    if kind in ("affine", "maxout")]
    return all(init == "small" and std <= SMALL_INIT_STD for init, std in settings)


def describe_data(dataset) -> list[str]:
    sizes = ", ".join(
        f"{name} {len(dataset.split(name)[1])}" for name in ("train", "val", "test"))
    shape = "x".join(map(str, dataset.input_shape))
    counts = np.bincount(dataset.y_train, minlength=dataset.num_classes)
    per_class = ", ".join(f"{name}: {count}"
                          for name, count in zip(dataset.class_names, counts))
    return [
        f"data: {counted(dataset.num_features, 'feature')} (samples of shape"
        f" {shape}), {dataset.num_classes} classes; {sizes}",
        f"training samples per class: {per_class}",
    ]


def describe_model(model, input_width: int) -> list[str]:
    widths = [input_width] + [layer.out_width for layer in model.layers if layer.sized]
    total = sum(param.size for param in model.params.values())
    lines = [f"model: {'-'.join(map(str, widths))}, {total:,} parameters"]
    for layer in model.layers:
        if layer.params:
            shapes = ", ".join(f"{key} {'x'.join(map(str, value.shape))}"
                               for key, value in layer.params.items())
            count = sum(value.size for value in layer.params.values())
            lines.append(f"  {layer.name:<12} {count:>10,}  ({shapes})")
    return lines


def first_loss_check(config, model, X_train, y_train) -> tuple[list[str], str | None]:
    """Lines comparing the starting loss with its expected value, and a warning when
    the weights start small yet the loss is far off, or when the loss is over
    HUGE_FIRST_LOSS times that value whatever the initializer. Evaluation mode, so batch
    norm's statistics and the dropout generator are left untouched."""
    X, y = X_train[:FIRST_LOSS_SAMPLES], y_train[:FIRST_LOSS_SAMPLES]
    # Weights or data too large overflow here; the line shows the loss they give
    # and training stops on it with the cause, so numpy's warnings add nothing.
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        data_loss = measure(model.predict(X), y, model.loss_name)["loss"]
        reg_loss = model.regularization()
    expected, formula = expected_first_loss(model.loss_name, model.num_classes)
    total, data, reg, small = (short_number(value) for value in (
        data_loss + reg_loss, data_loss, reg_loss, expected))
    # Small weights would also make the penalty small: what they give is the data
    # loss alone, to be set beside the data loss measured.
    line = (f"first loss: {total} (data {data} + reg {reg}) on"
            f" {counted(len(y), 'training sample')}; small weights would give"
            f" data {small} ({formula})")
    warning = None
    if starts_small(config) and abs(data_loss - expected) > FAR_OFF * expected:
        warning = (f"the first data loss {data} is far from {formula} ="
                   f" {expected:.4f} although the weights start small: check the"
                   " loss, the labels and the preprocessing")
    elif math.isfinite(data_loss) and data_loss > HUGE_FIRST_LOSS * expected:
        # (A non-finite one stops the run at its first step, with the cause.)
        warning = (f"the first data loss {data} is over {HUGE_FIRST_LOSS:,} times"
                   f" {formula} = {expected:.4f}: the scores start huge; check the"
                   " data's scale (data.preprocess) and the starting weights"
                   " (model.init, model.init_std)")
    return [line], warning


def warmup_check(schedule: dict, total: int) -> str | None:
    """A warning when the cosine schedule's warmup takes the whole run: the rate
    then only ever climbs, and never reaches optimizer.lr."""
    warmup = schedule.get("warmup") or 0
    if schedule["name"] != "cosine" or warmup < total:
        return None
    return (f"schedule.warmup is {warmup} updates but the run has {total}: the rate"
            " climbs all run and the cosine never starts; lower schedule.warmup")


def lone_sample_batch(model, num_samples: int, batch_size: int,
                      full_batch: bool) -> tuple[str, str] | None:
    """(what is wrong, how to fix it) when some training batch of the run holds a
    single sample and the model has batch norm, else None. Such a batch has zero
    variance: normalized, every unit is 0 whatever its input, so no gradient
    reaches the layers before batch norm, and the zero variance is folded into the
    running statistics. Every epoch is batched the same way (the last batch holds
    N mod batch_size samples), and so is the statistics pass of train.average;
    L-BFGS takes the whole split as one batch."""
    if not any(isinstance(layer, BatchNorm) for layer in model.layers):
        return None
    needs = "batch norm needs at least 2 samples per batch"
    if num_samples == 1:
        return (f"{needs}: the training split holds 1 sample",
                "give the run more training samples: more data, or fewer of them"
                " held out by data.validation (which holds out at least 1)")
    if full_batch:
        return None
    if batch_size == 1:
        return f"{needs}: train.batch_size is 1", "set train.batch_size to 2 or more"
    if num_samples % batch_size != 1:
        return None
    others = [size for size in (_other_size(num_samples, batch_size, -1),
                                _other_size(num_samples, batch_size, 1)) if size]
    return (f"{needs}: the last batch of each epoch holds 1 ({num_samples} training"
            f" samples, train.batch_size {batch_size})",
            f"choose another train.batch_size, such as"
            f" {' or '.join(map(str, others))}")


def _other_size(num_samples: int, batch_size: int, step: int) -> int | None:
    """The nearest batch size from ``batch_size`` in the direction ``step`` that
    leaves no batch of one sample, or None below 2."""
    size = batch_size + step
    while size >= 2 and num_samples % size == 1:
        size += step
    return size if size >= 2 else None


def refuse_lone_sample_batches(model, num_samples: int, train_config: dict,
                               full_batch: bool) -> None:
    """A ConfigError when batch norm would get a batch of one sample in training."""
    found = lone_sample_batch(model, num_samples, train_config["batch_size"],
                              full_batch)
    if found:
        raise ConfigError(f"{found[0]}; {found[1]}", "train.batch_size")


# A penalty strength (l2 or l1) at least this large is blamed for a non-finite value
# before the learning rate or the data: useful ones are 1e-6 to 1e-1.
HUGE_PENALTY = 1e3


def huge_penalty(model) -> str | None:
    """What to say of the model's strongest penalty when it is HUGE_PENALTY or
    more (a non-finite value is then its doing), else None."""
    strength, kind = max([(strength, kind) for penalty in model.penalties
                          for strength, kind in ((penalty.l2, "l2"),
                                                 (penalty.l1, "l1"))],
                         default=(0.0, ""))
    if strength < HUGE_PENALTY:
        return None
    return (f"{kind} = {strength:g} is far stronger than any useful penalty (useful"
            f" ones are below 1): lower model.{kind} (or the layer's {kind})")


def _changed(model: dict, key: str) -> bool:
    """Whether model.``key`` holds another value than its default."""
    return model[key] != SCHEMA["model"][key].default


# The model keys of the hidden shorthand, each with the setting that uses it:
# (key, setting, the values of that setting that use the key, how to set it).
_SHORTHAND_USES = (
    ("leaky_slope", "activation", ("leaky_relu",), "model.activation=leaky_relu"),
    ("elu_alpha", "activation", ("elu",), "model.activation=elu"),
    ("pieces", "activation", ("maxout",), "model.activation=maxout"),
    ("norm_momentum", "batchnorm", (True,), "model.batchnorm=true"),
)
_SHORTHAND_KEYS = ("activation", "leaky_slope", "elu_alpha", "pieces", "batchnorm",
                   "layernorm", "norm_momentum", "norm_epsilon", "drop_probability")


def ineffective_settings(config: dict) -> list[str]:
    """Warnings for model settings given another value than their default that
    the network does not use (leaky_slope with relu, init_std with he, ...). Not
    errors, as keys of another update rule are: a search may vary the setting
    that decides whether they apply."""
    model = config["model"]
    if model["layers"] is not None:
        return _ineffective_beside_layers(model)
    warnings = []
    for key, setting, users, fix in _SHORTHAND_USES:
        if _changed(model, key) and model[setting] not in users:
            used = (f"with activation {model['activation']}" if setting ==
                    "activation" else "without batch norm")
            warnings.append(f"model.{key} has no effect {used}; set {fix} to use it")
    if (_changed(model, "norm_epsilon")
            and not (model["batchnorm"] or model["layernorm"])):
        warnings.append("model.norm_epsilon has no effect without batch or layer"
                        " norm; set model.batchnorm=true or model.layernorm=true to"
                        " use it")
    if _changed(model, "init_std") and model["init"] != "small":
        warnings.append(f"model.init_std has no effect with init {model['init']};"
                        " set model.init=small to use it")
    if (model["batchnorm"] and _changed(model, "norm_momentum")
            and config["optimizer"]["name"] == "lbfgs"):
        warnings.append("model.norm_momentum has no effect with optimizer lbfgs,"
                        " whose running statistics are the full batch's own")
    return warnings


def _ineffective_beside_layers(model: dict) -> list[str]:
    """The warnings of ineffective_settings for an explicit network: the hidden
    shorthand's keys, and init_std where the initializer is not 'small'."""
    warnings = [f"model.{key} has no effect with model.layers (it belongs to the"
                " model.hidden shorthand); give the layers in model.layers the"
                " options instead" for key in _SHORTHAND_KEYS if _changed(model, key)]
    uses_model_std = False
    for i, entry in enumerate(model["layers"]):
        (kind, options), = entry.items()
        if "init" not in options:
            continue
        init = options["init"] or model["init"]
        if options["init_std"] is None:
            uses_model_std = uses_model_std or init == "small"
        elif init != "small":
            where = f"model.layers[{i}].{kind}"
            warnings.append(f"{where}.init_std has no effect with init {init}; set"
                            f" {where}.init=small to use it")
    if _changed(model, "init_std") and not uses_model_std:
        warnings.append("model.init_std has no effect: no layer of model.layers"
                        " uses the 'small' initializer without an init_std of its"
                        " own; set model.init=small, or a layer's init, to use it")
    return warnings


def lbfgs_snapshot_check(config: dict) -> str | None:
    """A warning when train.snapshot_every is set for lbfgs, whose full-batch loop
    saves only best.npz and last.npz."""
    if config["optimizer"]["name"] != "lbfgs" or not config["train"]["snapshot_every"]:
        return None
    return ("train.snapshot_every has no effect with optimizer lbfgs, which keeps"
            " only best.npz and last.npz; leave it out, or use a mini-batch rule to"
            " keep snapshots")


def double_decay_check(config: dict) -> str | None:
    """A warning when adamw's decoupled weight decay and an L2 penalty both
    shrink the weights: each is meant to replace the other."""
    optimizer, model = config["optimizer"], config["model"]
    if optimizer["name"] != "adamw" or not optimizer["weight_decay"]:
        return None
    keys = ["model.l2"] if model["l2"] else []
    keys += [f"model.layers[{i}].{kind}.l2"
             for i, entry in enumerate(model["layers"] or [])
             for kind, options in entry.items() if options.get("l2")]
    if not keys:
        return None
    return (f"optimizer.weight_decay (adamw's decoupled decay) and {keys[0]} (an L2"
            " penalty in the loss) both shrink the weights, and the run applies"
            f" both; set {keys[0]} to 0, or use optimizer adam with the L2 penalty")


def full_batch_note(config: dict) -> str | None:
    """What a run with optimizer lbfgs does with the mini-batch settings: it
    takes the whole training split as one batch, so an epoch is one iteration."""
    if config["optimizer"]["name"] != "lbfgs":
        return None
    train = config["train"]
    if train["epochs"] is not None:
        length = (f"each iteration counts as an epoch (train.epochs {train['epochs']}"
                  f" = {counted(train['epochs'], 'L-BFGS iteration')})")
    else:
        length = "train.iterations counts L-BFGS iterations"
    note = (f"lbfgs works on the whole training split: {length}, and"
            " train.batch_size is not used")
    if train["dtype"] == "float32":
        note += "; train.dtype float64 suits its line search better"
    return note
