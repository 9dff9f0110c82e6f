"""The commands ``nntrain search`` and ``nntrain ensemble`` (thin: parse, call, print).

cli.py registers them on the main group (``cli.add_command(search)``,
``cli.add_command(ensemble)``), whose Group turns nntrain's errors into one line and
an exit status. Progress goes to stderr, results to stdout.
"""

import sys
from pathlib import Path

import click

from nntrain.cli_paths import CONFIG_FILE_FIX, UserPath
from nntrain.errors import BadInputError, DataLocationError, one_line
from nntrain.train.checks import usable_cores
from nntrain.train.report import counted

SPLITS = ("test", "val", "train")
MAX_PORT = 65535
# search has no --data: how --ensemble's members find data that is not where the
# study trained (when it is missing, when it is other data).
ENSEMBLE_DATA_FIX = (
    "if the data moved, put it back where the study's data.path says, or ensemble"
    " the trials' checkpoints/best.npz with: nntrain ensemble CKPT... --data PATH",
    "put the data the study trained on back where its data.path says, or ensemble"
    " the trials' checkpoints/best.npz with: nntrain ensemble CKPT... --data PATH"
    " pointing at that data")

set_option = click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE",
    help="Override a config key (dotted path, YAML value), e.g. search.trials=5.",
)


class _TrialProgress:
    """One line per finished trial, and a tqdm bar of finished trials when stderr
    is a terminal."""

    def __init__(self, total: int, initial: int):
        self.bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, unit="trial",
                            file=sys.stderr, dynamic_ncols=True, leave=False)

    def note(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            click.echo(text, err=True)

    def trial_done(self, row: dict) -> None:
        self.note(_describe(row))
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _describe(row: dict) -> str:
    from nntrain.search.report import short_seconds
    from nntrain.train.report import short_number

    where = f"trial {row['trial']} (round {row['round']})"
    if row["status"] != "ok":
        return f"{where}: {row['status']}: {row['reason']}"
    metric = short_number(row["metric"])
    return (f"{where}: ok, {metric} at epoch {row['best_epoch']} of {row['epochs']},"
            f" {short_seconds(row['seconds'])} s")


def _threads_warning(config: dict, spec, workers: int) -> str | None:
    """Each worker gets one BLAS thread, unless train.threads sets more: warn
    when the workers' threads together outnumber the cores."""
    threads = config["train"]["threads"]
    searched = any(param.key == "train.threads" for param in spec.params)
    cores = usable_cores()
    if not threads or searched or threads * workers <= cores:
        return None
    return (f"train.threads is {threads}, so {workers} workers run"
            f" {threads * workers} BLAS threads on {cores}"
            f" core{'s' if cores > 1 else ''}; set train.threads to null (one BLAS"
            " thread per worker) or use fewer --workers")


def _check_scheduler_address(address: str) -> None:
    """Refuse, before a study folder is made, an address Dask could not dial."""
    scheme, _, rest = address.rpartition("://")
    host, _, port = rest.rpartition(":")
    # isdigit alone passes "²" and other scripts' digits, which int() refuses.
    numeric = port.isascii() and port.isdigit()
    if scheme == "tls":
        raise BadInputError(f"--scheduler {address!r}: nntrain dials tcp:// schedulers"
                            " only (tls:// needs certificates that search has no"
                            " option for); write tcp://HOST:PORT")
    if scheme not in ("tcp", "") or not host or not numeric:
        raise BadInputError(f"--scheduler {address!r} is not a Dask scheduler"
                            " address; write tcp://HOST:PORT (as dask-scheduler"
                            " prints it)")
    if not 1 <= int(port) <= MAX_PORT:
        raise BadInputError(f"--scheduler {address!r} has a bad port ({port}, not in"
                            f" 1..{MAX_PORT}); write tcp://HOST:PORT with the port"
                            " dask-scheduler prints")


def _check_data_found(config: dict, spec) -> None:
    """Find the study's data once before any trial: unless data.name or data.path
    is searched, every trial looks in this same place, and data that is not there
    would fail each of them, as results a rerun keeps. (On a Dask cluster the data
    is where the workers are: each trial finds it there.)"""
    from nntrain.data.datasets import check_location

    if any(param.key in ("data", "data.name", "data.path") for param in spec.params):
        return
    check_location(config["data"])


def _default_dir(config: dict, config_path) -> Path:
    if config["output"]:
        return Path(config["output"])
    return Path("runs") / Path(config_path).stem


@click.command(short_help="Random hyperparameter search.")
@click.argument("config_path", metavar="CONFIG",
                type=UserPath(dir_okay=False, file_fix=CONFIG_FILE_FIX))
@set_option
@click.option("--out", type=UserPath(file_okay=False, folder_fix=(
                  "give a new or empty folder, or a study's own folder to go on")),
              help="Study folder (default: the config's output, else runs/<stem>).")
@click.option("--workers", type=click.IntRange(1),
              help="Worker processes on this machine (default: the cores this"
                   " process may use).")
@click.option("--scheduler", metavar="tcp://HOST:PORT",
              help="Run the trials on this Dask cluster instead (pip install"
                   " 'nntrain[dask]'; its workers must see DIR and the data).")
@click.option("--ensemble", "ensemble_size", type=click.IntRange(1), metavar="K",
              help="Then ensemble the best.npz of the K best trials on the test"
                   " split.")
def search(config_path, overrides, out, workers, scheduler, ensemble_size):
    """Random search over the hyperparameters in CONFIG's search: section.

    Each trial is a run directory DIR/trial-NNNN. The study writes DIR/study.json
    (the plan), DIR/results.csv and DIR/search.png, and prints the trials best
    first. Rerunning the same study runs only the trials without a result.
    """
    from nntrain import search as searching

    if workers and scheduler:
        raise BadInputError("--workers runs the trials on this machine and"
                            " --scheduler on a Dask cluster: give one of them")
    if out == "":
        raise BadInputError("--out is empty; give a folder path")
    if scheduler == "":
        raise BadInputError("--scheduler is empty; give tcp://HOST:PORT, or leave it"
                            " out to run the trials on this machine")
    if scheduler:
        _check_scheduler_address(scheduler)
        searching.require_dask()
    config, spec = searching.load_search_config(config_path, overrides)
    folder = Path(out) if out else _default_dir(config, config_path)
    planned = (folder / searching.PLAN_FILE).exists()
    if not scheduler and not planned:
        _check_data_found(config, spec)
    # Locked until the command ends, so a second search of the study is refused
    # at once instead of running the trials this one runs.
    with searching.Study(folder, config, spec) as study:
        rows = _run_study(study, planned, workers, scheduler)
        _report_study(study, rows, ensemble_size)


def _run_study(study, planned: bool, workers, scheduler) -> list[dict]:
    from nntrain import search as searching

    config, spec = study.config, study.spec
    done = study.finished()
    if not scheduler and planned and done < spec.trials:
        _check_data_found(config, spec)  # a finished study reads no data
    if not scheduler:
        workers = workers or usable_cores()
    to_run = spec.trials - done
    started = None if scheduler else max(1, min(workers, _largest_batch(spec, done)))
    where = (f"the Dask cluster at {scheduler}" if scheduler
             else f"{started} worker process" + ("" if started == 1 else "es"))
    click.echo(f"study {one_line(str(study.out))}: {counted(spec.trials, 'trial')},"
               f" {to_run} to run on {where}", err=True)
    found = [searching.mode_warning(spec),
             None if scheduler else _threads_warning(config, spec, started),
             None if scheduler else _workers_warning(started)]
    for warning in filter(None, found):
        click.echo(f"warning: {warning}", err=True)
    progress = _TrialProgress(spec.trials, done)
    try:
        return study.run(workers, scheduler, on_trial=progress.trial_done,
                         on_note=progress.note)
    finally:
        progress.close()


def _largest_batch(spec, done: int) -> int:
    """The most trials that can run at once from here: those left in the round in
    progress, or a later round's (a round is planned once the one before ends, and
    no more worker processes start than a round has trials to run)."""
    batches, planned = [], 0
    for size in spec.round_sizes():
        planned += size
        if planned > done:
            batches.append(min(size, planned - done))
    return max(batches, default=0)


def _workers_warning(started: int) -> str | None:
    """A warning when more worker processes start than there are cores: they take
    turns on them, each trial slower and the study no faster."""
    cores = usable_cores()
    if started <= cores:
        return None
    return (f"{started} worker processes share the {cores} cores this machine lets"
            f" nntrain use, so each trial runs slower and the study no faster; give"
            f" --workers {cores} or fewer")


def _report_study(study, rows: list[dict], ensemble_size) -> None:
    from nntrain import search as searching

    spec = study.spec
    for line in searching.format_table(rows, spec):
        click.echo(line)
    click.echo(f"wrote {one_line(str(study.out / searching.CSV_FILE))}")
    _plot_study(searching, rows, spec, study.out / searching.PLOT_FILE)
    if ensemble_size:
        _ensemble_best(study, ensemble_size)
    if not any(row["status"] == "ok" for row in rows):
        from nntrain.errors import TrainingError

        raise TrainingError("no trial of the study finished; the table above says why"
                            " each one failed")


def _plot_study(searching, rows: list[dict], spec, path: Path) -> None:
    """search.png, or a note saying why it is left out and what mends that."""
    from nntrain.plots import PlotsUnavailable, require_matplotlib

    try:
        require_matplotlib()
    except PlotsUnavailable as error:
        click.echo(f"note: {path.name} skipped, matplotlib {error.problem}"
                   f" ({error.command})", err=True)
        return
    searching.plot_study(rows, spec, path)
    click.echo(f"wrote {one_line(str(path))}")


def _ensemble_best(study, count: int) -> None:
    from nntrain.ensemble import ensemble as average
    from nntrain.ensemble import format_report

    paths = study.best_checkpoints(
        count, on_note=lambda text: click.echo(f"note: {text}", err=True))
    finished = sum(row["status"] == "ok" for row in study.rows)
    if not paths and finished:
        from nntrain.errors import TrainingError

        raise TrainingError(f"--ensemble {count}: none of the {finished} finished"
                            " trials has its best.npz any more, so there is nothing"
                            " to ensemble (see the notes above)")
    if not paths:
        click.echo("note: no trial finished, so there is nothing to ensemble",
                   err=True)
        return
    if len(paths) < count:
        click.echo(f"note: --ensemble {count} asked for the {count} best trials, but"
                   f" only {len(paths)} finished with a best.npz; ensembling those",
                   err=True)
    try:
        result = average(paths, "test")
    except DataLocationError as error:
        raise error.with_fix(*ENSEMBLE_DATA_FIX) from None
    for line in format_report(result):
        click.echo(line)


@click.command(short_help="Average checkpoints' class probabilities.")
@click.argument("checkpoints", metavar="CKPT...", nargs=-1, required=True,
                type=UserPath())
@click.option("--split", type=click.Choice(SPLITS), default="test", show_default=True,
              help="Which split to measure.")
@click.option("--data", "data_path", type=UserPath(),
              help="Where the data lies now, if not where the runs found it.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def ensemble(checkpoints, split, data_path, as_json):
    """Average the class probabilities of the checkpoints CKPT... on a split.

    Each member applies its own saved preprocessing; members trained on other
    data are refused. Prints each member's accuracy and loss beside the
    ensemble's.
    """
    from nntrain.ensemble import ensemble as average
    from nntrain.ensemble import format_report
    from nntrain.evaluate import json_text

    if data_path == "":
        raise BadInputError("--data is empty; give the file or folder where the data"
                            " lies now, or leave --data out")
    result = average(list(checkpoints), split, data_path)
    if len(checkpoints) == 1:
        # Not an error (the member's numbers are right), but no ensemble either;
        # said once the checkpoint has loaded, so that a refusal stays one line.
        click.echo("note: one checkpoint was given, so it is evaluated alone (its"
                   " ensemble is itself); give two or more checkpoints to ensemble"
                   " them", err=True)
    if as_json:
        click.echo(json_text(result.to_json()))
    else:
        for line in format_report(result):
            click.echo(line)
