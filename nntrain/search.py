"""Random hyperparameter search over a config's keys, coarse to fine, in parallel.

A study is an ordinary config with a ``search:`` section::

    search:
      trials: 20                 # int >= 1
      seed: 0                    # default: the config's seed
      metric: val_accuracy       # a key of the 'epoch' records
      mode: max                  # max | min (default: max for accuracies, else min)
      rounds: 2                  # coarse-to-fine rounds (default 1)
      keep: 5                    # best trials that set the next round's ranges
      params:                    # dotted config key: one distribution
        optimizer.lr: {loguniform: [1.0e-4, 1.0e-1]}
        model.l2: {uniform: [0.0, 1.0e-2]}
        train.batch_size: {int: [16, 128]}
        model.activation: {choice: [relu, tanh]}

Before anything runs, every trial draws one number u in [0, 1) per parameter from the
search stream of ``seed``, so a study is reproducible. Its round's range maps u to a
value: ``exp(log low + u (log high - log low))`` for loguniform, ``low + u (high -
low)`` for uniform, ``low + floor(u (high - low + 1))`` for int, option
``floor(u K)`` of K for choice. The trials are split evenly over the rounds. Round 1
uses the ranges given; each later round narrows every numeric range to the span of
the ``keep`` best trials finished so far, widened by ``WIDEN`` of the original range
on each side (in log space for loguniform) and clipped to it; a choice keeps all its
options. The metric of a trial is the best value of ``metric`` over its evaluations.

The study folder:

    DIR/study.json      the plan: config, search section, each round's ranges and
                        each trial's values (a later round's once it is planned)
    DIR/trial-0000/     an ordinary run directory, plus result.json
    DIR/results.csv     one row per planned trial, best first
    DIR/search.png      the metric against each hyperparameter

A trial writes its result.json (atomically) when its training ends, successfully or
with a failure of its own (an invalid config, a non-finite loss). Anything else that
ends a trial (its worker process dying, Ctrl-C, a lost Dask worker, a bug) is reported
as failed for this run but leaves no result.json, so the next run of the same study
retries it. Trials with a result.json never run again.
"""

import copy
import csv
import difflib
import io
import json
import math
import multiprocessing
import os
import signal
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import NoReturn

from nntrain.config import (
    OPTIMIZER_KEYS,
    SCHEDULE_KEYS,
    apply_overrides,
    blamed_on_override,
    choice,
    integer,
    key_within,
    read_config_file,
    resolve_config,
)
from nntrain.errors import (
    BadInputError,
    ConfigError,
    NNTrainError,
    RunDirectoryError,
    StopRequested,
)
from nntrain.fileio import make_output_folder
from nntrain.random import SEARCH_STREAM, generator
from nntrain.train.checks import usable_cores
from nntrain.train.rundir import write_text_atomically
from nntrain.train.signals import SIGNAL_EXIT_CODES, StopFlag
from nntrain.yamlio import one_line_yaml

PLAN_FILE = "study.json"
RESULT_FILE = "result.json"
CSV_FILE = "results.csv"
PLOT_FILE = "search.png"
PLAN_FORMAT = 1

DISTRIBUTIONS = ("loguniform", "uniform", "int", "choice")
METRICS = ("val_accuracy", "val_loss", "train_accuracy", "loss", "data_loss",
           "reg_loss")
SEARCH_KEYS = ("trials", "seed", "metric", "mode", "rounds", "keep", "params")
MAX_TRIALS = 10_000
DEFAULT_KEEP = 5
# A later round's range reaches this fraction of the original range beyond its best
# trials on each side, so that a best value at the edge of the top-k span can still
# move outwards.
WIDEN = 0.1
FINISHED = ("ok", "failed")  # statuses a result.json can hold

# Read by OpenBLAS, MKL and OpenMP when they load, which in a worker happens before
# any initializer runs (unpickling the trial function imports numpy): so they are set
# in the parent while it spawns the pool. One BLAS thread per worker keeps N workers
# from fighting over the cores.
BLAS_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
LOST_WORKER = ("its worker process died (killed, or out of memory; the trials beside"
               " it stop with it); rerun the study to retry it")
DASK_CONNECT_SECONDS = 10
# How often a study waiting for its trials looks for a stop request.
POLL_SECONDS = 0.25


@dataclass(frozen=True)
class Param:
    """One searched config key. ``bounds``: [low, high] for the numeric kinds, the
    list of options for choice."""

    key: str
    kind: str
    bounds: list


@dataclass(frozen=True)
class SearchSpec:
    """A validated ``search:`` section."""

    trials: int
    seed: int
    metric: str
    mode: str
    rounds: int
    keep: int
    params: tuple

    def round_sizes(self) -> list[int]:
        """Trials per round: as even as possible, earlier rounds taking the rest."""
        base, extra = divmod(self.trials, self.rounds)
        return [base + (1 if r < extra else 0) for r in range(self.rounds)]

    def to_json(self) -> dict:
        return {"trials": self.trials, "seed": self.seed, "metric": self.metric,
                "mode": self.mode, "rounds": self.rounds, "keep": self.keep,
                "params": [[p.key, p.kind, p.bounds] for p in self.params]}


def _invalid(key: str, expected: str, value):
    raise ConfigError(f"invalid {key}: {value!r} (expected {expected})", key)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number_pair(bounds, key: str, positive: bool = False) -> list:
    wanted = "[low, high] with " + ("0 < low < high" if positive else "low < high")
    if not (isinstance(bounds, list) and len(bounds) == 2
            and all(_is_number(b) and math.isfinite(b) for b in bounds)):
        _invalid(key, wanted, bounds)
    low, high = float(bounds[0]), float(bounds[1])
    if low >= high or (positive and low <= 0):
        _invalid(key, wanted, bounds)
    return [low, high]


def _int_pair(bounds, key: str) -> list:
    wanted = "[low, high], integers with low <= high"
    if not (isinstance(bounds, list) and len(bounds) == 2 and all(
            isinstance(b, int) and not isinstance(b, bool) for b in bounds)):
        _invalid(key, wanted, bounds)
    if bounds[0] > bounds[1]:
        _invalid(key, wanted, bounds)
    return list(bounds)


def _options(bounds, key: str) -> list:
    if not isinstance(bounds, list) or not bounds:
        _invalid(key, "a non-empty list of values", bounds)
    return list(bounds)


BOUNDS_CHECKS = {"loguniform": partial(_number_pair, positive=True),
                 "uniform": _number_pair, "int": _int_pair, "choice": _options}


def searchable_keys(config: dict) -> list[str]:
    """Dotted keys a search may set: every key of the resolved config but
    ``output``, and every setting of any update rule or schedule (so a search may
    switch optimizer.name too)."""
    keys = set()

    def walk(node, prefix):
        for name, value in node.items():
            keys.add(prefix + name)
            if isinstance(value, dict):
                walk(value, f"{prefix}{name}.")

    walk(config, "")
    for section, tables in (("optimizer", OPTIMIZER_KEYS), ("schedule", SCHEDULE_KEYS)):
        keys.update(f"{section}.{key}" for table in tables.values() for key in table)
    return sorted(keys - {"output"})


def _parse_param(key, spec, known: list[str]) -> Param:
    if key not in known:
        close = difflib.get_close_matches(str(key), known, n=1)
        hint = (f"did you mean '{close[0]}'?" if close
                else "give a dotted config key like optimizer.lr")
        raise ConfigError(f"invalid search.params: {key!r} is not a config key"
                          f" ({hint})")
    where = f"search.params.{key}"
    if (isinstance(spec, dict) and spec and not set(spec) & set(DISTRIBUTIONS)
            and any(name.startswith(f"{key}.") for name in known)):
        _refuse_nested(key, spec, known)
    if not isinstance(spec, dict) or len(spec) != 1:
        _invalid(where, "one distribution: {loguniform: [low, high]}, {uniform: [low,"
                 " high]}, {int: [low, high]} or {choice: [a, b, ...]}", spec)
    (kind, bounds), = spec.items()
    choice(*DISTRIBUTIONS)(kind, f"{where} distribution")
    return Param(key, kind, BOUNDS_CHECKS[kind](bounds, f"{where}.{kind}"))


def _refuse_nested(key: str, spec: dict, known: list[str]) -> NoReturn:
    """Refuse search.params written as nested keys ({optimizer: {lr: ...}}), as
    YAML nesting or a --set path (which splits at every dot) makes them, naming the
    dotted key meant and the line that would give it."""
    meant = key
    while isinstance(spec, dict) and len(spec) >= 1 and not set(spec) & set(
            DISTRIBUTIONS):
        name, spec = next(iter(spec.items()))
        meant = f"{meant}.{name}"
    if meant not in known:
        close = difflib.get_close_matches(meant, known, n=1)
        unknown = f" ({meant} is not a config key" + (
            f"; did you mean '{close[0]}'?)" if close else ")")
    else:
        unknown = ""
    is_distribution = (isinstance(spec, dict) and len(spec) == 1
                       and next(iter(spec)) in DISTRIBUTIONS)
    example = one_line_yaml(spec) if is_distribution else "{choice: [A, B]}"
    raise ConfigError(
        f"invalid search.params: {key!r} holds nested keys{unknown}; write each"
        " searched key whole, as one dotted key of search.params"
        f" ({meant}: {example}); with --set, give the whole mapping:"
        f" --set 'search.params={{{meant}: {example}}}'", f"search.params.{key}")


def parse_search(raw, config: dict) -> SearchSpec:
    """Validate a ``search:`` section for the resolved ``config`` it searches; a
    problem is a one-line ConfigError naming the key."""
    if not isinstance(raw, dict):
        _invalid("search", "a mapping with trials, metric and params", raw)
    for name in raw:
        if name not in SEARCH_KEYS:
            close = difflib.get_close_matches(str(name), SEARCH_KEYS, n=1)
            hint = f"did you mean '{close[0]}'?" if close else \
                f"valid keys: {', '.join(SEARCH_KEYS)}"
            raise ConfigError(f"unknown key search.{name} ({hint})", f"search.{name}")
    for name in ("trials", "params"):
        if name not in raw:
            raise ConfigError(f"search.{name} is missing; see"
                              " configs/digits-search.yaml for an example")
    trials = integer(1, maximum=MAX_TRIALS)(raw["trials"], "search.trials")
    metric = choice(*METRICS)(raw.get("metric", "val_accuracy"), "search.metric")
    default_mode = "max" if metric.endswith("accuracy") else "min"
    mode = choice("max", "min")(raw.get("mode", default_mode), "search.mode")
    rounds = integer(1, maximum=trials)(raw.get("rounds", 1), "search.rounds")
    keep = integer(1)(raw.get("keep", DEFAULT_KEEP), "search.keep")
    seed = integer(0)(raw.get("seed", config["seed"]), "search.seed")

    params = raw["params"]
    if not isinstance(params, dict) or not params:
        _invalid("search.params", "a mapping of config keys to distributions, like"
                 " {optimizer.lr: {loguniform: [1.0e-4, 1.0e-1]}}", params)
    known = searchable_keys(config)
    parsed = tuple(_parse_param(key, spec, known) for key, spec in params.items())
    searched = {param.key for param in parsed}
    for param in parsed:
        _check_values_fit(param, config, searched)
    spec = SearchSpec(trials, seed, metric, mode, rounds, keep, parsed)
    _check_some_trial_fits(spec, config)
    return spec


# How many of round 1's trials _check_some_trial_fits tries (each is a validation of
# the whole config, about a millisecond).
FIT_CHECK_TRIALS = 200


def _check_some_trial_fits(spec: SearchSpec, config: dict) -> None:
    """Refuse a study none of whose first-round trials has a valid config: keys
    that fit one by one may not together (optimizer.beta1 with optimizer.name
    drawn from [sgd], train.epochs with train.iterations)."""
    count = min(spec.round_sizes()[0], FIT_CHECK_TRIALS)
    bounds = {param.key: param.bounds for param in spec.params}
    first_error = None
    for values in sample(spec.params, unit_draws(spec)[:count], bounds):
        try:
            trial_config(config, values, run_dir="")
            return
        except ConfigError as error:
            first_error = first_error or error
    raise ConfigError(f"invalid search.params: none of the first {count} trials"
                      f" planned has a valid config (the first fails with: "
                      f"{first_error}); search keys that fit together",
                      "search.params")


def _check_values_fit(param: Param, config: dict, searched: set) -> None:
    """Set the key to each end of its range (each option of a choice) and validate.
    When none of them fits the key, every trial would fail: say so now, once. When
    some fit, the trials that draw the others fail and are recorded as failed, like
    any other failing trial. Only errors about the key itself count; one that
    depends on another searched key (an optimizer setting while optimizer.name is
    searched too) is left to the trials."""
    errors = []
    for value in param.bounds:
        try:
            trial_config(config, {param.key: value}, run_dir="")
            return
        except ConfigError as error:
            if not _blames(error, param, searched):
                return
            errors.append(error)
    raise ConfigError(f"invalid search.params.{param.key}: no value of it fits the"
                      f" key ({errors[0]})", f"search.params.{param.key}")


def _blames(error: ConfigError, param: Param, searched: set) -> bool:
    """Whether ``error`` is about ``param``'s value alone. An error about a rule
    between keys (a tuple of keys, such as a setting and the optimizer.name that
    lacks it) is, unless another of its keys is searched too: then a trial that
    draws the other key's fitting value may pass."""
    keys = error.key if isinstance(error.key, tuple) else (error.key or "",)
    if not any(key_within(key, param.key) for key in keys):
        return False
    others = [key for key in keys if not key_within(key, param.key)]
    return not any(key_within(key, other) or key_within(other, key)
                   for key in others for other in searched)


def load_search_config(path, overrides=()) -> tuple[dict, SearchSpec]:
    """Read a study's config file: ``--set`` overrides apply first (they may set
    search keys too, e.g. search.trials=5), then the search section is taken out
    and the rest validated like any config. data.path is made absolute, because
    trials may run in other folders or on other machines."""
    raw = apply_overrides(read_config_file(path), list(overrides))
    search = raw.pop("search", None)
    if search is None:
        raise ConfigError(f"{path} has no search: section; add one (see"
                          " configs/digits-search.yaml)")
    try:
        config = resolve_config(raw)
        spec = parse_search(search, config)
    except ConfigError as error:
        raise blamed_on_override(error, overrides) or ConfigError(
            f"{path}: {error}", error.key) from None
    if config["data"]["path"]:
        config["data"]["path"] = str(Path(config["data"]["path"]).expanduser()
                                     .resolve())
    return config, spec


def unit_draws(spec: SearchSpec):
    """(trials, params) numbers in [0, 1): every trial's draws, fixed by the seed."""
    return generator(spec.seed, SEARCH_STREAM).random((spec.trials, len(spec.params)))


def value_at(param: Param, u: float, bounds: list):
    """The value a draw ``u`` in [0, 1) gives within ``bounds`` (see the module)."""
    if param.kind == "choice":
        return bounds[min(int(u * len(bounds)), len(bounds) - 1)]
    low, high = bounds
    if param.kind == "loguniform":
        return math.exp(math.log(low) + u * (math.log(high) - math.log(low)))
    if param.kind == "uniform":
        return low + u * (high - low)
    return min(low + math.floor(u * (high - low + 1)), high)


def sample(params, draws, bounds: dict) -> list[dict]:
    """Each row of ``draws`` (T, P) as a trial's values {key: value}."""
    return [{p.key: value_at(p, float(u), bounds[p.key]) for p, u in zip(params, row)}
            for row in draws]


def narrow_bounds(spec: SearchSpec, rows) -> dict:
    """The next round's bounds: each numeric range shrunk around the ``keep`` best
    finished trials of ``rows`` (see the module); the original ones when none
    finished."""
    top = [row for row in rank(rows, spec.mode) if row["status"] == "ok"][:spec.keep]
    bounds = {}
    for param in spec.params:
        if param.kind == "choice" or not top:
            bounds[param.key] = list(param.bounds)
            continue
        to_space, from_space = ((math.log, math.exp) if param.kind == "loguniform"
                                else (float, float))
        low, high = (to_space(b) for b in param.bounds)
        values = [to_space(row["values"][param.key]) for row in top]
        margin = WIDEN * (high - low)
        new_low = param.bounds[0] if min(values) - margin <= low else \
            from_space(min(values) - margin)
        new_high = param.bounds[1] if max(values) + margin >= high else \
            from_space(max(values) + margin)
        if param.kind == "int":
            new_low, new_high = math.floor(new_low), math.ceil(new_high)
        bounds[param.key] = [new_low, new_high]
    return bounds


def rank(rows, mode: str) -> list[dict]:
    """Finished trials best first (ties: the lower trial number), then the others
    by trial number."""
    ok = [row for row in rows if row["status"] == "ok"]
    sign = -1.0 if mode == "max" else 1.0
    ok.sort(key=lambda row: (sign * row["metric"], row["trial"]))
    others = sorted((row for row in rows if row["status"] != "ok"),
                    key=lambda row: row["trial"])
    return ok + others


def trial_config(config: dict, values: dict, run_dir) -> dict:
    """One trial's config: the study's with the trial's values set and validated
    again, plots off, and output pointing at the trial's folder."""
    overrides = [f"{key}={json.dumps(value)}" for key, value in values.items()]
    raw = apply_overrides(_renamed_sections(config, values),
                          overrides + ["train.plots=false"])
    raw["output"] = str(run_dir)
    return resolve_config(raw)


def _renamed_sections(config: dict, values: dict) -> dict:
    """A copy of the study's config in which an optimizer or schedule section
    whose ``name`` the trial changes starts afresh. The study's config is resolved,
    so it holds every default of its own rule (Adam's beta1, ...), which another
    rule would refuse or (eps) read as a setting. A value carries over only where
    the new rule has the key and the value is not the old rule's default, i.e.
    where the study chose it (an lr set equal to the old default is taken for a
    default too, and the new rule's default applies)."""
    config = copy.deepcopy(config)
    for section, tables in (("optimizer", OPTIMIZER_KEYS),
                            ("schedule", SCHEDULE_KEYS)):
        name, old = values.get(f"{section}.name"), config[section]
        if name == old["name"] or name not in tables:
            continue  # unchanged, or a name the validation will refuse
        old_table, new_table = tables[old["name"]], tables[name]
        config[section] = {"name": name, **{
            key: value for key, value in old.items()
            if key in new_table and value != old_table[key].default}}
    return config


def _best_record(history: list, metric: str, mode: str) -> dict:
    """A finished trial's result from its 'epoch' records."""
    measured = [record for record in history if metric in record]
    finite = [record for record in measured if math.isfinite(record[metric])]
    if not finite:
        reason = (f"{metric} was not finite in any evaluation" if measured
                  else f"no evaluation measured {metric}")
        return {"status": "failed", "reason": reason}
    pick = max if mode == "max" else min
    best = pick(finite, key=lambda record: record[metric])  # the earliest of equals
    return {"status": "ok", "metric": best[metric], "best_epoch": best["epoch"],
            "epochs": history[-1]["epoch"], "reason": ""}


def run_trial(task: dict) -> dict:
    """Train one trial in its folder and write its result.json; what each worker
    runs. ``task`` holds plain data (trial, values, config, run_dir, metric, mode) so
    that it pickles for a process pool or a Dask cluster. Returns the result."""
    from nntrain.pipeline import fit

    run_dir = Path(task["run_dir"])
    started = time.perf_counter()
    try:
        config = trial_config(task["config"], task["values"], run_dir)
        history = fit(config, run_dir, force=True, quiet=True).history
        result = _best_record(history, task["metric"], task["mode"])
    except StopRequested as error:
        first_clause = str(error).split(";")[0]
        return {"status": "stopped",
                "reason": f"{first_clause}; rerun the study to run it again"}
    except NNTrainError as error:
        result = {"status": "failed", "reason": str(error)}
    result["seconds"] = round(time.perf_counter() - started, 3)
    run_dir.mkdir(parents=True, exist_ok=True)
    saved = {"trial": task["trial"], "values": task["values"], **result}
    write_text_atomically(run_dir / RESULT_FILE, json.dumps(saved, indent=1) + "\n")
    return result


def read_result(run_dir: Path) -> dict | None:
    """A trial's result.json, or None when it has none (or an unreadable one)."""
    try:
        result = json.loads((run_dir / RESULT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(result, dict) or not _well_formed(result):
        return None
    return result


def _well_formed(result: dict) -> bool:
    """Whether a result.json holds what _best_record and run_trial write: anything
    else (a hand-edited or foreign file) is treated as no result, so the trial
    runs again."""
    def count(name):
        value = result.get(name)
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0

    def seconds():
        value = result.get("seconds")
        return (_is_number(value) and math.isfinite(value) and value >= 0)

    if not (isinstance(result.get("reason", ""), str) and seconds()):
        return False
    if result.get("status") == "failed":
        return True
    return (result.get("status") == "ok" and _is_number(result.get("metric"))
            and math.isfinite(result["metric"]) and count("best_epoch")
            and count("epochs"))


def _start_worker() -> None:
    """Ctrl-C (or SIGTERM to the process group) reaches every process, and the
    parent forwards a signal it gets to its workers as SIGINT, again and again until
    they are done: an idle worker ignores both signals (dying, it would break the
    pool); a training one stops after its current update (the Solver's own
    handler), and takes the repeated SIGINTs for the same request. The worker was
    spawned with both signals blocked (_signals_held); they are unblocked only now
    that they are ignored."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    StopFlag.ignored_repeats = frozenset({signal.SIGINT})
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNAL_EXIT_CODES)


@contextmanager
def _signals_held():
    """SIGINT and SIGTERM blocked while workers are spawned: a new process inherits
    the mask, so a signal during its start-up (seconds of imports, before
    _start_worker) cannot kill it with a traceback. A signal to this process
    meanwhile is delivered when the mask is restored."""
    if not hasattr(signal, "pthread_sigmask"):  # Windows
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNAL_EXIT_CODES)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _tell_workers_to_stop() -> None:
    """SIGINT to each worker process of this one (see _start_worker)."""
    for child in multiprocessing.active_children():
        try:
            os.kill(child.pid, signal.SIGINT)
        except ProcessLookupError:  # it ended meanwhile
            pass


@contextmanager
def _worker_pool(size: int):
    """``size`` fresh processes (spawned: forking a parent that runs threads can
    deadlock), with one BLAS thread each."""
    saved = {name: os.environ.get(name) for name in BLAS_THREAD_VARIABLES}
    os.environ.update({name: "1" for name in BLAS_THREAD_VARIABLES})
    try:
        with ProcessPoolExecutor(size, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_start_worker) as pool:
            yield pool
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _failure(error: BaseException) -> dict:
    """The row of a trial that ended by something other than its own training."""
    name = type(error).__name__
    # KilledWorker is Dask's BrokenProcessPool; matched by name, as dask is optional.
    if isinstance(error, BrokenProcessPool) or name == "KilledWorker":
        return {"status": "failed", "reason": LOST_WORKER}
    return {"status": "failed",
            "reason": f"{name}: {error} (rerun the study to retry this trial)"}


def _outcome(future) -> dict:
    error = future.exception()
    return future.result() if error is None else _failure(error)


def _drain(pool, waiting: list, width: int, runner, stop: StopFlag):
    """Run trials from ``waiting`` on ``pool`` until none is left, the pool breaks
    or a stop is asked for (then the running trials are told to stop, and
    awaited), yielding (task, result). No more than ``width`` trials are in flight,
    so every trial in flight when a worker dies had started: those are the ones
    failed."""
    running, broken = {}, False
    while (waiting and not broken and stop.signum is None) or running:
        while (waiting and not broken and stop.signum is None
               and len(running) < width):
            try:
                with _signals_held():  # submit may spawn a worker
                    running[pool.submit(runner, waiting[0])] = waiting[0]
            except BrokenProcessPool:
                broken = True
            else:
                waiting.pop(0)
        if not running:
            return
        done, _ = wait(running, timeout=POLL_SECONDS, return_when=FIRST_COMPLETED)
        if stop.signum is not None:
            _tell_workers_to_stop()
        for future in done:
            broken |= isinstance(future.exception(), BrokenProcessPool)
            yield running.pop(future), _outcome(future)


def _run_locally(tasks: list, workers: int, runner, stop: StopFlag):
    """(task, result) as trials end on worker processes of this machine; a pool
    broken by a dying worker is replaced for the trials that had not started."""
    waiting = list(tasks)
    while waiting and stop.signum is None:
        before, size = len(waiting), min(workers, len(waiting))
        with _worker_pool(size) as pool:
            yield from _drain(pool, waiting, size, runner, stop)
        if len(waiting) == before:
            raise RuntimeError("the worker pool broke before it took any trial")


def require_dask():
    """Client and as_completed of dask.distributed, or a one-line error saying how
    to install it (it is the optional extra nntrain[dask])."""
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise BadInputError("--scheduler needs dask.distributed, which is not"
                            " installed; install it with: pip install"
                            " 'nntrain[dask]'") from None
    return Client, as_completed


def _run_on_dask(tasks: list, address: str, runner, stop: StopFlag):
    """(task, result) as trials end on the Dask cluster at ``address``. Its workers
    need nntrain installed and must see the study folder and the data at the same
    paths (a shared file system). Dask retries a task whose worker died a few times
    before it gives up (KilledWorker). On a stop the trials are cancelled: one
    already running on a worker cannot be interrupted from here, and may still
    finish and write its result."""
    Client, as_completed = require_dask()
    try:
        client = Client(address, timeout=DASK_CONNECT_SECONDS)
    except (OSError, ValueError, TypeError) as error:
        raise BadInputError(f"cannot reach the Dask scheduler at {address} ({error});"
                            " check --scheduler tcp://HOST:PORT") from None
    with client:
        futures = {client.submit(runner, task, pure=False): task for task in tasks}
        finished = as_completed(futures)
        while not finished.is_empty():
            if stop.signum is not None:
                client.cancel(list(futures))
                return
            if not finished.has_ready():
                time.sleep(POLL_SECONDS)
                continue
            for future in finished.next_batch(block=False):
                yield futures[future], _outcome(future)


class Study:
    """A study folder: its plan (study.json) and one row per planned trial.

    A row: trial, round, status (ok | failed | stopped | pending), values {key:
    value}, metric, best_epoch, epochs, seconds, reason.

    Opening a folder that holds a study.json continues that study, which must be the
    one ``config`` and ``spec`` plan; a non-empty folder without one is refused.
    """

    def __init__(self, out, config: dict, spec: SearchSpec):
        self.out = Path(out).resolve()
        self.config, self.spec = config, spec
        self.plan = self._open()
        self._rows = {}
        for trial in self.plan["trials"]:
            self._add_row(trial)

    def _open(self) -> dict:
        path = self.out / PLAN_FILE
        fresh = json.loads(json.dumps(self._new_plan()))
        if not path.exists():
            if self.out.is_file() or (self.out.is_dir() and any(self.out.iterdir())):
                raise RunDirectoryError(
                    f"{self.out} is not an empty folder and holds no {PLAN_FILE}; give"
                    " --out a new or empty folder for the study")
            make_output_folder(self.out, "--out")
            self._save(fresh)
            return fresh
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise RunDirectoryError(f"cannot read {path} ({error}); give --out another"
                                    " folder") from None
        _check_same_plan(saved, fresh, path)
        _check_planned_trials(saved, self.spec, path)
        return saved

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
        ``if __name__ == "__main__":``, as multiprocessing asks."""
        workers = workers or usable_cores()
        with StopFlag() as stop:
            try:
                for number in range(1, self.spec.rounds + 1):
                    if stop.signum is not None:
                        break
                    if number > len(self.plan["rounds"]):
                        self._plan_next_round(on_note)
                    self._run_round(number, workers, scheduler, runner, stop, on_trial)
            finally:
                # Trials that ended while the study was being stopped (by a second
                # signal) have written a result that no outcome brought back.
                self._read_new_results()
                self.write_results()
        if stop.signum is not None:
            saved = sum(read_result(self.trial_dir(trial)) is not None
                        for trial in self._rows)
            raise StopRequested(
                f"stopped by {stop.name}: {saved} of {self.spec.trials} trials have"
                f" a result (in {self.out / CSV_FILE}); rerun the same command to"
                " run the rest", stop.exit_code)
        return self.rows

    def _run_round(self, number, workers, scheduler, runner, stop, on_trial):
        tasks = self._tasks(number)
        if not tasks:
            return
        outcomes = (_run_on_dask(tasks, scheduler, runner, stop) if scheduler
                    else _run_locally(tasks, workers, runner, stop))
        for task, result in outcomes:
            row = self._rows[task["trial"]]
            self._rows[task["trial"]] = row = _merged(row, result)
            self.write_results()
            if on_trial:
                on_trial(row)

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
            shown = ", ".join(f"{key} in {_short(value)}" for key, value in
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
        write_text_atomically(path, buffer.getvalue())
        return path

    def best_checkpoints(self, count: int) -> list[Path]:
        """best.npz of the ``count`` best finished trials (fewer if fewer finished)."""
        best = [row for row in self.rows if row["status"] == "ok"][:count]
        return [self.trial_dir(row["trial"]) / "checkpoints" / "best.npz"
                for row in best]


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
    old = {"config": {**saved_config, "output": None}, "search": saved.get("search"),
           "trials": trials[:first] if isinstance(trials, list) else trials}
    new = {"config": {**fresh["config"], "output": None}, "search": fresh["search"],
           "trials": fresh["trials"]}
    where = _first_difference(old, new, "")
    if where is not None:
        raise RunDirectoryError(
            f"{path} plans another study ({where} differs); rerun it with the config"
            " and --set options it was planned with, or give --out another folder")


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
    for trial, (number, entry) in enumerate(zip(planned, trials)):
        problem = _trial_problem(entry, trial, number, spec.params)
        if problem:
            return f"trials[{trial}] {problem}"
    return None


def _trial_problem(entry, trial: int, number: int, params) -> str | None:
    """What is wrong with one planned trial, expected as ``trial`` of round
    ``number``, or None."""
    if not isinstance(entry, dict) or not isinstance(entry.get("values"), dict):
        return f"is {_short_json(entry)}, not a trial with its values"
    if (entry.get("trial"), entry.get("round")) != (trial, number):
        return (f"is trial {_short_json(entry.get('trial'))} of round"
                f" {_short_json(entry.get('round'))}, not trial {trial} of round"
                f" {number}")
    values, keys = entry["values"], [param.key for param in params]
    if sorted(values) != sorted(keys):
        return (f"has values for {_short_json(sorted(values))}, not for the searched"
                f" keys {_short_json(keys)}")
    for param in params:
        if not _could_draw(param, values[param.key]):
            return (f"has {param.key} {_short_json(values[param.key])}, which its"
                    f" {param.kind} distribution cannot give")
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
    if value is None:
        return ""
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, list):
        return "[" + ", ".join(_short(item) for item in value) + "]"
    return "" if value is None else str(value)


def format_table(rows: list[dict], spec: SearchSpec,
                 reason_width: int = 60) -> list[str]:
    """The rows (already ranked) as an aligned text table, one line per trial."""
    keys = [param.key for param in spec.params]
    header = ["trial", "status", *keys, spec.metric, "best epoch", "epochs", "seconds",
              "reason"]
    lines = [header]
    for row in rows:
        metric = "" if row["metric"] is None else f"{row['metric']:.4f}"
        seconds = "" if row["seconds"] is None else f"{row['seconds']:.1f}"
        reason = row["reason"]
        if len(reason) > reason_width:
            reason = reason[:reason_width - 3] + "..."
        lines.append([str(row["trial"]), row["status"],
                      *(_short(row["values"][key]) for key in keys), metric,
                      _short(row["best_epoch"]), _short(row["epochs"]), seconds,
                      reason])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip()
            for line in lines]


def plot_study(rows: list[dict], spec: SearchSpec, path) -> Path | None:
    """search.png from ranked ``rows``: the metric of each finished trial against
    each hyperparameter, one colour per round, the best circled, log x axis for
    loguniform. None when matplotlib (the extra nntrain[plot]) is missing."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    finished = [row for row in rows if row["status"] == "ok"]
    figure = Figure(figsize=(4.0 * len(spec.params), 3.5), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(spec.params), squeeze=False)[0]
    for ax, param in zip(axes, spec.params):
        _scatter(ax, param, finished, spec)
    figure.suptitle(f"{len(finished)} of {len(rows)} trials finished; the best"
                    " circled")
    figure.savefig(path, dpi=110)
    return Path(path)


def _scatter(ax, param: Param, rows: list[dict], spec: SearchSpec) -> None:
    def x_of(row):
        value = row["values"][param.key]
        return param.bounds.index(value) if param.kind == "choice" else value

    for number in range(1, spec.rounds + 1):
        chosen = [row for row in rows if row["round"] == number]
        ax.scatter([x_of(row) for row in chosen], [row["metric"] for row in chosen],
                   s=24, label=f"round {number}")
    if rows:
        ax.scatter([x_of(rows[0])], [rows[0]["metric"]], s=120, facecolors="none",
                   edgecolors="red")
    if param.kind == "choice":
        ax.set_xticks(range(len(param.bounds)), [_short(o) for o in param.bounds])
    if param.kind == "loguniform":
        ax.set_xscale("log")
    if spec.rounds > 1:
        ax.legend(fontsize="small")
    ax.set_xlabel(param.key)
    ax.set_ylabel(spec.metric)
    ax.grid(alpha=0.3)
