"""Finding the checkpoint to resume from, and the config a resumed run uses.

The checkpoint's config wins: a resumed run is the same run. Only its length may
change, through ``--set train.epochs=N`` or ``--set train.iterations=N``, the
BLAS threads it uses, through ``--set train.threads=N``, and where its data lies
now, through ``--set data.path=NEW`` (the data found there must be the same, which
the checkpoint's data fingerprints check).
"""

import copy
import json
import os
import warnings
from pathlib import Path

from nntrain.checkpoint import Checkpoint, load_checkpoint
from nntrain.config import (
    apply_overrides,
    checked_overrides,
    override_setting,
    resolve_config,
    yaml_text,
)
from nntrain.errors import (
    CheckpointError,
    CheckpointWarning,
    ConfigError,
    RunDirectoryError,
    TrainingError,
)
from nntrain.fileio import write_bytes_atomically, write_fix
from nntrain.restore import (
    migrate_config,
    without_lbfgs_average,
    without_lbfgs_max_norm,
)
from nntrain.train.rundir import lock_folder, missing_or_unreadable
from nntrain.train.solver import count_iterations
from nntrain.train.state import check_data_spec, check_solver_state
from nntrain.yamlio import parse_yaml

# What --set may change in a resumed run: its length, its BLAS threads (for a
# smaller or busier machine; the results may then differ in the last bits), and
# where its data lies now (it must be the same data).
CHANGEABLE = ("train.epochs", "train.iterations", "train.threads", "data.path")
KEEPS_CONFIG = ("a resumed run keeps its checkpoint's config; only train.epochs,"
                " train.iterations, train.threads and data.path (where the data lies"
                " now) may change")


def find_checkpoint(path) -> tuple[Path, object, list[str]]:
    """(path, checkpoint, notes) for ``--resume PATH``: a checkpoint file, or a run
    directory, whose last.npz is taken, or when it is missing or damaged the
    newest checkpoint that loads (notes say which were skipped and why)."""
    path = Path(path)
    if not path.is_dir():
        return path, _resumable(path), []

    folder = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    candidates = sorted(folder.glob("*.npz"))
    if not candidates:
        raise CheckpointError(f"no checkpoint in {folder}; give a checkpoint file or"
                              " the run directory of a run that saved one, or start"
                              " over with --force in place of --resume")
    loaded, notes, reasons = [], [], []
    for candidate in candidates:
        try:
            checkpoint = _resumable(candidate)
        except CheckpointError as error:
            notes.append(f"skipped {candidate.name}: {error}")
            reasons.append(_reason(error, candidate))
            continue
        loaded.append((_iteration(checkpoint, candidate),
                       candidate.name == "last.npz", candidate, checkpoint))
    if not loaded:
        raise CheckpointError(f"every checkpoint in {folder} is damaged"
                              f" ({'; '.join(reasons)}); start over with --force")
    last = [item for item in loaded if item[1]]
    if last:
        # last.npz is the run's latest state, the one a stop message names. A
        # newer file is the best.npz or snapshot of an evaluation whose last.npz a
        # stop cut short (resuming from last.npz redoes it), or a file left from a
        # part of
        # the run that a resume from an older checkpoint dropped.
        iteration, _, chosen, checkpoint = last[0]
        newer = [item[2].name for item in loaded if item[0] > iteration]
        if newer:
            notes.append(f"resuming from last.npz (iteration {iteration}), the run's"
                         f" latest state; newer {', '.join(newer)} not used")
        return chosen, checkpoint, notes
    _, _, chosen, checkpoint = max(loaded, key=lambda item: item[:2])
    if notes:
        notes.append(f"resuming from {chosen.name}, the newest good checkpoint")
    return chosen, checkpoint, notes


def _reason(error: CheckpointError, path: Path) -> str:
    """What is wrong with the checkpoint at ``path``, naming the file alone: the
    error's first clause (the rest says what to do about one file)."""
    return str(error).replace(str(path), path.name).split("; ")[0]


def _resumable(path):
    """The checkpoint at ``path``, holding solver state and a data spec a run can
    resume from."""
    checkpoint = load_checkpoint(path)
    _iteration(checkpoint, path)
    check_solver_state(checkpoint)
    check_data_spec(checkpoint)
    return checkpoint


def _iteration(checkpoint, path) -> int:
    try:
        iteration = checkpoint.meta["solver"]["progress"]["iteration"]
    except (KeyError, TypeError):
        iteration = None
    if not isinstance(iteration, int):
        raise CheckpointError(f"{path} has no solver state to resume from; it is not"
                              " a checkpoint nntrain fit wrote")
    return iteration


def complete_saves(path: Path, checkpoint, locked: bool = False) -> list[str]:
    """Bring the run's best.npz up to ``checkpoint`` when that is the run's
    last.npz (loaded from ``path``), counts its own evaluation as the best, and
    best.npz holds an older iteration: a run that nntrain before this check
    stopped between the two saves of such an evaluation (it saved last.npz first)
    left best.npz behind, and a resume that has nothing to do, or never beats that
    best, would leave it so for good. Only that direction: a last.npz older than
    best.npz is the run's latest state (a stop, or a resume from an older
    checkpoint, put it there), never to be overwritten. A best.npz that is
    missing or does not load is rebuilt the same way, from such a last.npz.
    ``locked``: the caller holds the run folder's lock (an open RunDirectory).
    Returns a note if best.npz was rewritten."""
    progress = checkpoint.meta["solver"]["progress"]
    iteration = progress["iteration"]
    best = path.parent / "best.npz"
    if not (path.name == "last.npz" and progress.get("best_iteration") == iteration
            == progress.get("last_eval_iteration")):
        return []
    # Under the run folder's lock: a run still writing there is refused, not
    # overwritten.
    lock = None if locked else lock_folder(run_directory_of(path))
    try:
        held = _held_iteration(best)
        # A folder in its place is refused with the run directory's checks.
        if (held is not None and held >= iteration) or best.is_dir():
            return []
        if held is None:  # told before the copy replaces it
            note = (f"{best} was {missing_or_unreadable(best)}; it is rebuilt from"
                    " last.npz, which holds the run's best evaluation (iteration"
                    f" {iteration})")
        else:
            note = (f"{best} held iteration {held}, older than the best evaluation"
                    f" last.npz holds (iteration {iteration}): the run stopped"
                    " between saving the two; it holds that evaluation now")
        _copy_checkpoint(path, best)
    finally:
        if lock is not None:
            os.close(lock)
    return [note]


def _copy_checkpoint(source: Path, target: Path) -> None:
    try:
        write_bytes_atomically(target, source.read_bytes())
    except OSError as error:
        raise TrainingError(
            f"cannot write {target} ({error.strerror or error}): {write_fix(error)},"
            " and resume again; the file is as it was") from None


def _held_iteration(path: Path) -> int | None:
    """The iteration of the checkpoint at ``path``; None if it is missing or
    damaged."""
    try:
        return _iteration(load_checkpoint(path), path)
    except CheckpointError:
        return None


def resumed_config(checkpoint, overrides: list[str], path) -> dict:
    """The checkpoint's config with only its length, threads or data.path changed
    by ``overrides``."""
    if not isinstance(checkpoint, Checkpoint):
        raise TypeError(f"checkpoint is {type(checkpoint).__name__}; give a loaded"
                        " Checkpoint: nntrain.checkpoint.load_checkpoint(path)")
    overrides = checked_overrides(overrides)
    for text in overrides:
        key = text.partition("=")[0].strip()
        if key not in CHANGEABLE:
            _refuse_change(checkpoint, path, text, key)
    _iteration(checkpoint, path)
    raw = apply_overrides(copy.deepcopy(saved_config(checkpoint, path)),
                          list(overrides))
    if without_lbfgs_average(raw) is not raw:
        warnings.warn(CheckpointWarning(
            f"{path} sets train.average with optimizer lbfgs, which never averaged"
            " its weights; it is resumed as a run without train.average"),
            stacklevel=2)
    if without_lbfgs_max_norm(raw) is not raw:
        warnings.warn(CheckpointWarning(
            f"{path} sets max_norm with optimizer lbfgs, which never applied it; it"
            " is resumed as a run without max_norm"), stacklevel=2)
    return migrate_config(raw, path, overrides)


def _refuse_change(checkpoint, path, override: str, key: str) -> None:
    """Refuse ``override`` of ``key``, which a resume may not change, unless it
    sets what the checkpoint's config holds already (a command line repeated
    from the first run). A key that no config has (a typo) gets the config's
    own error rather than the word that a resumed run keeps its config."""
    saved = saved_config(checkpoint, path)
    try:
        changed = apply_overrides(copy.deepcopy(saved), [override])
        if changed == saved:
            return
        resolve_config(changed)
    except ConfigError as error:
        if error.key == key and str(error).startswith("unknown key"):
            raise ConfigError(f"--set {override}: {error}", key) from None
    raise ConfigError(f"--set {key}: {KEEPS_CONFIG}")


def saved_config(checkpoint, path) -> dict:
    """The config ``checkpoint`` (loaded from ``path``) was trained with, as saved."""
    saved = checkpoint.meta.get("config")
    if not isinstance(saved, dict):
        raise CheckpointError(f"{path} holds no config; it is not a checkpoint nntrain"
                              " fit wrote")
    return saved


def refuse_changed_config(config: dict, checkpoint, path) -> None:
    """A ConfigError naming the first setting of ``config`` (resolved) that
    differs from the checkpoint's own beyond what a resume may change."""
    saved = migrate_config(saved_config(checkpoint, path), path, warn=False)
    found = first_difference(config, saved)
    if found:
        key, given, kept = found
        raise ConfigError(f"{key} is {yaml_text(given)}, but {yaml_text(kept)} in"
                          f" {path}: {KEEPS_CONFIG} (resumed_config(checkpoint,"
                          " overrides, path) gives the config to resume with)", key)


def is_finished(config: dict, checkpoint) -> bool:
    progress = checkpoint.meta["solver"]["progress"]
    full_batch = config["optimizer"]["name"] == "lbfgs"
    _, total = count_iterations(config["train"],
                                checkpoint.meta["data"]["sizes"]["train"], full_batch)
    if (progress["iteration"] == total
            and progress.get("last_eval_iteration", 0) != total):
        # Saved after its last update but before the final evaluation (a snapshot,
        # or a stop on a signal in older versions): that evaluation is still to do.
        return False
    return (progress["iteration"] >= total
            or _ended_by_early_stopping(checkpoint.meta["solver"]))


def _ended_by_early_stopping(solver: dict) -> bool:
    """Whether early stopping ended the run for good. Not when the final evaluation
    (``Solver._final_evaluation``) ended it: that evaluation belongs to the run's
    length alone, and an extension drops it, with its early-stopping count."""
    return (solver.get("stopped_early", False)
            and solver.get("before_final_evaluation") is None)


def finished_note(path, config: dict, checkpoint, setting: str = "--set ") -> str:
    """What to tell a user who resumes a finished run: how to lengthen it, in the
    unit its length is set in (``setting`` comes before ``train.epochs=N``: the
    command line's --set, or nothing for the Python API). A run early stopping
    ended cannot go on: its config, early stopping included, is the checkpoint's.
    A run that ``config`` shortened to where it is, or before, is not finished:
    its own length, the checkpoint's, goes on."""
    solver = checkpoint.meta["solver"]
    progress = solver["progress"]
    done = f"{progress['iteration']} iterations, epoch {progress['epoch']}"
    if _ended_by_early_stopping(solver):
        return (f"{path} is from a run that early stopping ended ({done}): nothing"
                " to do, and it cannot train on. To train longer, start it over"
                " with --force and a larger train.early_stopping.patience (or"
                " none)")
    unit = "epochs" if config["train"]["iterations"] is None else "iterations"
    reached = progress["epoch"] if unit == "epochs" else progress["iteration"]
    longer = f"{setting}train.{unit}=N with N > {reached}"
    own = migrate_config(saved_config(checkpoint, path), path)
    if not is_finished(own, checkpoint):
        # Only the length asked for now is spent: the run's own goes on.
        at = "at" if reached == config["train"][unit] else "past"
        return (f"{path} is at {done}: {at} the length asked for"
                f" ({_length(config)}), but short of its run's own"
                f" ({_length(own)}): nothing to do. To go on, ask for more"
                f" ({longer}), or keep the checkpoint's own length to train on to"
                f" {_length(own)}")
    extended = _extended_note(path, own, progress, setting)
    return (f"{path} is from a finished run ({done}): nothing to do. To train"
            f" longer, extend it past those: {longer}{extended}")


def _length(config: dict) -> str:
    """A config's length as it sets it: "train.epochs 3" or "train.iterations
    100"."""
    train = config["train"]
    unit = "epochs" if train["iterations"] is None else "iterations"
    return f"train.{unit} {train[unit]}"


def _extended_note(path, own: dict, progress: dict, setting: str) -> str:
    """What to add for a finished checkpoint whose run directory's config.yaml
    sets a length it has not reached (the run was extended after it was saved):
    the checkpoint keeps ``own``, its config, whose length it ended at, and only
    --set trains it on. Empty otherwise, and when config.yaml cannot be read."""
    path = Path(path)
    if path.parent.name != "checkpoints":
        return ""
    try:
        text = (path.parent.parent / "config.yaml").read_text(encoding="utf-8")
        train = parse_yaml(text, "config.yaml")["train"]
        now = {"epoch": train["epochs"], "iteration": train["iterations"]}
    except (OSError, UnicodeDecodeError, ConfigError, KeyError, TypeError):
        return ""
    longer = [(unit, value) for unit, value in now.items()
              if type(value) is int and value > progress[unit]]
    if len(longer) != 1 or None not in now.values():
        return ""
    (unit, value), = longer
    switch = ""
    if own["train"][f"{unit}s"] is None:  # the run switched between the units
        other = "iterations" if unit == "epoch" else "epochs"
        switch = f"{setting}train.{other}=null "
    return (f" (its run directory's config.yaml sets train.{unit}s {value}, a"
            " length set after this checkpoint was saved, which keeps its own:"
            f" {switch}{setting}train.{unit}s={value} trains it on to that)")


def run_directory_of(checkpoint_path: Path) -> Path:
    """checkpoints/last.npz lives in RUN_DIR/checkpoints: the run is its parent."""
    folder = checkpoint_path.resolve().parent
    if folder.name != "checkpoints":
        raise CheckpointError(
            f"{checkpoint_path} is not inside a run directory's checkpoints folder;"
            " resume a run directory (or a checkpoint in its checkpoints/ folder)"
        )
    metrics = folder.parent / "metrics.jsonl"
    if not (metrics.exists() or metrics.is_symlink()):
        # The resumed run extends the records; without them it would look whole
        # but lack everything before the stop.
        raise RunDirectoryError(
            f"{metrics} is missing, so the run's records are gone; put the file"
            " back, or start over with --force (an empty metrics.jsonl resumes"
            " the run without its earlier records)"
        )
    return folder.parent


def threads_note(given: dict, resumed: dict, overrides) -> str | None:
    """What to tell a user whose config file sets other train.threads than the
    resumed run uses: only ``--set`` changes them on resume."""
    if override_setting("train.threads", overrides):
        return None
    wanted = yaml_text(given["train"]["threads"])
    kept = yaml_text(resumed["train"]["threads"])
    if wanted == kept:
        return None
    return (f"sets train.threads: {wanted}; the resumed run keeps the checkpoint's"
            f" {kept}; add --set train.threads={wanted} to change it")


def differs(given: dict, saved: dict) -> bool:
    """Whether two configs differ in anything but what a resume may change (the
    length, the threads, the output folder, where the data lies)."""
    return first_difference(given, saved) is not None


def differences_note(config_path, given: dict, saved: dict) -> str | None:
    """The note for a resume whose config file ``config_path`` (``given``)
    differs from the checkpoint's config (``saved``): which setting, with both
    values, and how many others; None when they agree."""
    found = list(differences(given, saved))
    if not found:
        return None
    key, mine, theirs = found[0]
    others = len(found) - 1
    more = (f" and {others} other setting{'s' if others > 1 else ''}" if others
            else "")
    return (f"{config_path} differs from the checkpoint's config in {key}"
            f" ({_short_text(mine)} in the file, {_short_text(theirs)} in the"
            f" checkpoint){more}; a resumed run keeps the checkpoint's")


def _short_text(value, limit: int = 60) -> str:
    """``value`` as YAML on one line, cut at ``limit`` characters: a note names
    the setting, and a list of layers would fill the screen."""
    text = (json.dumps(value, separators=(", ", ": "))
            if isinstance(value, (dict, list)) else yaml_text(value))
    return text if len(text) <= limit else text[:limit - 3] + "..."


_ABSENT = object()


def first_difference(given: dict, saved: dict) -> tuple[str, object, object] | None:
    """(dotted key, given value, saved value) of the first setting in which two
    resolved configs differ, leaving out what a resume may change (CHANGEABLE) and
    the output folder; None when they agree. A key one of them lacks has the
    value None there."""
    return next(differences(given, saved), None)


def differences(given: dict, saved: dict, prefix: str = ""):
    """Every (dotted key, given value, saved value) as first_difference finds the
    first, in the order of the keys."""
    for key in [*given, *(key for key in saved if key not in given)]:
        dotted = f"{prefix}{key}"
        if dotted in (*CHANGEABLE, "output"):
            continue
        mine, theirs = given.get(key, _ABSENT), saved.get(key, _ABSENT)
        if isinstance(mine, dict) and isinstance(theirs, dict):
            yield from differences(mine, theirs, f"{dotted}.")
        elif mine != theirs:
            yield (dotted, None if mine is _ABSENT else mine,
                   None if theirs is _ABSENT else theirs)
