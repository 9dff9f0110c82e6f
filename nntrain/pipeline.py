"""The data path, end to end: config -> data -> preprocessing -> model -> solver, and
back from a checkpoint to a model that can be evaluated.

Each step is one call with plain data between them; the CLI and notebooks both use
these functions.
"""

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nntrain.checkpoint import load_checkpoint
from nntrain.data.datasets import Dataset, load_dataset
from nntrain.data.preprocess import Preprocessor
from nntrain.errors import CheckpointError, DataError
from nntrain.nn.model import Model, build_model
from nntrain.optim.rules import build_rule
from nntrain.optim.schedules import build_schedule
from nntrain.train import checks
from nntrain.train.report import Reporter
from nntrain.train.rundir import RunDirectory
from nntrain.train.solver import Solver, count_iterations


@dataclass
class Prepared:
    """A dataset with its fitted preprocessing, and the splits already transformed."""

    dataset: Dataset
    preprocessor: Preprocessor
    splits: dict  # name -> (X float (N, D), y (N,))


def prepare_data(config: dict, preprocessor: Preprocessor | None = None,
                 splits=("train", "val", "test"), spec: dict | None = None) -> Prepared:
    """Load the config's dataset and preprocess it; fit the preprocessing on the
    training split unless a fitted ``preprocessor`` is given (from a checkpoint).
    ``spec``, a checkpoint's data spec, is checked against the data first."""
    dataset = load_dataset(config["data"], config["seed"])
    if spec is not None:
        _check_data_matches(dataset, spec)
    dtype = np.dtype(config["train"]["dtype"])
    if preprocessor is None:
        preprocessor = Preprocessor.fit(config["data"]["preprocess"], dataset.X_train,
                                        dtype, dataset.input_shape)
    transformed = {}
    for name in splits:
        X, y = dataset.split(name)
        transformed[name] = (preprocessor.transform(X, dtype), y)
    return Prepared(dataset, preprocessor, transformed)


def _check_data_matches(dataset, spec: dict) -> None:
    found = (dataset.num_features, dataset.num_classes)
    if found != (spec["num_features"], spec["num_classes"]):
        raise DataError(
            f"the data has {found[0]} features and {found[1]} classes, the checkpoint"
            f" was trained on {spec['num_features']} and {spec['num_classes']}; point"
            " --data at the dataset it was trained on"
        )


def data_spec(prepared: Prepared, config: dict) -> dict:
    """What a checkpoint records about its data: where it came from, never the data."""
    dataset = prepared.dataset
    return {
        **config["data"],
        "num_features": dataset.num_features,
        "model_input_width": prepared.preprocessor.output_width(dataset.num_features),
        "num_classes": dataset.num_classes,
        "class_names": list(dataset.class_names),
        "input_shape": list(dataset.input_shape),
        "sizes": {
            name: len(dataset.split(name)[1]) for name in ("train", "val", "test")
        },
    }


@dataclass
class FitResult:
    run_dir: Path
    progress: object
    seconds: float
    history: list


def fit(config: dict, run_dir, force: bool = False, quiet: bool = False) -> FitResult:
    """Train the network ``config`` describes; write everything into ``run_dir``."""
    started = time.perf_counter()
    prepared = prepare_data(config, splits=("train", "val"))
    dataset = prepared.dataset
    input_width = prepared.preprocessor.output_width(dataset.num_features)
    model = build_model(config, input_width, dataset.num_classes)
    rule = build_rule(config["optimizer"])
    _, total = count_iterations(config["train"], len(prepared.splits["train"][1]),
                                full_batch=rule.name == "lbfgs")
    schedule = build_schedule(config["schedule"], rule.lr, total)

    run = RunDirectory(run_dir, force=force)
    reporter = Reporter(quiet=quiet, log=run.log)
    try:
        run.write_config(config)
        reporter.line(f"run directory: {run.path}")
        _start_of_run_checks(reporter, config, prepared, model, input_width)
        solver = Solver(
            model, rule, schedule,
            (*prepared.splits["train"], *prepared.splits["val"]),
            config["train"], config["seed"], run=run, reporter=reporter,
            checkpoint_meta={"config": config, "data": data_spec(prepared, config)},
            checkpoint_arrays={"prep": prepared.preprocessor.state()},
        )
        progress = solver.train()
        seconds = time.perf_counter() - started
        _summarize(reporter, config, progress, run.path, seconds, solver)
    finally:
        run.close()
    return FitResult(run.path, progress, seconds, solver.history)


def _start_of_run_checks(reporter, config, prepared, model, input_width) -> None:
    lines = checks.describe_data(prepared.dataset)
    lines += checks.describe_model(model, input_width)
    loss_lines, warning = checks.first_loss_check(config, model,
                                                  *prepared.splits["train"])
    for line in lines + loss_lines:
        reporter.line(line)
    if warning:
        reporter.warn(warning)


def _summarize(reporter, config, progress, path, seconds, solver) -> None:
    monitor = config["train"]["monitor"]
    best = path / "checkpoints" / "best.npz"
    reporter.line(
        f"Done: {progress.epoch} epochs, {progress.iteration} iterations in"
        f" {seconds:.1f} s. Best {monitor} {progress.best_value:.4f} at epoch"
        f" {progress.best_epoch} (iteration {progress.best_iteration}), saved in"
        f" {best}. Measure it on the test split with: nntrain eval {best}"
    )


@dataclass
class Restored:
    """Everything a checkpoint rebuilds: its config, data spec, model and steps."""

    config: dict
    data: dict
    model: Model
    preprocessor: Preprocessor
    checkpoint: object


def restore(path) -> Restored:
    """Rebuild the model and preprocessing of a checkpoint from the file alone."""
    checkpoint = load_checkpoint(path)
    meta = checkpoint.meta
    try:
        config, data = meta["config"], meta["data"]
        num_features, num_classes = data["num_features"], data["num_classes"]
        preprocessor = Preprocessor.from_state(
            config["data"]["preprocess"], checkpoint.group("prep"), num_features
        )
        input_width = preprocessor.output_width(num_features)
        model = build_model(config, input_width, num_classes)
    except (KeyError, TypeError) as error:
        raise CheckpointError(f"{path}: meta lacks {error}; the file is not a"
                              " complete nntrain checkpoint") from None
    _load_arrays(model, "params", checkpoint.group("param"), path)
    _load_arrays(model, "buffers", checkpoint.group("buffer"), path)
    return Restored(config, data, model, preprocessor, checkpoint)


def _load_arrays(model: Model, kind: str, arrays: dict, path) -> None:
    """Check ``arrays`` against the model's ``params`` or ``buffers`` by name and
    shape, then copy them in."""
    prefix = {"params": "param", "buffers": "buffer"}[kind]
    for name, target in getattr(model, kind).items():
        if name not in arrays:
            raise CheckpointError(f"{path} lacks {prefix}/{name}; it does not match"
                                  " its config")
        if arrays[name].shape != target.shape:
            raise CheckpointError(
                f"{path}: {prefix}/{name} has shape {arrays[name].shape}, the model"
                f" needs {target.shape}"
            )
    extra = sorted(set(arrays) - set(getattr(model, kind)))
    if extra:
        raise CheckpointError(f"{path} holds {prefix}/{extra[0]}, which its model"
                              " lacks")
    model.set_arrays(kind, arrays)
