"""The search space: the ``search:`` section validated into a SearchSpec, the
draws that fix every trial's values, the narrowing of ranges between rounds, and each
trial's config (see the package's docstring for the rules)."""

import copy
import json
import math
import warnings
from dataclasses import dataclass, replace
from functools import partial
from typing import NoReturn

from nntrain.arguments import path_argument
from nntrain.config import (
    MONITORS,
    OPTIMIZER_KEYS,
    SCHEDULE_KEYS,
    SCHEMA,
    ForeignSettingError,
    apply_overrides,
    blamed_on_override,
    checked_overrides,
    key_within,
    read_config_file,
    resolve_config,
    yaml_text,
)
from nntrain.config_checks import choice, close_match, integer
from nntrain.errors import ConfigError, NNTrainWarning
from nntrain.fileio import absolute_data_path, too_long_paths_refused
from nntrain.random import SEARCH_STREAM, generator
from nntrain.yamlio import key_text, one_line_yaml

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
    # Whether the config leaves train.monitor to the study, which then sets it to
    # metric (load_search_config). Not part of the plan (to_json): it says how the
    # config was written, not what the trials run.
    monitor_from_metric: bool = False

    def round_sizes(self) -> list[int]:
        """Trials per round: as even as possible, earlier rounds taking the rest."""
        base, extra = divmod(self.trials, self.rounds)
        return [base + (1 if r < extra else 0) for r in range(self.rounds)]

    def to_json(self) -> dict:
        return {"trials": self.trials, "seed": self.seed, "metric": self.metric,
                "mode": self.mode, "rounds": self.rounds, "keep": self.keep,
                "params": [[p.key, p.kind, p.bounds] for p in self.params]}


def _invalid(key: str, expected: str, value):
    raise ConfigError(f"invalid {key}: {shown(value)} (expected {expected})", key)


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number_pair(bounds, key: str, positive: bool = False) -> list:
    wanted = "[low, high] with " + ("0 < low < high" if positive else "low < high")
    if not (isinstance(bounds, list) and len(bounds) == 2
            and all(is_number(b) and math.isfinite(b) for b in bounds)):
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
            keys.add(f"{prefix}{name}")
            if isinstance(value, dict):
                walk(value, f"{prefix}{name}.")

    walk(config, "")
    for section, tables in (("optimizer", OPTIMIZER_KEYS), ("schedule", SCHEDULE_KEYS)):
        keys.update(f"{section}.{key}" for table in tables.values() for key in table)
    return sorted(keys - set(UNSEARCHABLE))


# Config keys that a study sets itself, with why: searching them would change
# nothing, or scatter the trials' folders.
UNSEARCHABLE = {
    "output": "each trial's folder is the study's trial-NNNN",
    "train.plots": "trials draw no plots; the study draws search.png",
}


def _parse_param(key, spec, known: list[str]) -> Param:
    if key in UNSEARCHABLE:
        raise ConfigError(f"invalid search.params: {key} cannot be searched"
                          f" ({UNSEARCHABLE[key]}); remove it", "search.params")
    if key not in known:
        close = close_match(str(key), known)
        hint = (f"did you mean '{close}'?" if close
                else "give a dotted config key like optimizer.lr")
        shown_key = repr(key) if isinstance(key, str) else key_text(key)
        raise ConfigError(f"invalid search.params: {shown_key} is not a config key"
                          f" ({hint})", "search.params")
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
        close = close_match(meant, known)
        unknown = f" ({meant} is not a config key" + (
            f"; did you mean '{close}'?)" if close else ")")
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


def parse_search(raw, config: dict, written: dict | None = None) -> SearchSpec:
    """Validate a ``search:`` section for the resolved ``config`` it searches; a
    problem is a one-line ConfigError naming the key. Every option of a choice and
    each end of a range is tried before anything runs (see
    _check_every_value_fits), on ``written``, the config as written, where it is
    given (a stand-in in ``config`` may have dropped settings of its rule that a
    trial drawing that rule keeps), else on ``config``."""
    if not isinstance(raw, dict):
        _invalid("search", "a mapping with trials, metric and params", raw)
    for name in raw:
        if name not in SEARCH_KEYS:
            close = close_match(str(name), SEARCH_KEYS)
            hint = f"did you mean '{close}'?" if close else \
                f"valid keys: {', '.join(SEARCH_KEYS)}"
            name = key_text(name)
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

    params = _parse_params(raw["params"], searchable_keys(config))
    base = config if written is None else written
    unfit = _check_every_value_fits(params, base)
    spec = SearchSpec(trials, seed, metric, mode, rounds, keep, params)
    _check_some_trial_fits(spec, base)
    for warning in unfit:  # once the study is known to run at all
        warnings.warn(warning, NNTrainWarning, stacklevel=2)
    return spec


def _parse_params(params, known: list[str]) -> tuple:
    if not isinstance(params, dict) or not params:
        _invalid("search.params", "a mapping of config keys to distributions, like"
                 " {optimizer.lr: {loguniform: [1.0e-4, 1.0e-1]}}", params)
    return tuple(_parse_param(key, spec, known) for key, spec in params.items())


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
            trial_config(config, values, run_dir="trial")
            return
        except ConfigError as error:
            first_error = first_error or error
    raise ConfigError(f"invalid search.params: none of the first {count} trials"
                      f" planned has a valid config (the first fails with: "
                      f"{first_error}); search keys that fit together",
                      "search.params")


def _check_every_value_fits(params, config: dict) -> list[str]:
    """Refuse an option of a choice or an end of a range with which no trial could
    run, and return warnings of those with which some trials fail.

    Each value is set on ``config`` beside the first option or end of every other
    searched key, as every trial sets them all, and where the error names other
    searched keys, with each of their options or ends instead (see _Mender). A
    value that fits none of those combinations is tried alone, on ``config``'s
    own values of the other keys: failing that too (a typo among the options, a
    range reaching past what its key accepts), it stops the study before any
    trial; fitting, the trials that draw it will fail beside the other searched
    keys (optimizer.name sgd with optimizer.beta1 searched), which is warned of,
    as the other trials run. Values inside a range are not tried one by one; keys
    that never fit together are _check_some_trial_fits' concern."""
    candidates = {param.key: _ends(param) for param in params}
    firsts = {key: values[0] for key, values in candidates.items()}
    validate = partial(trial_config, config, run_dir="trial")
    found = []
    for param in params:
        refused, unfit = [], []
        for value in candidates[param.key]:
            beside = _refusal(validate, param, value, candidates, firsts)
            if beside is None:
                continue
            alone = _refusal(validate, param, value, candidates)
            if alone is None:
                unfit.append((value, beside))
            else:
                refused.append((value, alone))
        where = f"search.params.{param.key}"
        if refused and len(refused) == len(candidates[param.key]):
            raise (_not_a_setting(param.key, refused[0][1])
                   or _nothing_fits(param, refused, where))
        if refused:
            value, error = refused[0]
            fix = ("remove or correct that option" if param.kind == "choice"
                   else "give a range whose ends the key accepts")
            raise ConfigError(f"invalid {where}: {_which(param, value)} gives no"
                              f" valid config ({error}); {fix}", where)
        if unfit:
            found.append(_unfit_warning(param, unfit))
    return found


def _unfit_warning(param: Param, unfit: list) -> str:
    """The warning for the options or range ends of ``param`` that fit no trial
    beside the other searched keys (``unfit``: (value, error) pairs)."""
    error = unfit[0][1]
    # A foreign setting's own fix is for a key written in its section.
    problem = (str(error).partition("; ")[0]
               if isinstance(error, ForeignSettingError) else error)
    if len(unfit) == 1:
        values, they, give, do = _which(param, unfit[0][0]), "it", "gives", "does"
    else:
        kind = "options" if param.kind == "choice" else "ends"
        shown_values = [shown(value) for value, _ in unfit]
        values = f"the {kind} {', '.join(shown_values[:-1])} and {shown_values[-1]}"
        they, give, do = "they", "give", "do"
    fix = (f"remove {'that option' if len(unfit) == 1 else 'those options'}"
           if param.kind == "choice" else "narrow the range")
    return (f"search.params.{param.key}: the trials that draw {values} will fail,"
            f" as {they} {give} no valid config beside the other searched keys,"
            f" which every trial sets ({'the first: ' if len(unfit) > 1 else ''}"
            f"{problem}); {fix}, or stop searching the keys {they} {do} not fit"
            " with")


def _nothing_fits(param: Param, refused: list, where: str) -> ConfigError:
    """The error for ``param`` when each of its options, or both ends of its range,
    gave an invalid config (``refused``: (value, error) pairs)."""
    if param.kind == "choice":
        return ConfigError(f"invalid {where}: no value of it fits the key"
                           f" ({refused[0][1]})", where)
    # Only the ends were tried: values between them may well fit (a range that
    # reaches past the key's bounds at both ends), so each end's error is given.
    (low, low_error), (high, high_error) = refused
    return ConfigError(f"invalid {where}: neither end of the range gives a valid"
                       f" config: the low end {shown(low)} ({low_error}) and the"
                       f" high end {shown(high)} ({high_error}); give a range whose"
                       " ends the key accepts", where)


def _not_a_setting(key: str, error: ConfigError) -> ConfigError | None:
    """The error for a searched ``key`` that the config's update rule or schedule
    does not take (optimizer.lr of lbfgs), when ``error`` says so, else None.
    The config's own fix (another optimizer.name, with the key's value) is for a
    key written in its section; a searched one is removed from search.params."""
    if not (isinstance(error, ForeignSettingError) and error.key[0] == key):
        return None
    # The problem is the message's first clause: "optimizer.lr is not a setting
    # of 'lbfgs' (it belongs to ...)"; what follows it is the fix.
    problem = str(error).partition("; ")[0]
    where = f"search.params.{key}"
    return ConfigError(f"invalid {where}: {problem}, so no trial can set it;"
                       f" remove {key} from search.params, or search an"
                       f" {error.section}.name that takes it", where)


def _refusal(validate, param: Param, value, candidates: dict,
             others: dict | None = None):
    """The error that rules ``value`` of ``param`` out, or None when some
    combination fits (or the search for one ran out of budget). ``others``: the
    values of the other searched keys to start from, as a trial sets them all
    (each may be changed to its other candidates); None tries ``value`` alone.
    Draws from a uniform or log-uniform range stay below its high end, so a high
    end that is refused but a value just below it is not (model.drop_probability
    up to 1.0, which the key excludes) is accepted."""
    start = {key: other for key, other in (others or {}).items() if key != param.key}

    def fit(tried):
        return _Mender(validate, candidates).fit({**start, param.key: tried},
                                                 settled={param.key})

    _, error = fit(value)
    if error is None:
        return None
    if param.kind in ("uniform", "loguniform") and value == param.bounds[1]:
        config, _ = fit(math.nextafter(value, param.bounds[0]))
        if config is not None:
            return None
    return error


def _ends(param: Param) -> list:
    """The values tried for ``param``: each option of a choice once, the ends of a
    range."""
    values, seen = [], set()
    for value in param.bounds:
        text = json.dumps(value, sort_keys=True)  # tells 1 from true and 1.0
        if text not in seen:
            seen.add(text)
            values.append(value)
    return values


def _which(param: Param, value) -> str:
    if param.kind == "choice":
        return f"the option {shown(value)}"
    return f"the {'low' if value == param.bounds[0] else 'high'} end {shown(value)}"


def shown(value) -> str:
    """``value`` for a message: booleans, null and lists as the config's YAML
    writes them (true, null, [relu, true]); numbers and strings as Python's repr,
    as the messages of config_checks.py show them."""
    if isinstance(value, str) or is_number(value):
        return repr(value)
    if isinstance(value, (list, dict)):
        return one_line_yaml(value)
    return yaml_text(value)


# Validations that one _Mender may make. Past them a value is given the benefit of
# the doubt, and its trials tell.
MEND_BUDGET = 500
# Sections whose name decides their other keys: a trial that changes the name
# starts the section afresh (_renamed_sections), so it may mend any key in it.
NAMED_SECTIONS = ("optimizer", "schedule")


class _Mender:
    """A search for values of the searched keys that make a config valid.

    ``validate(values)`` returns the config with ``values`` set, or raises a
    ConfigError; ``candidates`` maps each searched key to the values to try (its
    ends or options). Starting from some values, when the config is invalid and
    its error names searched keys not settled yet (by default, those not set),
    each of those is set to each of its candidates in turn, depth first."""

    def __init__(self, validate, candidates: dict, budget: int = MEND_BUDGET):
        self.validate, self.candidates, self.budget = validate, candidates, budget

    def fit(self, values: dict, settled: set | None = None) -> tuple:
        """(config, None) for the first valid combination found; (None, error)
        when there is none, with the first error that no unsettled searched key
        could mend; (None, None) when the budget ran out first."""
        settled = set(values) if settled is None else settled
        if self.budget <= 0:
            return None, None
        self.budget -= 1
        try:
            return self.validate(values), None
        except ConfigError as error:
            root = error
        first = None
        for key in self.menders(root, settled):
            for value in self.candidates[key]:
                config, error = self.fit({**values, key: value}, settled | {key})
                if config is not None or error is None:
                    return config, error
                first = first or error
        return None, first or root

    def menders(self, error: ConfigError, settled: set) -> list[str]:
        """The searched keys not ``settled`` whose value may decide ``error``."""
        return [key for key in self.candidates
                if key not in settled and _may_mend(key, error)]


def _may_mend(key: str, error: ConfigError) -> bool:
    """Whether setting the searched ``key`` may change ``error``'s verdict: the
    error names the key, a key inside it or a section holding it, or, for
    optimizer.name and schedule.name, any key of that section."""
    keys = error.key if isinstance(error.key, tuple) else (error.key,)
    section, _, rest = key.partition(".")
    for named in keys:
        if not isinstance(named, str) or not named:
            continue
        named = named.split(" ")[0]  # some add a word: "train.clip mode"
        if key_within(named, key) or key_within(key, named):
            return True
        if rest == "name" and section in NAMED_SECTIONS and key_within(named, section):
            return True
    return False


def resolve_study_config(raw: dict, search) -> dict:
    """A study's config (``raw``, its search section taken out) validated as its
    trials will see it. Every trial replaces the values of the searched keys, so
    the config's own value of one need not be valid: where it is not (an
    optimizer.lr below schedule.floor, with optimizer.lr drawn from a range above
    it), the config takes a stand-in, the first end or option of the searched keys
    the error names that makes it valid (see _Mender), and keeps it in study.json.
    An error that names no searched key is raised as it is; one that none of
    their ends and options mends is raised naming the first of those keys."""
    try:
        return resolve_config(raw)
    except ConfigError as error:
        base_error = error
    searched = search.get("params") if isinstance(search, dict) else None
    keys = [key for key in searched if isinstance(key, str)] if isinstance(
        searched, dict) else []
    if not any(_may_mend(key, base_error) for key in keys):
        raise base_error
    params = _parse_params(searched, _known_keys(raw))
    mender = _Mender(lambda values: resolve_config(_with_values(raw, values)),
                     {param.key: _ends(param) for param in params})
    config, error = mender.fit({})
    if config is not None:
        return config
    # Out of budget, or a searched key that cannot be set where the config holds
    # no mapping (model: 3, with model.hidden searched): the config's own error
    # says more.
    if error is None or error.key is None:
        raise base_error
    if not any(_may_mend(key, error) for key in mender.candidates):
        raise error  # a fault of its own, found once the searched keys were mended
    key = mender.menders(base_error, set())[0]
    kind = next(param.kind for param in params if param.key == key)
    # Only the ends of a range stand in: values between them are not tried.
    what = ("no value of it fits the key" if kind == "choice"
            else "neither end of its range makes the config valid")
    raise ConfigError(f"invalid search.params.{key}: {what} ({error})",
                      f"search.params.{key}")


def _known_keys(raw: dict) -> list[str]:
    """searchable_keys for a config that does not resolve: the keys of a default
    config, and every key ``raw`` writes."""
    defaults = resolve_config({"train": {"epochs": 1}})
    return sorted(set(searchable_keys(defaults)) | set(searchable_keys(raw)))


def _with_values(raw: dict, values: dict) -> dict:
    """A copy of ``raw`` with the searched ``values`` set as a trial sets them: a
    section whose name changes starts afresh (_renamed_sections), then each value
    is set as --set would."""
    return apply_overrides(_renamed_sections(raw, values), _overrides(values))


def _overrides(values: dict) -> list[str]:
    return [f"{key}={json.dumps(value)}" for key, value in values.items()]


@too_long_paths_refused()
def load_search_config(path, overrides=()) -> tuple[dict, SearchSpec]:
    """Read a study's config file: ``--set`` overrides apply first (they may set
    search keys too, e.g. search.trials=5), then the search section is taken out
    and the rest validated as its trials will see it (resolve_study_config).
    data.path is made absolute, because trials may run in other folders or on
    other machines."""
    path = path_argument("path", path, "the study config's path, a str or"
                         " pathlib.Path")
    overrides = checked_overrides(overrides)
    raw = apply_overrides(read_config_file(path), overrides)
    search = raw.pop("search", None)
    if search is None:
        raise ConfigError(f"{path} has no search: section; add one (see"
                          " configs/digits-search.yaml)")
    search = _absolute_searched_paths(search)
    try:
        config = resolve_study_config(raw, search)
        spec = parse_search(search, config, written=raw)
        _check_stand_in_keeps_settings(raw, config, spec)
        config, spec = _monitor_the_metric(raw, config, spec)
    except ConfigError as error:
        raise blamed_on_override(error, overrides) or ConfigError(
            f"{path}: {error}", error.key) from None
    if config["data"]["path"]:
        config["data"]["path"] = absolute_data_path(config["data"]["path"])
    return config, spec


# The searched keys whose options name where the data lies.
SEARCHED_DATA_KEYS = ("data.path", "data")


def with_data_path(key: str, value, change):
    """An option of the searched ``key`` (data.path, or a whole data section)
    with ``change(path)`` in place of the data path it names; any other value as
    it is, for the checks to judge."""
    if key == "data.path" and isinstance(value, str) and value:
        return change(value)
    path = value.get("path") if key == "data" and isinstance(value, dict) else None
    if isinstance(path, str) and path:
        return {**value, "path": change(path)}
    return value


def _absolute_searched_paths(search):
    """``search`` with each data.path that ``search.params`` chooses among (on its
    own, or inside a searched data section) made absolute, as the config's own
    data.path is: a rerun from another folder, or a trial on another machine,
    must not train on whatever that folder's relative path names."""
    params = search.get("params") if isinstance(search, dict) else None
    if not isinstance(params, dict):
        return search
    params = dict(params)
    for key in SEARCHED_DATA_KEYS:
        spec = params.get(key)
        if isinstance(spec, dict) and isinstance(spec.get("choice"), list):
            where = f"search.params.{key}"
            params[key] = {**spec, "choice": [
                with_data_path(key, option,
                               partial(absolute_data_path, key=where))
                for option in spec["choice"]]}
    return {**search, "params": params}


def monitor_mode(monitor: str) -> str:
    """The mode in which a train.monitor option picks best.npz: min for the
    losses, max for the accuracies (as the Solver's monitor_improved)."""
    return "min" if monitor.endswith("loss") else "max"


def mode_warning(spec: SearchSpec) -> str | None:
    """A warning when search.mode ranks the worst of its metric first (mode min
    with an accuracy, max with a loss), else None: a mode written the wrong way
    round, since no study looks for its worst trials on purpose."""
    better = monitor_mode(spec.metric)
    if spec.mode == better:
        return None
    ranked, good = (("lowest", "higher") if spec.mode == "min" else
                    ("highest", "lower"))
    return (f"search.mode is {spec.mode}, so the study ranks the {ranked}"
            f" {spec.metric} first, although a {good} {spec.metric} is better; set"
            f" search.mode to {better} (--set search.mode={better}), or leave it"
            " out")


def _monitor_the_metric(raw: dict, config: dict, spec: SearchSpec) -> tuple:
    """``config`` and ``spec`` with train.monitor set to search.metric, so that
    every trial's best.npz holds the epoch its row ranks (and early stopping and a
    plateau schedule watch that metric), where the config as written (``raw``)
    leaves train.monitor open and the metric is a monitor option of the same
    mode. Otherwise both are returned as they are, and --ensemble says which
    epochs the trials' best.npz hold."""
    train = raw.get("train")
    written = isinstance(train, dict) and "monitor" in train
    searched = any(param.key in ("train", "train.monitor") for param in spec.params)
    if (written or searched or spec.metric not in MONITORS
            or spec.mode != monitor_mode(spec.metric)):
        return config, spec
    # The monitor was the default, val_accuracy, with which the config is valid;
    # another metric of the same mode, or a loss, is valid wherever it is (only
    # early stopping's min_delta depends on it, and allows more for a loss).
    config = {**config, "train": {**config["train"], "monitor": spec.metric}}
    return config, replace(spec, monitor_from_metric=True)


def _check_stand_in_keeps_settings(raw: dict, config: dict, spec: SearchSpec):
    """Refuse a study whose config took a stand-in rule (resolve_study_config)
    that would make trials drawing another rule lose settings the config gives:
    trials are built from the resolved config, which holds no setting of the rule
    as written (optimizer {name: adam, beta1: 1.5, eps: 1.0e-6} stood in by sgd,
    with rmsprop searched too, would lose eps)."""
    for section in NAMED_SECTIONS:
        key = f"{section}.name"
        written = raw.get(section)
        if key not in {p.key for p in spec.params} or not isinstance(written, dict):
            continue
        stand_in = config[section]["name"]
        if written.get("name", SCHEMA[section]["name"].default) == stand_in:
            continue
        options = next(p.bounds for p in spec.params if p.key == key)
        for option in options:
            try:
                as_written = trial_config(raw, {key: option}, "trial")[section]
                as_run = trial_config(config, {key: option}, "trial")[section]
            except ConfigError:
                continue  # the checks before have judged this option
            lost = sorted(k for k in as_written if as_written[k] != as_run.get(k))
            if lost:
                raise ConfigError(
                    f"invalid {section}: its settings are no valid"
                    f" '{written.get('name', stand_in)}' section, and trials drawing"
                    f" '{option}' would run without {', '.join(lost)} as written"
                    f" (the study stands in '{stand_in}'); correct the section's"
                    " settings", section)


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
    raw = apply_overrides(_with_values(config, values), ["train.plots=false"])
    raw["output"] = str(run_dir)
    return resolve_config(raw)


def _renamed_sections(config: dict, values: dict) -> dict:
    """A copy of ``config`` in which an optimizer or schedule section whose
    ``name`` the trial changes starts afresh. ``config`` is the study's resolved
    config, or the config as written when checks build the trials from it
    (load_search_config); a resolved one holds every default of its own rule
    (Adam's beta1, ...), which another rule would refuse or (eps) read as a
    setting. A value carries over only where the new rule has the key and the
    value is not the old rule's default, i.e. where the study chose it (an lr set
    equal to the old default is taken for a default too, and the new rule's
    default applies)."""
    config = copy.deepcopy(config)
    for section, tables in (("optimizer", OPTIMIZER_KEYS),
                            ("schedule", SCHEDULE_KEYS)):
        old = config.get(section) or {}
        if not isinstance(old, dict):
            continue  # not a mapping: the validation says so
        old_name = old.get("name", SCHEMA[section]["name"].default)
        name = values.get(f"{section}.name", old_name)
        if name == old_name or name not in tables:
            continue  # unchanged, or a name the validation will refuse
        old_table, new_table = tables.get(old_name, {}), tables[name]
        config[section] = {"name": name, **{
            key: value for key, value in old.items() if key in new_table
            and (key not in old_table or value != old_table[key].default)}}
    return config
