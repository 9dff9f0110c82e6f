"""The command line: parse, call the library, print. Nothing here trains or measures.

Exit status: 0 ok; 1 a failure at run time (non-finite loss, failed gradient check,
a download server that fails); 2 bad input (usage, config, data, checkpoint, a
malformed --mirror); 130 / 143 stopped by SIGINT / SIGTERM.
"""

import contextlib
import csv
import errno
import io
import math
import os
import re
import shlex
import sys
import warnings
from pathlib import Path

import click
import numpy as np

from nntrain import __version__
from nntrain.cli_paths import CONFIG_FILE_FIX, UserPath
from nntrain.errors import (
    BadInputError,
    DataError,
    NNTrainError,
    StopRequested,
    one_line,
)
from nntrain.fileio import (
    absolute_data_path,
    folders_removed_on_error,
    shortened_path,
    too_long_message,
    write_bytes_atomically,
)
from nntrain.train.report import counted, short_number
from nntrain.train.signals import (
    command_ended,
    stop_exit_code,
    stopped_at_start,
    stopped_before_start,
    stopped_by,
)

# Data no larger than this cannot by itself overflow a float64 gradient check.
SANE_DATA_SCALE = 1e3

SPLITS = ("test", "val", "train")


def _say(text: str) -> None:
    """Print an error or warning to stderr as one line, whatever it quotes."""
    click.echo(one_line(text), err=True)


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """Warnings as one plain line on stderr, without the source location."""
    _say(f"warning: {message}")


def _split_set_hint(message: str, args) -> str:
    """For Click's "unexpected extra argument" after a --set whose value has no
    '=' (``--set train.epochs 5``), how to write it: KEY=VALUE as one argument;
    for a second KEY=VALUE after one --set (``--set a=1 b=2``), that each takes
    its own --set. Empty otherwise."""
    if not message.startswith("Got unexpected extra argument"):
        return ""
    args = [str(arg) for arg in args]
    extra = message[message.find("(") + 1:message.rfind(")")]
    settings = [arg for index, arg in enumerate(args)
                if re.fullmatch(r"[A-Za-z_][\w.]*=.*", arg) and arg in extra
                and args[index - 1:index] != ["--set"]]
    if settings and any(arg == "--set" or arg.startswith("--set=") for arg in args):
        each = " ".join(f"--set {shlex.quote(setting)}" for setting in settings)
        return f"; each setting takes its own --set: {each}"
    for index, arg in enumerate(args):
        if arg == "--set":
            pair = args[index + 1:index + 3]
        elif arg.startswith("--set="):
            pair = [arg.removeprefix("--set="), *args[index + 1:index + 2]]
        else:
            continue
        # "train.epochs: 5" is how the key reads in a config file; a config file
        # after the key is the command's own argument, not the value.
        key = pair[0].rstrip(":") if pair else ""
        if (len(pair) == 2 and re.fullmatch(r"[A-Za-z_][\w.]*", key)
                and not pair[1].startswith("-")
                and not pair[1].lower().endswith((".yaml", ".yml"))):
            written = shlex.quote(f"{key}={pair[1]}")
            return (f"; --set {pair[0]} has no '=': write KEY=VALUE, here --set"
                    f" {written}")
    return ""


class Group(click.Group):
    """Turns nntrain's own errors and Click's usage errors into one line on stderr
    and their exit status."""

    def main(self, args=None, prog_name=None, **extra):
        extra.pop("standalone_mode", None)
        warnings.showwarning = _show_warning
        try:
            code = super().main(args, prog_name or "nntrain", standalone_mode=False,
                                **extra)
            command_ended()
        except click.exceptions.NoArgsIsHelpError as error:
            click.echo(error.ctx.get_help())  # a bare command asks for its help
            sys.exit(0)
        except click.exceptions.UsageError as error:
            where = error.ctx.command_path if error.ctx else "nntrain"
            message = " ".join(error.format_message().split())
            hint = _split_set_hint(message, sys.argv[1:] if args is None else args)
            _say(f"error: {message}{hint} (see: {where} --help)")
            sys.exit(2)
        except click.exceptions.ClickException as error:
            _say(f"error: {error.format_message()}")
            sys.exit(error.exit_code)
        except click.exceptions.Abort as error:
            # Click turns a KeyboardInterrupt outside a command (while it reads
            # the arguments) into Abort; a SIGTERM's (train/signals.py) keeps its
            # own text and status.
            cause = error.__cause__
            _say(stopped_at_start(cause or KeyboardInterrupt()))
            sys.exit(getattr(cause, "exit_code", 130))
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except click.exceptions.UsageError as error:
            # The option parser's errors ("Option '--split' requires an argument")
            # come without a context; give them the subcommand's, so that the
            # hint names its help, not the group's.
            if error.ctx is None and ctx.invoked_subcommand:
                name = ctx.invoked_subcommand
                error.ctx = click.Context(self.get_command(ctx, name),
                                          info_name=name, parent=ctx)
            raise
        except (click.exceptions.ClickException, click.exceptions.Exit,
                click.exceptions.Abort):
            raise
        except StopRequested as error:
            _say(f"{error}")
            ctx.exit(error.exit_code)
        except NNTrainError as error:
            _say(f"error: {error}")
            ctx.exit(error.exit_code)
        except KeyboardInterrupt as error:
            # A second signal (train/signals.py) carries the first one's status:
            # 143 for SIGTERM; Python's own KeyboardInterrupt is a Ctrl-C.
            _say(stopped_by(error))
            ctx.exit(stop_exit_code(error))
        except BrokenPipeError:
            # The reader went away (`nntrain eval ... | head`): stop quietly, and
            # point stdout at nothing so the interpreter's final flush cannot fail.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            ctx.exit(1)
        except MemoryError as error:
            # NumPy's message says how much it wanted for what shape.
            detail = f" ({error})" if str(error) else ""
            _say(f"error: out of memory{detail}; use a smaller network, batch or"
                 " data set")
            ctx.exit(1)
        except OSError as error:
            message = _path_error_message(error)
            if message is None or os.environ.get("NNTRAIN_DEBUG"):
                _internal_error(ctx, error)
            # Bad input wherever pathlib first meets it (its exists() and is_dir()
            # let these errnos through), so every command's path checks need no
            # case of their own.
            _say(f"error: {message}")
            ctx.exit(2)
        except Exception as error:
            _internal_error(ctx, error)


def _path_error_message(error: OSError) -> str | None:
    """The one line for a path that the system refuses to look at: too long, or
    behind a folder the user may not enter. None for any other OSError."""
    if error.errno == errno.ENAMETOOLONG:
        return too_long_message(error.filename)
    if error.errno in (errno.EACCES, errno.EPERM) and error.filename is not None:
        return (f"permission denied for {shortened_path(os.fsdecode(error.filename))}"
                ": check the permissions of the file and of each folder above it"
                " (a folder must allow entering, x, for its files to be reached)")
    return None


def _internal_error(ctx, error: Exception):
    """Report an exception that no handler expected, as the bug it is."""
    if os.environ.get("NNTRAIN_DEBUG"):
        raise error
    _say(f"internal error: {type(error).__name__}: {error} (this is a bug in"
         " nntrain; rerun with NNTRAIN_DEBUG=1 for the traceback and report it)")
    ctx.exit(1)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nntrain")
def cli():
    """Train neural networks written in pure NumPy from a YAML config.

    \b
    Start with:  nntrain fit configs/digits.yaml
    then:        nntrain eval runs/digits/checkpoints/best.npz
    """


def overrides_option(example: str):
    """The --set option; its help shows ``example``, an override that matters to
    the command."""
    return click.option(
        "--set", "overrides", multiple=True, metavar="KEY=VALUE",
        help=f"Override a config key (dotted path, YAML value), e.g. {example}.",
    )


set_option = overrides_option("train.epochs=5")


def _load(config_path, overrides):
    from nntrain.config import load_config

    return load_config(config_path, list(overrides))


def _load_unlimited(config_path, overrides):
    """The config of a command that trains no run of its length (gradcheck,
    sanity): one that sets neither train.epochs nor train.iterations gets
    train.epochs 1, which they never read."""
    from nntrain.config import apply_overrides, read_config_file
    from nntrain.errors import ConfigError

    try:
        train = apply_overrides(read_config_file(config_path),
                                list(overrides)).get("train") or {}
        unset = isinstance(train, dict) and all(
            train.get(key) is None for key in ("epochs", "iterations"))
    except ConfigError:
        unset = False  # _load reports it, naming the file or the --set at fault
    return _load(config_path, [*overrides, "train.epochs=1"] if unset else overrides)


def _default_run_dir(config: dict, config_path) -> Path:
    if config["output"]:
        return Path(config["output"])
    stem = Path(config_path).stem if config_path else "run"
    return Path("runs") / stem


@cli.command()
@click.argument("config_path", metavar="CONFIG",
                type=UserPath(dir_okay=False, file_fix=CONFIG_FILE_FIX))
@set_option
@click.option("--out", type=UserPath(file_okay=False, folder_fix=(
                  "give a new or empty folder, or a run's own folder with --resume"
                  " or --force")),
              help="Run directory (default: the config's output, else runs/<stem>).")
@click.option("--force", is_flag=True,
              help="Start over in a non-empty run directory (removes its old files).")
@click.option("--resume", type=UserPath(), metavar="CKPT|RUN_DIR",
              help="Continue a run from a checkpoint, or from a run directory's"
                   " last.npz (if damaged, its newest good checkpoint).")
@click.option("--print-config", is_flag=True,
              help="Print the resolved config, every default filled in, and exit.")
@click.option("--quiet", "-q", is_flag=True,
              help="Print nothing but errors: no progress, notes or warnings.")
def fit(config_path, overrides, out, force, resume, print_config, quiet):
    """Train the network CONFIG describes and write a run directory.

    With --resume the checkpoint's config wins; --set may change only the
    run's length (train.epochs or train.iterations; one it has already reached
    leaves nothing to do), train.threads, and data.path (where the data lies
    now, if it moved; it must be the same data).
    """
    if out == "":
        raise BadInputError("--out is empty; give a folder path")
    if resume == "":
        # Path("") is the current folder, whose newest .npz would be taken.
        raise BadInputError("--resume is empty; give a checkpoint file or a run"
                            " directory")
    if resume is not None and force:
        raise BadInputError("--force starts over and --resume continues: give one"
                            " of them")
    with _silenced(quiet):
        # A signal while the run is prepared (its modules imported, its config
        # read) stops it in one line, and nothing was written.
        with stopped_before_start(resumed=resume is not None):
            from nntrain.pipeline import fit as run_fit

            if resume is not None:
                run = _resume(config_path, overrides, out, resume, print_config,
                              quiet)
            else:
                run = _fit(config_path, overrides, out, force, print_config, quiet)
        if run is not None:
            run_fit(**run)


@contextlib.contextmanager
def _silenced(quiet: bool):
    """--quiet prints nothing but errors: Python's warnings (the data loaders',
    NumPy's) are dropped too; the Reporter still logs its own to train.log."""
    with warnings.catch_warnings():
        if quiet:
            warnings.simplefilter("ignore")
        yield


def _fit(config_path, overrides, out, force, print_config,
         quiet) -> dict | None:
    """The arguments of pipeline.fit for a new run; None once --print-config has
    printed the config."""
    from nntrain.config import config_to_yaml, override_setting

    config = _load(config_path, overrides)
    run_dir = Path(out) if out else _default_run_dir(config, config_path)
    config["output"] = str(run_dir)
    given = config["data"]["path"]
    if given:
        config["data"]["path"] = absolute_data_path(given)
    if print_config:
        click.echo(config_to_yaml(config), nl=False)
        return None
    _refuse_missing_relative(config["data"], given,
                             override_setting("data.path", overrides) is not None)
    return {"config": config, "run_dir": run_dir, "force": force, "quiet": quiet}


def _refuse_missing_relative(data: dict, given: str | None,
                             from_set: bool) -> None:
    """An npz file that a relative data.path names and that is not there: the
    message says where it was looked for, and from where, since a path in a
    config file may have been written relative to that file's folder;
    ``from_set``: the path came from --set."""
    from nntrain.errors import DataLocationError

    if (data["name"] != "npz" or not given or Path(given).expanduser().is_absolute()
            or Path(data["path"]).exists()):
        return
    said = f"--set data.path={given}" if from_set else f"data.path {given}"
    # Only a path in the config file may have been meant relative to that file.
    not_file = "" if from_set else ", not the config file's"
    raise DataLocationError(f"npz file not found: {data['path']} ({said} is"
                            " relative, so it is read from the current folder"
                            f"{not_file})", "check the path")


def _resume(config_path, overrides, out, resume, print_config,
            quiet) -> dict | None:
    """The arguments of pipeline.fit for a resumed run; None when there is
    nothing to run (--print-config, or a finished run)."""
    from nntrain.config import config_to_yaml, override_setting
    from nntrain.pipeline import output_of
    from nntrain.train import resume as resuming

    given = _resume_config_file(config_path)
    path, checkpoint, notes = resuming.find_checkpoint(resume)
    config = resuming.resumed_config(checkpoint, list(overrides), path)
    # A data.path given now must hold the data, even the one the run recorded.
    data_path_given = override_setting("data.path", overrides) is not None
    data_path = config["data"]["path"] if data_path_given else None
    if data_path:
        config["data"]["path"] = absolute_data_path(data_path)
        _refuse_missing_relative(config["data"], data_path, from_set=True)
    run_dir = resuming.run_directory_of(path)
    if out and Path(out).resolve() != run_dir:
        raise BadInputError(
            f"a resumed run continues in its own run directory ({run_dir}), whose"
            " metrics and best.npz it extends; drop --out, or copy that folder and"
            " resume the copy"
        )
    config["output"] = output_of(config["output"], run_dir)
    differs_note = resuming.differences_note(config_path, given, config)
    if differs_note:
        notes.append(differs_note)
    threads_note = resuming.threads_note(given, config, overrides)
    if threads_note:
        notes.append(f"{config_path} {threads_note}")
    if print_config:
        click.echo(config_to_yaml(config), nl=False)
        return None
    if resuming.is_finished(config, checkpoint):
        _complete_saves(path, checkpoint, notes, quiet)
        if not quiet:
            click.echo(one_line(resuming.finished_note(path, config, checkpoint)))
        return None
    # The run shows the notes, and keeps them in its train.log; it rebuilds a
    # stale best.npz once the data has passed its checks.
    return {"config": config, "run_dir": run_dir, "quiet": quiet,
            "resume": checkpoint, "data_path_given": data_path_given,
            "notes": notes}


def _complete_saves(path, checkpoint, notes: list[str], quiet: bool) -> None:
    """A finished run's resume: show ``notes``, then bring its best.npz up to
    last.npz (resume.complete_saves) and say so before a signal can stop the
    command, since the file is rewritten by then."""
    from nntrain.train import resume as resuming
    from nntrain.train.signals import signals_deferred

    with signals_deferred():
        notes = [*notes, *resuming.complete_saves(path, checkpoint)]
        if not quiet:
            for note in notes:
                click.echo(f"note: {note}", err=True)


def _resume_config_file(config_path) -> dict:
    """CONFIG of a resumed run, read only to note where it differs from the
    checkpoint's config, which the run keeps. It must still be a valid config, but
    for its length: the checkpoint and --set give the resumed run's, so a CONFIG
    that sets neither train.epochs nor train.iterations is read as sanity reads it
    (the notes ignore the length). The run's own config.yaml from an earlier
    nntrain may set train.average or max_norm beside optimizer lbfgs; it is read as
    the run's checkpoint is, without them."""
    from nntrain.config import read_config_file, resolve_config
    from nntrain.errors import ConfigError
    from nntrain.restore import without_lbfgs_ignored

    try:
        return _load_unlimited(config_path, [])
    except ConfigError as error:
        raw = read_config_file(config_path)
        migrated = without_lbfgs_ignored(raw)
        if migrated is raw:
            raise
        try:
            return resolve_config(migrated)
        except ConfigError:
            raise error from None


def _refuse_empty(option: str, value, give: str) -> None:
    """Path("") is the current folder: an empty option must not quietly mean it,
    nor be taken for the option left out."""
    if value == "":
        raise BadInputError(f"{option} is empty; give {give}")


DATA_GIVE = "the file or folder where the data lies now, or leave --data out"


@cli.command("eval", short_help="Measure a checkpoint on a split.")
@click.argument("checkpoint", type=UserPath())
@click.option("--split", type=click.Choice(SPLITS), default="test", show_default=True,
              help="Which split to measure.")
@click.option("--data", "data_path", type=UserPath(),
              help="Where the data lies now, if not where the run found it.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--plots", "plots_dir", type=UserPath(file_okay=False, folder_fix=(
                  "give a folder for the PNGs (made if missing)")),
              help="Also write confusion_matrix.png and worst_examples.png here.")
@click.option("--average", is_flag=True,
              help="Use the averaged weights the run kept (train.average).")
def evaluate(checkpoint, split, data_path, as_json, plots_dir, average):
    """Measure CHECKPOINT on a split: loss, accuracy, per class, confusion matrix.

    CHECKPOINT is a checkpoint file, such as runs/NAME/checkpoints/best.npz; given
    a folder, eval names the checkpoint there to give.
    """
    from nntrain.evaluate import json_text
    from nntrain.restore import evaluate_checkpoint

    _refuse_empty("--data", data_path, DATA_GIVE)
    _refuse_empty("--plots", plots_dir, "a folder path for the PNGs, or leave"
                  " --plots out")
    drawing = _stop_names_plots_written() if plots_dir else contextlib.nullcontext()
    with drawing:
        restored, prepared, scores, metrics = evaluate_checkpoint(
            checkpoint, split, data_path, average)
        y = prepared.splits[split][1]
        result = {"checkpoint": str(checkpoint), "split": split,
                  "weights": "average" if average else "raw", **metrics}
        if plots_dir:
            from nntrain.plots import plot_evaluation

            written = plot_evaluation(scores, y, restored.data["class_names"],
                                      prepared.dataset.split(split)[0],
                                      restored.data["input_shape"], Path(plots_dir))
            result["plots"] = [str(path) for path in written.paths]
    if as_json:
        click.echo(json_text(result))
    else:
        for line in _format_evaluation(result, prepared.dataset.class_names):
            click.echo(line)
        for path in result.get("plots", []):
            click.echo(f"wrote {one_line(str(path))}")


@cli.command(short_help="Draw a run's PNGs (loss, accuracy, ...).")
@click.argument("run_dir", type=UserPath())
@click.option("--out", type=UserPath(file_okay=False, folder_fix=(
                  "give a folder for the PNGs (made if missing)")),
              help="Where to write the PNGs (default: RUN_DIR/plots).")
@click.option("--data", "data_path", type=UserPath(),
              help="Where the data lies now, if not where the run found it.")
def plot(run_dir, out, data_path):
    """Draw a run's PNGs: loss, accuracy, learning rate, update ratios,
    activation histograms, and first-layer weights for image data."""
    import warnings

    from nntrain import plots

    _refuse_empty("--out", out, "a folder path, or leave --out out for"
                  " RUN_DIR/plots")
    _refuse_empty("--data", data_path, DATA_GIVE)
    if data_path is not None and not Path(data_path).exists():
        raise BadInputError(f"--data {data_path} not found; give the file or folder"
                            " where the run's data lies now")
    with warnings.catch_warnings(record=True) as caught, _stop_names_plots_written():
        warnings.simplefilter("always", plots.PlotWarning)
        written = plots.plot_run(run_dir, out, data_path=data_path)
    for warning in caught:
        click.echo(f"warning: {warning.message}", err=True)
    for path in written:
        click.echo(f"wrote {one_line(str(path))}")


@contextlib.contextmanager
def _stop_names_plots_written():
    """A signal that stops the block ends the command with a line that says which
    PNGs it had written (each is written whole or not at all)."""
    from nntrain.plots import recording

    with recording() as written:
        try:
            yield
        except KeyboardInterrupt as error:
            if not written:
                done = "no plots were written"
            else:
                names = [str(path) for path in written]
                shown = ", ".join(names[:-1]) + " and " * (len(names) > 1) + names[-1]
                done = (f"{shown} {'was' if len(names) == 1 else 'were'} written,"
                        " the others were not")
            raise StopRequested(f"{stopped_by(error)}: {done}",
                                stop_exit_code(error)) from None


def _format_evaluation(result: dict, class_names) -> list[str]:
    weights = " (averaged weights)" if result["weights"] == "average" else ""
    lines = [
        f"{result['split']} split of {one_line(str(result['checkpoint']))}{weights}:"
        f" {counted(result['samples'], 'sample')}",
        f"loss      {short_number(result['loss'])}",
        f"accuracy  {result['accuracy']:.4f}",
        "",
        "per-class accuracy:",
    ]
    width = max(len(name) for name in class_names)
    for name, accuracy in zip(class_names, result["per_class_accuracy"]):
        shown = "   n/a" if accuracy is None else f"{accuracy:.4f}"
        lines.append(f"  {name:<{width}}  {shown}")
    return lines + ["", *_confusion_lines(result["confusion_matrix"], class_names)]


# Class names up to this long head the confusion matrix's columns; longer ones
# would widen every column, so the columns then show class indices.
SHORT_CLASS_NAME = 6
# Past this many classes the matrix is too wide to read in a terminal (1,000
# classes would print 4 MB); --json still holds it.
MAX_PRINTED_CLASSES = 30


def _confusion_lines(matrix: list, class_names) -> list[str]:
    """The (C, C) confusion matrix as text, rows and columns labelled alike: by
    class name when every name is short, else by class index, each row's label
    then followed by its name as the legend; past MAX_PRINTED_CLASSES classes,
    a line saying where to find it."""
    if len(matrix) > MAX_PRINTED_CLASSES:
        return [f"confusion matrix: {len(matrix):,} classes, too many to print"
                f" (at most {MAX_PRINTED_CLASSES}); --json holds it"]
    by_name = max(len(name) for name in class_names) <= SHORT_CLASS_NAME
    columns = list(class_names) if by_name else [str(c) for c in range(len(matrix))]
    rows = columns if by_name else [f"{index} {name}" for index, name
                                    in zip(columns, class_names)]
    width = max(len(label) for label in rows)
    cell = max(len(str(value)) for row in matrix for value in row)
    cell = max(cell, *(len(label) for label in columns)) + 1
    how = "" if by_name else ", by class index"
    lines = [f"confusion matrix (rows: true class, columns: predicted{how}):",
             " " * (width + 3) + "".join(f"{label:>{cell}}" for label in columns)]
    for label, row in zip(rows, matrix):
        counts = "".join(f"{value:>{cell}}" for value in row)
        lines.append(f"  {label:<{width}} {counts}")
    return lines


@cli.command(short_help="Predict the classes of samples in a file.")
@click.argument("checkpoint", type=UserPath())
@click.argument("input_path", metavar="INPUT", type=UserPath(
    dir_okay=False, file_fix="give a .npy or .npz file of samples"))
@click.option("--out", "out_path", type=UserPath(
    dir_okay=False, file_fix="give the name of a .csv or .npz file to write"),
              help="Write .csv or .npz here (default: CSV on stdout).")
def predict(checkpoint, input_path, out_path):
    """Predict the class of each sample in INPUT (.npy or .npz) with CHECKPOINT."""
    from nntrain.data.preprocess import TransformOverflow
    from nntrain.evaluate import checked_scores, preprocessing_overflow
    from nntrain.nn.functional import softmax
    from nntrain.predict import read_samples
    from nntrain.restore import restore

    _check_predictions_path(out_path, checkpoint, input_path)
    try:
        restored = restore(checkpoint)
        _refuse_training_data_as_output(out_path, restored.config["data"])
        spec = restored.data
        dtype = np.dtype(restored.config["train"]["dtype"])
        X = read_samples(input_path, spec["num_features"], dtype,
                         spec.get("input_shape"))
        try:
            X = restored.preprocessor.transform(X, dtype, input_path)
        except TransformOverflow as error:
            raise preprocessing_overflow(error, str(input_path)) from None
        scores = checked_scores(restored.model, X, str(input_path), checkpoint)
        probabilities = softmax(scores.astype(np.float64))
        # From the scores, as eval takes them: scores closer than float64 can
        # tell apart after the softmax would tie there and go to the lower class.
        classes = scores.argmax(axis=1)
        if restored.model.loss_name == "svm":
            click.echo("note: this model was trained with the svm loss, whose scores"
                       " are no probabilities; the probabilities written are their"
                       " softmax, which ranks the classes as the scores do", err=True)
        if out_path:
            # The file and the line that says it was written are the command's
            # last moments: a signal from here on is ignored, as one after the
            # command is, rather than reported as a stop of a command whose file
            # is in place.
            command_ended()
            _write_predictions(classes, probabilities, spec["class_names"],
                               out_path)
            # On stderr, as notes are: stdout carries the predictions without
            # --out.
            click.echo(f"wrote {counted(len(classes), 'prediction')} to"
                       f" {one_line(str(out_path))}", err=True)
            return
    except KeyboardInterrupt as error:
        raise StopRequested(f"{stopped_by(error)}: no predictions were written",
                            stop_exit_code(error)) from None
    # On stdout a stop may come with some rows printed: Click's handler says only
    # that the command stopped.
    _write_predictions(classes, probabilities, spec["class_names"], out_path)


def _check_predictions_path(out_path, checkpoint, input_path) -> None:
    """--out must say which of the two formats to write, and must not replace the
    files predict reads or any checkpoint: checked before any work."""
    stdout = "or leave --out out for CSV on stdout"
    _refuse_empty("--out", out_path, f"a .csv or .npz file, {stdout}")
    if not out_path:
        return
    if Path(out_path).suffix.lower() not in (".csv", ".npz"):
        raise BadInputError(f"--out {out_path}: predict writes .csv or .npz files;"
                            f" give a name ending in one of those, {stdout}")
    out = Path(out_path)
    for role, path in (("CHECKPOINT", checkpoint), ("INPUT", input_path)):
        if out.exists() and Path(path).exists() and out.samefile(path):
            raise BadInputError(f"--out {out_path} is the {role} file, which the"
                                " predictions would replace; give another file")
    from nntrain.checkpoint import is_checkpoint

    if out.is_file() and is_checkpoint(out):
        raise BadInputError(f"--out {out_path} is an nntrain checkpoint, which the"
                            " predictions would replace; give another file")
    if out.is_file() and not out.is_symlink() and not out.stat().st_mode & 0o222:
        # Written through a rename, it would be replaced all the same (even by
        # root): a file someone made read-only is taken as one to keep.
        raise BadInputError(f"--out {out_path} is a read-only file; give another"
                            " file, or make it writable (chmod u+w) to replace it")


def _refuse_training_data_as_output(out_path, data: dict) -> None:
    """--out must not replace the data file that the checkpoint was trained on
    (an npz), which eval and resume read."""
    recorded = data.get("path")
    out = Path(out_path) if out_path else None
    if out is None or recorded is None or not out.is_file():
        return
    recorded = Path(recorded)
    if recorded.is_file() and out.samefile(recorded):
        raise BadInputError(f"--out {out_path} is the data file this checkpoint was"
                            " trained on, which the predictions would replace; give"
                            " another file")


def _write_predictions(classes, probabilities, class_names, out_path) -> None:
    try:
        if out_path and Path(out_path).suffix.lower() == ".npz":
            # Into a buffer, then written whole (np.savez would add .npz to a name
            # ending in .NPZ, and a failure must not leave half a file).
            buffer = io.BytesIO()
            np.savez(buffer, classes=classes, probabilities=probabilities)
            write_bytes_atomically(Path(out_path), buffer.getvalue())
        else:
            _write_csv(classes, probabilities, class_names, out_path)
    except OSError as error:
        raise BadInputError(f"cannot write {out_path} ({error.strerror}); check that"
                            " its folder exists and is writable") from None


def _write_csv(classes, probabilities, class_names, out_path) -> None:
    # Built whole, then written through a temporary file: a failure leaves no half
    # file, and a symbolic link at --out is replaced, not written through.
    header = ["index", "class", "name"] + [f"p_{name}" for name in class_names]
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(header)
    for index, (label, row) in enumerate(zip(classes, probabilities)):
        writer.writerow([index, int(label), class_names[label]]
                        + [f"{p:.6f}" for p in row])
    if out_path:
        write_bytes_atomically(Path(out_path), text.getvalue().encode("utf-8"))
    else:
        sys.stdout.write(text.getvalue())


@cli.command()
@click.argument("config_path", metavar="[CONFIG]", required=False,
                type=UserPath(dir_okay=False, file_fix=CONFIG_FILE_FIX))
@overrides_option("model.l2=0.01")
@click.option("--samples", default=8, show_default=True, type=click.IntRange(1),
              help="Samples in the batch the check runs on: training samples of"
                   " CONFIG, else random ones (batch norm needs 2 or more).")
@click.option("--layer", metavar="NAME",
              help="Check one layer only: with CONFIG, the parameters of the layer"
                   " so named (affine1); without, the library's layer of that type"
                   " (maxout), its input and its parameters.")
def gradcheck(config_path, overrides, samples, layer):
    """Compare analytic gradients with numeric ones, in float64.

    With CONFIG: every parameter of its network on a small batch of its data.
    Without: every layer and loss of the library on random inputs.
    Exits 1 when any array fails; thresholds are printed below the table.
    """
    from nntrain.errors import GradientCheckError
    from nntrain.gradcheck import format_report
    from nntrain.random import generator

    _refuse_empty("--layer", layer, "a layer name, or leave --layer out")
    rng = generator(0, 99)
    if config_path is None:
        if overrides:
            raise BadInputError("--set needs a CONFIG to apply to")
        checks, title = _check_library(samples, layer, rng)
    else:
        checks, title = _check_config(config_path, overrides, samples, layer, rng)
    click.echo(f"gradient check: {title}")
    for line in format_report(checks):
        click.echo(line)
    if not all(check.passed for check in checks):
        raise GradientCheckError("the gradient check failed (see the table above)")
    if not any(check.measured for check in checks):
        raise GradientCheckError("the gradient check measured nothing: every probe"
                                 " crossed a kink (see the table above)")


# Random samples for the library's check, at most: the numeric gradient takes two
# passes per probed entry, and a batch of a billion rows would not fit in memory.
MAX_RANDOM_SAMPLES = 10_000


def _check_library(samples, layer, rng):
    from nntrain.gradcheck import check_library
    from nntrain.nn.layers import LAYERS

    if samples > MAX_RANDOM_SAMPLES:
        raise BadInputError(f"--samples {samples}: the library's check draws at most"
                            f" {MAX_RANDOM_SAMPLES:,} random samples; give fewer (a"
                            " few already test every path)")
    if layer is not None:
        _refuse_unknown_layer(layer, list(LAYERS), "the library")
    if layer in (None, "batchnorm"):
        _refuse_one_sample_batchnorm(samples)
    checks = check_library(rng, samples, layer)
    what = ("every layer and loss of the library" if layer is None else
            f"the library's {layer} layer")
    return checks, f"{what}, on {counted(samples, 'random sample')}"


def _note_fewer_samples(samples: int, available: int, config_path) -> None:
    """Say on stderr that --samples asked for more than the training split holds."""
    if available < samples:
        click.echo(f"note: --samples {samples} asks for more than the training split"
                   f" of {config_path} holds; the check uses all {available}",
                   err=True)


def _check_config(config_path, overrides, samples, layer, rng):
    from nntrain.gradcheck import check_model
    from nntrain.nn.model import build_model
    from nntrain.prepare import prepare_data

    config = _load_unlimited(config_path, [*overrides, "train.dtype=float64"])
    prepared = prepare_data(config, splits=("train",))
    X, y = prepared.splits["train"]
    rows = rng.choice(len(X), size=min(samples, len(X)), replace=False)
    dataset = prepared.dataset
    # PCA and whitening narrow the samples: the model sees the transformed width.
    input_width = prepared.preprocessor.output_width(dataset.num_features)
    model = build_model(config, input_width, dataset.num_classes)
    _shift_off_zero(model, rng)
    if layer is not None:
        # Only layers with parameters can be checked, so only those are offered.
        checked = [each.name for each in model.layers if each.params]
        if layer in (each.name for each in model.layers) and layer not in checked:
            raise BadInputError(f"--layer {layer} has no parameters to check; give"
                                f" one that has: {', '.join(checked)}")
        _refuse_unknown_layer(layer, checked, config_path,
                              "its layers with parameters")
    if any(each.kind == "batchnorm" for each in model.layers):
        _refuse_one_sample_training_split(config_path, len(X), samples,
                                          len(prepared.dataset.y_val))
        _refuse_one_sample_batchnorm(len(rows))
    _note_fewer_samples(samples, len(X), config_path)
    title = (f"{config_path} ({config['data']['name']},"
             f" {counted(len(rows), 'sample')}{_penalties(config, model)}, float64)")
    try:
        return check_model(model, X[rows], y[rows], rng, layer), title
    except FloatingPointError:
        raise _overflow_error(config_path, config, X, model) from None


def _shift_off_zero(model, rng) -> None:
    """Draw the model's biases and batch norm's shifts, which start at 0, small
    and non-zero (std 0.1): with zero biases, a sample whose every input to a
    layer dropout dropped sits exactly on the next ReLU's kink, and so does every
    probe of that layer's bias, which then measures nothing."""
    for layer in model.layers:
        for key in ("b", "beta"):
            if key in layer.params:
                layer.params[key][...] = rng.normal(0.0, 0.1, layer.params[key].shape)


def _overflow_error(config_path, config, X, model) -> DataError:
    """Why the check overflowed float64, and the fix: an overflow measures no
    gradient, so it must not be reported as one that disagrees."""
    scale = float(np.abs(X).max())
    steps = [step if isinstance(step, str) else next(iter(step))
             for step in config["data"]["preprocess"]]
    seen = f" (after data.preprocess [{', '.join(steps)}])" if steps else ""
    problem = (f"the gradient check overflows float64 on {config_path}, so it"
               " measures no gradient")
    from nntrain.train.checks import huge_penalty

    penalty = huge_penalty(model)
    if penalty:
        return DataError(f"{problem}: {penalty}")
    # Inputs up to 1e3 (pixels, counts, standardized data) keep a network with
    # sane starting weights far from float64's 1e308: the weights are to blame.
    if scale < SANE_DATA_SCALE:
        init = config["model"]["init"]
        check = ("model.init_std" if init == "small" else
                 f"the layers' init (model.init is {init})")
        return DataError(f"{problem}; its data is no larger than {scale:.3g}{seen},"
                         f" so the network's starting weights are too large: check"
                         f" {check}")
    # Not data.preprocess scale: its statistics square values this large, and
    # overflow as well.
    fix = f"divide the data by a power of ten such as 1e{math.ceil(math.log10(scale))}"
    return DataError(f"{problem}: its data reaches {scale:.3g}{seen}; {fix}")


def _refuse_unknown_layer(layer, names, owner, listed="its layers") -> None:
    """Refuse a --layer not among ``names``, which the message lists as
    ``listed``, with the closest of them."""
    from nntrain.config_checks import close_match

    if layer in names:
        return
    close = close_match(layer, names)
    hint = f"; did you mean '{close}'?" if close else ""
    raise BadInputError(f"--layer {layer}: {owner} has no layer of that name"
                        f" ({listed}: {', '.join(names)}{hint})")


def _refuse_one_sample_batchnorm(samples) -> None:
    # Batch norm of one sample outputs beta whatever its input: every gradient
    # through it is 0, so the check would measure nothing there and pass.
    if samples < 2:
        raise BadInputError(f"batch norm needs at least 2 samples in the gradient"
                            f" check, not {samples}; give --samples 2 or more")


def _refuse_one_sample_training_split(config_path, num_train: int, samples: int,
                                      num_val: int) -> None:
    """Batch norm on one sample (see below), when the training split is what
    limits the batch: no --samples can help then."""
    if num_train >= 2:
        return
    raise DataError(f"batch norm needs at least 2 samples in the gradient check, but"
                    f" the training split of {config_path} holds only {num_train}"
                    f" (--samples asks for {samples});"
                    f" {_more_training_samples(num_val)}")


def _more_training_samples(num_val: int) -> str:
    """How to give a config's training split more samples."""
    fix = "give its data more training samples"
    if num_val >= 2:
        fix += f", or hold out fewer of its samples for validation (now {num_val})"
    return fix


def _penalties(config, model) -> str:
    """", l2=0.001" for the title (a range when layers set their own), and the
    L1 strength when any weight has one."""
    l2 = sorted({penalty.l2 for penalty in model.penalties}) or [config["model"]["l2"]]
    text = f", l2={_strengths(l2)}"
    l1 = sorted({penalty.l1 for penalty in model.penalties if penalty.l1})
    if l1:
        text += f", l1={_strengths(l1)}"
    return text


def _strengths(values: list[float]) -> str:
    """"0.001", or "0 to 0.5" for sorted ``values`` that differ."""
    if len(values) == 1:
        return f"{values[0]:g}"
    return f"{values[0]:g} to {values[-1]:g}"


@cli.command(short_help="Check that the network can overfit.")
@click.argument("config_path", metavar="CONFIG",
                type=UserPath(dir_okay=False, file_fix=CONFIG_FILE_FIX))
@overrides_option("optimizer.lr=0.01")
# Not an IntRange: a count below 2 gets its own message, which says why.
@click.option("--samples", default=50, type=int, metavar="INTEGER RANGE",
              help="Training samples to overfit (the first ones of the"
                   " training split).  [default: 50; x>=2]")
@click.option("--max-iterations", default=2000, show_default=True,
              type=click.IntRange(1), help="Updates allowed before giving up.")
def sanity(config_path, overrides, samples, max_iterations):
    """Check that the network can overfit a few samples (100% train accuracy).

    Trains on the first --samples training samples as one batch, with L2, L1,
    max-norm and dropout off; exits 1 if 100% is not reached.
    """
    from nntrain.errors import TrainingError
    from nntrain.prepare import prepare_data
    from nntrain.train.sanity import overfit

    if samples < 2:
        # Refused here rather than by Click's range, to say why 2 and how.
        why = " (one is fitted by the biases alone)" if samples == 1 else ""
        raise BadInputError(f"the sanity check needs at least 2 training samples,"
                            f" not {samples}{why}; give --samples 2 or more")
    config = _load_unlimited(config_path, overrides)
    prepared = prepare_data(config, splits=("train",))
    X, y = prepared.splits["train"]
    num_train = len(y)
    X, y = X[:samples], y[:samples]
    _refuse_trivial_sanity(config_path, y, num_train, len(prepared.dataset.y_val),
                           prepared.dataset.class_names)
    _note_fewer_samples(samples, num_train, config_path)
    result = overfit(config, X, y, prepared.dataset.num_classes, max_iterations)
    samples, updates = (counted(result.samples, "sample"),
                        counted(result.iterations, "update"))
    click.echo(f"sanity check: {counted(result.samples, 'training sample')}, no"
               " regularization"
               f" or dropout, {config['optimizer']['name']}")
    if not np.isfinite(result.loss):
        raise TrainingError(
            f"the loss became {result.loss} after {updates} on {samples}: lower"
            " optimizer.lr, or check the gradients"
            " (nntrain gradcheck)"
        )
    if not result.reached:
        raise TrainingError(
            f"the network did not reach 100% training accuracy on {samples} in"
            f" {updates} (accuracy {result.accuracy:.4f},"
            f" loss {result.loss:.4g}): check the learning rate, the loss and the"
            " gradients (nntrain gradcheck)"
        )
    click.echo(f"passed: 100% training accuracy after {updates}"
               f" (loss {result.loss:.4g})")


def _refuse_trivial_sanity(config_path, y, num_train: int, num_val: int,
                           class_names) -> None:
    """Refuse sanity samples that any network fits by its biases alone: one
    sample, or several of one class. Reaching 100% on them shows nothing."""
    if len(y) < 2:
        raise DataError(f"the sanity check needs at least 2 training samples, but"
                        f" the training split of {config_path} holds only {len(y)}"
                        f" (one is fitted by the biases alone);"
                        f" {_more_training_samples(num_val)}")
    if np.all(y == y[0]):
        # More samples help only while the split has more to give.
        fix = (f"give --samples more (the split holds {num_train}), or shuffle the"
               " data's training samples" if len(y) < num_train else
               f"the split holds no other; {_more_training_samples(num_val)}, of"
               " other classes")
        raise DataError(f"the {len(y)} sanity samples (the first of the training"
                        f" split of {config_path}) are all of class"
                        f" {class_names[y[0]]}, which the biases alone fit; {fix}")


@cli.group(cls=Group)
def data():
    """Get datasets: nntrain data download NAME."""


@data.command(short_help="Fetch a dataset's files and check their hashes.")
@click.argument("name", metavar="NAME", type=click.Choice(["fashion-mnist", "mnist"]))
@click.option("--dir", "folder", type=UserPath(file_okay=False, folder_fix=(
                  "give a folder for the dataset's files (made if missing)")),
              help="Where to put the files (default: $NNTRAIN_DATA/NAME, else"
                   " ~/.cache/nntrain/NAME).")
@click.option("--mirror", metavar="URL",
              help="Base URL to fetch from instead of the official one (http, https"
                   " or file://).")
def download(name, folder, mirror):
    """Fetch a dataset's official files and check them against known hashes.

    NAME is fashion-mnist or mnist.
    """
    from nntrain.data.download import STOPPED_NOTE, default_cache_dir
    from nntrain.data.download import download as fetch

    fetched = []  # per file, whether this run fetched it
    try:
        # Folders made for a download refused or stopped before its first file
        # are removed again.
        with folders_removed_on_error(folder or default_cache_dir(name)):
            paths = fetch(name, folder, base_url=mirror,
                          on_file=lambda path, now: fetched.append(now))
    except KeyboardInterrupt as error:
        # SIGTERM's StopRequested says this already; a Ctrl-C left the same files.
        raise StopRequested(f"{stopped_by(error)}; {STOPPED_NOTE}",
                            stop_exit_code(error)) from None
    # The counts tell a rerun that found every file from a first download.
    folder = one_line(str(paths[0].parent))
    click.echo(f"{name}: {len(paths)} files verified in {folder}"
               f" ({sum(fetched)} fetched, {len(paths) - sum(fetched)} already"
               " there)")


def _register_study_commands() -> None:
    from nntrain.cli_search import ensemble, search

    cli.add_command(search)
    cli.add_command(ensemble)


_register_study_commands()


def main():
    cli(prog_name="nntrain")
