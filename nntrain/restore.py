"""Back from a checkpoint to a model: its config migrated to this version, its
arrays checked by name, shape, dtype and finiteness and loaded, and the model
measured on a split (evaluate_checkpoint).

Apart from the fit run (pipeline.py) because eval, predict, ensembles and plots
restore checkpoints without training. A resumed run (pipeline.fit) loads its
arrays through the same checks.
"""

import warnings
from dataclasses import dataclass

import numpy as np

from nntrain.arguments import check_flag, path_argument
from nntrain.checkpoint import load_checkpoint
from nntrain.config import blamed_on_override, resolve_saved_config
from nntrain.data.preprocess import Preprocessor, TransformOverflow
from nntrain.errors import (
    EDITED_CHECKPOINT_FIX,
    CheckpointError,
    CheckpointWarning,
    ConfigError,
    DataLocationError,
)
from nntrain.fileio import too_long_paths_refused
from nntrain.nn.model import Model, array_shapes, build_model
from nntrain.prepare import EVAL_DATA_FIX, SPLITS, data_fix, prepare_data
from nntrain.train.state import check_data_spec


@too_long_paths_refused()
def evaluate_checkpoint(path, split: str = "test", data_path=None,
                        average: bool = False):
    """(restored, prepared, scores (N, C), metrics) of a checkpoint on ``split``,
    rebuilt from the file alone; ``data_path`` says where the data lies now."""
    from nntrain.evaluate import checked_scores, measure, preprocessing_overflow

    if split not in SPLITS:
        raise ValueError(f"split is {split!r}; give one of {', '.join(SPLITS)}")
    if data_path is not None:
        data_path = path_argument("data_path", data_path, "the folder or npz file"
                                  " that holds the data now, a str or pathlib.Path,"
                                  " or None")
    restored = restore(path, average=average)
    config = restored.config
    if data_path:
        config = {**config, "data": {**config["data"], "path": str(data_path)}}
    given_as = "--data" if data_path else None
    try:
        prepared = prepare_data(config, restored.preprocessor, splits=(split,),
                                spec=restored.data, given_as=given_as)
    except DataLocationError as error:
        raise error.with_fix(*data_fix(EVAL_DATA_FIX, given_as)) from None
    except TransformOverflow as error:
        raise preprocessing_overflow(error, f"the {split} split") from None
    X, y = prepared.splits[split]
    scores = checked_scores(restored.model, X, f"the {split} split", path)
    return restored, prepared, scores, measure(scores, y, config["model"]["loss"],
                                               widen=True)


def migrate_config(saved, path, overrides=(), warn: bool = True) -> dict:
    """A checkpoint's config brought up to this version: keys added since it was
    written get their defaults, and the whole is validated again. ``overrides``:
    the ``--set`` texts already applied to ``saved``; a bad value one of them gave
    is blamed on it, not on the checkpoint.

    An epsilon below train.dtype's smallest normal number, which nntrain accepted
    before it refused such epsilons, is raised to that number, with a
    CheckpointWarning unless ``warn`` is False: refused, it would leave the
    checkpoint neither evaluable nor resumable, and no --set can change it."""
    try:
        config, raised = resolve_saved_config(without_lbfgs_ignored(saved))
    except ConfigError as error:
        raise blamed_on_override(error, overrides) or CheckpointError(
            f"{path}: its config is not valid here ({error})") from None
    if raised and warn:
        warnings.warn(CheckpointWarning(_raised_epsilons(raised, path,
                                                         config["train"]["dtype"])),
                      stacklevel=2)
    return config


def _raised_epsilons(raised: list, path, dtype: str) -> str:
    """What raising the (key, saved value, new value) epsilons in ``raised``
    changes, for the checkpoint at ``path`` trained in ``dtype``."""
    settings = " and ".join(f"{key} to {old!r}" for key, old, _ in raised)
    return (f"{path} sets {settings}, below {dtype}'s smallest normal number, which"
            f" nntrain now refuses as an epsilon; it is raised to"
            f" {raised[0][2]:.8g}: results change only where it is added to a value"
            " that small, but a resumed run may no longer end bit for bit where"
            " the original run would have")


def without_lbfgs_average(saved):
    """``saved``, a checkpoint's config, with train.average null where it sets one
    beside optimizer lbfgs, a pair that earlier nntrain accepted and config
    validation now refuses. Such a run never averaged anything (the minimizer moves
    the weights with no step at which to fold them in), so without the setting the
    config describes the run that was. Anything else is returned as it is."""
    try:
        lbfgs = saved["optimizer"]["name"] == "lbfgs"
        average = saved["train"]["average"]
    except (KeyError, TypeError):
        return saved
    if not lbfgs or average is None:
        return saved
    return {**saved, "train": {**saved["train"], "average": None}}


def without_lbfgs_max_norm(saved):
    """``saved``, a checkpoint's config, with model.max_norm and each layer's
    max_norm null where set beside optimizer lbfgs, which earlier nntrain accepted
    and config validation now refuses. The minimizer takes no step after which the
    constraint could be applied, so such a run never applied it: without it the
    config describes the run that was. Anything else is returned as it is."""
    try:
        lbfgs = saved["optimizer"]["name"] == "lbfgs"
        model = saved["model"]
        layers = [_without_max_norm(entry) for entry in model.get("layers") or []]
    except (KeyError, TypeError, ValueError, AttributeError):
        return saved
    capped = model.get("max_norm") is not None or layers != (model.get("layers")
                                                             or [])
    if not lbfgs or not capped:
        return saved
    model = {**model, "max_norm": None}
    if layers:
        model["layers"] = layers
    return {**saved, "model": model}


def _without_max_norm(entry: dict) -> dict:
    """A ``{kind: options}`` layer entry with its max_norm, if set, null."""
    (kind, options), = entry.items()
    if isinstance(options, dict) and options.get("max_norm") is not None:
        return {kind: {**options, "max_norm": None}}
    return entry


def without_lbfgs_ignored(saved):
    """``saved`` without the settings earlier nntrain accepted beside optimizer
    lbfgs but never applied: train.average and max_norm."""
    return without_lbfgs_max_norm(without_lbfgs_average(saved))


@dataclass
class Restored:
    """Everything a checkpoint rebuilds: its config, data spec, model and steps."""

    config: dict
    data: dict
    model: Model
    preprocessor: Preprocessor
    checkpoint: object


@too_long_paths_refused()
def restore(path, average: bool = False) -> Restored:
    """Rebuild the model and preprocessing of a checkpoint from the file alone;
    ``average``: with the averaged weights (train.average) instead of the raw ones.
    ``path``: a str or pathlib.Path, a leading ``~`` expanded as the shell does."""
    path = path_argument("path", path, "the checkpoint's path, a str or"
                         " pathlib.Path")
    check_flag("average", average)
    checkpoint = load_checkpoint(path)
    check_data_spec(checkpoint, EDITED_CHECKPOINT_FIX)
    meta = checkpoint.meta
    try:
        config, data = migrate_config(meta["config"], path), meta["data"]
        num_features, num_classes = data["num_features"], data["num_classes"]
        preprocessor = Preprocessor.from_state(
            config["data"]["preprocess"], checkpoint.group("prep"), num_features, path
        )
        input_width = preprocessor.output_width(num_features)
        check_fits_network(config, input_width, num_classes, checkpoint, path)
        model = build_model(config, input_width, num_classes, initialize=False)
    except (KeyError, TypeError) as error:
        raise CheckpointError(f"{path}: its meta is incomplete or malformed"
                              f" ({type(error).__name__}: {error}); the file is not a"
                              " complete nntrain checkpoint") from None
    if average:
        _load_average(model, checkpoint, config, path)
    else:
        load_arrays(model, "params", checkpoint.group("param"), path)
        load_arrays(model, "buffers", checkpoint.group("buffer"), path)
    return Restored(config, data, model, preprocessor, checkpoint)


def average_groups(model: Model, arrays: dict) -> tuple[dict, dict]:
    """A checkpoint's ``average/`` arrays split into the averaged weights and the
    batch norm statistics measured for them (names of the model's buffers)."""
    statistics = {name: value for name, value in arrays.items()
                  if name in model.buffers}
    weights = {name: value for name, value in arrays.items()
               if name not in statistics}
    return weights, statistics


def _load_average(model: Model, checkpoint, config: dict, path) -> None:
    """Put a checkpoint's averaged weights and their batch norm statistics into
    ``model``. A checkpoint written before the statistics were kept falls back on
    the raw weights' statistics, with a warning."""
    weights, statistics = average_groups(model, checkpoint.group("average"))
    if not weights:
        raise CheckpointError(_why_no_average(checkpoint.meta["config"], config,
                                              path))
    if model.buffers and not statistics:
        warnings.warn(CheckpointWarning(
            f"{path} keeps no batch norm statistics for its averaged weights (it was"
            " written before nntrain measured them), so they are used with the raw"
            " weights' running statistics, which can cost much accuracy; a run"
            " trained with this nntrain keeps the right ones"), stacklevel=3)
        statistics = checkpoint.group("buffer")
        prefix = "buffer"
    else:
        prefix = "average"
    load_arrays(model, "params", weights, path, "average")
    load_arrays(model, "buffers", statistics, path, prefix)


def _why_no_average(saved: dict, config: dict, path) -> str:
    """Why a checkpoint whose config is ``saved`` (``config`` once migrated) holds
    no averaged weights, for eval --average."""
    if config["train"]["average"] is not None:
        # Every save of such a run follows an update, which starts the average.
        return (f"{path} lacks its averaged weights (average/<parameter>) although"
                f" its run set train.average; {EDITED_CHECKPOINT_FIX}, or leave out"
                " --average")
    if without_lbfgs_average(saved) is not saved:
        return (f"{path} holds no averaged weights: its run used optimizer lbfgs,"
                " which never averages them (its train.average setting did nothing);"
                " leave out --average")
    return (f"{path} holds no averaged weights: its run did not set train.average;"
            " leave out --average")


def load_arrays(model: Model, kind: str, arrays: dict, path,
                prefix: str | None = None) -> None:
    """Check ``arrays`` against the model's ``params`` or ``buffers`` by name,
    shape, dtype and finiteness, then copy them in. ``prefix``: the checkpoint
    group they come from, for messages (default: the kind's own)."""
    prefix = prefix or {"params": "param", "buffers": "buffer"}[kind]
    check_arrays(getattr(model, kind), arrays, prefix, path)
    model.set_arrays(kind, arrays)


def restore_optimizer(solver, model: Model, arrays: dict, meta: dict) -> None:
    """Give the solver its saved state, after checking the update rule's part."""
    try:
        solver.restore_state(meta, arrays)
        if not solver.full_batch:
            solver.rule.check_state(model.params)
        elif arrays:
            raise ValueError(f"optim/{next(iter(arrays))} is there, but L-BFGS"
                             " keeps no state")
    except ValueError as error:
        raise CheckpointError(f"the checkpoint's optimizer state is unusable: {error};"
                              " resume from another checkpoint or start over") from None


def check_fits_network(config: dict, input_width: int, num_classes: int,
                       checkpoint, path) -> None:
    """Refuse a checkpoint whose param/ and buffer/ arrays are not those of the
    network its config describes, before that network is built: a config edited
    to a wider network would otherwise fail allocating it, blamed on memory."""
    dtype = np.dtype(config["train"]["dtype"])
    for prefix, shapes in zip(("param", "buffer"),
                              array_shapes(config, input_width, num_classes)):
        layout = {name: (shape, dtype) for name, shape in shapes.items()}
        _check_layout(layout, checkpoint.group(prefix), prefix, path)


def _check_layout(layout: dict, arrays: dict, prefix: str, path) -> None:
    """``arrays`` must hold exactly the names of ``layout`` (name -> (shape,
    dtype)), each with its shape and dtype."""
    for name, (shape, dtype) in layout.items():
        if name not in arrays:
            raise CheckpointError(f"{path} lacks {prefix}/{name}; it does not match"
                                  " its config")
        array = arrays[name]
        if array.shape != shape or array.dtype != dtype:
            raise CheckpointError(
                f"{path}: {prefix}/{name} is {array.dtype} {array.shape}, the model"
                f" its config describes needs {dtype} {shape}; {EDITED_CHECKPOINT_FIX}"
            )
    extra = sorted(set(arrays) - set(layout))
    if extra:
        raise CheckpointError(f"{path} holds {prefix}/{extra[0]}, which its model"
                              " lacks")


def check_arrays(reference: dict, arrays: dict, prefix: str, path) -> None:
    """``arrays`` must hold exactly the names of ``reference``, each with its shape
    and dtype, and only finite values."""
    _check_layout({name: (target.shape, target.dtype)
                   for name, target in reference.items()}, arrays, prefix, path)
    for name, array in arrays.items():
        if not np.isfinite(array).all():
            raise CheckpointError(f"{path}: {prefix}/{name} holds NaN or infinite"
                                  " values; the file is damaged: use an earlier"
                                  " checkpoint")
        if name.endswith(".running_var") and (array < 0).any():
            raise CheckpointError(f"{path}: {prefix}/{name} holds negative"
                                  " variances; the file is damaged: use an earlier"
                                  " checkpoint")


# The Python API's argument checks: restore's and evaluate_checkpoint's, and
# fit's (pipeline imports them from here).
