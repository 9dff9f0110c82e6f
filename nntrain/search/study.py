"""A study folder: its plan (study.json), one row per planned trial, results.csv,
and the checks that a folder holds the study asked for."""

import csv
import io
import json
import math
import os
import weakref
from dataclasses import replace
from pathlib import Path

from nntrain.arguments import path_argument
from nntrain.checkpoint import load_checkpoint
from nntrain.config import MONITORS, resolve_config
from nntrain.errors import (
    CheckpointError,
    ConfigError,
    FolderLockedError,
    RunDirectoryError,
    StopRequested,
    TrainingError,
)
from nntrain.fileio import (
    STUDY_FOLDER_ROOM,
    make_output_folder,
    path_too_long,
    shortened_path,
)
from nntrain.search.report import short_value
from nntrain.search.space import (
    SEARCHED_DATA_KEYS,
    Param,
    SearchSpec,
    monitor_mode,
    narrow_bounds,
    rank,
    sample,
    trial_config,
    unit_draws,
    with_data_path,
)
from nntrain.search.trials import (
    BUSY,
    FINISHED,
    RESULT_FILE,
    read_result,
    run_locally,
    run_on_dask,
    run_trial,
)
from nntrain.train.checks import usable_cores
from nntrain.train.rundir import lock_folder, write_text_atomically
from nntrain.train.signals import StopFlag

PLAN_FILE = "study.json"
CSV_FILE = "results.csv"
PLAN_FORMAT = 1
# The study folders that open Studies of this process hold locked: a second Study
# of one is refused with words of its own (flock alone would blame another
# process, and waiting for it would not help).
_LOCKED_HERE: set[Path] = set()


def _unlock(folder: Path, descriptor: int) -> None:
    _LOCKED_HERE.discard(folder)
    os.close(descriptor)


def refuse_too_deep(out) -> None:
    """RunDirectoryError when the study folder ``out`` is too deep for the files
    of its trials, before anything is read or written there."""
    problem = path_too_long(out, STUDY_FOLDER_ROOM)
    if problem:
        raise RunDirectoryError(f"study folder {shortened_path(out)}: {problem};"
                                " choose a shorter one with --out")


class Study:
    """A study folder: its plan (study.json) and one row per planned trial.

    A row: trial, round, status (ok | failed | stopped | busy | pending), values
    {key: value}, metric, best_epoch, epochs, seconds, reason.

    Opening a folder that holds a study.json continues that study, which must be the
    one ``config`` and ``spec`` plan; a non-empty folder without one is refused.
    The Study holds a lock on the folder until ``close()``, the end of a ``with``
    block, a ``run()`` that raises, or until it is collected: another Study of the
    same folder, in any process, is refused with a FolderLockedError meanwhile, so
    two searches never run, plan or rank one study's trials at once.
    """

    def __init__(self, out, config: dict, spec: SearchSpec):
        # Checked before the folder is touched: a plan written with them could
        # never be opened again.
        if not isinstance(config, dict):
            raise TypeError(f"config is {type(config).__name__}; give the study's"
                            " config, as load_search_config returns it")
        if not isinstance(spec, SearchSpec):
            raise TypeError(f"spec is {type(spec).__name__}; give the SearchSpec"
                            " that load_search_config returns")
        # A leading ~ expanded, as fit does for run_dir: a folder named ~ in the
        # current one is a trap for a later rm -rf ~.
        self.out = Path(path_argument("out", out, "the study folder's path, a str"
                                      " or pathlib.Path")).resolve()
        self.config, self.spec = config, spec
        self._release = None
        self._closed = False
        try:
            self.plan = self._open()
            self._rows = {}
            for trial in self.plan["trials"]:
                self._add_row(trial)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Release the study folder's lock; the Study runs no more."""
        self._closed = True
        if self._release is not None:
            self._release()
            self._release = None

    def __enter__(self) -> "Study":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _lock(self) -> None:
        if self.out in _LOCKED_HERE:
            raise FolderLockedError(
                f"a Study of {self.out} is still open in this process; close it"
                " first (study.close(), or open it in a with block)")
        try:
            descriptor = lock_folder(self.out)
        except FolderLockedError:
            raise FolderLockedError(
                f"another nntrain search is running on the study in {self.out}; wait"
                " for it to end, then run this command again") from None
        if descriptor is not None:
            # A Study dropped without close() (a script's Study(...).run())
            # releases the lock when it is collected.
            _LOCKED_HERE.add(self.out)
            self._release = weakref.finalize(self, _unlock, self.out, descriptor)

    def _open(self) -> dict:
        path = self.out / PLAN_FILE
        refuse_too_deep(self.out)
        if self.out.is_file():
            # The CLI refuses an --out that is a file; this is the config's output.
            raise RunDirectoryError(f"{self.out} is a file, not a folder; choose a"
                                    " folder for the study with --out or the"
                                    " config's output")
        if not self.out.is_dir():
            make_output_folder(self.out, "--out")
        # Before the plan is read or written: a plan read, or rows, that another
        # search changed meanwhile would run finished trials again and plan a
        # round twice.
        self._lock()
        if not path.exists():
            if any(self.out.iterdir()):
                raise self._not_a_study()
            fresh = json.loads(json.dumps(self._new_plan()))
            self._save(fresh)
            return fresh
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise RunDirectoryError(f"cannot read {path} ({error}); give --out another"
                                    " folder") from None
        self._keep_planned_monitor(saved)
        fresh = json.loads(json.dumps(self._new_plan()))
        _check_same_plan(saved, fresh, path)
        _check_planned_trials(saved, self.spec, path)
        return saved

    def _not_a_study(self) -> RunDirectoryError:
        return RunDirectoryError(
            f"{self.out} is not an empty folder and holds no {PLAN_FILE}; give --out"
            " a new or empty folder for the study")

    def _keep_planned_monitor(self, saved) -> None:
        """Where the config leaves train.monitor to the study, go on with the
        monitor the plan holds: a study planned before trials monitored
        search.metric (or while the config set train.monitor) keeps the one its
        finished trials ran with. A plan that holds no valid config is refused
        later, by _check_same_plan."""
        if not (self.spec.monitor_from_metric and isinstance(saved, dict)):
            return
        try:
            planned = resolve_config(saved.get("config"))["train"]["monitor"]
        except ConfigError:
            return
        self.config = {**self.config,
                       "train": {**self.config["train"], "monitor": planned}}

    def _new_plan(self) -> dict:
        plan = {"format": PLAN_FORMAT, "config": self.config,
                "search": self.spec.to_json(), "rounds": [], "trials": []}
        self._plan_round(plan, {p.key: list(p.bounds) for p in self.spec.params})
        return plan

    def _plan_round(self, plan: dict, bounds: dict) -> None:
        number = len(plan["rounds"]) + 1
        sizes = self.spec.round_sizes()
        start = sum(sizes[:number - 1])
        draws = unit_draws(self.spec)[start:start + sizes[number - 1]]
        plan["rounds"].append({"round": number, "bounds": bounds})
        plan["trials"] += [{"trial": start + i, "round": number, "values": values}
                           for i, values in enumerate(sample(self.spec.params, draws,
                                                             bounds))]

    def _save(self, plan: dict) -> None:
        text = json.dumps(plan, indent=1) + "\n"
        write_text_atomically(self.out / PLAN_FILE, text)

    def trial_dir(self, trial: int) -> Path:
        return self.out / f"trial-{trial:04d}"

    def _add_row(self, trial: dict) -> None:
        row = {"trial": trial["trial"], "round": trial["round"], "status": "pending",
               "values": trial["values"], "metric": None, "best_epoch": None,
               "epochs": None, "seconds": None, "reason": ""}
        result = read_result(self.trial_dir(trial["trial"]))
        self._rows[trial["trial"]] = _merged(row, result or {})

    @property
    def rows(self) -> list[dict]:
        """Every planned trial's row, best first."""
        return rank(self._rows.values(), self.spec.mode)

    def finished(self) -> int:
        return sum(row["status"] in FINISHED for row in self._rows.values())

    def run(self, workers: int | None = None, scheduler: str | None = None,
            on_trial=None, on_note=None, runner=run_trial) -> list[dict]:
        """Run every trial without a result, round by round, then return the rows.

        ``workers``: processes on this machine (default: the usable cores);
        ``scheduler``: a Dask scheduler address instead. ``on_trial(row)`` is called
        as each trial ends, ``on_note(text)`` when a round is planned; ``runner``
        is the function each trial runs (tests replace it). The worker processes
        are spawned, so a script that calls this must guard its entry point with
        ``if __name__ == "__main__":``, as multiprocessing asks. A run that raises
        (a stop, a round left unfinished) releases the folder's lock: the error's
        traceback keeps this Study alive, and a caller that catches it may open
        the study again."""
        if self._closed:
            raise RuntimeError(f"this Study of {self.out} is closed; open the study"
                               " again with a new Study to run it")
        if workers is not None and (isinstance(workers, bool)
                                    or not isinstance(workers, int) or workers < 1):
            raise ValueError(f"workers must be an int >= 1 or None (the usable"
                             f" cores), not {workers!r}")
        try:
            return self._run(workers or usable_cores(), scheduler, on_trial, on_note,
                             runner)
        except BaseException:
            self.close()
            raise

    def _run(self, workers, scheduler, on_trial, on_note, runner) -> list[dict]:
        with StopFlag() as stop:
            try:
                for number in range(1, self.spec.rounds + 1):
                    if stop.signum is not None:
                        break
                    if number > len(self.plan["rounds"]):
                        self._plan_next_round(on_note)
                    self._run_round(number, workers, scheduler, runner, stop, on_trial)
                    if stop.signum is None:
                        self._check_round_has_results(number)
            finally:
                # Trials that ended while the study was being stopped (by a second
                # signal) have written a result that no outcome brought back.
                self._read_new_results()
                self.write_results()
        if stop.signum is not None:
            saved = sum(read_result(self.trial_dir(trial)) is not None
                        for trial in self._rows)
            verb = "has" if saved == 1 else "have"
            raise StopRequested(
                f"stopped by {stop.name}: {saved} of {self.spec.trials} trials"
                f" {verb} a result (in {self.out / CSV_FILE}); rerun the same"
                " command to run the rest", stop.exit_code)
        return self.rows

    def _run_round(self, number, workers, scheduler, runner, stop, on_trial):
        tasks = self._tasks(number)
        if not tasks:
            return
        outcomes = (run_on_dask(tasks, scheduler, runner, stop) if scheduler
                    else run_locally(tasks, workers, runner, stop))
        for task, result in outcomes:
            row = self._rows[task["trial"]]
            self._rows[task["trial"]] = row = _merged(row, result)
            self.write_results()
            if on_trial:
                on_trial(row)

    def _check_round_has_results(self, number: int) -> None:
        """Refuse to plan on from round ``number`` while a trial of it lacks its
        result.json (its worker died, something stood in its folder's place): the
        next round's ranges would leave it out for good, and the study would differ
        from one that ran without the hitch. A trial that failed by its own training
        has a result, and counts as failed. In the last round too, refuse to end
        while another process is writing a trial's folder: that trial never ran
        here, and its result is yet to come."""
        self._read_new_results()  # a busy trial's process may have ended since
        busy = [trial for trial, row in sorted(self._rows.items())
                if row["round"] == number and row["status"] == BUSY]
        if busy:
            raise TrainingError(self._busy_message(number, busy))
        if number == self.spec.rounds:
            return
        missing = [trial for trial, row in sorted(self._rows.items())
                   if row["round"] == number
                   and read_result(self.trial_dir(trial)) is None]
        if missing:
            listed = ", ".join(str(trial) for trial in missing)
            plural = "s" if len(missing) > 1 else ""
            raise TrainingError(
                f"trial{plural} {listed} of round {number} failed without a result"
                f" (see the reasons above and in {self.out / CSV_FILE}), so round"
                f" {number + 1} is not planned yet: fix what the reasons say, then"
                " rerun the same command to retry them and go on")

    def _busy_message(self, number: int, busy: list[int]) -> str:
        listed = ", ".join(str(trial) for trial in busy)
        plural = len(busy) > 1
        what = (f"round {number + 1} is not planned yet" if number < self.spec.rounds
                else "the study is not finished")
        return (f"trial{'s' if plural else ''} {listed} of round {number}"
                f" {'are' if plural else 'is'} still being written by another nntrain"
                " process (a trial of an earlier search still running on a Dask"
                f" worker, or a fit into the trial's folder), so {what}: rerun the"
                f" same command once {'they end' if plural else 'it ends'}")

    def _read_new_results(self) -> None:
        for trial, row in self._rows.items():
            if row["status"] not in FINISHED:
                self._rows[trial] = _merged(row, read_result(self.trial_dir(trial))
                                            or {})

    def _plan_next_round(self, on_note) -> None:
        bounds = narrow_bounds(self.spec, self._rows.values())
        self._plan_round(self.plan, bounds)
        self._save(self.plan)
        number = len(self.plan["rounds"])
        for trial in self.plan["trials"]:
            if trial["round"] == number:
                self._add_row(trial)
        if on_note:
            shown = ", ".join(f"{key} in {short_value(value)}" for key, value in
                              bounds.items())
            on_note(f"round {number}: {shown}")

    def _tasks(self, number: int) -> list[dict]:
        spec = self.spec
        return [{"trial": row["trial"], "values": row["values"], "config": self.config,
                 "run_dir": str(self.trial_dir(row["trial"])), "metric": spec.metric,
                 "mode": spec.mode}
                for row in sorted(self._rows.values(), key=lambda row: row["trial"])
                if row["round"] == number and row["status"] not in FINISHED]

    def write_results(self) -> Path:
        """results.csv: one row per planned trial, best first, written atomically so
        that an interrupted study leaves a file that parses."""
        if self._closed:  # its folder is no longer locked for it
            raise RuntimeError(f"this Study of {self.out} is closed; open the study"
                               " again with a new Study to write its results")
        keys = [param.key for param in self.spec.params]
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["trial", "round", "status", *keys, self.spec.metric,
                         "best_epoch", "epochs", "seconds", "reason"])
        for row in self.rows:
            writer.writerow([row["trial"], row["round"], row["status"],
                             *(_cell(row["values"][key]) for key in keys),
                             *(_cell(row[name]) for name in
                               ("metric", "best_epoch", "epochs", "seconds")),
                             row["reason"]])
        path = self.out / CSV_FILE
        try:
            write_text_atomically(path, buffer.getvalue())
        except OSError as error:
            raise RunDirectoryError(f"cannot write {path} ({error.strerror or error});"
                                    " make room for the file or give --out another"
                                    " folder") from None
        return path

    def best_checkpoints(self, count: int, on_note=None) -> list[Path]:
        """best.npz of the ``count`` best finished trials whose file is there (fewer
        if fewer finished); ``on_note(text)`` hears of each one missing, and of the
        trials whose best.npz need not hold the epoch their row ranks."""
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"count must be an int >= 1, not {count!r}")
        paths, kept = [], {}
        for row in self.rows:
            if row["status"] != "ok" or len(paths) == count:
                continue
            path = self.trial_dir(row["trial"]) / "checkpoints" / "best.npz"
            problem = None if path.is_file() else f"its {path} is missing"
            if problem is None:
                try:
                    load_checkpoint(path)  # a damaged one would stop the ensemble
                except CheckpointError as error:
                    problem = (f"its best.npz cannot be loaded:"
                               f" {str(error).split('; ')[0]}")
            if problem is None:
                paths.append(path)
                kept.setdefault(self._monitor_of(row), []).append(row["trial"])
            elif on_note:
                on_note(f"trial {row['trial']} finished but {problem}; skipped"
                        f" (delete its {RESULT_FILE} to run it again)")
        for monitor, trials in kept.items():
            note = self._other_epochs_note(monitor, trials)
            if note and on_note:
                on_note(note)
        return paths

    def _monitor_of(self, row: dict) -> str:
        """The train.monitor the trial of ``row`` ran with (train.monitor may be
        searched)."""
        try:
            config = trial_config(self.config, row["values"],
                                  self.trial_dir(row["trial"]))
        except ConfigError:  # it ran, so it was valid: a later nntrain refuses it
            config = self.config
        return config["train"]["monitor"]

    def _other_epochs_note(self, monitor: str, trials: list[int]) -> str | None:
        """Why the best.npz of ``trials``, which monitored ``monitor``, need not
        hold the epoch the table ranks, and how to make them; None when they do.
        The Solver saves best.npz at each evaluation that improves train.monitor
        in its own mode, and a row's best_epoch is the first evaluation with the
        best metric in search.mode: the same epoch when the two agree."""
        metric, mode = self.spec.metric, self.spec.mode
        best = {"max": "highest", "min": "lowest"}
        if monitor == metric and mode == monitor_mode(monitor):
            return None
        if metric not in MONITORS:
            fix = (f"{metric} is no train.monitor option; rank by one of"
                   f" {', '.join(MONITORS)} to ensemble the ranked epochs")
        elif mode != monitor_mode(metric):
            fix = (f"no train.monitor keeps the {best[mode]} {metric}; set"
                   f" search.mode to {monitor_mode(metric)} (--set search.mode="
                   f"{monitor_mode(metric)}) to ensemble the ranked epochs")
        elif self.spec.monitor_from_metric:
            fix = ("the study was planned before trials monitored search.metric; run"
                   " it again in a new --out folder to ensemble the ranked epochs")
        else:
            fix = (f"set train.monitor to {metric}, or leave it out, to ensemble the"
                   " ranked epochs")
        plural = "s" if len(trials) > 1 else ""
        return (f"trial{plural} {', '.join(str(trial) for trial in trials)} kept in"
                f" best.npz the epoch of the {best[monitor_mode(monitor)]} {monitor}"
                f" (train.monitor), not of the {best[mode]} {metric} that the table"
                f" ranks (its best epoch); --ensemble averages those checkpoints"
                f" ({fix})")


def _merged(row: dict, result: dict) -> dict:
    fields = ("status", "metric", "best_epoch", "epochs", "seconds", "reason")
    return {**row, **{name: result[name] for name in fields if name in result}}


def _check_same_plan(saved, fresh: dict, path: Path) -> None:
    """Refuse a study.json that another config or search section planned."""
    if not isinstance(saved, dict) or saved.get("format") != PLAN_FORMAT:
        raise RunDirectoryError(f"{path} is not a study plan of this nntrain version;"
                                " give --out another folder")
    try:
        # Validated again, so that keys a later nntrain added get their defaults.
        saved_config = resolve_config(saved.get("config"))
    except ConfigError as error:
        raise RunDirectoryError(f"{path}: its config is not valid here ({error});"
                                " give --out another folder") from None
    first = len(fresh["trials"])  # round 1, planned before anything ran
    trials = saved.get("trials", [])
    old = {"config": _identity(saved_config), "search": saved.get("search"),
           "trials": trials[:first] if isinstance(trials, list) else trials}
    new = {"config": _identity(fresh["config"]), "search": fresh["search"],
           "trials": fresh["trials"]}
    where = _first_difference(old, new, "")
    if where is not None and where.startswith(("search.params", "trials")):
        # Only where searched data lies? Then say so, as for the config's own. (A
        # study planned before searched paths were made absolute holds them as
        # written, relative: it is refused so, as nothing tells from which folder
        # it ran.)
        if _first_difference(_without_data_paths(old), _without_data_paths(new),
                             "") is None:
            where = "searched data"
    if where in ("config.data.path", "searched data"):
        what = ("the data at data.path " + saved_config["data"]["path"]
                if where == "config.data.path" else "the data paths search.params"
                " chooses among, as they were when it was planned (a relative path"
                " names a file in the folder the study was first run from)")
        raise RunDirectoryError(
            f"{path} plans its trials on {what}: put the data back there, or rerun"
            " from that folder, to run the rest of the study (trials must all train"
            " on the same data), or give --out another folder")
    if where is not None:
        raise RunDirectoryError(
            f"{path} plans another study ({where} differs); rerun it with the config"
            " and --set options it was planned with, or give --out another folder")


def _without_data_paths(plan: dict) -> dict:
    """A plan as _check_same_plan compares them (search section and trials) with
    the data paths of its searched data options and values left out: what else
    there is to compare."""
    def blank(key, value):
        if key not in SEARCHED_DATA_KEYS:
            return value
        return with_data_path(key, value, lambda path: None)

    search, trials = plan["search"], plan["trials"]
    params = search.get("params") if isinstance(search, dict) else None
    if isinstance(params, list):  # [key, kind, options or ends] each
        search = {**search, "params": [
            [param[0], param[1], [blank(param[0], option) for option in param[2]]]
            if isinstance(param, list) and len(param) == 3 and param[1] == "choice"
            and isinstance(param[2], list) else param for param in params]}
    if isinstance(trials, list):
        trials = [{**trial, "values": {key: blank(key, value)
                                       for key, value in trial["values"].items()}}
                  if isinstance(trial, dict) and isinstance(trial.get("values"), dict)
                  else trial for trial in trials]
    return {**plan, "search": search, "trials": trials}


def _identity(config: dict) -> dict:
    """What makes a study's config that study's: all but the output folder. Where
    the data lies is part of it: nothing checks that data found elsewhere is the
    data the finished trials trained on."""
    return {**config, "output": None}


def _check_planned_trials(saved: dict, spec: SearchSpec, path: Path) -> None:
    """Refuse a plan whose later rounds were edited or damaged: the study would
    run, rank and narrow on them. Round r plans the trials that round_sizes gives
    it, numbered on from the rounds before, each with a value of every searched
    key that its distribution can give."""
    problem = _plan_problem(saved, spec)
    if problem:
        raise RunDirectoryError(f"{path} is damaged ({problem}); give --out another"
                                " folder")


def _plan_problem(saved: dict, spec: SearchSpec) -> str | None:
    rounds, trials = saved.get("rounds"), saved["trials"]
    if not isinstance(rounds, list):
        return f"rounds is {_short_json(rounds)}, not a list"
    if not 1 <= len(rounds) <= spec.rounds:
        return f"rounds holds {len(rounds)} rounds, not 1 to {spec.rounds}"
    # The round of each planned trial, by trial number.
    planned = [number for number, size in
               enumerate(spec.round_sizes()[:len(rounds)], start=1)
               for _ in range(size)]
    if len(trials) != len(planned):
        return (f"trials holds {len(trials)} trials, but its {len(rounds)} planned"
                f" round(s) hold {len(planned)}")
    for number, entry in enumerate(rounds, start=1):
        problem = _round_problem(entry, number, spec.params)
        if problem:
            return f"rounds[{number - 1}] {problem}"
    for trial, (number, entry) in enumerate(zip(planned, trials)):
        problem = _trial_problem(entry, trial, number, spec.params,
                                 rounds[number - 1]["bounds"])
        if problem:
            return f"trials[{trial}] {problem}"
    return None


def _round_problem(entry, number: int, params) -> str | None:
    """What is wrong with one planned round, expected as round ``number``, or None:
    each of its ranges must lie inside the original one (a choice keeps all its
    options)."""
    if not isinstance(entry, dict) or not isinstance(entry.get("bounds"), dict):
        return f"is {_short_json(entry)}, not a round with its ranges"
    # 1.0 and true equal 1, but are no round number (nor a trial's below).
    if type(entry.get("round")) is not int or entry["round"] != number:
        return f"is round {_short_json(entry.get('round'))}, not round {number}"
    bounds, keys = entry["bounds"], [param.key for param in params]
    if sorted(bounds) != sorted(keys):
        return (f"has ranges for {_short_json(sorted(bounds))}, not for the searched"
                f" keys {_short_json(keys)}")
    for param in params:
        if not _could_narrow(param, bounds[param.key]):
            return (f"has the range {_short_json(bounds[param.key])} for"
                    f" {param.key}, which is not inside its {param.kind} range"
                    f" {_short_json(list(param.bounds))}")
    return None


def _could_narrow(param: Param, bounds) -> bool:
    """Whether ``bounds`` could be a round's range of ``param``."""
    if param.kind == "choice":
        return bounds == list(param.bounds)
    return (isinstance(bounds, list) and len(bounds) == 2
            and all(_could_draw(param, bound) for bound in bounds)
            and bounds[0] <= bounds[1])


def _trial_problem(entry, trial: int, number: int, params,
                   bounds: dict) -> str | None:
    """What is wrong with one planned trial, expected as ``trial`` of round
    ``number`` whose ranges are ``bounds``, or None."""
    if not isinstance(entry, dict) or not isinstance(entry.get("values"), dict):
        return f"is {_short_json(entry)}, not a trial with its values"
    marks = (entry.get("trial"), entry.get("round"))
    if marks != (trial, number) or any(type(mark) is not int for mark in marks):
        return (f"is trial {_short_json(entry.get('trial'))} of round"
                f" {_short_json(entry.get('round'))}, not trial {trial} of round"
                f" {number}")
    values, keys = entry["values"], [param.key for param in params]
    if sorted(values) != sorted(keys):
        return (f"has values for {_short_json(sorted(values))}, not for the searched"
                f" keys {_short_json(keys)}")
    for param in params:
        value = values[param.key]
        if not _could_draw(param, value):
            return (f"has {param.key} {_short_json(value)}, which its"
                    f" {param.kind} distribution cannot give")
        if not _could_draw(replace(param, bounds=bounds[param.key]), value):
            return (f"has {param.key} {_short_json(value)}, outside round"
                    f" {number}'s range {_short_json(bounds[param.key])}")
    return None


def _could_draw(param: Param, value) -> bool:
    """Whether ``value`` lies within ``param``'s original bounds (narrowed ones lie
    inside them), with slack for the rounding of a drawn float."""
    if param.kind == "choice":
        return value in param.bounds
    number = type(value) is int or (type(value) is float and math.isfinite(value))
    if not number or (param.kind == "int" and type(value) is not int):
        return False
    if param.kind == "loguniform" and value <= 0:
        return False
    to_space = math.log if param.kind == "loguniform" else float
    low, high = (to_space(bound) for bound in param.bounds)
    slack = 1e-9 * (high - low)
    return low - slack <= to_space(value) <= high + slack


def _short_json(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


_MISSING = object()


def _first_difference(old, new, prefix: str) -> str | None:
    """The dotted key of the first difference between two JSON values, or None."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in [*old, *(key for key in new if key not in old)]:
            where = f"{prefix}.{key}" if prefix else str(key)
            found = _first_difference(old.get(key, _MISSING), new.get(key, _MISSING),
                                      where)
            if found is not None:
                return found
        return None
    return None if old == new else prefix


def _cell(value) -> str:
    """A value as results.csv writes it: booleans as YAML and JSON write them
    (true, false), lists and mappings as JSON, nothing for None."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)
