"""Running trials: one trial in its folder (run_trial, result.json), and many on
worker processes of this machine or on a Dask cluster, stopping cleanly on SIGINT
or SIGTERM."""

import json
import logging
import math
import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import (
    FIRST_COMPLETED,
    CancelledError,
    ProcessPoolExecutor,
    wait,
)
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from pathlib import Path

from nntrain.errors import (
    BadInputError,
    ClusterError,
    FolderLockedError,
    NNTrainError,
    StopRequested,
)
from nntrain.search.space import is_number, trial_config
from nntrain.train.rundir import misplaced_entry, write_text_atomically
from nntrain.train.signals import SIGNAL_EXIT_CODES, StopFlag

RESULT_FILE = "result.json"
FINISHED = ("ok", "failed")  # statuses a result.json can hold
# A trial whose folder another nntrain process holds (an earlier search's trial
# still running on a Dask worker, a fit into its folder): it did not run, and that
# process may yet write its result.json.
BUSY = "busy"
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
    that it pickles for a process pool or a Dask cluster. Returns the result, a
    failed one naming the fix when the folder cannot be made or written."""
    from nntrain.pipeline import fit

    run_dir = Path(task["run_dir"])
    problem = _folder_problem(run_dir)
    if problem:
        # Its result.json would go inside the very place the file holds: so this
        # failure is recorded in results.csv alone, and the next run of the study
        # tries the trial again, once the file is gone.
        return {"status": "failed", "reason": problem}

    # The study sent only trials without a result, but a trial that an earlier,
    # stopped run of it left on a Dask worker may have written one since.
    earlier = read_result(run_dir)
    if (earlier is not None and earlier.get("trial") == task["trial"]
            and earlier.get("values") == task["values"]):
        return {key: value for key, value in earlier.items()
                if key not in ("trial", "values")}

    started = time.perf_counter()
    try:
        config = trial_config(task["config"], task["values"], run_dir)
        history = fit(config, run_dir, force=True, quiet=True).history
        result = _best_record(history, task["metric"], task["mode"])
    except StopRequested as error:
        first_clause = str(error).split(";")[0]
        return {"status": "stopped",
                "reason": f"{first_clause}; rerun the study to run it again"}
    except FolderLockedError:
        # No result.json: the folder, and the result, are the other process's.
        return {"status": BUSY,
                "reason": f"another nntrain process is writing to {run_dir}; rerun"
                          " the study once it ends"}
    except NNTrainError as error:
        result = {"status": "failed", "reason": str(error)}
    result["seconds"] = round(time.perf_counter() - started, 3)

    saved = {"trial": task["trial"], "values": task["values"], **result}
    problem = _save_result(run_dir, saved)
    if problem:
        # A trial without its result.json runs again on the study's next run, so
        # it is not counted as finished, whatever its training gave.
        return {"status": "failed", "reason": problem, "seconds": result["seconds"]}
    return result


def _save_result(run_dir: Path, saved: dict) -> str | None:
    """Write ``saved`` as the trial's result.json; None, or why it could not be
    written, as a reason naming the fix."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomically(run_dir / RESULT_FILE,
                              json.dumps(saved, indent=1) + "\n")
    except OSError as error:
        return _folder_problem(run_dir) or (
            f"cannot write {run_dir / RESULT_FILE} ({error.strerror or error}); make"
            " room or make the folder writable, then rerun the study to run this"
            " trial")
    return None


def _folder_problem(run_dir: Path) -> str | None:
    """What stands where the trial's folder ``run_dir`` should be, or where its run
    keeps a folder or file inside it, as a reason naming the fix, or None when the
    folder is there or can be made. A symbolic link to a folder is a folder; one to
    nothing is in the way."""
    if run_dir.is_dir():
        misplaced = misplaced_entry(run_dir)
        return misplaced and (f"{misplaced}; remove or rename it, then rerun the"
                              " study to run this trial")
    if not (run_dir.exists() or run_dir.is_symlink()):
        return None
    what = "a file" if run_dir.exists() else "a broken symbolic link"
    return (f"{run_dir} is {what}, not the trial's folder; remove or rename it,"
            " then rerun the study to run this trial")


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
        return (is_number(value) and math.isfinite(value) and value >= 0)

    if not (isinstance(result.get("reason", ""), str) and seconds()):
        return False
    if result.get("status") == "failed":
        return True
    return (result.get("status") == "ok" and is_number(result.get("metric"))
            and math.isfinite(result["metric"]) and count("best_epoch")
            and count("epochs"))


def _start_worker(parent: int) -> None:
    """Ctrl-C (or SIGTERM to the process group) reaches every process, and the
    parent forwards the signal it gets to its workers, again and again until they
    are done: an idle worker ignores both signals (dying, it would break the pool);
    a training one stops after its current update (the Solver's own handler), and
    takes the repeats for the same request (the parent, not the worker, stops at
    once on a second signal). The worker was spawned with both signals blocked
    (_signals_held); they are unblocked only now that they are ignored."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    StopFlag.ignored_repeats = frozenset(SIGNAL_EXIT_CODES)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNAL_EXIT_CODES)
    # The parent's id comes from the parent: a worker still importing when the
    # parent died would read init's here.
    threading.Thread(target=_exit_when_orphaned, args=(parent,), daemon=True,
                     name="nntrain-parent-watch").start()


# How often a worker looks whether the study that started it is still there.
PARENT_CHECK_SECONDS = 1.0


def _exit_when_orphaned(parent: int) -> None:
    """End this worker once its parent, the study, has died without ending it
    (SIGKILL, the out-of-memory killer): an idle worker ignores the signals and
    would wait for tasks for good, and a training one would hold its trial's
    folder, which a rerun of the study would find busy. Its trial folder is left
    as a killed run leaves one, and the rerun resumes it."""
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_SECONDS)
    os._exit(1)


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


def _tell_workers_to_stop(signum: int) -> None:
    """``signum`` to each worker process of this one (see _start_worker)."""
    for child in multiprocessing.active_children():
        try:
            os.kill(child.pid, signum)
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
                                 initializer=_start_worker,
                                 initargs=(os.getpid(),)) as pool:
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


def _dask_outcome(future, address: str) -> dict:
    """_outcome of a Dask future, which the cluster cancels when the scheduler
    goes away: then no trial can go on, and the study stops naming it."""
    try:
        return _outcome(future)
    except CancelledError as error:
        # Dask's FutureCancelledError holds its reason; its text adds a second
        # line of advice.
        reason = str(getattr(error, "reason", None) or error).splitlines()[0]
        reason = reason.rpartition("reason: ")[2].rstrip(".") or "cancelled"
        raise ClusterError(f"the Dask cluster at {address} dropped the study's trials"
                           f" ({reason}); check that its scheduler runs, then rerun"
                           " the same command to run the rest (finished trials are"
                           " kept)") from None


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
            _tell_workers_to_stop(stop.signum)
        for future in done:
            broken |= isinstance(future.exception(), BrokenProcessPool)
            yield running.pop(future), _outcome(future)


def run_locally(tasks: list, workers: int, runner, stop: StopFlag):
    """(task, result) as trials end on worker processes of this machine; a pool
    broken by a dying worker is replaced for the trials that had not started."""
    waiting = list(tasks)
    while waiting and stop.signum is None:
        before, size = len(waiting), min(workers, len(waiting))
        with _worker_pool(size) as pool:
            yield from _drain(pool, waiting, size, runner, stop)
        if len(waiting) == before:
            raise RuntimeError("the worker pool broke before it took any trial")


@contextmanager
def _dask_logs_quiet():
    """Dask's client logs a lost scheduler as errors with tracebacks on stderr;
    the study says what happened in one line of its own (ClusterError). Dask's
    loggers keep levels and handlers of their own (distributed.client does not
    pass its records up), so each is quieted."""
    loggers = [logging.getLogger(name) for name in list(logging.root.manager.loggerDict)
               if name == "distributed" or name.startswith("distributed.")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


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


def run_on_dask(tasks: list, address: str, runner, stop: StopFlag):
    """(task, result) as trials end on the Dask cluster at ``address``. Its workers
    need nntrain installed and must see the study folder and the data at the same
    paths (a shared file system). Dask retries a task whose worker died a few times
    before it gives up (KilledWorker). On a stop the trials are cancelled: one
    already running on a worker cannot be interrupted from here, and may still
    finish and write its result."""
    Client, as_completed = require_dask()
    try:
        client = Client(address, timeout=DASK_CONNECT_SECONDS)
    except OSError as error:  # refused or timed out
        raise ClusterError(f"cannot reach the Dask scheduler at {address} ({error});"
                           " start it, or check --scheduler tcp://HOST:PORT") from None
    except (ValueError, TypeError) as error:
        raise BadInputError(f"--scheduler {address} is not usable ({error}); give"
                            " tcp://HOST:PORT") from None
    # Quiet until the client has closed: closing cancels its reconnection, which
    # Dask logs with a traceback.
    with _dask_logs_quiet(), client:
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
                yield futures[future], _dask_outcome(future, address)
