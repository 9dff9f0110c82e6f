"""Checking the solver state and data spec in a checkpoint's meta before a run
resumes from it (the data spec also before eval or predict uses it).

The meta is JSON that no checksum covers: a hand edit or another writer can put any
value under any key. Each value the Solver reads back is checked here against one
table of types and ranges, before anything in the run directory changes, so that a
bad one is refused with its key named (CheckpointError) rather than failing deep in
the training loop, or, like a negative count, being taken silently.
"""

import json
import math

import numpy as np

from nntrain.errors import CheckpointError

# How every message about a bad value ends: what the user can do about it.
FIX = ("the checkpoint is damaged or was edited: resume from another checkpoint,"
       " or start over with --force")


class _Bad(Exception):
    """The value at the dotted ``key`` (solver.progress.iteration) is unusable."""

    def __init__(self, key: str, problem: str):
        super().__init__(f"{key} {problem}")


def _shown(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _leaf(what: str, test):
    def check(value, key):
        if not test(value):
            raise _Bad(key, f"is {_shown(value)}, not {what}")
    return check


def _is_count(value) -> bool:
    # bool is a subclass of int, but true is no count.
    return type(value) is int and value >= 0


def _is_number(value) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


def _is_positive(value) -> bool:
    return _is_count(value) and value > 0


def _text(value, key):
    """A string UTF-8 can write: JSON's \\ud800 escape reads as a lone surrogate,
    which would fail eval's tables or predict's CSV half-way through."""
    if not isinstance(value, str):
        raise _Bad(key, f"is {_shown(value)}, not a string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _Bad(key, f"is {_shown(value)}, which holds a lone surrogate, no"
                   " text UTF-8 can write") from None


def _below(limit: int):
    return lambda value: _is_count(value) and value < limit


COUNT = _leaf("a count (an integer >= 0)", _is_count)
NUMBER = _leaf("a finite number", _is_number)
DURATION = _leaf("a number of seconds >= 0", lambda v: _is_number(v) and v >= 0)
POSITIVE = _leaf("a count >= 1", _is_positive)
TEXT = _text
FLAG = _leaf("true or false", lambda value: isinstance(value, bool))


def _optional(check):
    def checked(value, key):
        if value is not None:
            check(value, key)
    return checked


def _record(fields: dict, required=(), closed=True):
    """A JSON object whose keys ``fields`` maps to their checks; ``closed``: other
    keys are refused (the Solver would trip over them)."""
    def check(value, key):
        if not isinstance(value, dict):
            raise _Bad(key, f"is {_shown(value)}, not a JSON object")
        for name in required:
            if name not in value:
                raise _Bad(f"{key}.{name}", "is missing")
        for name, item in value.items():
            if name in fields:
                fields[name](item, f"{key}.{name}")
            elif closed:
                raise _Bad(f"{key}.{name}", "is no key nntrain writes there")
    return check


def _list_of(check, length=None):
    def checked(value, key):
        if not isinstance(value, list) or length not in (None, len(value)):
            shape = "a list" if length is None else f"a list of {length}"
            raise _Bad(key, f"is {_shown(value)}, not {shape}")
        for index, item in enumerate(value):
            check(item, f"{key}[{index}]")
    return checked


# A PCG64 generator's state as numpy gives it: 128-bit state and increment.
GENERATOR = _record({
    "bit_generator": _leaf('"PCG64"', lambda value: value == "PCG64"),
    "state": _record({"state": _leaf("a 128-bit count", _below(2 ** 128)),
                      "inc": _leaf("a 128-bit count", _below(2 ** 128))},
                     required=("state", "inc")),
    "has_uint32": _leaf("0 or 1", lambda value: value in (0, 1)
                        and type(value) is int),
    "uinteger": _leaf("a 32-bit count", _below(2 ** 32)),
}, required=("bit_generator", "state", "has_uint32", "uinteger"))

# Older checkpoints lack the counters added since; the Solver's defaults fill in.
PROGRESS = _record({
    "epoch": COUNT, "iteration": COUNT, "batch_in_epoch": COUNT,
    "best_value": _optional(NUMBER), "best_epoch": _optional(COUNT),
    "best_iteration": _optional(COUNT), "last_eval_iteration": COUNT,
    "early_stopping_best": _optional(NUMBER), "bad_evaluations": COUNT,
}, required=("epoch", "iteration"))

SUMS = ("loss", "data_loss", "reg_loss", "correct")

SCHEDULE = _record({"current": NUMBER, "bad_evaluations": COUNT}, closed=False)
RUNNING_MEANS = _record({"samples": COUNT,
                         "sums": _record(dict.fromkeys(SUMS, NUMBER), SUMS)},
                        required=("samples", "sums"))
WARNED = _list_of(TEXT)
CURVE = _list_of(_list_of(_optional(NUMBER), length=2))


def _diagnostics(value, key):
    """Diagnostics by name: numbers, NaN or infinite ones included (an update
    ratio of all-zero weights), which Python's JSON keeps."""
    if not isinstance(value, dict):
        raise _Bad(key, f"is {_shown(value)}, not a JSON object")
    for name, item in value.items():
        if type(item) not in (int, float):
            raise _Bad(f"{key}.{name}", f"is {_shown(item)}, not a number")


DIAGNOSTICS = _optional(_diagnostics)

# What the Solver keeps of its state from before the final evaluation of a run
# (solver.EVALUATED_STATE, and the last update's diagnostics), for an extension
# of the run to continue from.
BEFORE_FINAL_EVALUATION = _record({
    "progress": PROGRESS, "running_means": RUNNING_MEANS, "schedule": SCHEDULE,
    "warned": WARNED, "curve": CURVE, "pending_diagnostics": DIAGNOSTICS,
}, required=("progress", "running_means", "schedule", "warned", "curve"))

# What Solver.state_meta writes. Keys a later nntrain may add are let through.
SOLVER = _record({
    "progress": PROGRESS,
    "optimizer_steps": COUNT,
    "lr": _optional(NUMBER),
    "schedule": SCHEDULE,
    "shuffle_state_at_epoch_start": _optional(GENERATOR),
    "dropout_state": _optional(GENERATOR),
    "running_means": RUNNING_MEANS,
    "divergence": _record({"first_loss": _optional(NUMBER), "high_streak": COUNT,
                           "first_data_loss": _optional(NUMBER)},
                          required=("first_loss", "high_streak")),
    "warned": WARNED,
    "curve": CURVE,
    "seconds": DURATION,
    # The evaluation records; a resume keeps in metrics.jsonl the evaluations of
    # these iterations alone (RunDirectory.continue_after).
    "history": _list_of(_record({"iteration": COUNT}, required=("iteration",),
                                closed=False)),
    "stopped_early": FLAG,
    "average_count": COUNT,
    "before_final_evaluation": _optional(BEFORE_FINAL_EVALUATION),
    "pending_diagnostics": DIAGNOSTICS,
}, required=("progress", "optimizer_steps", "schedule",
             "shuffle_state_at_epoch_start", "dropout_state", "running_means",
             "divergence", "warned", "curve", "seconds", "history"), closed=False)


SPLITS = ("train", "val", "test")

# What prepare.data_spec writes: the config's data section, then what the data
# held. Checkpoints before fingerprints lack them; config keys are let through.
DATA = _record({
    "name": TEXT,
    "path": _optional(TEXT),
    "num_features": POSITIVE,
    "model_input_width": POSITIVE,
    "num_classes": POSITIVE,
    "class_names": _list_of(TEXT),
    "input_shape": _list_of(POSITIVE),
    "sizes": _record(dict.fromkeys(SPLITS, COUNT), SPLITS),
    "fingerprints": _record(dict.fromkeys(SPLITS, TEXT)),
}, required=("num_features", "num_classes", "class_names", "input_shape", "sizes"),
    closed=False)


def check_data_spec(checkpoint, fix: str = FIX) -> None:
    """Refuse a checkpoint whose ``data`` meta (what resume, eval and predict read
    about the data) is malformed, naming the key; ``fix`` ends the message."""
    where = checkpoint.path or "the checkpoint"
    try:
        if "data" not in checkpoint.meta:
            raise _Bad("data", "is missing")
        DATA(checkpoint.meta["data"], "data")
        _check_data_agrees(checkpoint.meta["data"])
    except _Bad as bad:
        raise CheckpointError(f"{where}: {bad}; {fix}") from None


def _check_data_agrees(data: dict) -> None:
    """The class names and the input shape must fit the counts the model uses."""
    names, classes = data["class_names"], data["num_classes"]
    if len(names) != classes:
        raise _Bad("data.class_names", f"holds {len(names)} names, but"
                   f" data.num_classes is {classes}")
    shape, features = data["input_shape"], data["num_features"]
    if math.prod(shape) != features:
        raise _Bad("data.input_shape", f"is {_shown(shape)}, which does not hold"
                   f" data.num_features ({features}) values")


def check_solver_state(checkpoint, per_epoch: int | None = None,
                       schedule_state: dict | None = None) -> None:
    """Refuse a checkpoint whose ``solver`` meta the Solver cannot resume from,
    naming the key. ``per_epoch`` (updates per epoch) and ``schedule_state`` (what
    the run's schedule keeps) check it against the run, when known."""
    where = checkpoint.path or "the checkpoint"
    solver = checkpoint.meta.get("solver")
    try:
        if solver is None:
            raise _Bad("solver", "is missing")
        SOLVER(solver, "solver")
        _check_generators(solver)
        _check_progress(solver["progress"], per_epoch)
        _check_history(solver["history"], solver["progress"]["iteration"])
        if schedule_state is not None:
            _check_schedule(solver["schedule"], schedule_state)
        before = solver.get("before_final_evaluation")
        if before is not None:
            _check_before_final_evaluation(before, solver["progress"], per_epoch,
                                           schedule_state)
    except _Bad as bad:
        raise CheckpointError(f"{where}: {bad}; {FIX}") from None


def _check_generators(solver: dict) -> None:
    """numpy has the last word on a generator state the table let through."""
    for key in ("shuffle_state_at_epoch_start", "dropout_state"):
        if solver[key] is None:
            continue
        try:
            np.random.PCG64().state = solver[key]
        except (TypeError, ValueError, KeyError, OverflowError) as error:
            raise _Bad(f"solver.{key}", f"is not a generator state ({error})") from None


def _check_progress(progress: dict, per_epoch: int | None,
                    key: str = "solver.progress") -> None:
    iteration = progress["iteration"]
    for name in ("batch_in_epoch", "last_eval_iteration", "best_iteration"):
        value = progress.get(name)
        if value is not None and value > iteration:
            raise _Bad(f"{key}.{name}", f"is {value}, past {key}.iteration"
                       f" ({iteration})")
    batch = progress.get("batch_in_epoch", 0)
    if per_epoch is not None and batch > per_epoch:
        raise _Bad(f"{key}.batch_in_epoch", f"is {batch}, but an epoch of this"
                   f" run has {per_epoch} updates")


def _check_history(history: list, iteration: int) -> None:
    """Every evaluation record is of an update already done."""
    for index, record in enumerate(history):
        if record["iteration"] > iteration:
            raise _Bad(f"solver.history[{index}].iteration", f"is"
                       f" {record['iteration']}, past solver.progress.iteration"
                       f" ({iteration})")


def _check_schedule(saved: dict, wanted: dict, key: str = "solver.schedule") -> None:
    if set(saved) != set(wanted):
        kept = ", ".join(sorted(wanted)) or "nothing"
        raise _Bad(key, f"holds {_shown(sorted(saved))}, but the run's"
                   f" schedule keeps {kept}")


def _check_before_final_evaluation(before: dict, progress: dict,
                                   per_epoch: int | None,
                                   schedule_state: dict | None) -> None:
    """The state from before the final evaluation is the same point of training:
    the same update, with the same counters a resume checks."""
    key = "solver.before_final_evaluation"
    iteration = before["progress"]["iteration"]
    if iteration != progress["iteration"]:
        raise _Bad(f"{key}.progress.iteration", f"is {iteration}, not"
                   f" solver.progress.iteration ({progress['iteration']})")
    _check_progress(before["progress"], per_epoch, f"{key}.progress")
    if schedule_state is not None:
        _check_schedule(before["schedule"], schedule_state, f"{key}.schedule")
