"""The config: one declarative table of keys, validated once, every default filled in.

A config is a plain nested dict (sections ``data``, ``model``, ``optimizer``,
``schedule``, ``train`` plus ``seed`` and ``output``) so that it can be written to
YAML, stored in a checkpoint's JSON and compared. ``load_config`` reads a file, applies
``--set`` overrides, and returns the resolved dict; any problem is a ``ConfigError``
whose one-line message names the key and the fix. The validators the table is built
of (integer, number, choice, ...) are in config_checks.
"""

import datetime
import math
import os
from pathlib import Path

import numpy as np

from nntrain.config_checks import (  # every public name stays importable from here
    MAX_LAYERS,
    Key,
    boolean,
    choice,
    close_match,
    components,
    integer,
    list_of,
    number,
    optional_choice,
    optional_number,
    optional_text,  # noqa: F401 (unused here: kept importable from nntrain.config)
    path_text,
    refuse,
    refuse_non_mapping,
    validation_size,
)
from nntrain.errors import ConfigError
from nntrain.fileio import expand_home, read_fix, too_long_paths_refused
from nntrain.yamlio import dump_yaml, key_text, parse_yaml

# A config file larger than this is refused before parsing; real configs are < 10 kB.
MAX_CONFIG_BYTES = 1_000_000
# Bounds that keep a typo (an extra zero, a pasted array) from hanging a run;
# MAX_LAYERS, the longest list any key takes, is config_checks'.
MAX_UNITS = 1_000_000
UNITS = "int in [1, 10^6]"
# Maxout allocates units x pieces columns piece by piece; papers use 2 to 5.
MAX_PIECES = 1000
# elu's alpha scales its negative side; beyond this it only overflows float32.
MAX_ELU_ALPHA = 100.0
# Epochs, iterations, batch sizes and intervals: far past any real run, yet small
# enough that no count overflows a float or rounds an epoch down to 0 batches.
MAX_COUNT = 10**9
COUNT = "int in [1, 10^9]"
# L-BFGS keeps 2 x history vectors as long as all the parameters together.
MAX_HISTORY = 1000


def _rounded_up(value: float) -> str:
    """``value`` > 0 written with two significant digits, rounded up: the
    smallest such number that is not below it."""
    exponent = math.floor(math.log10(value))
    mantissa = math.ceil(value / 10.0**exponent * 10) / 10
    return f"{mantissa:.1f}e{exponent:+03d}"


def _rounded_down(value: float) -> str:
    """``value`` > 0 written with two significant digits, rounded down."""
    exponent = math.floor(math.log10(value))
    mantissa = math.floor(value / 10.0**exponent * 10) / 10
    return f"{mantissa:.1f}e{exponent:+03d}"


# An epsilon below train.dtype's smallest normal number rounds to 0 or loses its
# precision: refused (_check_epsilons), and said so in the docs. The error asks for
# EPSILON_FLOOR, that number rounded up to two digits; the docs state the number.
EPSILON_FLOOR = (f" (>= {_rounded_up(float(np.finfo(np.float32).tiny))} in float32,"
                 f" {_rounded_up(float(np.finfo(np.float64).tiny))} in float64)")
EPSILON_MINIMUM = (" (>= train.dtype's smallest normal number: about"
                   f" {float(np.finfo(np.float32).tiny):.3g} in float32,"
                   f" {float(np.finfo(np.float64).tiny):.3g} in float64)")
# One that rounds to infinity in float32 (from half a step past its largest number)
# is refused too. No number YAML gives is beyond float64's (1e400 reads as infinity,
# refused as such).
EPSILON_CEILING = _rounded_down(float(np.finfo(np.float32).max))


def preprocess_steps(value, key):
    """Steps in order: a name (``center``) or a one-key mapping with options
    (``{pca: {components: 50}}``). Steps with options resolve to the mapping form
    with every option filled in."""
    if not isinstance(value, list):
        refuse(key, "a list of steps like [center, scale]", value)
    steps, names = [], []
    for i, entry in enumerate(value):
        where = f"{key}[{i}]"
        if isinstance(entry, str):
            entry = {entry: None}
        if not isinstance(entry, dict) or len(entry) != 1:
            refuse(where, "a step name or a mapping like {pca: {components: 50}}",
                   entry)
        (name, options), = entry.items()
        choice(*PREPROCESS_OPTIONS)(name, where)
        if name in names:
            raise ConfigError(f"invalid {key}: '{name}' is listed twice; keep one",
                              key)
        names.append(name)
        options = {} if options is None else options
        table = PREPROCESS_OPTIONS[name]
        if not isinstance(options, dict):
            defaults = ", ".join(f"{key}: {yaml_text(spec.default)}"
                                 for key, spec in table.items())
            expected = (f"a mapping of step options, such as {{{name}: {{{defaults}}}}}"
                        if table else f"no options: write {name}")
            refuse(f"{where}.{name}", expected, options)
        resolved = _check_section(options, table, f"{where}.{name}")
        steps.append({name: resolved} if table else name)
    return steps


def layer_list(value, key):
    """An explicit network: a list of one-key mappings ``{layer type: options}``."""
    if value is None:
        return None
    if not isinstance(value, list) or not value:
        refuse(key, "a non-empty list of layers like {affine: {units: 100}}", value)
    if len(value) > MAX_LAYERS:
        raise ConfigError(f"invalid {key}: {len(value):,} layers, more than the"
                          f" {MAX_LAYERS:,} nntrain accepts", key)
    layers = [_layer_entry(entry, f"{key}[{i}]") for i, entry in enumerate(value)]
    if next(iter(layers[-1])) != "affine":
        raise ConfigError(
            f"invalid {key}: the last layer must be an affine layer (the class scores);"
            " add {affine: {}} at the end", key
        )
    return layers


def _layer_entry(entry, key):
    if not isinstance(entry, dict) or len(entry) != 1:
        refuse(key, "a mapping with one layer type, like {relu: {}}", entry)
    (kind, options), = entry.items()
    choice(*LAYER_OPTIONS)(kind, key)
    options = {} if options is None else options
    if not isinstance(options, dict):
        refuse(f"{key}.{kind}", "a mapping of layer options", options)
    return {kind: _check_section(options, LAYER_OPTIONS[kind], f"{key}.{kind}")}


def clip_setting(value, key):
    """null, {norm: MAX} or {value: MAX} with MAX > 0."""
    if value is None:
        return None
    if not isinstance(value, dict) or len(value) != 1:
        refuse(key, "null, {norm: MAX} or {value: MAX}", value)
    (mode, limit), = value.items()
    choice("norm", "value")(mode, f"{key} mode")
    return {mode: number(0, open_minimum=True)(limit, f"{key}.{mode}")}


def early_stopping_setting(value, key):
    """null, or {patience: int >= 1, min_delta: float >= 0 (default 0)}."""
    if value is None:
        return None
    if not isinstance(value, dict):
        refuse(key, "null or {patience: N, min_delta: D}", value)
    table = {
        "patience": Key(3, integer(1, maximum=MAX_COUNT), COUNT, ""),
        "min_delta": Key(0.0, number(0), "float >= 0", ""),
    }
    return _check_section(value, table, key)


def average_setting(value, key):
    """null, or {kind: exponential | polyak, decay: float in [0, 1) (exponential)}."""
    if value is None:
        return None
    if not isinstance(value, dict):
        refuse(key, "null or {kind: exponential, decay: 0.999} or {kind: polyak}",
               value)
    table = {
        "kind": Key("exponential", choice("exponential", "polyak"), "choice", ""),
        "decay": Key(0.999, number(0, 1, open_maximum=True), "float in [0, 1)", ""),
    }
    # A resolved config holds the default decay for polyak too (checkpoints do), so
    # only another value is refused: it would be silently ignored.
    if value.get("kind") == "polyak" and value.get("decay", 0.999) != 0.999:
        raise ConfigError(f"{key}.decay is a setting of exponential averaging; the"
                          " polyak average (the plain mean) has none: remove it",
                          f"{key}.decay")
    return _check_section(value, table, key)


DATASETS = ("digits", "fashion-mnist", "mnist", "npz")
RULE_NAMES = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw",
              "lbfgs")
SCHEDULE_NAMES = ("constant", "step", "exponential", "inverse_time", "cosine",
                  "plateau")
ACTIVATIONS = ("relu", "leaky_relu", "elu", "sigmoid", "tanh", "maxout")
INITIALIZERS = ("small", "xavier", "glorot", "he")
LOSSES = ("softmax", "svm")
MONITORS = ("val_accuracy", "val_loss", "train_accuracy", "loss")

PREPROCESS_OPTIONS = {
    "center": {},
    "scale": {},
    "image_mean": {},
    "pca": {
        "components": Key(0.99, components, "int >= 1 or float in (0, 1]",
                          "components kept: a count, or the fraction of variance"),
    },
    "whiten": {
        "components": Key(1.0, components, "int >= 1 or float in (0, 1]",
                          "components kept: a count, or the fraction of variance"),
        "epsilon": Key(1e-2, number(0, open_minimum=True), "float > 0",
                       "added to each eigenvalue before dividing by its root"),
    },
}


def _weight_options() -> dict:
    """Options every layer with weights takes; null means the model's setting."""
    return {
        "init": Key(None, optional_choice(*INITIALIZERS), "choice or null",
                    "this layer's initializer"),
        "init_std": Key(None, optional_number(0, open_minimum=True),
                        "float > 0 or null", "this layer's std for 'small'"),
        "l2": Key(None, optional_number(0), "float >= 0 or null", "this layer's L2"),
        "l1": Key(None, optional_number(0), "float >= 0 or null", "this layer's L1"),
        "max_norm": Key(None, optional_number(0, open_minimum=True),
                        "float > 0 or null", "this layer's max-norm constraint"),
    }


# The layer kinds that have a width of their own (nn/layers.py: Layer.sized).
SIZED_LAYERS = ("affine", "maxout")
LAYER_OPTIONS = {
    "affine": {
        "units": Key(None, integer(1, nullable=True, maximum=MAX_UNITS,
                                   null_in_message=False), UNITS,
                     "output width: required, except on the last layer, where it may"
                     " be left out (= classes)"),
        **_weight_options(),
    },
    "maxout": {
        "units": Key(None, integer(1, nullable=True, maximum=MAX_UNITS,
                                   null_in_message=False), UNITS,
                     "maxout units (its width): required"),
        "pieces": Key(2, integer(2, maximum=MAX_PIECES), "int in [2, 1000]",
                      "affine pieces per unit"),
        **_weight_options(),
    },
    "relu": {},
    "leaky_relu": {
        "slope": Key(0.01, number(0, 1), "float in [0, 1]", "slope for x < 0"),
    },
    "elu": {
        "alpha": Key(1.0, number(0, MAX_ELU_ALPHA, open_minimum=True),
                     "float in (0, 100]",
                     "alpha (exp(x) - 1) for x < 0"),
    },
    "sigmoid": {},
    "tanh": {},
    "batchnorm": {
        "momentum": Key(0.9, number(0, 1, open_maximum=True), "float in [0, 1)",
                        "running = momentum * running + (1 - momentum) * batch"),
        "epsilon": Key(1e-5, number(0, open_minimum=True), "float > 0",
                       "added to the variance" + EPSILON_MINIMUM),
    },
    "layernorm": {
        "epsilon": Key(1e-5, number(0, open_minimum=True), "float > 0",
                       "added to the variance" + EPSILON_MINIMUM),
    },
    "dropout": {
        "drop_probability": Key(0.5, number(0, 1, open_maximum=True),
                                "float in [0, 1)",
                                "probability of DROPPING each unit in training"),
    },
}

SCHEMA = {
    "seed": Key(0, integer(0), "int >= 0",
                "drives every random generator: init, validation split, shuffling,"
                " dropout masks, and a search's draws unless search.seed is set"
                " (never the test split)"),
    "data": {
        "name": Key("digits", choice(*DATASETS), "choice",
                    "digits (bundled) | fashion-mnist | mnist | npz"),
        "path": Key(None, path_text, "path or null",
                    "fashion-mnist, mnist: the IDX files' folder (null: the default"
                    " search); npz: the .npz file (required); digits: refused (the"
                    " data is bundled)"),
        "validation": Key(0.1, validation_size, "int >= 1 or float in (0, 1)",
                          "validation split held out of train: a count or a"
                          " fraction (of rows, rounded half to even)"),
        "preprocess": Key(["center", "scale"], preprocess_steps, "list",
                          "steps in order, each at most once, fitted on the"
                          " training split: center | scale | image_mean | pca |"
                          " whiten"),
    },
    "model": {
        "hidden": Key([100], list_of(integer(1, maximum=MAX_UNITS), nullable=True),
                      f"list of {UNITS}",
                      "hidden widths, up to 1000 of them: affine -> [norm] ->"
                      " activation -> [dropout]; [] for none (a linear"
                      " classifier)"),
        "activation": Key("relu", choice(*ACTIVATIONS), "choice",
                          "relu | leaky_relu | elu | sigmoid | tanh | maxout"),
        "leaky_slope": Key(0.01, number(0, 1), "float in [0, 1]",
                           "leaky_relu's slope for x < 0"),
        "elu_alpha": Key(1.0, number(0, MAX_ELU_ALPHA, open_minimum=True),
                         "float in (0, 100]",
                         "elu's alpha"),
        "pieces": Key(2, integer(2, maximum=MAX_PIECES), "int in [2, 1000]",
                      "maxout's pieces per unit"),
        "batchnorm": Key(False, boolean, "bool",
                         "batch norm after each hidden affine layer (not with"
                         " layernorm)"),
        "layernorm": Key(False, boolean, "bool",
                         "layer norm after each hidden affine layer (not with"
                         " batchnorm)"),
        "norm_momentum": Key(0.9, number(0, 1, open_maximum=True), "float in [0, 1)",
                             "batch norm: running = m * running + (1 - m) * batch"),
        "norm_epsilon": Key(1e-5, number(0, open_minimum=True), "float > 0",
                            "batch/layer norm: added to the variance"
                            + EPSILON_MINIMUM),
        "drop_probability": Key(0.0, number(0, 1, open_maximum=True),
                                "float in [0, 1)",
                                "dropout after each hidden activation: the"
                                " probability of DROPPING a unit (0: no dropout)"),
        "init": Key("he", choice(*INITIALIZERS), "choice",
                    "small (N(0, init_std^2)) | xavier (var 1/fan_in) | glorot"
                    " (2/(fan_in+fan_out)) | he (2/fan_in)"),
        "init_std": Key(0.01, number(0, open_minimum=True), "float > 0",
                        "standard deviation of the 'small' initializer"),
        "loss": Key("softmax", choice(*LOSSES), "choice",
                    "softmax (cross-entropy) | svm (multiclass hinge, margin 1)"),
        "l2": Key(0.0, number(0), "float >= 0",
                  "L2 strength: adds 0.5 * l2 * sum(W^2) over weights"),
        "l1": Key(0.0, number(0), "float >= 0",
                  "L1 strength: adds l1 * sum(|W|) over weights"),
        "max_norm": Key(None, optional_number(0, open_minimum=True),
                        "float > 0 or null",
                        "cap on each unit's incoming weight norm, after each update"),
        "layers": Key(None, layer_list, "list or null",
                      "explicit network instead of hidden (see below)"),
    },
    "optimizer": {
        "name": Key("adam", choice(*RULE_NAMES), "choice",
                    "update rule: " + " | ".join(RULE_NAMES)),
    },
    "schedule": {
        "name": Key("constant", choice(*SCHEDULE_NAMES), "choice",
                    "learning-rate schedule: " + " | ".join(SCHEDULE_NAMES)),
    },
    "train": {
        "epochs": Key(None, integer(1, nullable=True, maximum=MAX_COUNT),
                      f"{COUNT} or null",
                      "passes over the training split (exactly one of epochs,"
                      " iterations)"),
        "iterations": Key(None, integer(1, nullable=True, maximum=MAX_COUNT),
                          f"{COUNT} or null",
                          "parameter updates in all (exactly one of epochs,"
                          " iterations)"),
        "batch_size": Key(128, integer(1, maximum=MAX_COUNT), COUNT,
                          "samples per update"),
        "eval_every": Key(None, integer(1, nullable=True, maximum=MAX_COUNT),
                          f"{COUNT} or null",
                          "iterations between evaluations; null: once per epoch"),
        "log_every": Key(10, integer(1, maximum=MAX_COUNT), COUNT,
                         "iterations between 'iter' records in metrics.jsonl"),
        "monitor": Key("val_accuracy", choice(*MONITORS), "choice",
                       "metric that picks best.npz: val_accuracy | val_loss |"
                       " train_accuracy | loss"),
        "clip": Key(None, clip_setting, "mapping or null",
                    "gradient clipping: {norm: MAX} (global L2 norm) or {value: MAX}"
                    " (each entry), MAX a float > 0; null: none. Not with"
                    " optimizer lbfgs"),
        "early_stopping": Key(None, early_stopping_setting, "mapping or null",
                              "{patience: N, min_delta: D} (N an int in [1, 10^9],"
                              " default 3; D a float >= 0, default 0.0, < 1 for an"
                              " accuracy; {} turns it on): stop after N evaluations"
                              " without a train.monitor gain above D; null: never"),
        "average": Key(None, average_setting, "mapping or null",
                       "keep averaged weights beside the raw ones: {kind:"
                       " exponential, decay: D} (the default kind; D a float in"
                       " [0, 1), default 0.999, so {} turns it on) or {kind:"
                       " polyak}; null: none."
                       " Batch norm layers get statistics of their own for the"
                       " averages: one pass over the training split before each"
                       " evaluation or save of them. Not with optimizer lbfgs"),
        "snapshot_every": Key(None, integer(1, nullable=True, maximum=MAX_COUNT),
                              f"{COUNT} or null",
                              "also keep checkpoints/snapshot-epoch-NNNN.npz every"
                              " N epochs (for ensembles)"),
        "diagnostics": Key(True, boolean, "bool",
                           "per-layer statistics at each evaluation and the warnings"
                           " drawn from them (the overfitting, divergence and"
                           " weight-decay warnings stay on without them)"),
        "plots": Key(True, boolean, "bool",
                     "write PNG plots at the end (needs nntrain[plot])"),
        "threads": Key(None, integer(1, nullable=True, maximum=1024),
                       "int in [1, 1024] or null",
                       "BLAS threads while training (through threadpoolctl);"
                       " null: the library's default"),
        "dtype": Key("float32", choice("float32", "float64"), "choice",
                     "floating type of parameters and data: float32 | float64"),
    },
    "output": Key(None, path_text, "path or null",
                  "run directory; null: runs/<config file stem>"),
}


def _lr(default: float) -> Key:
    return Key(default, number(0, open_minimum=True), "float > 0", "learning rate")


def _fraction(default: float, doc: str) -> Key:
    return Key(default, number(0, 1, open_maximum=True), "float in [0, 1)", doc)


def _epsilon(default: float, doc: str) -> Key:
    return Key(default, number(0, open_minimum=True), "float > 0",
               doc + EPSILON_MINIMUM)


def _positive(default: float, doc: str) -> Key:
    return Key(default, number(0, open_minimum=True), "float > 0", doc)


_ADAM_KEYS = {
    "lr": _lr(1e-3),
    "beta1": _fraction(0.9, "decay of the first-moment average"),
    "beta2": _fraction(0.999, "decay of the second-moment average"),
    "eps": _epsilon(1e-8, "added to the root of the second moment"),
}

# Settings of each update rule, beside `name`; keys of another rule are errors.
OPTIMIZER_KEYS = {
    "sgd": {"lr": _lr(1e-2)},
    "momentum": {"lr": _lr(1e-2), "momentum": _fraction(0.9, "velocity decay mu")},
    "nesterov": {"lr": _lr(1e-2), "momentum": _fraction(0.9, "velocity decay mu")},
    "adagrad": {"lr": _lr(1e-2),
                "eps": _epsilon(1e-10, "added to the root of the sum of squares")},
    "rmsprop": {"lr": _lr(1e-3),
                "decay": _fraction(0.99, "decay rho of the mean of squared gradients"),
                "eps": _epsilon(1e-8, "added to the root of the mean square")},
    "adam": _ADAM_KEYS,
    "adamw": {**_ADAM_KEYS,
              "weight_decay": Key(1e-2, number(0), "float >= 0",
                                  "decoupled decay of every parameter, biases"
                                  " included: w -= lr * weight_decay * w")},
    "lbfgs": {"history": Key(10, integer(1, maximum=MAX_HISTORY), "int in [1, 1000]",
                             "curvature pairs L-BFGS keeps (scipy's maxcor)")},
}

# Settings of each schedule, beside `name`.
SCHEDULE_KEYS = {
    "constant": {},
    "step": {"step_epochs": Key(10, integer(1, maximum=MAX_COUNT), COUNT,
                                "epochs between multiplications by gamma"),
             "gamma": _positive(0.1, "factor applied every step_epochs")},
    "exponential": {"gamma": _positive(0.95, "factor applied every epoch")},
    "inverse_time": {"decay": Key(0.5, number(0), "float >= 0",
                                  "lr / (1 + decay * (epoch - 1))")},
    "cosine": {"floor": Key(0.0, number(0), "float >= 0",
                          "the rate the cosine reaches after the last update;"
                          " <= optimizer.lr"),
               "warmup": Key(0, integer(0, maximum=MAX_COUNT), "int in [0, 10^9]",
                             "updates of linear warmup before the cosine")},
    "plateau": {"factor": _fraction(0.1, "multiplies the rate on a plateau"),
                "patience": Key(3, integer(1, maximum=MAX_COUNT), COUNT,
                                "evaluations without improvement before reducing"),
                "floor": Key(0.0, number(0), "float >= 0",
                              "the lowest rate; <= optimizer.lr")},
}


def _unknown_key(key: str, options) -> ConfigError:
    if key == "search":
        # Worded for a file with a search: section and for a --set that adds one.
        return ConfigError("unknown key search: a search: section makes a study,"
                           " which nntrain search runs; run it so, or leave the"
                           " search keys out", key)
    if ":" in key:
        return ConfigError(
            f"unknown key {key}: write a space after the colon ('KEY: VALUE'), or YAML"
            " reads it as one key", key
        )
    name = key.rsplit(".", 1)[-1]
    close = close_match(name, options)
    if close:
        hint = f"did you mean '{close}'?"
    elif not options:
        owner = key.rsplit(".", 2)[-2] if key.count(".") else "it"
        hint = f"{owner} takes no settings: write {{}}"
    else:
        hint = f"valid keys: {', '.join(options)}"
    return ConfigError(f"unknown key {key} ({hint})", key)


def _check_section(raw: dict, table: dict, prefix: str) -> dict:
    """Validate ``raw`` against ``table``; return a new dict with defaults filled in."""
    for name in raw:
        if name not in table:
            raise _unknown_key(f"{prefix}.{key_text(name)}" if prefix
                               else key_text(name), table)

    resolved = {}
    for name, spec in table.items():
        key = f"{prefix}.{name}" if prefix else name
        if isinstance(spec, dict):
            section = raw.get(name, {})
            if section is None:
                section = {}
            if not isinstance(section, dict):
                refuse_non_mapping(key, section)
            resolved[name] = _check_section(section, spec, key)
        elif name in raw:
            resolved[name] = spec.check(raw[name], key)
        else:
            resolved[name] = _copy_default(spec.default)
    return resolved


def _copy_default(value):
    return list(value) if isinstance(value, list) else value


def _check_named_section(raw, section: str, tables: dict, default: str) -> dict:
    """A section whose keys depend on its ``name`` (optimizer, schedule): keys of
    another name's table are an error naming their owner."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        refuse_non_mapping(section, raw)
    name = choice(*tables)(raw.get("name", default), f"{section}.name")
    settings = {k: v for k, v in raw.items() if k != "name"}
    table = tables[name]
    for key in settings:
        if key in table:
            continue
        owners = [owner for owner, keys in tables.items() if key in keys]
        if owners:
            raise _foreign_setting(section, name, key, settings, owners, table)
        raise _unknown_key(f"{section}.{key_text(key)}", ["name", *table])
    return {"name": name, **_check_section(settings, table, section)}


class ForeignSettingError(ConfigError):
    """A key of another rule or schedule than the section's ``name``. Its message
    proposes the key's owner; ``if_renamed``, the message for a ``--set`` that
    changed the name, proposes the new name with the settings it takes instead:
    the user asked for that one."""

    def __init__(self, message: str, key, section: str, if_renamed: str):
        super().__init__(message, key)
        self.section, self.if_renamed = section, if_renamed

    def __reduce__(self):
        # Pickle rebuilds an exception from its args, which hold only the message.
        return (type(self), (self.args[0], self.key, self.section, self.if_renamed),
                self.__dict__)


def _foreign_setting(section: str, name: str, key: str, settings: dict,
                     owners: list, table: dict) -> ForeignSettingError:
    problem = (f"{section}.{key} is not a setting of '{name}' (it belongs to"
               f" {', '.join(owners)})")
    # Written in the file, the key is likelier meant for its owner than dropped.
    owner = f"{section}={{name: {owners[0]}, {key}: {yaml_text(settings[key])}}}"
    kept = "".join(f", {other}: {yaml_text(value)}"
                   for other, value in settings.items() if other in table)
    renamed = f"{section}={{name: {name}{kept}}}"
    return ForeignSettingError(
        f"{problem}; remove it or change {section}.name (with --set, '{owner}'"
        " replaces the whole section)",
        (f"{section}.{key}", f"{section}.name"), section,
        f"{problem}; remove it, or replace the whole section: --set '{renamed}'")


def _check_cross_keys(config: dict, raw_model: dict) -> None:
    train = config["train"]
    if (train["epochs"] is None) == (train["iterations"] is None):
        hint = ("; for example train: {epochs: 10} in the config, or --set"
                " train.epochs=10" if train["epochs"] is None
                else "; set the other to null")
        raise ConfigError(
            "set exactly one of train.epochs and train.iterations"
            f" (got epochs={yaml_text(train['epochs'])},"
            f" iterations={yaml_text(train['iterations'])}){hint}",
            ("train.epochs", "train.iterations"),
        )
    model = config["model"]
    if model["layers"] is not None:
        if "hidden" in raw_model and raw_model["hidden"] is not None:
            raise ConfigError(
                "set either model.hidden or model.layers, not both; remove one",
                ("model.hidden", "model.layers"),
            )
        model["hidden"] = None
    elif model["hidden"] is None:
        raise ConfigError("set model.hidden (a list of widths) or model.layers",
                          ("model.hidden", "model.layers"))
    _check_layer_units(model["layers"] or [])
    if model["batchnorm"] and model["layernorm"]:
        raise ConfigError("set at most one of model.batchnorm and model.layernorm",
                          ("model.batchnorm", "model.layernorm"))
    if config["optimizer"]["name"] == "lbfgs":
        _check_lbfgs(config)
    _check_min_delta(train)
    _check_schedule_floor(config)


def _check_layer_units(layers: list) -> None:
    """Every sized layer of an explicit list (affine, maxout) but the last needs
    its units: refused here, where --print-config sees it, not once the data is
    read. The last one's default to the class count."""
    counts = {}
    for position, entry in enumerate(layers):
        (kind, options), = entry.items()
        counts[kind] = counts.get(kind, 0) + 1
        if (kind in SIZED_LAYERS and options.get("units") is None
                and position < len(layers) - 1):
            raise ConfigError(f"model.layers[{position}].{kind}.units:"
                              f" {kind}{counts[kind]} needs units (its width); only"
                              " the last layer may leave them out", "model.layers")


def _epsilon_places(config: dict):
    """(dotted key, the mapping holding it, its name there) of each epsilon added
    in train.dtype arithmetic: the rule's eps and the normalization layers'.
    Whitening's epsilon is not among them: it is added to the eigenvalues in
    float64."""
    if "eps" in config["optimizer"]:
        yield "optimizer.eps", config["optimizer"], "eps"
    model = config["model"]
    # Checked with model.layers too, where it goes unused: a value out of its range
    # is refused wherever it is set, as the other shorthand keys' are.
    yield "model.norm_epsilon", model, "norm_epsilon"
    for i, entry in enumerate(model["layers"] or []):
        (kind, options), = entry.items()
        if "epsilon" in options:
            yield f"model.layers[{i}].{kind}.epsilon", options, "epsilon"


def _check_epsilons(config: dict) -> None:
    """An epsilon guards a division; one that rounds to 0 in train.dtype guards
    nothing (0 / 0 is NaN, blamed later on the rate), and a subnormal one has
    lost its precision. Both are refused, with the smallest value that holds;
    so is one that rounds to infinity (_check_epsilons_finite)."""
    _check_epsilons_finite(config, "give a value")
    dtype = config["train"]["dtype"]
    tiny = float(np.finfo(dtype).tiny)
    for key, holder, name in _epsilon_places(config):
        value = holder[name]
        if value >= tiny:
            continue
        zero = getattr(np, dtype)(value) == 0
        problem = (f"rounds to 0 in {dtype} (train.dtype)" if zero else
                   f"is subnormal in {dtype} (train.dtype), with few significant"
                   " bits left")
        # train.dtype shares the blame (and a --set of it may be named) only where
        # changing it is a fix.
        other, blamed = ((", or train.dtype float64", (key, "train.dtype"))
                         if dtype == "float32" else ("", key))
        raise ConfigError(f"invalid {key}: {value!r} {problem}; give a value >="
                          f" {_rounded_up(tiny)}{other}", blamed)


def _check_epsilons_finite(config: dict, fix: str) -> None:
    """Refuse an epsilon that rounds to infinity in train.dtype: every value it
    divides becomes 0, a network that cannot learn. ``fix`` begins the advice."""
    dtype = config["train"]["dtype"]
    for key, holder, name in _epsilon_places(config):
        with np.errstate(over="ignore"):
            infinite = np.isinf(getattr(np, dtype)(holder[name]))
        if infinite:
            largest = float(np.finfo(dtype).max)
            raise ConfigError(f"invalid {key}: {holder[name]!r} rounds to infinity"
                              f" in {dtype} (train.dtype), whose largest number is"
                              f" {largest:.8g}; {fix} <= {EPSILON_CEILING}", key)


def _raise_epsilons(config: dict) -> list[tuple[str, float, float]]:
    """Raise each epsilon of ``config`` (resolved) below train.dtype's smallest
    normal number to that number, in place: (dotted key, old value, new value)
    of each one raised."""
    tiny = float(np.finfo(config["train"]["dtype"]).tiny)
    raised = []
    for key, holder, name in _epsilon_places(config):
        if holder[name] < tiny:
            raised.append((key, holder[name], tiny))
            holder[name] = tiny
    return raised


def _check_schedule_floor(config: dict) -> None:
    """A decaying schedule's floor above the starting rate would make it rise."""
    floor, lr = config["schedule"].get("floor"), config["optimizer"].get("lr")
    if floor is not None and lr is not None and floor > lr:
        raise ConfigError(
            f"invalid schedule.floor: {floor:g} is above optimizer.lr {lr:g}, so the"
            f" {config['schedule']['name']} schedule would raise the rate; give a"
            " floor <= the learning rate", ("schedule.floor", "optimizer.lr"))


def _check_min_delta(train: dict) -> None:
    """An accuracy lies in [0, 1], so it never gains 1 or more between two
    evaluations: such a min_delta would stop every run after ``patience``
    evaluations, whatever it learns."""
    stopping, monitor = train["early_stopping"], train["monitor"]
    if stopping and monitor.endswith("accuracy") and stopping["min_delta"] >= 1:
        raise ConfigError(
            f"invalid train.early_stopping.min_delta: {stopping['min_delta']:g} (an"
            f" accuracy, train.monitor {monitor}, lies in [0, 1] and never gains"
            " that much); give a gain below 1, such as 0.001",
            ("train.early_stopping.min_delta", "train.monitor"))


def _check_lbfgs(config: dict) -> None:
    """L-BFGS needs a deterministic full-batch objective and sets its own steps."""
    layers = config["model"]["layers"] or []
    if config["model"]["drop_probability"] > 0 or any("dropout" in e for e in layers):
        raise ConfigError("optimizer lbfgs needs a deterministic loss: remove dropout"
                          " (model.drop_probability, dropout layers)",
                          ("optimizer.name", "model.drop_probability", "model.layers"))
    if config["schedule"]["name"] != "constant":
        raise ConfigError("optimizer lbfgs chooses its own step sizes: set"
                          " schedule.name to constant",
                          ("optimizer.name", "schedule.name"))
    if config["train"]["clip"] is not None:
        raise ConfigError("optimizer lbfgs does not clip gradients: set train.clip"
                          " to null", ("optimizer.name", "train.clip"))
    if config["train"]["average"] is not None:
        # SciPy's minimizer moves the weights by itself, with no step at which
        # nntrain could fold them into an average.
        raise ConfigError("optimizer lbfgs does not average weights: set"
                          " train.average to null", ("optimizer.name", "train.average"))
    _check_lbfgs_max_norm(config["model"])


def _check_lbfgs_max_norm(model: dict) -> None:
    """A max-norm constraint is applied after each update step, and L-BFGS takes
    none that nntrain sees (the same reason it cannot average): it would be
    silently ignored."""
    if model["max_norm"] is not None:
        raise ConfigError("optimizer lbfgs does not apply max-norm constraints: set"
                          " model.max_norm to null",
                          ("optimizer.name", "model.max_norm"))
    for i, entry in enumerate(model["layers"] or []):
        (kind, options), = entry.items()
        if options.get("max_norm") is not None:
            key = f"model.layers[{i}].{kind}.max_norm"
            raise ConfigError(f"optimizer lbfgs does not apply max-norm constraints:"
                              f" remove {key}", ("optimizer.name", key))


def resolve_config(raw) -> dict:
    """Validate a raw config mapping and return it with every default filled in."""
    config = _resolved(raw)
    _check_epsilons(config)
    return config


def resolve_saved_config(raw) -> tuple[dict, list[tuple[str, float, float]]]:
    """A checkpoint's config resolved as resolve_config does, except that an
    epsilon below train.dtype's smallest normal number, which nntrain accepted
    before it refused them, is raised to that number rather than refused:
    (config, (dotted key, saved value, new value) of each epsilon raised).
    One that rounds to infinity is refused: the run could not have learned."""
    config = _resolved(raw)
    _check_epsilons_finite(config, "train a new run with a value")
    return config, _raise_epsilons(config)


def _plain(value):
    """``value`` (a config, or a part of one) with NumPy scalars turned into the
    Python numbers and booleans they hold: a config built in Python often takes
    its values from NumPy (np.int64 widths from a sweep, np.float32 rates), and
    YAML would write them as the Python values anyway. Copies its mappings and
    lists; leaves everything else as it is, for the checks to judge."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, np.longdouble):
        return float(value)  # its item() is itself
    if isinstance(value, np.generic):  # np.int64, np.float32, np.bool_, np.str_, ...
        return value.item()
    return value


def _resolved(raw) -> dict:
    """resolve_config without the check of the epsilons against train.dtype."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"a config must be a mapping of sections (seed, data, model, ...),"
            f" not {type(raw).__name__}"
        )
    raw = _plain(raw)
    named = {section: raw.pop(section, None) for section in ("optimizer", "schedule")}

    for name in raw:
        if name not in SCHEMA:
            raise _unknown_key(key_text(name), list(SCHEMA))
    config = _check_section(raw, SCHEMA, "")
    config["optimizer"] = _check_named_section(named["optimizer"], "optimizer",
                                               OPTIMIZER_KEYS, "adam")
    config["schedule"] = _check_named_section(named["schedule"], "schedule",
                                              SCHEDULE_KEYS, "constant")
    raw_model = raw.get("model") or {}
    _check_cross_keys(config, raw_model)
    return _ordered(config)


def _ordered(config: dict) -> dict:
    order = ["seed", "data", "model", "optimizer", "schedule", "train", "output"]
    return {name: config[name] for name in order}


def apply_overrides(raw, overrides: list[str]) -> dict:
    """Apply ``KEY=VALUE`` strings (dotted keys, YAML values) to a raw config."""
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ConfigError("the config file must hold a mapping of sections")
    for text in overrides:
        key, sep, value_text = text.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(
                f"--set {text!r}: write KEY=VALUE, for example --set train.epochs=5"
            )
        if any(not part or part != part.strip() for part in key.split(".")):
            raise ConfigError(f"--set {text!r}: the key {key!r} has an empty part or"
                              " spaces around one; write a dotted key such as"
                              " train.epochs")
        value = parse_yaml(value_text, f"--set {key}") if value_text.strip() else None
        _set_dotted(raw, key, value)
    return raw


def _set_dotted(raw: dict, key: str, value) -> None:
    parts = key.split(".")
    node = raw
    for depth, part in enumerate(parts[:-1]):
        where = ".".join(parts[: depth + 1])
        child = node.get(part)
        if _is_setting(where) and not isinstance(child, dict):
            shown = "" if child is None else f" (it holds {child!r})"
            raise ConfigError(f"--set {key}: {where} takes a value, not keys{shown};"
                              f" set it with --set {where}=VALUE")
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(
                f"--set {key}: {where} is not a section of the config (it holds"
                f" {child!r}); fix {where} in the file, or set it whole with --set"
                f" '{where}={{...}}'"
            )
        node = child
    node[parts[-1]] = value


def _is_setting(dotted: str) -> bool:
    """Whether the dotted key names one of the schema's settings that takes a
    plain value (seed, train.epochs), not keys: not a section, nor a setting that
    takes a mapping (train.early_stopping)."""
    node = SCHEMA
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return not isinstance(node, dict) and "mapping" not in node.kind


def _starts_as_zip(path: Path) -> bool:
    """Whether the file at ``path`` begins as a zip archive (an .npz) does."""
    try:
        with open(path, "rb") as file:
            return file.read(2) == b"PK"
    except OSError:
        return False


def read_config_file(path) -> dict:
    """Read a YAML config file into a raw (unvalidated) mapping."""
    if str(path) == "":  # Path("") is the current folder
        raise ConfigError("the config path is empty; give the path of a YAML file")
    if "\x00" in str(path):
        raise ConfigError(f"the config path {str(path)!r} holds a NUL character"
                          " (\\x00), which no path can; give the path of a YAML file")
    path = Path(path)
    if path.exists() and not path.is_file() and not path.is_dir():
        raise ConfigError(f"{path} is not a regular file (a pipe or a device?); give"
                          " the path of a YAML file")
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(
                f"{path}: {size} bytes is too large for a config (limit"
                f" {MAX_CONFIG_BYTES}); check that this is the right file"
            )
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}; check the path") from None
    except IsADirectoryError:
        raise ConfigError(f"{path} is a folder; give the path of a YAML file") from None
    except UnicodeDecodeError:
        if _starts_as_zip(path):
            raise ConfigError(f"{path} is an .npz archive (a checkpoint or data?),"
                              " not a YAML config; give the config (a run keeps its"
                              " own as config.yaml)") from None
        raise ConfigError(f"{path} is not UTF-8 text; give a YAML config") from None
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {error.strerror}; {read_fix(error)}"
                          ) from None
    raw = parse_yaml(text, str(path))
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(f"{path} holds {_yaml_kind(raw)}, not a mapping of"
                          " sections; write sections like 'train: {epochs: 5}'")
    return raw


def _yaml_kind(value) -> str:
    """What a YAML document holds, in YAML's words: "a list", "a number"."""
    kinds = [(bool, "a boolean"), ((int, float), "a number"), (str, "a string"),
             (list, "a list"), (bytes, "binary data"),
             ((datetime.date, datetime.datetime), "a timestamp")]
    return next((name for kind, name in kinds if isinstance(value, kind)),
                f"a {type(value).__name__}")


@too_long_paths_refused()
def load_config(path=None, overrides: list[str] | None = None) -> dict:
    """Read, override and validate a config. No path: start from an empty config,
    so the overrides must at least set train.epochs or train.iterations. A
    leading ``~`` in ``path`` is expanded as the shell does.

    >>> cfg = load_config("configs/digits.yaml", ["train.epochs=5"])
    """
    if path is not None and not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path is {type(path).__name__}; give the config file's"
                        " path, a str or pathlib.Path, or None for the defaults")
    overrides = checked_overrides(overrides)
    if path is not None:  # as the shell expands it for the command line
        path = expand_home(os.fspath(path))
    raw = read_config_file(path) if path is not None else {}
    raw = apply_overrides(raw, overrides)
    try:
        return resolve_config(raw)
    except ConfigError as error:
        if path is None and _no_length_given(error, overrides):
            # The defaults set no length on purpose: a run's length is a choice.
            raise ConfigError("the default config (no path) sets no length: give"
                              " train.epochs or train.iterations, as in"
                              " load_config(None, [\"train.epochs=5\"])",
                              error.key) from None
        where = f"{path}: " if path is not None else ""
        raise blamed_on_override(error, overrides) or ConfigError(
            f"{where}{error}", error.key) from None


def checked_overrides(overrides) -> list[str]:
    """``overrides`` (None, or an iterable of KEY=VALUE strings) as a list; a
    TypeError for a string, which would be read character by character, or a
    mapping, whose keys alone would be read."""
    wrong = isinstance(overrides, (str, bytes, dict))
    if not wrong:
        try:
            overrides = list(overrides or [])
        except TypeError:
            wrong = True
    if wrong or not all(isinstance(item, str) for item in overrides):
        raise TypeError(f"overrides is {overrides!r}; give a list of KEY=VALUE"
                        " strings, like [\"train.epochs=5\"]")
    return overrides


def _no_length_given(error: ConfigError, overrides) -> bool:
    """Whether ``error`` is the one the defaults give when no override sets the
    run's length."""
    length = ("train.epochs", "train.iterations")
    return error.key == length and override_setting(length, overrides) is None


def blamed_on_override(error: ConfigError, overrides) -> ConfigError | None:
    """``error`` restated as the fault of the ``--set`` override behind it, or None
    when its values came from the file (or the checkpoint)."""
    override = override_setting(error.key, overrides)
    if override is None:
        return None
    message = str(error)
    if (isinstance(error, ForeignSettingError)
            and override.partition("=")[0].strip() == f"{error.section}.name"):
        message = error.if_renamed
    return ConfigError(f"--set {override}: {message}", error.key)


def key_within(key: str, section: str) -> bool:
    """True when dotted ``key`` is ``section`` or lies inside it (``a.b``, ``a[0]``
    are within ``a``)."""
    return key == section or key.startswith((f"{section}.", f"{section}["))


def override_setting(keys, overrides) -> str | None:
    """The last ``--set`` override behind an error about ``keys`` (a dotted key, a
    tuple of them, or None), or None when the values came from the file. An
    override is behind a key when it set the key, a section or list holding it,
    or a key inside it (``--set optimzer.lr=1`` makes the unknown section
    ``optimzer``)."""
    if keys is None:
        return None
    # Some messages name a part of a key after a space: "train.clip mode".
    keys = [key.split(" ")[0] for key in ([keys] if isinstance(keys, str) else keys)]
    for text in reversed(list(overrides)):
        set_key = text.partition("=")[0].strip()
        if any(key_within(key, set_key) or key_within(set_key, key) for key in keys):
            return text
    return None


def config_to_yaml(config: dict) -> str:
    return dump_yaml(config)


def describe_keys() -> list[tuple[str, str, str, str]]:
    """Rows (key, type, default, meaning) of every config key, for the docs."""
    rows = []

    def walk(table, prefix):
        for name, spec in table.items():
            key = f"{prefix}{name}"
            if isinstance(spec, dict):
                walk(spec, key + ".")
            else:
                rows.append((key, spec.kind, yaml_text(spec.default), spec.doc))

    walk(SCHEMA, "")
    for rule, table in OPTIMIZER_KEYS.items():
        walk(table, f"optimizer.({rule}) ")
    for schedule, table in SCHEDULE_KEYS.items():
        walk(table, f"schedule.({schedule}) ")
    for step, table in PREPROCESS_OPTIONS.items():
        walk(table, f"data.preprocess[].{step}.")
    for layer, table in LAYER_OPTIONS.items():
        walk(table, f"model.layers[].{layer}.")
    return rows


def yaml_text(value) -> str:
    """``value`` as it would be written in a config: null, 2, [100], ..."""
    return "null" if value is None else dump_yaml(value).replace("...", "").strip()


def keys_table_markdown() -> str:
    """The Markdown table of every key that docs/config.md shows (a test keeps the
    two in step)."""
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for key, kind, default, doc in describe_keys():
        doc = doc.replace("|", "&#124;")  # a bare | would end the table cell
        lines.append(f"| `{key}` | {kind} | `{default}` | {doc} |")
    return "\n".join(lines)
