"""The fit run: config -> data -> preprocessing -> model -> solver, into a run
directory, from the start or resumed from a checkpoint.

Each step is one call with plain data between them; the CLI and notebooks both use
these functions. The data comes from nntrain.prepare, and a resumed run's arrays are
checked and loaded by nntrain.restore's helpers, which eval and predict share.
"""

import shlex
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nntrain.arguments import check_flag, check_path_argument
from nntrain.checkpoint import Checkpoint, load_checkpoint
from nntrain.config import resolve_config, yaml_text
from nntrain.data.preprocess import Preprocessor
from nntrain.errors import (
    BadInputError,
    CheckpointError,
    DataLocationError,
    DataWarning,
    NNTrainError,
    NNTrainWarning,
    StopRequested,
    TrainingError,
)
from nntrain.fileio import expand_home, too_long_paths_refused
from nntrain.nn.model import build_model
from nntrain.optim.rules import build_rule
from nntrain.optim.schedules import build_schedule
from nntrain.prepare import (
    EVAL_DATA_FIX,
    FEATURE_DTYPES,
    RESUME_DATA_FIX,
    SPLITS,
    Prepared,
    data_fingerprints,
    data_fix,
    data_spec,
    prepare_data,
)
from nntrain.restore import (
    Restored,
    average_groups,
    check_arrays,
    check_fits_network,
    evaluate_checkpoint,
    load_arrays,
    migrate_config,
    restore,
    restore_optimizer,
    without_lbfgs_average,
    without_lbfgs_ignored,
    without_lbfgs_max_norm,
)
from nntrain.train import checks
from nntrain.train import resume as resuming
from nntrain.train.dropped import dropped_future
from nntrain.train.report import Reporter, counted, short_number
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

# FitResult, environment and fit are this module's; the others are kept
# importable from here, where they were defined before data preparation and
# restoring moved to nntrain.prepare and nntrain.restore: notebooks import them so.
__all__ = [
    "EVAL_DATA_FIX", "FEATURE_DTYPES", "RESUME_DATA_FIX", "SPLITS", "FitResult",
    "Prepared", "Restored", "data_fingerprints", "data_spec", "environment",
    "evaluate_checkpoint", "fit", "migrate_config", "prepare_data", "restore",
    "without_lbfgs_average", "without_lbfgs_ignored", "without_lbfgs_max_norm",
]


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
    # As a shell expands it for the CLI: a folder literally named "~" would be
    # made otherwise, one that a careless rm -rf ~ then takes for home.
    run_dir = expand_home(str(run_dir))
    if force and resume is not None:
        # As the CLI's --force --resume: force would remove the run resume extends.
        raise BadInputError("force=True starts over and resume continues: give one"
                            " of them")
    config = resolve_config(config)  # a hand-made dict gets checked, and defaults
    # config.yaml and the checkpoints name the folder the run is in, as the CLI's
    # do: rerunning that config must not write into the folder of another run.
    config["output"] = output_of(config["output"], run_dir)
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
            check_fits_network(config,
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


def output_of(recorded, run_dir) -> str:
    """The ``output`` a run in ``run_dir`` records: ``recorded`` (a resumed run's,
    as the user first wrote it) while it names that folder from here, else the
    path given now."""
    try:
        same = bool(recorded) and (Path(recorded).expanduser().resolve()
                                   == Path(run_dir).resolve())
    except (OSError, RuntimeError):  # a symlink loop: the run folder's checks say so
        same = False
    return recorded if same else str(run_dir)


def _continue_run(solver: Solver, checkpoint, run: RunDirectory, reporter,
                  config: dict) -> None:
    """Give a resumed run's ``solver`` the state ``checkpoint`` saved (weights,
    optimizer, averages), tell ``run`` which records it keeps, and say what the
    user should know before it goes on."""
    model, meta = solver.model, checkpoint.meta["solver"]
    load_arrays(model, "params", checkpoint.group("param"), "the checkpoint")
    load_arrays(model, "buffers", checkpoint.group("buffer"), "the checkpoint")
    restore_optimizer(solver, model, checkpoint.group("optim"), meta)
    averaged, statistics = average_groups(model, checkpoint.group("average"))
    count = meta.get("average_count", 0)
    if averaged or (solver.average and count):
        check_arrays(model.params, averaged, "average", "the checkpoint")
    if statistics:
        check_arrays(model.buffers, statistics, "average", "the checkpoint")
    solver.restore_average(averaged, count, statistics)

    # The records the run directory keeps once this run commits: those of the
    # evaluations it continues from, which drop any it does not (an extension's
    # only once it has saved: until then they are the checkpoint's own).
    run.continue_after(solver.progress.iteration,
                       [record["iteration"] for record in solver.history],
                       [record["iteration"] for record in meta["history"]])
    _describe_resume(reporter, run.path, solver, checkpoint.meta)
    cut_short = run.cut_short_note(solver.progress.iteration)
    if cut_short:
        reporter.note(cut_short)
    last = _replace_newer_last(reporter, run, checkpoint)
    if _in_run(checkpoint, run):
        _set_aside_dropped(reporter, run, checkpoint, solver.progress, config, last)
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
    check_path_argument("run_dir", run_dir, "the run directory's path, a str or"
                        " pathlib.Path")
    flags = [("force", force), ("quiet", quiet)]
    if data_path_given is not None:  # None: decided from the checkpoint
        flags.append(("data_path_given", data_path_given))
    for name, value in flags:
        check_flag(name, value)


def _resume_from(resume, config: dict, run_dir) -> tuple[object, list[str]]:
    """fit's ``resume`` as a Checkpoint (None: a new run), after checking that
    ``config`` is its config and ``run_dir`` its run directory, and notes on the
    checkpoints a run directory's search skipped."""
    if resume is None:
        return None, []
    notes = []
    if not isinstance(resume, Checkpoint):
        check_path_argument("resume", resume, "a loaded Checkpoint"
                            " (nntrain.checkpoint.load_checkpoint), or the path of"
                            " a checkpoint or of a run directory")
        with too_long_paths_refused():
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
                                    spec=spec, keep_raw=False, given_as=given_as,
                                    training=resume is None)
        except DataLocationError as error:
            if resume is None:
                raise
            raise error.with_fix(*data_fix(RESUME_DATA_FIX, given_as)) from None
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

    try:
        plots.require_matplotlib()
    except plots.PlotsUnavailable as error:
        reporter.line(f"plots: skipped, matplotlib {error.problem} ({error.command},"
                      f" then: nntrain plot {shlex.quote(str(path))})")
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", plots.PlotWarning)
        # Where the data was found the run told at its start: not twice.
        warnings.simplefilter("ignore", DataWarning)
        try:
            written = plots.plot_run(path)
        except plots.FigureInTheWay as error:
            # The run is complete; only its figures wait for the way to clear.
            written = None
            refusal = error
    for warning in caught:
        reporter.warn(str(warning.message))
    if written is None:
        reporter.warn(f"plots: skipped, {refusal.path} {refusal.problem}; move it,"
                      f" then draw them with: nntrain plot {shlex.quote(str(path))}")
        return
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
    earlier_curve = "shorter" if saved_total < solver.total_iterations else "longer"
    reporter.note(
        f"the cosine schedule now spans {solver.total_iterations} updates"
        f" instead of {saved_total}: from iteration {done + 1} its rate is"
        f" {schedule.rate(epoch, done):.4g} (the {earlier_curve} curve's"
        f" {saved_curve.rate(epoch, done):.4g}); the updates before followed the"
        f" {earlier_curve} curve, so this run differs from one this long from the"
        " start")


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
    note = checks.full_batch_note(config)
    if note:
        reporter.note(note)
    for text in (*checks.ineffective_settings(config),
                 checks.double_decay_check(config), checks.lbfgs_snapshot_check(config),
                 warning,
                 checks.warmup_check(config["schedule"], total)):
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
        f" {seconds:.1f} s. Best {monitor} {short_number(progress.best_value)} at"
        f" epoch {progress.best_epoch} (iteration {progress.best_iteration}),"
        f" {saved}."
        f" Measure {measure}"
    )


def _in_run(checkpoint, run) -> bool:
    """Whether ``checkpoint`` was loaded from the checkpoints folder of ``run``."""
    return (checkpoint.path is not None
            and Path(checkpoint.path).resolve().parent == run.checkpoints.resolve())


def _replace_newer_last(reporter, run, checkpoint) -> bytes | None:
    """Tell a run resumed from an older checkpoint of its own run (best.npz, a
    snapshot) what it replaces at its first save: the newer last.npz, which gets
    that checkpoint just before the save (moved aside with the dropped files),
    and the records past the checkpoint. Returns the checkpoint's bytes then,
    otherwise None."""
    last = run.checkpoints / "last.npz"
    if not _in_run(checkpoint, run) or Path(checkpoint.path).name == last.name:
        return None
    iteration = checkpoint.meta["solver"]["progress"]["iteration"]
    newer = _saved_iteration(last)
    if newer is None or newer <= iteration:
        return None
    try:
        content = Path(checkpoint.path).read_bytes()
    except OSError as error:
        reason = error.strerror or error
        raise CheckpointError(f"cannot read {checkpoint.path} ({reason}); check its"
                              " permissions, and resume again") from None
    dropped = run.records_after(iteration)
    reporter.note(
        f"{Path(checkpoint.path).name} (iteration {iteration}) is older than"
        f" last.npz (iteration {newer}); at its first save this run replaces"
        f" last.npz and drops the {counted(dropped, 'record')} of metrics.jsonl"
        f" past iteration {iteration}"
    )
    return content


def _set_aside_dropped(reporter, run, checkpoint, progress, config,
                       last: bytes | None) -> None:
    """Move aside at the first save the files of the part of the run past
    ``checkpoint`` (dropped.py), naming each beforehand, and warn when no
    checkpoint then holds the best evaluation the run keeps. ``last``: the bytes
    a newer last.npz gets then (_replace_newer_last), or None."""
    future = dropped_future(checkpoint, run.checkpoints, progress, last)
    if future is None:
        return
    run.set_aside_at_first_save(future)
    if not future.files:
        return  # a last.npz that is a symbolic link is replaced, not moved
    names = ", ".join(path.name for path in future.files)
    reporter.note(f"at its first save this run moves the files of the part of the"
                  f" run past iteration {future.iteration} into {future.folder}"
                  f" (nothing is deleted): {names}")
    if run.checkpoints / "best.npz" not in future.files:
        return
    name = Path(checkpoint.path).name
    if future.best is not None:
        reporter.note(f"best.npz then gets a copy of {name}, which holds the best"
                      f" evaluation this run keeps (iteration {future.iteration})")
        return
    kept = ("keeps no evaluation" if progress.best_iteration is None else
            f"keeps the best evaluation of iteration {progress.best_iteration}"
            f" ({config['train']['monitor']} {short_number(progress.best_value)}),"
            " whose weights no checkpoint holds")
    reporter.warn(f"this run {kept}: best.npz stays absent until an evaluation"
                  f" saves it (the moved one is in {future.folder})")


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
                  f" {short_number(progress.best_value)}")


def _saved_iteration(path) -> int | None:
    """The update whose weights the checkpoint at ``path`` holds, read from the file
    itself: after any number of resumes it is what the file holds. None when it
    cannot be read."""
    try:
        return load_checkpoint(path).meta["solver"]["progress"]["iteration"]
    except (CheckpointError, KeyError, TypeError):
        return None
