"""The data path, end to end: config -> data -> preprocessing -> model -> solver, and
back from a checkpoint to a model that can be evaluated.

Each step is one call with plain data between them; the CLI and notebooks both use
these functions.
"""

import os
import shlex
import time
import warnings
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nntrain.checkpoint import Checkpoint, load_checkpoint
from nntrain.config import blamed_on_override, resolve_config, yaml_text
from nntrain.data.datasets import OTHER_DATA_FIX, Dataset, load_dataset
from nntrain.data.preprocess import Preprocessor
from nntrain.errors import (
    EDITED_CHECKPOINT_FIX,
    BadInputError,
    CheckpointError,
    CheckpointWarning,
    ConfigError,
    DataLocationError,
    DataWarning,
    NNTrainError,
    NNTrainWarning,
    StopRequested,
    TrainingError,
)
from nntrain.nn.model import Model, array_shapes, build_model
from nntrain.optim.rules import build_rule
from nntrain.optim.schedules import build_schedule
from nntrain.train import checks
from nntrain.train.report import Reporter, counted
from nntrain.train.rundir import RunDirectory, missing_or_unreadable
from nntrain.train.signals import (
    signals_deferred,
    stop_exit_code,
    stopped_before_start,
    stopped_by,
)
from nntrain.train.solver import (
    Progress,
    Solver,
    count_iterations,
    drops_final_evaluation,
)
from nntrain.train.state import check_data_spec, check_solver_state


@dataclass
class Prepared:
    """A dataset with its fitted preprocessing, and the splits already transformed."""

    dataset: Dataset
    preprocessor: Preprocessor
    splits: dict  # name -> (X float (N, D), y (N,))
    fingerprints: dict  # name -> CRC32 of the split as loaded (data_fingerprints)


SPLITS = ("train", "val", "test")

# How to point a resumed run, or eval, at the data when it is not where the run
# found it: (when it is missing, when it is other data).
RESUME_DATA_FIX = ("if the data moved, pass its new place with --set data.path=NEW",
                   "resume with --set data.path=NEW pointing at the data the run"
                   " was trained on")
EVAL_DATA_FIX = ("if the data moved, pass its new place with --data PATH",
                 "point --data at the data the checkpoint was trained on")


def prepare_data(config: dict, preprocessor: Preprocessor | None = None,
                 splits=("train", "val", "test"), spec: dict | None = None,
                 keep_raw: bool = True,
                 given_as: str | None = "data.path") -> Prepared:
    """Load the config's dataset and preprocess it; fit the preprocessing on the
    training split unless a fitted ``preprocessor`` is given (from a checkpoint).
    ``spec``, a checkpoint's data spec, is checked against the data first.
    ``keep_raw=False`` drops the raw feature arrays once the preprocessed copies
    exist (training needs only those: 47 MB less for Fashion-MNIST).
    ``given_as``: how data.path was given now, or None for the path ``spec``
    recorded (see datasets.find_idx_folder)."""
    unknown = [split for split in splits if split not in SPLITS]
    if isinstance(splits, str) or unknown:
        raise ValueError(f"splits is {splits!r}; give a tuple of some of"
                         f" {', '.join(SPLITS)}")
    if preprocessor is not None and not isinstance(preprocessor, Preprocessor):
        raise TypeError(f"preprocessor is {type(preprocessor).__name__}; give a"
                        " fitted Preprocessor (a restored checkpoint's), or None")
    config = resolve_config(config)  # a hand-made dict gets checked, and defaults
    dtype = np.dtype(config["train"]["dtype"])
    dataset = load_dataset(config["data"], config["seed"], dtype, given_as, spec)
    fingerprints = data_fingerprints(dataset)
    if spec is not None:
        _check_data_matches(dataset, spec, fingerprints, splits)
    transformed = {}
    if preprocessor is None:
        preprocessor, X_train = Preprocessor.fit_transform(
            config["data"]["preprocess"], dataset.X_train, dtype, dataset.input_shape)
        if "train" in splits:
            transformed["train"] = (X_train, dataset.y_train)
        del X_train
    for name in splits:
        if name not in transformed:
            X, y = dataset.split(name)
            transformed[name] = (preprocessor.transform(X, dtype,
                                                        f"the {name} split"), y)
    if not keep_raw:
        dataset.release_features()
    return Prepared(dataset, preprocessor, transformed, fingerprints)


def data_fingerprints(dataset: Dataset) -> dict:
    """A CRC32 of each split's samples and labels as loaded: a checkpoint keeps
    them to tell its data, wherever it lies now, from other data of its shape."""
    return {name: _fingerprint(dataset.split(name)) for name in SPLITS}


def _fingerprint(arrays) -> str:
    crc = 0
    for array in arrays:
        crc = zlib.crc32(np.ascontiguousarray(array).view(np.uint8), crc)
    return format(crc, "08x")


# The feature types a data file may hold: when a split's fingerprint differs, its
# features are tried in the others, to tell the same values saved in another type
# (whose bytes, and so fingerprint, differ) from other data.
FEATURE_DTYPES = ("float32", "float64", "float16", "uint8", "int64", "int32")


# How many feature values (not bytes, nor rows) _saved_as casts at a time: a whole
# split cast at once would copy it once per type tried (376 MB for Fashion-MNIST's
# in float64).
_CAST_VALUES = 1 << 20


def _saved_as(arrays, fingerprint: str) -> np.dtype | None:
    """The type in which the features X of a split's ``arrays`` (X, y) hold the
    same values and give ``fingerprint``, or None. Each type is tried on a chunk
    of rows at a time, and given up at the first chunk that changes in it."""
    X, y = arrays
    for dtype in map(np.dtype, FEATURE_DTYPES):
        if dtype != X.dtype and _fingerprint_as(X, y, dtype) == fingerprint:
            return dtype
    return None


def _fingerprint_as(X, y, dtype: np.dtype) -> str | None:
    """_fingerprint((X.astype(dtype), y)), computed chunk by chunk, or None as soon
    as a value of ``X`` changes in ``dtype``."""
    rows = max(1, _CAST_VALUES // max(1, X[0].size)) if len(X) else 1
    crc = 0
    for start in range(0, len(X), rows):
        chunk = X[start:start + rows]
        with np.errstate(all="ignore"):
            cast = chunk.astype(dtype)
        if not np.array_equal(cast, chunk):
            return None
        crc = zlib.crc32(np.ascontiguousarray(cast).view(np.uint8), crc)
    crc = zlib.crc32(np.ascontiguousarray(y).view(np.uint8), crc)
    return format(crc, "08x")


def _check_data_matches(dataset, spec: dict, fingerprints: dict, splits) -> None:
    """Refuse data other than the checkpoint's by the sizes and fingerprints of
    every split (checkpoints before fingerprints lack them), those in ``splits``
    first; load_dataset has checked its shape. Data with another test split is
    other data, even to a resumed run that reads only train and val."""
    fix = OTHER_DATA_FIX
    for name in sorted(SPLITS, key=lambda split: split not in splits):
        found = (len(dataset.split(name)[1]), fingerprints[name])
        saved = tuple(_saved(spec, key, name, value)
                      for key, value in zip(("sizes", "fingerprints"), found))
        if saved != found:
            raise DataLocationError(_other_data(dataset, name, saved), fix,
                                    missing=False)


def _other_data(dataset, name: str, saved: tuple) -> str:
    """Why the data's split ``name`` is not the one whose (size, fingerprint) the
    checkpoint ``saved``."""
    arrays = dataset.split(name)
    dtype = None
    if saved[0] == len(arrays[1]):  # as many samples: the same, in another type?
        dtype = _saved_as(arrays, saved[1])
    if dtype is not None:
        return (f"the data in {dataset.source} holds the values of the checkpoint's"
                f" {name} split, but as {arrays[0].dtype}, where its run read"
                f" {dtype} (save the arrays again as {dtype}: X.astype(np.{dtype}))")
    return (f"the data in {dataset.source} is not the data the checkpoint was"
            f" trained on (its {name} split holds other samples or labels)")


def _saved(spec: dict, key: str, name: str, default):
    """spec[key][name], or ``default`` where an older checkpoint lacks it."""
    table = spec.get(key)
    return table.get(name, default) if isinstance(table, dict) else default


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
            name: len(dataset.split(name)[1]) for name in SPLITS
        },
        "fingerprints": prepared.fingerprints,
    }


@dataclass
class FitResult:
    run_dir: Path
    progress: object
    seconds: float
    history: list


def fit(config: dict, run_dir, force: bool = False, quiet: bool = False,
        resume=None, data_path_given: bool | None = None,
        notes: list[str] | None = None) -> FitResult:
    """Train the network ``config`` describes; write everything into ``run_dir``.

    ``resume``: the run to continue, as a loaded Checkpoint or the path of one or
    of its run directory (as ``nntrain fit --resume`` takes it). ``config`` must
    then be the checkpoint's, as ``train.resume.resumed_config`` gives it: only
    train.epochs, train.iterations, train.threads and data.path may differ (a
    ConfigError names any other setting that does).
    ``data_path_given``: for a resumed run, whether data.path was given now (the
    CLI's --set data.path), which must then hold the data; otherwise a data.path
    moved from the checkpoint's may fall back on another copy. None: given when
    it differs from the path the checkpoint recorded. ``force`` and ``resume``
    together are refused, as the CLI refuses --force --resume.
    ``notes``: what the caller found to say before the run (the CLI's: a config
    file that differs from the resumed checkpoint's), shown and logged in
    train.log as the run's own notes are. A resumed run rebuilds a stale or lost
    best.npz from last.npz (resume.complete_saves) once its data and checkpoint
    have passed their checks, and says so at once.
    """
    _check_fit_arguments(config, run_dir, force, quiet, data_path_given, notes)
    if force and resume is not None:
        # As the CLI's --force --resume: force would remove the run resume extends.
        raise BadInputError("force=True starts over and resume continues: give one"
                            " of them")
    config = resolve_config(config)  # a hand-made dict gets checked, and defaults
    # A signal before the run directory is opened leaves nothing to resume,
    # and nothing written: one line says so. RunDirectory says itself when --force
    # had removed the earlier run's files.
    with stopped_before_start(run_dir, resumed=resume is not None):
        started = time.perf_counter()
        resume, resume_notes = _resume_from(resume, config, run_dir)
        resume_notes = [*(notes or []), *resume_notes]
        finished = _finished_run(config, resume, run_dir)
        if finished:
            result, note = finished
            _complete_saves(resume, Reporter(quiet=quiet), resume_notes)
            if not quiet:
                warnings.warn(NNTrainWarning(note), stacklevel=2)
            return result
        saved_prep = None
        if resume is not None:
            check_data_spec(resume)
            saved = resume.meta["data"]
            saved_prep = Preprocessor.from_state(config["data"]["preprocess"],
                                                 resume.group("prep"),
                                                 saved["num_features"],
                                                 resume.path or "the checkpoint")
            # Before the data is read: the data must match the checkpoint's widths.
            _check_fits_network(config,
                                saved_prep.output_width(saved["num_features"]),
                                saved["num_classes"], resume,
                                resume.path or "the checkpoint")
        prepared, data_warnings = _prepare_run_data(config, saved_prep, resume,
                                                    data_path_given)
        dataset = prepared.dataset
        input_width = prepared.preprocessor.output_width(dataset.num_features)
        # A resumed run's weights come from the checkpoint: no random draw.
        model = build_model(config, input_width, dataset.num_classes,
                            initialize=resume is None)
        rule = build_rule(config["optimizer"])
        per_epoch, total = count_iterations(config["train"],
                                            len(prepared.splits["train"][1]),
                                            full_batch=rule.name == "lbfgs")
        schedule = build_schedule(config["schedule"], rule.lr, total)
        # A resumed run that has such batches was begun by an earlier nntrain: it
        # goes on, with the warning of _describe_resume.
        if resume is None:
            checks.refuse_lone_sample_batches(model,
                                              len(prepared.splits["train"][1]),
                                              config["train"], rule.name == "lbfgs")
        if resume is not None:
            check_solver_state(resume, per_epoch, schedule.state())
        run = RunDirectory(run_dir, force=force, resume=resume is not None)

    with _ending(run, resumed=resume is not None):
        reporter = Reporter(quiet=quiet, log=run.log)
        _complete_saves(resume, reporter, resume_notes, locked=True)
        for text in data_warnings:
            reporter.warn(text)
        run.write_config(config)  # a resumed run's: once it saves a checkpoint
        solver = Solver(
            model, rule, schedule,
            (*prepared.splits["train"], *prepared.splits["val"]),
            config["train"], config["seed"], run=run, reporter=reporter,
            checkpoint_meta={"config": config, "data": data_spec(prepared, config),
                             "environment": environment()},
            checkpoint_arrays={"prep": prepared.preprocessor.state()},
        )
        if resume is None:
            reporter.line(f"run directory: {run.path}")
            _start_of_run_checks(reporter, config, prepared, model, input_width,
                                 total)
        else:
            _continue_run(solver, resume, run, reporter, config)
        _check_threads(reporter, config["train"]["threads"])
        progress = solver.train()
        if config["train"]["plots"]:
            _write_plots_or_stop(run, reporter)
        # A resumed run reports its whole time, the part before the stop included.
        seconds = time.perf_counter() - started + solver.elapsed_before
        _summarize(reporter, config, progress, run.path, seconds, solver.eval_every)
    return FitResult(run.path, progress, seconds, solver.history)


def _continue_run(solver: Solver, checkpoint, run: RunDirectory, reporter,
                  config: dict) -> None:
    """Give a resumed run's ``solver`` the state ``checkpoint`` saved (weights,
    optimizer, averages), tell ``run`` which records it keeps, and say what the
    user should know before it goes on."""
    model, meta = solver.model, checkpoint.meta["solver"]
    _load_arrays(model, "params", checkpoint.group("param"), "the checkpoint")
    _load_arrays(model, "buffers", checkpoint.group("buffer"), "the checkpoint")
    _restore_optimizer(solver, model, checkpoint.group("optim"), meta)
    averaged, statistics = _average_groups(model, checkpoint.group("average"))
    count = meta.get("average_count", 0)
    if averaged or (solver.average and count):
        _check_arrays(model.params, averaged, "average", "the checkpoint")
    if statistics:
        _check_arrays(model.buffers, statistics, "average", "the checkpoint")
    solver.restore_average(averaged, count, statistics)

    # The records the run directory keeps once this run commits: those of the
    # evaluations it continues from, which drop any it does not.
    run.continue_after(solver.progress.iteration,
                       [record["iteration"] for record in solver.history])
    _describe_resume(reporter, run.path, solver, checkpoint.meta)
    cut_short = run.cut_short_note(solver.progress.iteration)
    if cut_short:
        reporter.note(cut_short)
    _note_newer_last(reporter, run, checkpoint)
    _warn_lost_best(reporter, run, solver.progress, config)


@contextmanager
def _ending(run: RunDirectory, resumed: bool):
    """The block in which fit trains in the run directory ``run``: the error that
    ends it is logged in train.log as the terminal shows it, and the directory
    is closed whatever happens. A failure to close it is that error when the
    block succeeded; when another one ends the run it is only a warning, since
    that error (a stop and how to resume it, say, and its exit status) is what
    the user must see."""
    try:
        try:
            yield
        except StopRequested as error:
            run.log(str(error))  # as the terminal shows it
            raise
        except NNTrainError as error:
            run.log(f"error: {error}")
            raise
        except KeyboardInterrupt as error:
            if run.saved:
                # Stopped at once by a second signal: logged as the terminal
                # shows it (cli.Group), unless the log cannot be written.
                try:
                    run.log(stopped_by(error))
                except TrainingError:
                    pass
                raise
            # Stopped before its first checkpoint (while it started, or at once by
            # a second signal): there is no state to resume from.
            stopped = _stopped_before_saving(error, run.path, resumed)
            run.log(stopped)
            raise StopRequested(stopped, stop_exit_code(error)) from None
    except BaseException:
        try:
            run.close()
        except TrainingError as error:
            warnings.warn(NNTrainWarning(str(error)), stacklevel=3)
        raise
    run.close()


def _check_fit_arguments(config, run_dir, force, quiet, data_path_given,
                         notes=None) -> None:
    """TypeErrors for arguments of fit of the wrong type: a truthy "no" must not
    pass for force=True, which removes a run's files."""
    if not isinstance(config, dict):
        raise TypeError(f"config is {type(config).__name__}; give a config dict, as"
                        " nntrain.load_config(path) returns")
    if notes is not None and (not isinstance(notes, (list, tuple)) or not all(
            isinstance(note, str) for note in notes)):
        raise TypeError(f"notes is {notes!r}; give a list of strings, one a note")
    _check_path_argument("run_dir", run_dir, "the run directory's path, a str or"
                         " pathlib.Path")
    flags = [("force", force), ("quiet", quiet)]
    if data_path_given is not None:  # None: decided from the checkpoint
        flags.append(("data_path_given", data_path_given))
    for name, value in flags:
        _check_flag(name, value)


def _check_flag(name: str, value) -> None:
    """A TypeError unless ``value`` is a bool: a truthy "no" must not pass."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} is {value!r}; give True or False")


def _check_path_argument(name: str, value, give: str) -> None:
    """A TypeError unless ``value`` is a path (a str or os.PathLike), and a
    BadInputError for an empty one, which would mean the current folder, or one
    holding a NUL; ``give`` says what to give instead."""
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{name} is {type(value).__name__}; give {give}")
    if str(value) == "":
        raise BadInputError(f"{name} is empty; give {give}")
    if "\x00" in str(value):
        raise BadInputError(f"{name} {str(value)!r} holds a NUL character (\\x00),"
                            f" which no path can; give {give}")


def _resume_from(resume, config: dict, run_dir) -> tuple[object, list[str]]:
    """fit's ``resume`` as a Checkpoint (None: a new run), after checking that
    ``config`` is its config and ``run_dir`` its run directory, and notes on the
    checkpoints a run directory's search skipped."""
    from nntrain.train import resume as resuming  # it imports this module

    if resume is None:
        return None, []
    notes = []
    if not isinstance(resume, Checkpoint):
        _check_path_argument("resume", resume, "a loaded Checkpoint"
                             " (nntrain.checkpoint.load_checkpoint), or the path of"
                             " a checkpoint or of a run directory")
        _, resume, notes = resuming.find_checkpoint(resume)
    if resume.path is not None:
        # Its metrics and best.npz are the ones the resumed run extends: another
        # folder's would be overwritten with this run's.
        own = resuming.run_directory_of(Path(resume.path))
        if Path(run_dir).resolve() != own:
            raise BadInputError(f"a resumed run continues in its own run directory"
                                f" ({own}), not in {run_dir}; give that one as"
                                " run_dir, or copy it and resume the copy")
    resuming.refuse_changed_config(config, resume, resume.path or "the checkpoint")
    return resume, notes


def _complete_saves(checkpoint, reporter: Reporter, notes: list[str],
                    locked: bool = False) -> None:
    """Show ``notes``, then bring a resumed run's best.npz up to ``checkpoint``
    (resume.complete_saves; ``locked``: the run directory is open) and say so
    before a signal can stop the command: the file is rewritten by then."""
    from nntrain.train import resume as resuming  # it imports this module

    for text in notes:
        reporter.note(text)
    if checkpoint is None or checkpoint.path is None:
        return
    with signals_deferred():
        for text in resuming.complete_saves(Path(checkpoint.path), checkpoint,
                                            locked):
            reporter.note(text)


def _finished_run(config: dict, checkpoint, run_dir) -> tuple | None:
    """(the FitResult, a note saying so) when ``checkpoint``'s run has nothing
    left to do at ``config``'s length, as the CLI finds before it calls fit: the
    run directory stays untouched. None otherwise, and for a malformed solver
    state, which fit's own checks then name."""
    from nntrain.train import resume as resuming  # it imports this module

    if checkpoint is None:
        return None
    try:
        if not resuming.is_finished(config, checkpoint):
            return None
        solver = checkpoint.meta["solver"]
        result = FitResult(Path(run_dir), Progress(**solver["progress"]), 0.0,
                           list(solver["history"]))
    except (KeyError, TypeError):
        return None
    return result, resuming.finished_note(checkpoint.path or "the checkpoint",
                                          config, checkpoint, setting="")


def _prepare_run_data(config: dict, saved_prep, resume,
                      data_path_given: bool | None) -> tuple[Prepared, list[str]]:
    """The run's data, and the texts of the DataWarnings loading it gave, for the
    run's reporter to show and log (it does not exist yet): they are caught here
    whatever the caller's warning filters say. A resumed run's data.path is given
    now, by --set data.path, when ``data_path_given`` says so, or, when that is
    None, when it is not the path its checkpoint recorded."""
    spec = resume.meta["data"] if resume else None
    given_as = "data.path"
    if resume is not None:
        if data_path_given is None:
            data_path_given = config["data"]["path"] != spec.get("path")
        given_as = "--set data.path" if data_path_given else None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DataWarning)
        try:
            prepared = prepare_data(config, saved_prep, splits=("train", "val"),
                                    spec=spec, keep_raw=False, given_as=given_as)
        except DataLocationError as error:
            if resume is None:
                raise
            raise error.with_fix(*RESUME_DATA_FIX) from None
    texts = []
    for warning in caught:
        if issubclass(warning.category, DataWarning):
            texts.append(str(warning.message))
        else:  # not the run's to report: as if it had not been caught
            warnings.warn_explicit(warning.message, warning.category,
                                   warning.filename, warning.lineno)
    return prepared, texts


def _stopped_before_saving(error: KeyboardInterrupt, path, resumed: bool) -> str:
    """What to tell a user whose run a signal stopped before it saved anything."""
    stopped = stopped_by(error)
    if resumed:
        # The run directory changes only at the first save (RunDirectory).
        return (f"{stopped} before the resumed run saved a checkpoint: {path} is as"
                " it was; resume it again with the same command")
    return (f"{stopped} before the run saved its first checkpoint: {path} holds"
            " nothing to resume; start over with the same command and --force")


def _write_plots_or_stop(run, reporter) -> None:
    """The end-of-run plots; a signal while they are drawn stops them, but the run
    itself is complete, and the message says so."""
    try:
        _write_plots(run.path, reporter)
    except KeyboardInterrupt as error:
        message = (f"{stopped_by(error)} while drawing the plots: the run is"
                   " complete, its checkpoints saved; draw them with: nntrain plot"
                   f" {shlex.quote(str(run.path))}")
        raise StopRequested(message, stop_exit_code(error)) from None


def _write_plots(path, reporter) -> None:
    """The run's PNGs, when matplotlib is there; otherwise how to get them."""

    from nntrain import plots

    if not plots.plots_available():
        reporter.line("plots: skipped, matplotlib is not installed (pip install"
                      " 'nntrain[plot]', then: nntrain plot"
                      f" {shlex.quote(str(path))})")
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", plots.PlotWarning)
        # Where the data was found the run told at its start: not twice.
        warnings.simplefilter("ignore", DataWarning)
        written = plots.plot_run(path)
    for warning in caught:
        reporter.warn(str(warning.message))
    reporter.line(f"plots: {len(written)} PNG files in {path / 'plots'}")


def environment() -> dict:
    """What can change floating-point results between machines: the NumPy version
    and the BLAS libraries with their thread counts."""
    try:
        from threadpoolctl import threadpool_info

        blas = [{"library": info.get("internal_api"),
                 "version": info.get("version"),
                 "threads": info.get("num_threads")} for info in threadpool_info()]
    except ImportError:
        blas = None
    return {"numpy": np.__version__, "blas": blas}


def _describe_resume(reporter, path, solver, meta) -> None:
    progress = solver.progress
    reporter.line(f"run directory: {path}")
    where = (f"the end of epoch {progress.epoch}"
             if progress.batch_in_epoch == solver.per_epoch else
             f"epoch {progress.epoch}, {progress.batch_in_epoch} batches into it")
    reporter.line(f"resuming at iteration {progress.iteration} ({where})")
    if drops_final_evaluation(meta["solver"], solver.total_iterations):
        reporter.note("the evaluation the shorter run made after its last"
                      f" update (iteration {progress.iteration}) is dropped: this run"
                      f" evaluates every {solver.eval_every} iterations, as one this"
                      " long from the start would")
    elif (progress.iteration >= solver.total_iterations
          and progress.last_eval_iteration != progress.iteration):
        reporter.note("the run was stopped after its last update, before the"
                      " evaluation that follows it; it makes that evaluation now")
    _note_cosine_length(reporter, solver, meta)
    if solver.full_batch:
        reporter.note("L-BFGS resumes from its saved parameters with a fresh,"
                      " empty curvature history (scipy keeps it to itself), so it"
                      " does not continue exactly where it stopped")
    lone = checks.lone_sample_batch(solver.model, len(solver.X_train),
                                    solver.config["batch_size"], solver.full_batch)
    if lone:
        reporter.warn(f"{lone[0]}, which an earlier nntrain let this run start"
                      " with: it gets no gradient before batch norm, and a zero"
                      " variance in the running statistics, once an epoch; to"
                      f" avoid it, start the run over and {lone[1]}")
    threads = [(meta.get("config") or {}).get("train", {}).get("threads"),
               solver.config["threads"]]
    if threads[0] != threads[1]:
        was, now = (yaml_text(count) for count in threads)
        reporter.warn(f"train.threads is now {now} (it was {was}); BLAS may split"
                      " its products differently, so the resumed run may differ"
                      " from an uninterrupted one in the last bits")
    saved = meta.get("environment")
    if saved and saved != environment():
        reporter.warn("this checkpoint was written with another NumPy or BLAS"
                      f" setup ({saved}); the resumed run may differ from an"
                      " uninterrupted one in the last bits")


def _note_cosine_length(reporter, solver, meta) -> None:
    """A cosine schedule spans the whole run, so a run extended (or shortened)
    cannot follow the curve of one that long from the start: say where its rate
    jumps."""
    schedule = solver.schedule
    saved_train = (meta.get("config") or {}).get("train")
    if schedule.name != "cosine" or not isinstance(saved_train, dict):
        return
    try:
        _, saved_total = count_iterations(saved_train, len(solver.X_train),
                                          solver.full_batch)
    except (KeyError, TypeError):  # a config from an older nntrain
        return
    if saved_total == solver.total_iterations:
        return
    done, epoch = solver.progress.iteration, solver.progress.epoch
    saved_curve = build_schedule({"name": "cosine", "floor": schedule.floor,
                                  "warmup": schedule.warmup},
                                 schedule.base_lr, saved_total)
    # Up to the warmup's end, or with the floor at lr, the two curves are one: the
    # run is then the same as one this long from the start.
    if done <= schedule.warmup or schedule.floor == schedule.base_lr:
        return
    reporter.note(
        f"the cosine schedule now spans {solver.total_iterations} updates"
        f" instead of {saved_total}: from iteration {done + 1} its rate is"
        f" {schedule.rate(epoch, done):.4g} (the shorter curve's"
        f" {saved_curve.rate(epoch, done):.4g}); the updates before followed the"
        " shorter curve, so this run differs from one this long from the start")


def _check_threads(reporter, threads) -> None:
    """Warn when train.threads asks for more BLAS threads than the cores this
    process may run on: the extra threads only take turns, and slow every product."""
    cores = checks.usable_cores()
    if threads and threads > cores:
        reporter.warn(f"train.threads is {threads}, but this process may use only"
                      f" {cores} core{'s' if cores > 1 else ''}; extra BLAS threads"
                      f" slow training down: set train.threads to {cores} or null")


def _start_of_run_checks(reporter, config, prepared, model, input_width,
                         total: int) -> None:
    lines = checks.describe_data(prepared.dataset)
    lines += checks.describe_model(model, input_width)
    loss_lines, warning = checks.first_loss_check(config, model,
                                                  *prepared.splits["train"])
    for line in lines + loss_lines:
        reporter.line(line)
    for text in (warning, checks.warmup_check(config["schedule"], total)):
        if text:
            reporter.warn(text)


def _summarize(reporter, config, progress, path, seconds, eval_every) -> None:
    monitor = config["train"]["monitor"]
    best = path / "checkpoints" / "best.npz"
    saved = f"saved in {best}"
    held = _saved_iteration(best)
    measure = f"it on the test split with: nntrain eval {shlex.quote(str(best))}"
    if held is None:
        last = path / "checkpoints" / "last.npz"
        saved = f"but {best} is missing or unreadable (those weights are lost)"
        measure = ("the final weights on the test split with: nntrain eval"
                   f" {shlex.quote(str(last))}")
    elif held != progress.best_iteration and held % eval_every:
        # Only a final evaluation measures an iteration off the evaluation points:
        # that of a shorter run, which the extension that followed it dropped. It
        # was the best then, and its weights replaced the best ones before them.
        saved = (f"but {best} holds the weights of iteration {held}, which the"
                 " shorter run's final evaluation found better (those of the best"
                 " iteration were not kept)")
    elif held != progress.best_iteration:
        saved = (f"but {best} holds the weights of iteration {held} (those of the"
                 " best iteration were not kept)")
    reporter.line(
        f"Done: {counted(progress.epoch, 'epoch')},"
        f" {counted(progress.iteration, 'iteration')} in"
        f" {seconds:.1f} s. Best {monitor} {progress.best_value:.4f} at epoch"
        f" {progress.best_epoch} (iteration {progress.best_iteration}), {saved}."
        f" Measure {measure}"
    )


def _in_run(checkpoint, run) -> bool:
    """Whether ``checkpoint`` was loaded from the checkpoints folder of ``run``."""
    return (checkpoint.path is not None
            and Path(checkpoint.path).resolve().parent == run.checkpoints.resolve())


def _note_newer_last(reporter, run, checkpoint) -> None:
    """Tell a run resumed from an older checkpoint of its own run (best.npz, a
    snapshot) what it discards at its first save: the newer last.npz, and the
    records past the checkpoint."""
    last = run.checkpoints / "last.npz"
    if not _in_run(checkpoint, run) or Path(checkpoint.path).name == last.name:
        return
    iteration = checkpoint.meta["solver"]["progress"]["iteration"]
    newer = _saved_iteration(last)
    if newer is None or newer <= iteration:
        return
    dropped = run.records_after(iteration)
    reporter.note(
        f"{Path(checkpoint.path).name} (iteration {iteration}) is older than"
        f" last.npz (iteration {newer}); at its first save this run replaces"
        f" last.npz and drops the {counted(dropped, 'record')} of metrics.jsonl"
        f" past iteration {iteration}"
    )


def _warn_lost_best(reporter, run, progress, config) -> None:
    """Warn a resumed run whose best.npz is missing or does not load, and was
    not rebuilt from last.npz (resume.complete_saves): the best weights are lost
    until an evaluation beats them."""
    best = run.checkpoints / "best.npz"
    if progress.best_iteration is None or _saved_iteration(best) is not None:
        return
    reporter.warn(f"{best} is {missing_or_unreadable(best)}: the weights of the"
                  f" run's best evaluation (iteration {progress.best_iteration})"
                  " are lost; this run saves best.npz again when an evaluation"
                  f" beats its {config['train']['monitor']} of"
                  f" {progress.best_value:.4f}")


def _saved_iteration(path) -> int | None:
    """The update whose weights the checkpoint at ``path`` holds, read from the file
    itself: after any number of resumes it is what the file holds. None when it
    cannot be read."""
    try:
        return load_checkpoint(path).meta["solver"]["progress"]["iteration"]
    except (CheckpointError, KeyError, TypeError):
        return None


def evaluate_checkpoint(path, split: str = "test", data_path=None,
                        average: bool = False):
    """(restored, prepared, scores (N, C), metrics) of a checkpoint on ``split``,
    rebuilt from the file alone; ``data_path`` says where the data lies now."""
    from nntrain.evaluate import checked_scores, measure

    if split not in SPLITS:
        raise ValueError(f"split is {split!r}; give one of {', '.join(SPLITS)}")
    if data_path is not None:
        _check_path_argument("data_path", data_path, "the folder or npz file that"
                             " holds the data now, a str or pathlib.Path, or None")
    restored = restore(path, average=average)
    config = restored.config
    if data_path:
        config = {**config, "data": {**config["data"], "path": str(data_path)}}
    try:
        prepared = prepare_data(config, restored.preprocessor, splits=(split,),
                                spec=restored.data,
                                given_as="--data" if data_path else None)
    except DataLocationError as error:
        raise error.with_fix(*EVAL_DATA_FIX) from None
    X, y = prepared.splits[split]
    scores = checked_scores(restored.model, X, f"the {split} split", path)
    return restored, prepared, scores, measure(scores, y, config["model"]["loss"])


def migrate_config(saved, path, overrides=()) -> dict:
    """A checkpoint's config brought up to this version: keys added since it was
    written get their defaults, and the whole is validated again. ``overrides``:
    the ``--set`` texts already applied to ``saved``; a bad value one of them gave
    is blamed on it, not on the checkpoint."""
    try:
        return resolve_config(without_lbfgs_ignored(saved))
    except ConfigError as error:
        raise blamed_on_override(error, overrides) or CheckpointError(
            f"{path}: its config is not valid here ({error})") from None


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


def restore(path, average: bool = False) -> Restored:
    """Rebuild the model and preprocessing of a checkpoint from the file alone;
    ``average``: with the averaged weights (train.average) instead of the raw ones."""
    _check_path_argument("path", path, "the checkpoint's path, a str or"
                         " pathlib.Path")
    _check_flag("average", average)
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
        _check_fits_network(config, input_width, num_classes, checkpoint, path)
        model = build_model(config, input_width, num_classes, initialize=False)
    except (KeyError, TypeError) as error:
        raise CheckpointError(f"{path}: its meta is incomplete or malformed"
                              f" ({type(error).__name__}: {error}); the file is not a"
                              " complete nntrain checkpoint") from None
    if average:
        _load_average(model, checkpoint, config, path)
    else:
        _load_arrays(model, "params", checkpoint.group("param"), path)
        _load_arrays(model, "buffers", checkpoint.group("buffer"), path)
    return Restored(config, data, model, preprocessor, checkpoint)


def _average_groups(model: Model, arrays: dict) -> tuple[dict, dict]:
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
    weights, statistics = _average_groups(model, checkpoint.group("average"))
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
    _load_arrays(model, "params", weights, path, "average")
    _load_arrays(model, "buffers", statistics, path, prefix)


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


def _load_arrays(model: Model, kind: str, arrays: dict, path,
                 prefix: str | None = None) -> None:
    """Check ``arrays`` against the model's ``params`` or ``buffers`` by name,
    shape, dtype and finiteness, then copy them in. ``prefix``: the checkpoint
    group they come from, for messages (default: the kind's own)."""
    prefix = prefix or {"params": "param", "buffers": "buffer"}[kind]
    _check_arrays(getattr(model, kind), arrays, prefix, path)
    model.set_arrays(kind, arrays)


def _restore_optimizer(solver, model: Model, arrays: dict, meta: dict) -> None:
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


def _check_fits_network(config: dict, input_width: int, num_classes: int,
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


def _check_arrays(reference: dict, arrays: dict, prefix: str, path) -> None:
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
