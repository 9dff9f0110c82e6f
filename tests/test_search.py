"""Tests of nntrain.search and `nntrain search`: sampling, coarse-to-fine ranges, the
search section's validation, and small studies on the tiny npz data.

One study (3 trials of 2 epochs, hidden [8], 2 worker processes, one trial given a
validation split the data cannot spare, which the config accepts but the run does
not) is shared by the tests that only read its files; tests that run it again work
on a copy of its folder, which plans the same study.
"""

import csv
import errno
import json
import logging
import math
import multiprocessing
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from conftest import tiny_arrays, tiny_config_dict

from nntrain.cli import Group
from nntrain.cli_search import ensemble, search
from nntrain.config import resolve_config
from nntrain.errors import (
    ClusterError,
    ConfigError,
    FolderLockedError,
    RunDirectoryError,
    StopRequested,
    TrainingError,
)
from nntrain.search import (
    Study,
    format_table,
    load_search_config,
    mode_warning,
    narrow_bounds,
    parse_search,
    read_result,
    run_trial,
    sample,
    trial_config,
    unit_draws,
)
from nntrain.search import trials as trial_module
from nntrain.train.rundir import lock_folder

CLI = Group(name="nntrain", commands=[search, ensemble])
# data.validation 100 is a valid config, but the tiny data has only 60 training rows.
PARAMS = {"optimizer.lr": {"loguniform": [1e-3, 1e-1]},
          "data.validation": {"choice": [10, 20, 100]}}


def invoke(*args):
    return CliRunner().invoke(CLI, [str(arg) for arg in args])


def base_config():
    return resolve_config({"train": {"epochs": 2}})


def spec_of(**search):
    return parse_search(search, base_config())


def first_round(spec):
    """Round 1's values: every trial of a one-round study."""
    return sample(spec.params, unit_draws(spec), {p.key: p.bounds for p in spec.params})


def study_config(npz_path, **search) -> dict:
    config = tiny_config_dict(npz_path)
    config["train"]["epochs"] = 2
    config["search"] = {"trials": 3, "seed": 2, "params": PARAMS, **search}
    return config


def read_rows(study_dir):
    with open(study_dir / "results.csv", newline="") as file:
        return list(csv.DictReader(file))


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """The shared study: its folder, config path, and the CLI's result."""
    folder = tmp_path_factory.mktemp("study")
    npz = folder / "tiny.npz"
    np.savez(npz, **tiny_arrays())
    config_path = folder / "search.yaml"
    config_path.write_text(yaml.safe_dump(study_config(npz), sort_keys=False))
    out = folder / "out"
    result = invoke("search", config_path, "--out", out, "--workers", 2,
                    "--ensemble", 2)
    return out, config_path, result


def copy_study(study, tmp_path):
    out, config_path, _ = study
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    return copy, config_path


# Sampling.


def test_same_seed_draws_the_same_values_and_another_seed_others():
    params = {"optimizer.lr": {"loguniform": [1e-4, 1e-1]},
              "model.l2": {"uniform": [0.0, 0.1]}}
    first = first_round(spec_of(trials=5, seed=7, params=params))
    assert first == first_round(spec_of(trials=5, seed=7, params=params))
    assert first != first_round(spec_of(trials=5, seed=8, params=params))


def test_search_seed_defaults_to_the_configs_seed():
    config = resolve_config({"seed": 11, "train": {"epochs": 1}})
    spec = parse_search({"trials": 2, "params": PARAMS}, config)
    assert spec.seed == 11


def test_each_distribution_stays_in_its_range_and_reaches_all_of_it():
    spec = spec_of(trials=2000, params={
        "optimizer.lr": {"loguniform": [1e-4, 1e-1]},
        "model.l2": {"uniform": [0.0, 0.5]},
        "train.batch_size": {"int": [16, 20]},
        "model.activation": {"choice": ["relu", "tanh", "elu"]},
    })
    trials = first_round(spec)
    lrs = [t["optimizer.lr"] for t in trials]
    l2s = [t["model.l2"] for t in trials]
    assert 1e-4 <= min(lrs) and max(lrs) <= 1e-1
    assert 0.0 <= min(l2s) and max(l2s) <= 0.5
    assert {t["train.batch_size"] for t in trials} == {16, 17, 18, 19, 20}
    assert all(isinstance(t["train.batch_size"], int) for t in trials)
    assert {t["model.activation"] for t in trials} == {"relu", "tanh", "elu"}


def test_loguniform_is_uniform_in_log_space():
    spec = spec_of(trials=4000, params={"optimizer.lr": {"loguniform": [1e-4, 1e-1]}})
    exponents = np.log10([t["optimizer.lr"] for t in first_round(spec)])
    # Uniform on [-4, -1]: quartiles at -3.25, -2.5, -1.75; one decade per third.
    quartiles = np.quantile(exponents, [0.25, 0.5, 0.75])
    np.testing.assert_allclose(quartiles, [-3.25, -2.5, -1.75], atol=0.1)
    per_decade = np.histogram(exponents, bins=[-4, -3, -2, -1])[0] / len(exponents)
    np.testing.assert_allclose(per_decade, [1 / 3] * 3, atol=0.03)


def test_trials_are_split_evenly_over_the_rounds():
    assert spec_of(trials=20, rounds=2, params=PARAMS).round_sizes() == [10, 10]
    assert spec_of(trials=7, rounds=3, params=PARAMS).round_sizes() == [3, 2, 2]


# Coarse to fine.


def finished_row(trial, metric, **values):
    return {"trial": trial, "round": 1, "status": "ok", "values": values,
            "metric": metric}


def test_a_later_round_narrows_each_range_around_the_best_trials():
    spec = spec_of(trials=10, rounds=2, keep=2, params={
        "optimizer.lr": {"loguniform": [1e-4, 1e-1]},
        "model.l2": {"uniform": [0.0, 1.0]},
        "train.batch_size": {"int": [10, 100]},
    })
    rows = [
        finished_row(0, 0.90, **{"optimizer.lr": 1e-2, "model.l2": 0.5,
                                 "train.batch_size": 50}),
        finished_row(1, 0.95, **{"optimizer.lr": 2e-3, "model.l2": 0.4,
                                 "train.batch_size": 40}),
        finished_row(2, 0.50, **{"optimizer.lr": 1e-4, "model.l2": 0.0,
                                 "train.batch_size": 10}),
        {**finished_row(3, None, **{"optimizer.lr": 0.1, "model.l2": 1.0,
                                    "train.batch_size": 100}),
         "status": "failed"},
    ]
    bounds = narrow_bounds(spec, rows)
    # The best two span lr 2e-3..1e-2; widened by a tenth of the three decades
    # (0.3 decades) on each side, in log space.
    widen = 10 ** 0.3
    np.testing.assert_allclose(bounds["optimizer.lr"], [2e-3 / widen, 1e-2 * widen])
    np.testing.assert_allclose(bounds["model.l2"], [0.3, 0.6])
    assert bounds["train.batch_size"] == [31, 59]  # 40 - 9 and 50 + 9, rounded out


def test_narrowed_ranges_stay_inside_the_original_ones():
    spec = spec_of(trials=4, rounds=2, keep=1, params={
        "optimizer.lr": {"loguniform": [1e-4, 1e-1]}})
    bounds = narrow_bounds(spec, [finished_row(0, 0.9, **{"optimizer.lr": 1e-1})])
    assert bounds["optimizer.lr"][1] == 1e-1
    assert bounds["optimizer.lr"][0] == pytest.approx(1e-1 / 10 ** 0.3)


def test_a_later_round_keeps_the_ranges_when_no_trial_finished():
    spec = spec_of(trials=4, rounds=2, params=PARAMS)
    failed = {**finished_row(0, None, **{"optimizer.lr": 0.01}), "status": "failed"}
    assert narrow_bounds(spec, [failed]) == {"optimizer.lr": [1e-3, 1e-1],
                                             "data.validation": PARAMS[
                                                 "data.validation"]["choice"]}


# The search section.


@pytest.mark.parametrize("search, pattern", [
    ({"trials": 0, "params": PARAMS}, r"invalid search\.trials: 0"),
    ({"trials": 2}, r"search\.params is missing"),
    ({"trials": 2, "params": PARAMS, "metric": "val_acc"},
     r"invalid search\.metric: 'val_acc'.*did you mean 'val_accuracy'"),
    ({"trials": 2, "params": PARAMS, "mode": "maximum"}, r"invalid search\.mode"),
    ({"trials": 2, "params": PARAMS, "rounds": 3}, r"invalid search\.rounds: 3"),
    ({"trials": 2, "params": PARAMS, "keep": 0}, r"invalid search\.keep: 0"),
    ({"trials": 2, "params": PARAMS, "trails": 3},
     r"unknown key search\.trails \(did you mean 'trials'\?\)"),
    ({"trials": 2, "params": {}}, r"invalid search\.params: \{\}"),
    ({"trials": 2, "params": {"optimizer.lrr": {"uniform": [0.1, 0.2]}}},
     r"'optimizer\.lrr' is not a config key \(did you mean 'optimizer\.lr'\?\)"),
    ({"trials": 2, "params": {"train.plots": {"choice": [True, False]}}},
     r"invalid search\.params: train\.plots cannot be searched \(trials draw no"
     r" plots; the study draws search\.png\); remove it$"),
    ({"trials": 2, "params": {"output": {"choice": ["a", "b"]}}},
     r"invalid search\.params: output cannot be searched \(each trial's folder is"
     r" the study's trial-NNNN\); remove it$"),
    ({"trials": 2, "params": {"optimizer.lr": {"logunifrom": [0.1, 0.2]}}},
     r"invalid search\.params\.optimizer\.lr distribution: 'logunifrom'"),
    ({"trials": 2, "params": {"optimizer.lr": {"loguniform": [0, 0.1]}}},
     r"invalid search\.params\.optimizer\.lr\.loguniform: \[0, 0\.1\].*0 < low"),
    ({"trials": 2, "params": {"model.l2": {"uniform": [0.2, 0.1]}}},
     r"invalid search\.params\.model\.l2\.uniform: \[0\.2, 0\.1\]"),
    ({"trials": 2, "params": {"train.batch_size": {"int": [8, 16.5]}}},
     r"invalid search\.params\.train\.batch_size\.int.*integers"),
    ({"trials": 2, "params": {"model.activation": {"choice": []}}},
     r"invalid search\.params\.model\.activation\.choice: \[\]"),
    ({"trials": 2, "params": {"model.l2": [0.1, 0.2]}},
     r"invalid search\.params\.model\.l2: \[0\.1, 0\.2\].*one distribution"),
    ({"trials": 2, "params": {"optimizer": {"lr": {"uniform": [0.1, 0.2]}}}},
     r"invalid search\.params: 'optimizer' holds nested keys; write each searched key"
     r" whole, as one dotted key of search\.params \(optimizer\.lr: \{uniform:"
     r" \[0\.1, 0\.2\]\}\); with --set, give the whole mapping: --set"
     r" 'search\.params=\{optimizer\.lr: \{uniform: \[0\.1, 0\.2\]\}\}'$"),
    ({"trials": 2, "params": {"optimizer": {"lrr": {"uniform": [0.1, 0.2]}}}},
     r"'optimizer' holds nested keys \(optimizer\.lrr is not a config key; did you"
     r" mean 'optimizer\.lr'\?\)"),
    ([1, 2], r"invalid search: \[1, 2\]"),
])
def test_bad_search_sections_raise_a_config_error_naming_the_key(search, pattern):
    with pytest.raises(ConfigError, match=pattern):
        parse_search(search, base_config())


def test_searched_data_paths_are_made_absolute_as_the_configs_own_is(
        tmp_path, write_config, tiny_npz, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = {"data.path": {"choice": ["a.npz", "sub/b.npz"]},
              "data": {"choice": [{"name": "npz", "path": "c.npz"},
                                  {"name": "digits"}]}}
    path = write_config(study_config(tiny_npz, params=params))

    _, spec = load_search_config(path)

    chosen = {param.key: param.bounds for param in spec.params}
    here = tmp_path.resolve()
    assert chosen == {
        "data.path": [str(here / "a.npz"), str(here / "sub" / "b.npz")],
        "data": [{"name": "npz", "path": str(here / "c.npz")}, {"name": "digits"}],
    }


def test_a_config_without_a_search_section_is_refused(tmp_path, tiny_config):
    with pytest.raises(ConfigError, match=r"has no search: section"):
        load_search_config(tiny_config)


def test_set_overrides_apply_to_the_search_section_and_the_config(tmp_path,
                                                                  write_config,
                                                                  tiny_npz):
    path = write_config(study_config(tiny_npz))
    config, spec = load_search_config(path, ["search.trials=5", "model.l2=0.5"])
    assert spec.trials == 5
    assert config["model"]["l2"] == 0.5
    assert "search" not in config


@pytest.mark.parametrize("override, problem", [
    ("search.trials=0", "invalid search.trials: 0"),
    ("search.trails=3", "unknown key search.trails"),
    ("model.l2=-1", "invalid model.l2: -1"),
])
def test_an_error_in_an_override_names_it(write_config, tiny_npz, override, problem):
    path = write_config(study_config(tiny_npz))

    with pytest.raises(ConfigError) as caught:
        load_search_config(path, [override])

    assert str(caught.value).startswith(f"--set {override}: {problem}")


@pytest.mark.parametrize("params, problem", [
    ({"model.hidden": {"int": [1, 5]}},
     "invalid search.params.model.hidden: neither end of the range gives a valid"
     " config: the low end 1 (invalid model.hidden: 1 (expected a list; write [1]))"
     " and the high end 5 (invalid model.hidden: 5 (expected a list; write [5]));"
     " give a range whose ends the key accepts"),
    ({"model.activation": {"choice": ["relu6", "swish"]}},
     "invalid search.params.model.activation: no value of it fits the key (invalid"
     " model.activation: 'relu6'"),
])
def test_a_distribution_no_value_of_which_fits_its_key_is_refused(
        write_config, tiny_npz, params, problem):
    path = write_config(study_config(tiny_npz, params=params))

    with pytest.raises(ConfigError) as caught:
        load_search_config(path)

    assert str(caught.value).startswith(f"{path}: {problem}")


def test_a_range_whose_ends_the_key_refuses_names_each_end_and_its_bounds():
    # Values inside the range fit: only its ends fall outside float32's.
    params = {"optimizer.eps": {"loguniform": [1.0e-300, 1.0e+300]}}

    with pytest.raises(ConfigError) as caught:
        spec_of(trials=4, params=params)

    assert caught.value.exit_code == 2
    assert str(caught.value) == (
        "invalid search.params.optimizer.eps: neither end of the range gives a valid"
        " config: the low end 1e-300 (invalid optimizer.eps: 1e-300 rounds to 0 in"
        " float32 (train.dtype); give a value >= 1.2e-38, or train.dtype float64)"
        " and the high end 1e+300 (invalid optimizer.eps: 1e+300 rounds to infinity"
        " in float32 (train.dtype), whose largest number is 3.4028235e+38; give a"
        " value <= 3.4e+38); give a range whose ends the key accepts")
    spec_of(trials=4, params={"optimizer.eps": {"loguniform": [1.0e-30, 1.0e+30]}})


def test_a_setting_of_a_searched_update_rule_is_left_to_the_trials(write_config,
                                                                   tiny_npz):
    # optimizer.momentum is not a setting of the config's adam, but it is of the
    # rules the search draws: the study must not be refused for it.
    params = {"optimizer.name": {"choice": ["momentum", "nesterov"]},
              "optimizer.momentum": {"uniform": [0.5, 0.9]}}
    path = write_config(study_config(tiny_npz, params=params))

    _, spec = load_search_config(path)

    assert sorted(param.key for param in spec.params) == sorted(params)


def test_a_setting_of_an_update_rule_the_study_does_not_use_is_refused_up_front():
    # adam (the default) has no momentum, and optimizer.name is not searched: no
    # trial could run.
    with pytest.raises(ConfigError) as caught:
        spec_of(trials=2, params={"optimizer.momentum": {"uniform": [0.5, 0.9]}})
    assert str(caught.value) == (
        "invalid search.params.optimizer.momentum: optimizer.momentum is not a"
        " setting of 'adam' (it belongs to momentum, nesterov), so no trial can set"
        " it; remove optimizer.momentum from search.params, or search an"
        " optimizer.name that takes it")


def test_a_searched_rate_with_lbfgs_says_to_stop_searching_it(write_config,
                                                              tiny_npz):
    # The config's own fix, another optimizer.name with that rate, is no fix
    # for a key that every trial sets.
    raw = study_config(tiny_npz, params={
        "optimizer.lr": {"loguniform": [1e-4, 1e-1]},
        "model.l2": {"loguniform": [1e-6, 1e-1]}})
    raw["optimizer"] = {"name": "lbfgs"}
    raw["train"]["iterations"], raw["train"]["epochs"] = 5, None

    result = invoke("search", write_config(raw), "--out", tiny_npz.parent / "s")

    assert result.exit_code == 2, result.output
    assert result.stderr.endswith(
        "invalid search.params.optimizer.lr: optimizer.lr is not a setting of"
        " 'lbfgs' (it belongs to sgd, momentum, nesterov, adagrad, rmsprop, adam,"
        " adamw), so no trial can set it; remove optimizer.lr from search.params,"
        " or search an optimizer.name that takes it\n"), result.stderr


@pytest.mark.parametrize("params, problem", [
    ({"optimizer.beta1": {"uniform": [0.5, 0.99]},
      "optimizer.name": {"choice": ["sgd"]}},
     "optimizer.beta1 is not a setting of 'sgd'"),
    ({"model.batchnorm": {"choice": [True]}, "model.layernorm": {"choice": [True]}},
     "set at most one of model.batchnorm and model.layernorm"),
])
def test_searched_keys_that_never_fit_together_are_refused_up_front(params,
                                                                     problem):
    with pytest.raises(ConfigError) as caught:
        spec_of(trials=4, params=params)
    assert str(caught.value).startswith(
        "invalid search.params: none of the first 4 trials planned has a valid"
        f" config (the first fails with: {problem}")


def test_a_trial_that_switches_the_rule_keeps_only_the_studys_own_settings():
    # The study's config is resolved: it holds Adam's beta1, beta2 and eps, which
    # sgd refuses and adagrad would take for its own eps (its default is 1e-10).
    config = resolve_config({"train": {"epochs": 2},
                             "optimizer": {"name": "adam", "lr": 0.005}})

    sgd = trial_config(config, {"optimizer.name": "sgd"}, run_dir="trial")
    adagrad = trial_config(config, {"optimizer.name": "adagrad"}, run_dir="trial")
    momentum = trial_config(config, {"optimizer.name": "momentum",
                                     "optimizer.momentum": 0.5}, run_dir="trial")

    assert sgd["optimizer"] == {"name": "sgd", "lr": 0.005}
    assert adagrad["optimizer"] == {"name": "adagrad", "lr": 0.005, "eps": 1e-10}
    assert momentum["optimizer"] == {"name": "momentum", "lr": 0.005,
                                     "momentum": 0.5}


def test_a_trial_that_switches_the_schedule_keeps_only_the_studys_own_settings():
    config = resolve_config({"train": {"epochs": 2},
                             "schedule": {"name": "step", "gamma": 0.5}})

    exponential = trial_config(config, {"schedule.name": "exponential"}, "trial")
    cosine = trial_config(config, {"schedule.name": "cosine"}, "trial")

    assert exponential["schedule"] == {"name": "exponential", "gamma": 0.5}
    assert cosine["schedule"] == {"name": "cosine", "floor": 0.0, "warmup": 0}


def test_a_study_may_search_the_update_rule_alone():
    spec = spec_of(trials=3, params={
        "optimizer.name": {"choice": ["sgd", "adam", "rmsprop"]}})
    assert [param.key for param in spec.params] == ["optimizer.name"]


def test_the_rest_of_the_config_is_validated_as_usual(write_config, tiny_npz):
    config = study_config(tiny_npz)
    config["model"]["hiden"] = [8]
    with pytest.raises(ConfigError, match=r"unknown key model\.hiden"):
        load_search_config(write_config(config))


# Every option and both ends checked before any trial.


@pytest.mark.parametrize("changes, params, problem", [
    ({}, {"optimizer.name": {"choice": ["adam", "adamm"]}},
     "invalid search.params.optimizer.name: the option 'adamm' gives no valid config"
     " (invalid optimizer.name: 'adamm' (choose one of: sgd, momentum, nesterov,"
     " adagrad, rmsprop, adam, adamw, lbfgs; did you mean 'adam'?)); remove or"
     " correct that option"),
    ({}, {"optimizer.lr": {"choice": [0.01, -0.1]}},
     "invalid search.params.optimizer.lr: the option -0.1 gives no valid config"
     " (invalid optimizer.lr: -0.1 (expected a number in (0, inf))); remove or"
     " correct that option"),
    ({}, {"model.hidden": {"choice": [[8], [16, 0]]}},
     "invalid search.params.model.hidden: the option [16, 0] gives no valid config"
     " (invalid model.hidden[1]: 0 (expected an integer >= 1 and <= 1,000,000));"
     " remove or correct that option"),
    # 1 == True in Python, but a YAML 1 is no boolean: each option is tried.
    ({}, {"model.batchnorm": {"choice": [True, 1]}},
     "invalid search.params.model.batchnorm: the option 1 gives no valid config"),
    ({}, {"model.drop_probability": {"uniform": [0.2, 1.5]}},
     "invalid search.params.model.drop_probability: the high end 1.5 gives no valid"
     " config (invalid model.drop_probability: 1.5 (expected a number in [0, 1)));"
     " give a range whose ends the key accepts"),
    ({}, {"optimizer.lr": {"uniform": [0.0, 0.1]}},
     "invalid search.params.optimizer.lr: the low end 0.0 gives no valid config"
     " (invalid optimizer.lr: 0.0 (expected a number in (0, inf))); give a range"
     " whose ends the key accepts"),
    ({}, {"train.batch_size": {"int": [0, 64]}},
     "invalid search.params.train.batch_size: the low end 0 gives no valid config"),
    # lbfgs sets its own steps: with the config's cosine schedule, never valid.
    ({"schedule": {"name": "cosine"}},
     {"optimizer.name": {"choice": ["adam", "lbfgs"]}},
     "invalid search.params.optimizer.name: the option 'lbfgs' gives no valid config"
     " (optimizer lbfgs chooses its own step sizes: set schedule.name to constant)"),
    # sgd's default rate, 0.01, carries no floor trouble; adam's 0.001 does.
    ({"optimizer": {"name": "sgd"}, "schedule": {"name": "cosine", "floor": 0.005}},
     {"optimizer.name": {"choice": ["sgd", "adam"]}},
     "invalid search.params.optimizer.name: the option 'adam' gives no valid config"
     " (invalid schedule.floor: 0.005 is above optimizer.lr 0.001"),
    ({}, {"train.epochs": {"int": [1, 2]}, "train.iterations": {"int": [5, 6]}},
     "invalid search.params.train.iterations: neither end of the range gives a"
     " valid config: the low end 5 (set exactly one of train.epochs and"
     " train.iterations (got epochs=1, iterations=5); set the other to null) and"
     " the high end 6 (set exactly one of train.epochs and train.iterations (got"
     " epochs=1, iterations=6); set the other to null); give a range whose ends the"
     " key accepts"),
    # No rule the search draws has momentum.
    ({}, {"optimizer.name": {"choice": ["sgd", "adam"]},
          "optimizer.momentum": {"uniform": [0.5, 0.9]}},
     "invalid search.params.optimizer.momentum: optimizer.momentum is not a"
     " setting of 'sgd' (it belongs to momentum, nesterov), so no trial can set it;"
     " remove optimizer.momentum from search.params"),
    # rmsprop has decay, but not 1.5.
    ({}, {"optimizer.name": {"choice": ["rmsprop", "adam"]},
          "optimizer.decay": {"choice": [0.9, 1.5]}},
     "invalid search.params.optimizer.decay: the option 1.5 gives no valid config"
     " (invalid optimizer.decay: 1.5 (expected a number in [0, 1)))"),
])
def test_an_option_or_range_end_no_trial_could_run_with_is_refused_up_front(
        changes, params, problem):
    config = resolve_config({"train": {"epochs": 2}, **changes})
    with pytest.raises(ConfigError) as caught:
        parse_search({"trials": 4, "params": params}, config)
    assert str(caught.value).startswith(problem)


# The trials that draw the constant schedule fail: it takes no floor, which they
# set. The others run, so the study is not refused; it is warned.
CONSTANT_WARNING = (
    "search.params.schedule.name: the trials that draw the option 'constant' will"
    " fail, as it gives no valid config beside the other searched keys, which"
    " every trial sets (schedule.floor is not a setting of 'constant' (it belongs"
    " to cosine, plateau)); remove that option, or stop searching the keys it does"
    " not fit with")


@pytest.mark.parametrize("params, warned", [
    # momentum is no setting of the config's adam, but of both rules drawn.
    ({"optimizer.name": {"choice": ["momentum", "nesterov"]},
      "optimizer.momentum": {"uniform": [0.5, 0.9]}}, None),
    # floor is no setting of the config's constant schedule, but of cosine.
    ({"schedule.name": {"choice": ["cosine", "plateau"]},
      "schedule.floor": {"uniform": [0.0, 1e-4]}}, None),
    # The floor above sgd's rate is no trouble for the trials with lr searched...
    ({"optimizer.name": {"choice": ["adam", "sgd"]},
      "schedule.floor": {"choice": [0.0, 0.005]},
      "schedule.name": {"choice": ["cosine", "constant"]},
      "optimizer.lr": {"loguniform": [0.01, 0.1]}}, CONSTANT_WARNING),
    # ... nor, with adam's default rate, for the trials of the cosine schedule.
    ({"optimizer.name": {"choice": ["sgd", "adam"]},
      "schedule.floor": {"choice": [0.0, 0.005]},
      "schedule.name": {"choice": ["cosine", "constant"]}}, CONSTANT_WARNING),
    # Draws stay below a range's high end: up to 1.0, which the key excludes.
    ({"model.drop_probability": {"uniform": [0.0, 1.0]}}, None),
    ({"train.early_stopping.min_delta": {"uniform": [0.0, 1.0]}}, None),
])
def test_options_that_fit_with_values_of_the_other_searched_keys_are_accepted(
        params, warned):
    config = resolve_config({"train": {"epochs": 2, "early_stopping": {}}})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        spec = parse_search({"trials": 8, "params": params}, config)
    assert [param.key for param in spec.params] == list(params)
    assert [str(warning.message) for warning in caught] == (
        [warned] if warned else [])


@pytest.mark.parametrize("params, warned", [
    ({"optimizer.name": {"choice": ["adam", "sgd", "rmsprop"]},
      "optimizer.beta1": {"uniform": [0.5, 0.99]}},
     "search.params.optimizer.name: the trials that draw the options 'sgd' and"
     " 'rmsprop' will fail, as they give no valid config beside the other"
     " searched keys, which every trial sets (the first: optimizer.beta1 is not a"
     " setting of 'sgd' (it belongs to adam, adamw)); remove those options, or"
     " stop searching the keys they do not fit with"),
    ({"optimizer.momentum": {"uniform": [0.5, 0.9]},
      "optimizer.name": {"choice": ["sgd", "momentum"]}},
     "search.params.optimizer.name: the trials that draw the option 'sgd' will"
     " fail, as it gives no valid config beside the other searched keys, which"
     " every trial sets (optimizer.momentum is not a setting of 'sgd' (it"
     " belongs to momentum, nesterov)); remove that option, or stop searching"
     " the keys it does not fit with"),
], ids=["two-options", "one-option"])
def test_values_that_fit_no_trial_beside_the_other_searched_keys_are_warned_of(
        params, warned):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        spec = spec_of(trials=9, params=params)

    assert len(spec.params) == 2
    assert [str(warning.message) for warning in caught] == [warned]


def floor_above_lr(npz_path, **search) -> dict:
    """A study config whose optimizer.lr is below its cosine schedule's floor."""
    config = study_config(npz_path, trials=2, **search)
    config["optimizer"]["lr"] = 0.001
    config["schedule"] = {"name": "cosine", "floor": 0.005}
    return config


def test_a_config_value_every_trial_replaces_need_not_be_valid(write_config,
                                                               tiny_npz):
    path = write_config(floor_above_lr(
        tiny_npz, params={"optimizer.lr": {"loguniform": [0.01, 0.1]}}))

    config, spec = load_search_config(path)

    # The config keeps a stand-in: the first end of the range that makes it valid.
    assert config["optimizer"]["lr"] == 0.01
    assert config["schedule"] == {"name": "cosine", "floor": 0.005, "warmup": 0}
    for values in first_round(spec):
        assert trial_config(config, values, "trial")["optimizer"]["lr"] >= 0.01


def test_a_config_value_of_a_key_not_searched_must_be_valid(write_config, tiny_npz):
    path = write_config(floor_above_lr(
        tiny_npz, params={"model.l2": {"uniform": [0.0, 0.01]}}))

    with pytest.raises(ConfigError) as caught:
        load_search_config(path)

    assert str(caught.value) == (
        f"{path}: invalid schedule.floor: 0.005 is above optimizer.lr 0.001, so the"
        " cosine schedule would raise the rate; give a floor <= the learning rate")


@pytest.mark.parametrize("changes, params, problem", [
    # No end of the range is above the floor.
    ({"schedule": {"name": "cosine", "floor": 0.5}},
     {"optimizer.lr": {"loguniform": [0.01, 0.1]}},
     "invalid search.params.optimizer.lr: neither end of its range makes the config"
     " valid (invalid schedule.floor: 0.5 is above optimizer.lr 0.01, so the cosine"
     " schedule would raise the rate; give a floor <= the learning rate)"),
    # The high end is, the low end is not.
    ({"schedule": {"name": "cosine", "floor": 0.05}},
     {"optimizer.lr": {"loguniform": [0.01, 0.1]}},
     "invalid search.params.optimizer.lr: the low end 0.01 gives no valid config"
     " (invalid schedule.floor: 0.05 is above optimizer.lr 0.01"),
    # Mended in the searched key, the config shows a fault of its own.
    ({"model": {"hidden": [8], "batchnorm": True, "layernorm": True}},
     {"optimizer.lr": {"loguniform": [0.01, 0.1]}},
     "set at most one of model.batchnorm and model.layernorm"),
])
def test_a_config_invalid_in_a_searched_key_is_refused_when_no_value_mends_it(
        write_config, tiny_npz, changes, params, problem):
    raw = {**study_config(tiny_npz, trials=2, params=params), **changes}
    raw["optimizer"]["lr"] = -1.0
    path = write_config(raw)

    with pytest.raises(ConfigError) as caught:
        load_search_config(path)

    assert str(caught.value).startswith(f"{path}: {problem}")


def test_a_searched_rule_name_may_mend_a_setting_the_configs_rule_lacks(
        write_config, tiny_npz):
    raw = study_config(tiny_npz, trials=2,
                       params={"optimizer.name": {"choice": ["adam", "adamw"]}})
    raw["optimizer"] = {"name": "sgd", "beta1": 0.8}
    path = write_config(raw)

    config, _ = load_search_config(path)

    trials = [trial_config(config, {"optimizer.name": name}, "trial")["optimizer"]
              for name in ("adam", "adamw")]
    assert [(rule["name"], rule["beta1"]) for rule in trials] == [("adam", 0.8),
                                                                  ("adamw", 0.8)]


# One trial, in this process.


def trial_task(write_config, tiny_npz, run_dir, values):
    config, spec = load_search_config(write_config(study_config(tiny_npz)))
    return {"trial": 0, "values": values, "config": config, "run_dir": str(run_dir),
            "metric": spec.metric, "mode": spec.mode}


@pytest.mark.parametrize("values, pattern", [
    ({"optimizer.lr": 1e30, "model.activation": "relu"}, r"became (nan|inf)"),
    ({"optimizer.lr": 0.01, "model.activation": "bogus"},
     r"invalid model\.activation: 'bogus'"),
])
def test_a_failing_trial_records_its_reason_in_result_json(tmp_path, write_config,
                                                           tiny_npz, values, pattern):
    task = trial_task(write_config, tiny_npz, tmp_path / "trial-0000", values)
    result = run_trial(task)
    saved = json.loads((tmp_path / "trial-0000" / "result.json").read_text())
    assert result["status"] == saved["status"] == "failed"
    assert re.search(pattern, saved["reason"]), saved["reason"]
    assert saved["values"] == values


@pytest.mark.parametrize("same", [True, False])
def test_a_trial_whose_result_an_earlier_run_wrote_since_is_not_trained_again(
        tmp_path, write_config, tiny_npz, monkeypatch, same):
    # An earlier, stopped run of the study left the trial on a Dask worker, which
    # finished it after this run had planned it.
    values = {"optimizer.lr": 0.01, "model.activation": "relu"}
    run_dir = tmp_path / "trial-0000"
    run_dir.mkdir()
    earlier = {"status": "ok", "metric": 0.75, "best_epoch": 2, "epochs": 2,
               "reason": "", "seconds": 9.5}
    written = {"trial": 0, "values": values if same else {**values,
                                                          "optimizer.lr": 0.02},
               **earlier}
    (run_dir / "result.json").write_text(json.dumps(written))
    trained = []
    monkeypatch.setattr("nntrain.pipeline.fit",
                        lambda *args, **kwargs: trained.append(args) or 1 / 0)
    task = trial_task(write_config, tiny_npz, run_dir, values)

    if same:
        assert run_trial(task) == earlier
        assert trained == []
    else:  # another plan's result: trained anew (here the stand-in fit fails)
        with pytest.raises(ZeroDivisionError):
            run_trial(task)
        assert len(trained) == 1


def test_a_dask_trial_dropped_with_the_scheduler_stops_the_study_in_one_line():
    from concurrent.futures import CancelledError

    class Dropped:
        def exception(self):
            raise CancelledError("run_trial-5f1e cancelled for reason:"
                                 " scheduler-connection-lost.")

    with pytest.raises(ClusterError) as caught:
        trial_module._dask_outcome(Dropped(), "tcp://127.0.0.1:8786")

    assert str(caught.value) == (
        "the Dask cluster at tcp://127.0.0.1:8786 dropped the study's trials"
        " (scheduler-connection-lost); check that its scheduler runs, then rerun the"
        " same command to run the rest (finished trials are kept)")
    assert caught.value.exit_code == 1


def blocked_reason(path: Path, what: str = "a file") -> str:
    return (f"{path} is {what}, not the trial's folder; remove or rename it, then"
            " rerun the study to run this trial")


@pytest.mark.parametrize("kind", ["a file", "a broken symbolic link"])
def test_something_in_the_place_of_a_trial_folder_fails_it_naming_the_fix(
        tmp_path, write_config, tiny_npz, kind):
    run_dir = tmp_path / "trial-0000"
    if kind == "a file":
        run_dir.write_text("notes\n")
    else:
        run_dir.symlink_to(tmp_path / "nowhere")
    task = trial_task(write_config, tiny_npz, run_dir,
                      {"optimizer.lr": 0.01, "model.activation": "relu"})

    result = run_trial(task)

    assert result == {"status": "failed", "reason": blocked_reason(run_dir, kind)}
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "config.yaml", "tiny.npz", "trial-0000"]
    if kind == "a file":
        assert run_dir.read_text() == "notes\n"


def test_a_result_json_that_cannot_be_written_fails_the_trial_in_one_line(
        tmp_path, write_config, tiny_npz, monkeypatch):
    def disk_full(path, text):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(trial_module, "write_text_atomically", disk_full)
    run_dir = tmp_path / "trial-0000"
    task = trial_task(write_config, tiny_npz, run_dir,
                      {"optimizer.lr": 0.01, "model.activation": "relu"})

    result = run_trial(task)

    assert result["status"] == "failed"
    assert result["reason"] == (
        f"cannot write {run_dir / 'result.json'} (No space left on device); make"
        " room or make the folder writable, then rerun the study to run this trial")


GOOD_RESULT = {"trial": 0, "values": {}, "status": "ok", "metric": 0.5,
               "best_epoch": 1, "epochs": 2, "reason": "", "seconds": 1.5}


@pytest.mark.parametrize("changes", [
    {"metric": None}, {"metric": "high"}, {"metric": float("nan")},
    {"best_epoch": None}, {"best_epoch": 1.5}, {"epochs": -1}, {"seconds": "1"},
    {"reason": 3}, {"status": "stopped"}, {"status": None},
])
def test_a_malformed_result_json_counts_as_no_result(tmp_path, changes):
    (tmp_path / "result.json").write_text(json.dumps({**GOOD_RESULT, **changes}))
    assert read_result(tmp_path) is None


def test_a_well_formed_result_json_is_read(tmp_path):
    failed = {"trial": 1, "values": {}, "status": "failed", "reason": "bad lr",
              "seconds": 0.1}
    (tmp_path / "ok").mkdir()
    (tmp_path / "failed").mkdir()
    (tmp_path / "ok" / "result.json").write_text(json.dumps(GOOD_RESULT))
    (tmp_path / "failed" / "result.json").write_text(json.dumps(failed))
    assert read_result(tmp_path / "ok") == GOOD_RESULT
    assert read_result(tmp_path / "failed") == failed


def test_a_trial_is_an_ordinary_run_directory_without_plots(tmp_path, write_config,
                                                            tiny_npz):
    run_dir = tmp_path / "trial-0000"
    task = trial_task(write_config, tiny_npz, run_dir,
                      {"optimizer.lr": 0.01, "model.activation": "tanh"})
    result = run_trial(task)
    assert result["status"] == "ok"
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["optimizer"]["lr"] == 0.01 and saved["model"]["activation"] == "tanh"
    assert saved["train"]["plots"] is False
    assert saved["output"] == str(run_dir)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").open()]
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert result["metric"] == max(r["val_accuracy"] for r in epochs)
    assert (run_dir / "checkpoints" / "best.npz").exists()


# Whole studies on worker processes.


def test_search_writes_the_plan_results_and_trial_folders(study):
    out, _, result = study
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [
        "results.csv", "search.png", "study.json",
        "trial-0000", "trial-0001", "trial-0002"]
    plan = json.loads((out / "study.json").read_text())
    assert [t["trial"] for t in plan["trials"]] == [0, 1, 2]
    assert [t["values"] for t in plan["trials"]] == first_round(
        spec_of(trials=3, seed=2, params=PARAMS))
    for trial in range(3):
        assert (out / f"trial-{trial:04d}" / "result.json").exists()


def test_a_failed_trial_is_recorded_and_the_others_finish(study):
    out = study[0]
    rows = {row["trial"]: row for row in read_rows(out)}
    # Seed 2 draws 20, 100, 20 (test_search_writes_the_plan... checks the plan).
    assert [rows[str(t)]["data.validation"] for t in range(3)] == ["20", "100", "20"]
    assert rows["1"]["status"] == "failed"
    assert rows["1"]["reason"].startswith(
        "data.validation=100 leaves no samples for training (it asks for 100 of"
        " the 60 training samples); choose a smaller value: a count of at most 59,"
        " or a smaller fraction")
    assert rows["0"]["status"] == rows["2"]["status"] == "ok"
    assert 0 <= float(rows["0"]["val_accuracy"]) <= 1
    assert rows["0"]["epochs"] == "2"


@pytest.mark.parametrize("params, problem", [
    ({"optimizer.name": {"choice": ["adam", "adamm"]}},
     "invalid search.params.optimizer.name: the option 'adamm' gives no valid"),
    ({"optimizer.lr": {"choice": [0.01, -0.1]}},
     "invalid search.params.optimizer.lr: the option -0.1 gives no valid config"),
    ({"model.drop_probability": {"uniform": [0.2, 1.5]}},
     "invalid search.params.model.drop_probability: the high end 1.5 gives no"),
])
def test_a_study_with_a_bad_option_exits_2_before_any_trial(write_config, tiny_npz,
                                                              tmp_path, params,
                                                              problem):
    path = write_config(study_config(tiny_npz, trials=4, params=params))
    out = tmp_path / "study"

    result = invoke("search", path, "--out", out, "--workers", 1)

    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {path}: {problem}")
    assert len(result.stderr.splitlines()) == 1
    assert not out.exists()


@pytest.mark.parametrize("changes, params", [
    ({"schedule": {"name": "cosine", "floor": 0.005}},
     {"optimizer.lr": {"loguniform": [0.01, 0.1]}}),
    ({}, {"optimizer.name": {"choice": ["momentum", "nesterov"]},
          "optimizer.momentum": {"uniform": [0.5, 0.9]}}),
])
def test_a_study_whose_keys_fit_only_as_trials_set_them_runs(write_config,
                                                             tiny_npz, tmp_path,
                                                             changes, params):
    raw = {**study_config(tiny_npz, trials=2, params=params), **changes}
    raw["optimizer"]["lr"] = 0.001
    path = write_config(raw)
    out = tmp_path / "study"

    result = invoke("search", path, "--out", out, "--workers", 1)

    assert result.exit_code == 0, result.output
    assert [row["status"] for row in read_rows(out)] == ["ok", "ok"]
    rerun = invoke("search", path, "--out", out, "--workers", 1)
    assert rerun.exit_code == 0, rerun.output
    assert "2 trials, 0 to run" in rerun.stderr


def test_results_csv_has_the_columns_and_is_sorted_best_first(study):
    out, _, _ = study
    with open(out / "results.csv", newline="") as file:
        header = next(csv.reader(file))
    assert header == ["trial", "round", "status", "optimizer.lr", "data.validation",
                      "val_accuracy", "best_epoch", "epochs", "seconds", "reason"]
    rows = read_rows(out)
    assert [row["status"] for row in rows] == ["ok", "ok", "failed"]
    assert float(rows[0]["val_accuracy"]) >= float(rows[1]["val_accuracy"])
    sampled = {int(row["trial"]): float(row["optimizer.lr"]) for row in rows}
    plan = first_round(spec_of(trials=3, seed=2, params=PARAMS))
    assert sampled == {i: trial["optimizer.lr"] for i, trial in enumerate(plan)}


def test_search_prints_the_table_best_first_and_the_ensemble(study):
    out, _, result = study
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["trial", "status", "optimizer.lr"]
    assert [line.split()[1] for line in lines[1:4]] == ["ok", "ok", "failed"]
    assert f"wrote {out / 'results.csv'}" in lines
    assert f"wrote {out / 'search.png'}" in lines
    assert any(line.startswith("ensemble of 2 checkpoints on the test split")
               for line in lines)
    assert "3 trials, 3 to run on 2 worker processes" in result.stderr


@pytest.mark.parametrize("damage, problem", [
    (Path.unlink, "its {path} is missing"),
    (lambda path: path.write_bytes(path.read_bytes()[:3000]),
     "its best.npz cannot be loaded: {path} is not a readable checkpoint (File is"
     " not a zip file)"),
], ids=["deleted", "cut short"])
def test_ensemble_skips_a_finished_trial_whose_checkpoint_is_gone_or_damaged(
        study, tmp_path, damage, problem):
    copy, config_path = copy_study(study, tmp_path)
    best = [row for row in read_rows(copy) if row["status"] == "ok"]
    missing = copy / f"trial-{int(best[0]['trial']):04d}" / "checkpoints" / "best.npz"
    damage(missing)

    result = invoke("search", config_path, "--out", copy, "--workers", 1,
                    "--ensemble", 2)

    assert result.exit_code == 0, result.output
    assert (f"note: trial {best[0]['trial']} finished but"
            f" {problem.format(path=missing)}; skipped (delete its result.json to run"
            " it again)") in result.stderr
    assert any(line.startswith("ensemble of 1 checkpoint on the test split")
               for line in result.stdout.splitlines())


def test_ensemble_of_a_study_whose_checkpoints_were_all_deleted_exits_1(study,
                                                                         tmp_path):
    copy, config_path = copy_study(study, tmp_path)
    for path in copy.glob("trial-*/checkpoints/best.npz"):
        path.unlink()

    result = invoke("search", config_path, "--out", copy, "--ensemble", 2)

    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1] == (
        "error: --ensemble 2: none of the 2 finished trials has its best.npz any"
        " more, so there is nothing to ensemble (see the notes above)")


def test_ensemble_of_a_study_whose_data_moved_says_what_search_can_do(
        write_config, tiny_npz, tmp_path):
    config_path = write_config(study_config(tiny_npz, trials=1))
    out = tmp_path / "out"
    assert invoke("search", config_path, "--out", out, "--workers", 1).exit_code == 0
    moved = tiny_npz.rename(tmp_path / "moved.npz")

    result = invoke("search", config_path, "--out", out, "--ensemble", 1)

    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1] == (
        f"error: npz file not found: {tiny_npz}; if the data moved, put it back where"
        " the study's data.path says, or ensemble the trials' checkpoints/best.npz"
        " with: nntrain ensemble CKPT... --data PATH")
    best = out / "trial-0000" / "checkpoints" / "best.npz"
    assert invoke("ensemble", best, "--data", moved).exit_code == 0


@pytest.mark.parametrize("name", ["results.csv", "search.png"])
def test_a_folder_in_the_place_of_a_study_file_is_one_line_and_exit_2(study,
                                                                      tmp_path, name):
    if name == "search.png":
        pytest.importorskip("matplotlib")
    copy, config_path = copy_study(study, tmp_path)
    (copy / name).unlink()
    (copy / name).mkdir()

    result = invoke("search", config_path, "--out", copy)

    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1] == (
        f"error: cannot write {copy / name} (Is a directory); make room for the file"
        " or give --out another folder")


def test_rerunning_a_finished_study_runs_nothing(study, tmp_path):
    copy, config_path = copy_study(study, tmp_path)
    results = sorted(copy.glob("trial-*/result.json"))
    before = {path: (path.stat().st_mtime_ns, path.read_bytes()) for path in results}
    result = invoke("search", config_path, "--out", copy, "--workers", 2)
    assert result.exit_code == 0, result.output
    assert "3 trials, 0 to run" in result.stderr
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in results} == before
    assert read_rows(copy) == read_rows(study[0])


def test_a_study_reruns_only_the_trials_without_a_result(study, tmp_path):
    copy, config_path = copy_study(study, tmp_path)
    # Trial 2 as a killed worker leaves it: a run directory with no result.json
    # and a metrics file cut short.
    (copy / "trial-0002" / "result.json").unlink()
    metrics = copy / "trial-0002" / "metrics.jsonl"
    metrics.write_text(metrics.read_text()[:50])
    kept = copy / "trial-0000" / "result.json"
    stamp = kept.stat().st_mtime_ns

    result = invoke("search", config_path, "--out", copy, "--workers", 2)
    assert result.exit_code == 0, result.output
    assert "3 trials, 1 to run" in result.stderr
    assert re.search(r"^trial 2 \(round 1\): ok", result.stderr, re.MULTILINE)
    assert kept.stat().st_mtime_ns == stamp
    rerun = {row["trial"]: row for row in read_rows(copy)}
    first = {row["trial"]: row for row in read_rows(study[0])}
    assert rerun["2"]["status"] == "ok"
    assert rerun["2"]["val_accuracy"] == first["2"]["val_accuracy"]  # same training


def assert_the_fix_runs_trial_2(blocker, copy, config_path):
    """Remove ``blocker``, the fix a failed trial 2's reason names: the next run
    of the study trains that trial alone."""
    blocker.unlink()
    result = invoke("search", config_path, "--out", copy, "--workers", 1)
    assert result.exit_code == 0, result.output
    assert "3 trials, 1 to run" in result.stderr
    assert {row["trial"]: row["status"] for row in read_rows(copy)}["2"] == "ok"


def test_a_file_in_the_place_of_a_trial_folder_fails_that_trial_alone(study,
                                                                     tmp_path):
    copy, config_path = copy_study(study, tmp_path)
    blocker = copy / "trial-0002"
    shutil.rmtree(blocker)
    blocker.write_text("notes\n")

    result = invoke("search", config_path, "--out", copy, "--workers", 1)

    assert result.exit_code == 0, result.output
    assert f"trial 2 (round 1): failed: {blocked_reason(blocker)}\n" in result.stderr
    assert "Error" not in result.output
    rows = {row["trial"]: row for row in read_rows(copy)}
    assert rows["2"]["status"] == "failed"
    assert rows["2"]["reason"] == blocked_reason(blocker)
    assert rows["0"]["status"] == "ok"
    assert blocker.read_text() == "notes\n"

    assert_the_fix_runs_trial_2(blocker, copy, config_path)


def test_a_file_where_a_trial_keeps_its_checkpoints_fails_that_trial_alone(
        study, tmp_path):
    copy, config_path = copy_study(study, tmp_path)
    trial = copy / "trial-0002"
    (trial / "result.json").unlink()  # as a trial a killed worker left
    blocker = trial / "checkpoints"
    shutil.rmtree(blocker)
    blocker.write_text("notes\n")
    reason = (f"{blocker} is a file, where nntrain keeps the run's checkpoints;"
              " remove or rename it, then rerun the study to run this trial")

    result = invoke("search", config_path, "--out", copy, "--workers", 1)

    assert result.exit_code == 0, result.output
    assert f"trial 2 (round 1): failed: {reason}\n" in result.stderr
    assert "Error" not in result.output
    assert {row["trial"]: row["reason"] for row in read_rows(copy)}["2"] == reason
    assert not (trial / "result.json").exists()
    assert blocker.read_text() == "notes\n"

    assert_the_fix_runs_trial_2(blocker, copy, config_path)


def test_a_study_whose_every_trial_folder_is_a_file_exits_1(study, tmp_path):
    copy, config_path = copy_study(study, tmp_path)
    for trial in range(3):
        shutil.rmtree(copy / f"trial-{trial:04d}")
        (copy / f"trial-{trial:04d}").write_text("")

    result = invoke("search", config_path, "--out", copy, "--workers", 1)

    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1] == (
        "error: no trial of the study finished; the table above says why each one"
        " failed")
    assert [row["reason"] for row in read_rows(copy)] == [
        blocked_reason(copy / f"trial-{trial:04d}") for trial in range(3)]


def _dying_runner(task):
    """Runs in a worker process: trial 1's worker dies as if killed."""
    if task["trial"] == 1:
        os._exit(9)
    return run_trial(task)


def test_a_dead_worker_fails_its_trial_and_the_study_goes_on(study, tmp_path):
    config, _ = load_search_config(study[1])
    spec = parse_search({"trials": 4, "seed": 2,
                         "params": {"optimizer.lr": PARAMS["optimizer.lr"]}}, config)
    out = tmp_path / "killed"
    rows = Study(out, config, spec).run(workers=1, runner=_dying_runner)
    by_trial = {row["trial"]: row for row in rows}
    assert by_trial[1]["status"] == "failed"
    assert "worker process died" in by_trial[1]["reason"]
    assert [by_trial[t]["status"] for t in (0, 2, 3)] == ["ok"] * 3
    assert not (out / "trial-0001" / "result.json").exists()
    assert len(read_rows(out)) == 4

    rows = Study(out, config, spec).run(workers=1)  # the next run retries it
    assert {row["status"] for row in rows} == {"ok"}


def _scored_runner(task):
    """Runs in a worker process: fails as run_trial does, leaving no result.json,
    where a file stands in the trial's place; else scores the trial by how close
    its lr is to 1e-2 and writes its result.json."""
    run_dir = Path(task["run_dir"])
    if run_dir.is_file():
        return {"status": "failed", "reason": "a file stands there"}
    run_dir.mkdir(parents=True, exist_ok=True)
    metric = -abs(math.log10(task["values"]["optimizer.lr"]) + 2.0)
    result = {**GOOD_RESULT, "trial": task["trial"], "metric": metric}
    (run_dir / "result.json").write_text(json.dumps(result))
    return result


TWO_ROUNDS = {"trials": 6, "rounds": 2, "keep": 2, "seed": 1,
              "params": {"optimizer.lr": {"loguniform": [1e-5, 1e-1]}}}


def test_a_round_with_a_trial_left_without_result_is_not_planned_on(tmp_path):
    config, spec = base_config(), spec_of(**TWO_ROUNDS)
    whole = tmp_path / "whole"
    Study(whole, config, spec).run(workers=1, runner=_scored_runner)
    hitch = tmp_path / "hitch"
    Study(hitch, config, spec)  # plans round 1
    (hitch / "trial-0002").write_text("")

    with pytest.raises(TrainingError) as caught:
        Study(hitch, config, spec).run(workers=1, runner=_scored_runner)

    assert caught.value.exit_code == 1
    assert str(caught.value) == (
        f"trial 2 of round 1 failed without a result (see the reasons above and in"
        f" {hitch / 'results.csv'}), so round 2 is not planned yet: fix what the"
        " reasons say, then rerun the same command to retry them and go on")
    plan = json.loads((hitch / "study.json").read_text())
    assert (len(plan["rounds"]), len(plan["trials"])) == (1, 3)
    assert not (hitch / "trial-0003").exists()

    (hitch / "trial-0002").unlink()
    rows = Study(hitch, config, spec).run(workers=1, runner=_scored_runner)
    assert [row["status"] for row in rows] == ["ok"] * 6
    planned = json.loads((hitch / "study.json").read_text())
    expected = json.loads((whole / "study.json").read_text())
    assert planned["rounds"] == expected["rounds"]
    assert planned["trials"] == expected["trials"]


def test_a_trial_failed_by_its_own_training_does_not_hold_up_the_next_round(
        tmp_path):
    config, spec = base_config(), spec_of(**TWO_ROUNDS)
    Study(tmp_path, config, spec)  # plans round 1
    (tmp_path / "trial-0002").mkdir()
    failed = {"trial": 2, "values": {}, "status": "failed", "reason": "diverged",
              "seconds": 0.1}
    (tmp_path / "trial-0002" / "result.json").write_text(json.dumps(failed))

    rows = Study(tmp_path, config, spec).run(workers=1, runner=_scored_runner)

    assert sorted(row["status"] for row in rows) == ["failed"] + ["ok"] * 5
    assert len(json.loads((tmp_path / "study.json").read_text())["rounds"]) == 2


# Folders another nntrain process holds.

LR_ONLY = {"optimizer.lr": PARAMS["optimizer.lr"]}


def busy_reason(trial: Path) -> str:
    return (f"another nntrain process is writing to {trial}; rerun the study once it"
            " ends")


def busy_error(trial: int, unfinished: str) -> str:
    return (f"error: trial {trial} of round 1 is still being written by another"
            " nntrain process (a trial of an earlier search still running on a Dask"
            f" worker, or a fit into the trial's folder), so {unfinished}: rerun the"
            " same command once it ends")


def search_with_trial_1_locked(config_path, out: Path):
    """Plan the study of ``config_path`` in ``out``, then search it while trial 1's
    folder is locked, as a trial of an earlier search still running on a Dask
    worker holds it: (that folder, the search's result)."""
    config, spec = load_search_config(config_path)
    Study(out, config, spec).close()
    trial = out / "trial-0001"
    trial.mkdir()
    lock = lock_folder(trial)
    try:
        return trial, invoke("search", config_path, "--out", out, "--workers", 1)
    finally:
        os.close(lock)


def test_a_second_search_of_a_study_is_refused_at_once(study, tmp_path):
    copy, config_path = copy_study(study, tmp_path)
    (copy / "trial-0002" / "result.json").unlink()
    kept = {path: path.read_bytes() for path in (copy / "study.json",
                                                   copy / "results.csv")}
    lock = lock_folder(copy)  # as the first search, still running, holds it

    try:
        result = invoke("search", config_path, "--out", copy, "--workers", 1)
    finally:
        os.close(lock)

    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"error: another nntrain search is running on the study in {copy}; wait for"
        " it to end, then run this command again"]
    assert {path: path.read_bytes() for path in kept} == kept
    assert not (copy / "trial-0002" / "result.json").exists()

    result = invoke("search", config_path, "--out", copy, "--workers", 1)
    assert result.exit_code == 0, result.output
    assert "3 trials, 1 to run" in result.stderr


def test_a_study_still_open_here_is_named_and_a_closed_one_runs_no_more(
        study, tmp_path):
    copy, config_path = copy_study(study, tmp_path)
    config, spec = load_search_config(config_path)
    first = Study(copy, config, spec)

    with pytest.raises(FolderLockedError, match="^" + re.escape(
            f"a Study of {copy} is still open in this process; close it first"
            " (study.close(), or open it in a with block)")):
        Study(copy, config, spec)
    first.close()
    with Study(copy, config, spec):
        with pytest.raises(RuntimeError, match=re.escape(
                f"this Study of {copy} is closed; open the study again")):
            first.run(1)


def test_a_file_system_without_locks_leaves_the_study_unlocked(study, tmp_path,
                                                                monkeypatch):
    import errno
    import fcntl

    def no_locks(descriptor, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    copy, config_path = copy_study(study, tmp_path)
    config, spec = load_search_config(config_path)

    with Study(copy, config, spec), Study(copy, config, spec):
        pass  # neither refused: no process could ever have held such a lock


def test_a_trial_whose_folder_another_process_holds_leaves_its_round_unfinished(
        write_config, tiny_npz, tmp_path):
    config_path = write_config(study_config(tiny_npz, trials=4, rounds=2, keep=1,
                                            params=LR_ONLY))
    whole = tmp_path / "whole"
    assert invoke("search", config_path, "--out", whole, "--workers", 1).exit_code == 0
    out = tmp_path / "out"
    trial, result = search_with_trial_1_locked(config_path, out)

    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1] == busy_error(
        1, "round 2 is not planned yet")
    assert f"trial 1 (round 1): busy: {busy_reason(trial)}\n" in result.stderr
    plan = json.loads((out / "study.json").read_text())
    assert (len(plan["rounds"]), len(plan["trials"])) == (1, 2)
    rows = {row["trial"]: row for row in read_rows(out)}
    assert (rows["1"]["status"], rows["1"]["reason"]) == ("busy", busy_reason(trial))
    assert rows["0"]["status"] == "ok"
    assert list(trial.iterdir()) == []  # nothing written into the other's folder

    result = invoke("search", config_path, "--out", out, "--workers", 1)
    assert result.exit_code == 0, result.output
    assert "4 trials, 3 to run" in result.stderr
    planned = json.loads((out / "study.json").read_text())
    expected = json.loads((whole / "study.json").read_text())
    assert planned["rounds"] == expected["rounds"]
    assert planned["trials"] == expected["trials"]
    assert [row["status"] for row in read_rows(out)] == ["ok"] * 4


def test_a_busy_trial_of_the_last_round_takes_the_result_its_process_writes(
        write_config, tiny_npz, tmp_path):
    config_path = write_config(study_config(tiny_npz, trials=2, params=LR_ONLY))
    out = tmp_path / "out"
    trial, result = search_with_trial_1_locked(config_path, out)

    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1] == busy_error(1, "the study is not finished")
    assert [row["status"] for row in read_rows(out)] == ["ok", "busy"]

    # The other process ends, writing the trial's result.
    config, spec = load_search_config(config_path)
    values = json.loads((out / "study.json").read_text())["trials"][1]["values"]
    finished = run_trial({"trial": 1, "values": values, "config": config,
                          "run_dir": str(trial), "metric": spec.metric,
                          "mode": spec.mode})
    assert finished["status"] == "ok"

    result = invoke("search", config_path, "--out", out, "--workers", 1)
    assert result.exit_code == 0, result.output
    assert "2 trials, 0 to run" in result.stderr
    rows = {row["trial"]: row for row in read_rows(out)}
    assert rows["1"]["status"] == "ok"
    assert float(rows["1"]["val_accuracy"]) == finished["metric"]


def _slow_runner(task):
    """Runs in a worker process: marks its start, takes a second, and writes its
    result.json as run_trial does."""
    run_dir = Path(task["run_dir"])
    run_dir.mkdir(parents=True)
    (run_dir / "started").touch()
    time.sleep(1.0)
    result = {**GOOD_RESULT, "trial": task["trial"]}
    (run_dir / "result.json").write_text(json.dumps(result))
    return result


def _signal_when(path: Path, signum: int) -> threading.Thread:
    def wait_then_signal():
        deadline = time.monotonic() + 120
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signum)

    thread = threading.Thread(target=wait_then_signal, daemon=True)
    thread.start()
    return thread


def test_sigterm_stops_a_study_after_its_trials_in_flight(study, tmp_path):
    config, _ = load_search_config(study[1])
    spec = parse_search({"trials": 4, "seed": 2,
                         "params": {"optimizer.lr": PARAMS["optimizer.lr"]}}, config)
    out = tmp_path / "stopped"
    thread = _signal_when(out / "trial-0000" / "started", signal.SIGTERM)

    with pytest.raises(StopRequested) as caught:
        Study(out, config, spec).run(workers=1, runner=_slow_runner)

    thread.join()
    assert caught.value.exit_code == 143
    assert str(caught.value) == (
        f"stopped by SIGTERM: 1 of 4 trials has a result (in {out / 'results.csv'});"
        " rerun the same command to run the rest")
    statuses = {row["trial"]: row["status"] for row in read_rows(out)}
    assert statuses == {"0": "ok", "1": "pending", "2": "pending", "3": "pending"}
    assert not (out / "trial-0001").exists()
    assert multiprocessing.active_children() == []


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(n) for n in (task / "children").read_text().split()]
    return found


def _training_study(write_config, tiny_npz, out: Path, **popen):
    """`nntrain search` of two trials far longer than any test waits, started in
    a process of its own and returned once both trials train."""
    config = study_config(tiny_npz, trials=2,
                          params={"optimizer.lr": PARAMS["optimizer.lr"]})
    config["train"]["epochs"] = 100_000
    command = [sys.executable, "-m", "nntrain", "search", str(write_config(config)),
               "--out", str(out), "--workers", "2"]
    process = subprocess.Popen(command, **popen)
    deadline = time.monotonic() + 120
    while not all((out / f"trial-{t:04d}" / "metrics.jsonl").exists()
                  for t in (0, 1)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return process


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143),
                                          (signal.SIGINT, 130)])
def test_a_signal_to_the_search_process_alone_stops_its_training_workers(
        write_config, tiny_npz, tmp_path, signum, code):
    out = tmp_path / "study"
    process = _training_study(write_config, tiny_npz, out, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    workers = _children(process.pid)

    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)

    assert process.returncode == code, stderr
    assert stderr.splitlines()[-1] == (
        f"stopped by {signal.Signals(signum).name}: 0 of 2 trials have a result (in"
        f" {out / 'results.csv'}); rerun the same command to run the rest")
    for trial in (0, 1):
        assert (out / f"trial-{trial:04d}" / "checkpoints" / "last.npz").exists()
        assert not (out / f"trial-{trial:04d}" / "result.json").exists()
    rows = read_rows(out)
    assert [row["status"] for row in rows] == ["stopped", "stopped"]
    name = signal.Signals(signum).name
    assert all(row["reason"].startswith(f"stopped by {name} at iteration")
               for row in rows), [row["reason"] for row in rows]
    deadline = time.monotonic() + 30
    while any(Path(f"/proc/{pid}").exists() for pid in workers) and (
            time.monotonic() < deadline):
        time.sleep(0.1)
    assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()]


def _alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie no one has reaped does not)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
def test_workers_end_when_the_search_process_is_killed(write_config, tiny_npz,
                                                       tmp_path):
    # SIGKILL (the out-of-memory killer's) lets the study forward nothing: its
    # workers, which ignore the signals, must notice on their own.
    out = tmp_path / "study"
    process = _training_study(write_config, tiny_npz, out, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    workers = [pid for pid in _children(process.pid)
               if "spawn" in Path(f"/proc/{pid}/cmdline").read_text()]
    assert len(workers) == 2

    try:
        process.kill()
        process.wait(timeout=30)

        deadline = time.monotonic() + 30
        while any(map(_alive, workers)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in workers if _alive(pid)]
    finally:  # a failure must not leave them training for good
        for pid in filter(_alive, workers):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
def test_sigterm_to_the_process_group_with_a_worker_idle_stops_the_study(
        write_config, tiny_npz, tmp_path):
    # Seed 5 plans two short trials and a long one, so that one worker is idle
    # when the signal reaches every process of the group.
    config = study_config(tiny_npz, trials=3, seed=5,
                          params={"train.epochs": {"choice": [3, 400_000]}})
    path = write_config(config)
    _, spec = load_search_config(path)
    assert [values["train.epochs"] for values in first_round(spec)] == [3, 3, 400_000]
    out = tmp_path / "study"
    process = subprocess.Popen(
        [sys.executable, "-m", "nntrain", "search", str(path), "--out", str(out),
         "--workers", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True)
    wanted = [out / "trial-0000" / "result.json", out / "trial-0001" / "result.json",
              out / "trial-0002" / "metrics.jsonl"]
    deadline = time.monotonic() + 120
    while not all(p.exists() for p in wanted) and time.monotonic() < deadline:
        time.sleep(0.1)
    workers = _children(process.pid)

    os.killpg(process.pid, signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)

    assert process.returncode == 143, stderr
    assert stderr.splitlines()[-1].startswith("stopped by SIGTERM: 2 of 3 trials have"
                                              " a result")
    statuses = {row["trial"]: row["status"] for row in read_rows(out)}
    assert statuses == {"0": "ok", "1": "ok", "2": "stopped"}
    deadline = time.monotonic() + 30
    while any(Path(f"/proc/{pid}").exists() for pid in workers) and (
            time.monotonic() < deadline):
        time.sleep(0.1)
    assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()]


def test_search_png_is_drawn_when_no_trial_finished_on_a_log_axis(tmp_path):
    pytest.importorskip("matplotlib")
    from nntrain.search import plot_study

    spec = spec_of(trials=2, params={"optimizer.lr": {"loguniform": [10.0, 1000.0]}})
    rows = [{"trial": t, "round": 1, "status": "failed", "metric": None,
             "values": {"optimizer.lr": 10.0 * (t + 1)}} for t in range(2)]

    path = plot_study(rows, spec, tmp_path / "search.png")

    assert path.read_bytes().startswith(b"\x89PNG")


def test_a_study_folder_of_another_plan_is_refused(study, tmp_path):
    copy, config_path = copy_study(study, tmp_path)
    result = invoke("search", config_path, "--out", copy, "--set", "search.seed=5")
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: {copy / 'study.json'} plans another study (search.seed differs);"
        " rerun it with the config and --set options it was planned with, or give"
        " --out another folder\n")


@pytest.mark.parametrize("edit, problem", [
    (lambda plan: plan["trials"].append({"trial": 99, "round": 1, "values": {}}),
     "trials holds 4 trials, but its 1 planned round(s) hold 3"),
    (lambda plan: plan["rounds"].append({"round": 2, "bounds": {}}),
     "rounds holds 2 rounds, not 1 to 1"),
    (lambda plan: plan.update(rounds=None), "rounds is null, not a list"),
    # Numbers equal to the right ones, but of another type.
    (lambda plan: plan["trials"][0].update(trial=0.0),
     "trials[0] is trial 0.0 of round 1, not trial 0 of round 1"),
    (lambda plan: plan["trials"][1].update(round=True),
     "trials[1] is trial 1 of round true, not trial 1 of round 1"),
    (lambda plan: plan["rounds"][0].update(round=1.0),
     "rounds[0] is round 1.0, not round 1"),
])
def test_a_study_plan_with_forged_rounds_or_trials_is_refused(study, tmp_path,
                                                              edit, problem):
    copy, config_path = copy_study(study, tmp_path)
    plan = json.loads((copy / "study.json").read_text())
    edit(plan)
    (copy / "study.json").write_text(json.dumps(plan))

    result = invoke("search", config_path, "--out", copy)

    assert result.exit_code == 2, result.output
    assert result.stderr == (f"error: {copy / 'study.json'} is damaged ({problem});"
                             " give --out another folder\n")


def _value(key, value):
    return lambda trial: trial["values"].update({key: value})


@pytest.mark.parametrize("change, problem", [
    (lambda trial: trial.update(round=3),
     "is trial 3 of round 3, not trial 3 of round 2"),
    (lambda trial: trial.update(trial=1),
     "is trial 1 of round 2, not trial 3 of round 2"),
    (lambda trial: trial.update(values={}),
     "has values for [], not for the searched keys"),
    (_value("optimizer.lr", "x"),
     'has optimizer.lr "x", which its loguniform distribution cannot give'),
    (_value("optimizer.lr", -1.0), "has optimizer.lr -1.0, which its loguniform"),
    (_value("optimizer.lr", 0.5), "has optimizer.lr 0.5, which its loguniform"),
    (_value("data.validation", 50),
     "has data.validation 50, which its choice distribution"),
])
def test_a_later_round_with_a_forged_trial_is_refused(tmp_path, change, problem):
    config, spec = base_config(), spec_of(trials=4, rounds=2, params=PARAMS)
    Study(tmp_path, config, spec)  # plans round 1: trials 0 and 1
    path = tmp_path / "study.json"
    plan = json.loads(path.read_text())
    plan["rounds"].append({"round": 2, "bounds": plan["rounds"][0]["bounds"]})
    plan["trials"] += [{"trial": trial["trial"] + 2, "round": 2,
                        "values": dict(trial["values"])} for trial in plan["trials"]]
    path.write_text(json.dumps(plan))
    assert len(Study(tmp_path, config, spec).rows) == 4  # a well-formed round 2

    change(plan["trials"][3])
    path.write_text(json.dumps(plan))

    with pytest.raises(RunDirectoryError, match=re.escape(
            f"{path} is damaged (trials[3] {problem}")):
        Study(tmp_path, config, spec)


@pytest.mark.parametrize("change, problem", [
    (lambda plan: plan["trials"][3]["values"].update({"optimizer.lr": 0.05}),
     "trials[3] has optimizer.lr 0.05, outside round 2's range [0.001, 0.01]"),
    (lambda plan: plan["rounds"][1]["bounds"].update({"optimizer.lr": [1e-4, 1e-2]}),
     "rounds[1] has the range [0.0001, 0.01] for optimizer.lr, which is not inside"
     " its loguniform range [0.001, 0.1]"),
    (lambda plan: plan["rounds"][1]["bounds"].update({"optimizer.lr": [1e-2, 1e-3]}),
     "rounds[1] has the range [0.01, 0.001] for optimizer.lr, which is not inside"),
    (lambda plan: plan["rounds"][1]["bounds"].update({"data.validation": [10, 20]}),
     "rounds[1] has the range [10, 20] for data.validation, which is not inside its"
     " choice range [10, 20, 100]"),
])
def test_a_later_round_value_or_range_outside_its_own_range_is_refused(
        tmp_path, change, problem):
    config, spec = base_config(), spec_of(trials=4, rounds=2, params=PARAMS)
    Study(tmp_path, config, spec)  # plans round 1: trials 0 and 1
    path = tmp_path / "study.json"
    plan = json.loads(path.read_text())
    bounds = {**plan["rounds"][0]["bounds"], "optimizer.lr": [1e-3, 1e-2]}
    plan["rounds"].append({"round": 2, "bounds": bounds})
    plan["trials"] += [{"trial": trial["trial"] + 2, "round": 2,
                        "values": {**trial["values"], "optimizer.lr": 5e-3}}
                       for trial in plan["trials"]]
    path.write_text(json.dumps(plan))
    assert len(Study(tmp_path, config, spec).rows) == 4  # a well-formed round 2

    change(plan)
    path.write_text(json.dumps(plan))

    with pytest.raises(RunDirectoryError, match=re.escape(
            f"{path} is damaged ({problem}")):
        Study(tmp_path, config, spec)


def test_a_plan_from_before_a_config_key_existed_still_resumes(study, tmp_path):
    copy, config_path = copy_study(study, tmp_path)
    plan = json.loads((copy / "study.json").read_text())
    del plan["config"]["train"]["diagnostics"]  # as if written before it existed
    (copy / "study.json").write_text(json.dumps(plan))
    result = invoke("search", config_path, "--out", copy)
    assert result.exit_code == 0, result.output
    assert "3 trials, 0 to run" in result.stderr


def test_a_non_empty_folder_without_a_plan_is_refused(study, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    result = invoke("search", study[1], "--out", tmp_path)
    assert result.exit_code == 2
    assert re.fullmatch(r"error: .* is not an empty folder and holds no study\.json;"
                        r" give --out a new or empty folder for the study\n",
                        result.stderr)


def test_a_study_folder_that_cannot_be_made_is_refused(study, tmp_path):
    (tmp_path / "a-file").write_text("in the way")
    result = invoke("search", study[1], "--out", tmp_path / "a-file" / "study")
    assert result.exit_code == 2
    assert re.fullmatch(r"error: cannot create the output folder .*study \(Not a"
                        r" directory\); give --out a folder that can be written\n",
                        result.stderr)


def test_workers_and_scheduler_together_are_refused(study, tmp_path):
    result = invoke("search", study[1], "--out", tmp_path / "x", "--workers", 2,
                    "--scheduler", "tcp://127.0.0.1:8786")
    assert result.exit_code == 2
    assert "give one of them" in result.stderr
    assert not (tmp_path / "x").exists()


def test_scheduler_without_dask_says_how_to_install_it(study, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import fails
    result = invoke("search", study[1], "--out", tmp_path / "x",
                    "--scheduler", "tcp://127.0.0.1:8786")
    assert result.exit_code == 2
    assert result.stderr == ("error: --scheduler needs dask.distributed, which is not"
                             " installed; install it with: pip install"
                             " 'nntrain[dask]'\n")


@pytest.mark.parametrize("port, fault", [
    ("99999", "has a bad port (99999, not in 1..65535); write tcp://HOST:PORT with"
     " the port dask-scheduler prints"),
    ("0", "has a bad port (0, not in 1..65535); write tcp://HOST:PORT with the port"
     " dask-scheduler prints"),
    ("65536", "has a bad port (65536, not in 1..65535); write tcp://HOST:PORT with"
     " the port dask-scheduler prints"),
    # isdigit() is true for these, int() refuses them.
    ("8\u00b2", "is not a Dask scheduler address; write tcp://HOST:PORT (as"
     " dask-scheduler prints it)"),
    ("\u0668\u0660", "is not a Dask scheduler address; write tcp://HOST:PORT (as"
     " dask-scheduler prints it)"),
])
def test_a_scheduler_port_that_dask_cannot_dial_is_refused_at_once(
        study, tmp_path, monkeypatch, port, fault):
    monkeypatch.setitem(sys.modules, "distributed", None)  # refused before dask
    address = f"tcp://127.0.0.1:{port}"
    result = invoke("search", study[1], "--out", tmp_path / "x",
                    "--scheduler", address)
    assert result.exit_code == 2
    assert result.stderr == f"error: --scheduler {address!r} {fault}\n"
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("address, fault", [
    ("", "--scheduler is empty; give tcp://HOST:PORT, or leave it out to run the"
     " trials on this machine"),
    ("tls://127.0.0.1:1", "--scheduler 'tls://127.0.0.1:1': nntrain dials tcp://"
     " schedulers only (tls:// needs certificates that search has no option for);"
     " write tcp://HOST:PORT"),
])
def test_an_empty_or_tls_scheduler_is_refused_before_the_folder_is_made(
        study, tmp_path, address, fault):
    result = invoke("search", study[1], "--out", tmp_path / "x",
                    "--scheduler", address)
    assert result.exit_code == 2
    assert result.stderr == f"error: {fault}\n"
    assert not (tmp_path / "x").exists()


def test_an_unreachable_scheduler_is_a_run_time_failure(study, tmp_path,
                                                        monkeypatch):
    pytest.importorskip("dask.distributed")
    from nntrain.search import trials

    monkeypatch.setattr(trials, "DASK_CONNECT_SECONDS", 1)
    with socket.socket() as probe:  # a loopback port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{probe.getsockname()[1]}"
    result = invoke("search", study[1], "--out", tmp_path / "x",
                    "--scheduler", address)
    assert result.exit_code == 1
    assert re.fullmatch(rf"error: cannot reach the Dask scheduler at {address} \(.*\);"
                        r" start it, or check --scheduler tcp://HOST:PORT",
                        result.stderr.splitlines()[-1])


def test_a_dask_cluster_samples_the_same_table_as_the_process_pool(study, tmp_path):
    distributed = pytest.importorskip("dask.distributed")
    out, config_path, _ = study
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                  host="127.0.0.1", dashboard_address=None) as cluster:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        result = invoke("search", config_path, "--out", tmp_path / "dask",
                        "--scheduler", cluster.scheduler_address)
    assert result.exit_code == 0, result.output

    def table(folder):
        keys = ("trial", "status", "optimizer.lr", "data.validation", "val_accuracy")
        return sorted(tuple(row[key] for key in keys) for row in read_rows(folder))

    assert table(tmp_path / "dask") == table(out)
    assert math.isfinite(float(read_rows(tmp_path / "dask")[0]["val_accuracy"]))


def test_a_set_path_into_search_params_says_to_give_the_whole_mapping(
        write_config, tiny_npz):
    path = write_config(study_config(tiny_npz))
    with pytest.raises(ConfigError) as caught:
        load_search_config(path, ["search.params.optimizer.lr=0.1"])
    message = str(caught.value)
    assert message.startswith("--set search.params.optimizer.lr=0.1: invalid"
                              " search.params: 'optimizer' holds nested keys")
    assert message.endswith("--set 'search.params={optimizer.lr: {choice: [A, B]}}'")


def test_nested_search_params_are_followed_down_to_the_key_meant(write_config,
                                                                  tiny_npz):
    raw = study_config(tiny_npz)
    raw["train"]["average"] = {"decay": 0.99}
    path = write_config(raw)
    with pytest.raises(ConfigError) as caught:
        load_search_config(path, ["search.params.train.average.decay="
                                  "{uniform: [0.9, 0.99]}"])
    assert ("(train.average.decay: {uniform: [0.9, 0.99]}); with --set, give the"
            " whole mapping: --set 'search.params={train.average.decay: {uniform:"
            " [0.9, 0.99]}}'") in str(caught.value)

    # The advice, followed, is a valid search.
    _, spec = load_search_config(path, ["search.params={train.average.decay:"
                                        " {uniform: [0.9, 0.99]}}"])
    assert [param.key for param in spec.params] == ["train.average.decay"]


@pytest.mark.parametrize("threads, searched, workers, warned", [
    (None, False, 2, False), (1, False, 2, False), (2, False, 1, False),
    (2, False, 2, True), (2, True, 2, False)])
def test_search_warns_when_workers_threads_outnumber_the_cores(
        monkeypatch, threads, searched, workers, warned):
    from nntrain import cli_search

    monkeypatch.setattr(cli_search, "usable_cores", lambda: 2)
    config = {"train": {"threads": threads}}
    spec = SimpleNamespace(params=[SimpleNamespace(key="train.threads")]
                           if searched else [SimpleNamespace(key="optimizer.lr")])
    warning = cli_search._threads_warning(config, spec, workers)
    assert (warning == "train.threads is 2, so 2 workers run 4 BLAS threads on 2"
            " cores; set train.threads to null (one BLAS thread per worker) or use"
            " fewer --workers") == warned
    assert (warning is None) == (not warned)


@pytest.mark.parametrize("metric, mode, warned", [
    ("val_accuracy", "max", False), ("train_accuracy", "max", False),
    ("val_loss", "min", False), ("loss", "min", False), ("data_loss", "min", False),
    ("reg_loss", "min", False),
    ("val_accuracy", "min", True), ("train_accuracy", "min", True),
    ("val_loss", "max", True), ("loss", "max", True), ("data_loss", "max", True),
    ("reg_loss", "max", True),
])
def test_a_mode_that_ranks_the_worst_first_is_a_warning(metric, mode, warned):
    spec = spec_of(trials=2, metric=metric, mode=mode, params=PARAMS)
    better = "max" if metric.endswith("accuracy") else "min"
    expected = (f"search.mode is {mode}, so the study ranks the"
                f" {'lowest' if mode == 'min' else 'highest'} {metric} first,"
                f" although a {'higher' if better == 'max' else 'lower'} {metric} is"
                f" better; set search.mode to {better} (--set search.mode={better}),"
                " or leave it out")
    assert mode_warning(spec) == (expected if warned else None)


def test_search_warns_of_a_mode_against_its_metric_at_the_start(
        write_config, tiny_npz, tmp_path):
    path = write_config(study_config(tiny_npz, trials=1, mode="min", params={
        "optimizer.lr": {"choice": [0.01]}}))

    result = invoke("search", path, "--out", tmp_path / "study", "--workers", 1)

    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines()[1] == (
        "warning: search.mode is min, so the study ranks the lowest val_accuracy"
        " first, although a higher val_accuracy is better; set search.mode to max"
        " (--set search.mode=max), or leave it out")


def _bad_beta1_study(npz_path, names, **optimizer) -> dict:
    config = tiny_config_dict(npz_path)
    config["optimizer"] = {"name": "adam", "beta1": 1.5, **optimizer}
    config["search"] = {"trials": 4, "params": {"optimizer.name": {"choice": names}}}
    return config


def test_a_searched_rule_that_drops_a_bad_setting_is_accepted(write_config,
                                                              tiny_npz):
    path = write_config(_bad_beta1_study(tiny_npz, ["sgd"]))
    config, spec = load_search_config(path)
    assert config["optimizer"] == {"name": "sgd", "lr": 0.01}
    assert {values["optimizer.name"] for values in first_round(spec)} == {"sgd"}


def test_only_the_option_that_keeps_a_bad_setting_is_refused(write_config,
                                                             tiny_npz):
    path = write_config(_bad_beta1_study(tiny_npz, ["adam", "sgd"]))
    with pytest.raises(ConfigError) as caught:
        load_search_config(path)
    assert str(caught.value) == (
        f"{path}: invalid search.params.optimizer.name: the option 'adam' gives no"
        " valid config (invalid optimizer.beta1: 1.5 (expected a number in [0, 1)));"
        " remove or correct that option")


def test_a_stand_in_rule_that_would_lose_a_setting_is_refused(write_config,
                                                              tiny_npz):
    path = write_config(_bad_beta1_study(tiny_npz, ["sgd", "rmsprop"], eps=1e-6))
    with pytest.raises(ConfigError) as caught:
        load_search_config(path)
    assert "trials drawing 'rmsprop' would run without eps" in str(caught.value)


def test_a_refused_boolean_option_is_named_as_yaml_writes_it():
    config = resolve_config({"train": {"epochs": 2}, "model": {"layernorm": True}})
    with pytest.raises(ConfigError) as caught:
        parse_search({"trials": 2, "params": {
            "model.batchnorm": {"choice": [False, True]}}}, config)
    assert str(caught.value).startswith(
        "invalid search.params.model.batchnorm: the option true gives no valid"
        " config (")


def test_results_csv_writes_booleans_as_the_config_does(tmp_path):
    config = base_config()
    spec = parse_search({"trials": 4, "seed": 1, "params": {
        "model.batchnorm": {"choice": [False, True]}}}, config)
    study = Study(tmp_path / "bools", config, spec)
    with open(study.write_results(), newline="", encoding="utf-8") as handle:
        cells = {row["model.batchnorm"] for row in csv.DictReader(handle)}
    assert cells == {"true", "false"}
    assert {yaml.safe_load(cell) for cell in cells} == {True, False}
    shown = {line.split()[2] for line in format_table(study.rows, spec)[1:]}
    assert shown == {"true", "false"}


def test_the_table_shows_a_drawn_mapping_as_the_config_writes_it():
    from nntrain.search.report import short_value

    assert short_value({"patience": 2, "min_delta": 0.5}) == (
        "{min_delta: 0.5, patience: 2}")
    assert short_value([{"patience": 2}, True]) == "[{patience: 2}, true]"


@pytest.mark.parametrize("seconds, shown", [
    (0.023, "0.023"), (0.04, "0.04"), (0.5, "0.5"), (0.0, "0.0"), (1.5, "1.5"),
    (12.34, "12.3"), (0.9996, "1.0"), (0.996, "1.0"), (0.994, "0.99"),
    (0.00123, "0.0012"), (0.000999, "0.001"), (0.00005, "<0.001"),
])
def test_a_trial_time_is_a_plain_decimal_with_two_digits_below_a_second(seconds,
                                                                         shown):
    from nntrain.cli_search import _describe

    spec = spec_of(trials=1, params={"optimizer.lr": PARAMS["optimizer.lr"]})
    row = {**GOOD_RESULT, "round": 1, "values": {"optimizer.lr": 0.01},
           "seconds": seconds}
    assert format_table([row], spec)[1].split()[-1] == shown
    assert _describe(row).endswith(f", {shown} s")


def test_data_that_is_not_found_is_refused_before_any_trial(tmp_path,
                                                                write_config):
    # Every trial would load the same missing file and fail, leaving results a
    # rerun keeps: the study refuses it once, up front, and plans nothing.
    config = write_config(study_config(tmp_path / "moved.npz"))
    out = tmp_path / "out"

    result = invoke("search", config, "--out", out, "--workers", 1)

    assert result.exit_code == 2, result.output
    assert "moved.npz" in result.stderr and len(result.stderr.splitlines()) == 1
    assert not out.exists()


def test_a_searched_data_key_leaves_the_data_to_the_trials(tmp_path, write_config,
                                                           write_npz):
    # data.path itself is searched: one option is missing, so only the trials that
    # draw it fail.
    present = write_npz("present.npz", **tiny_arrays())
    raw = study_config(present)
    raw["search"]["params"] = {"data.path": {"choice": [str(present),
                                                        str(tmp_path / "no.npz")]}}
    raw["search"]["trials"] = 4
    out = tmp_path / "out"

    result = invoke("search", write_config(raw), "--out", out, "--workers", 1)

    assert result.exit_code == 0, result.output
    statuses = sorted(row["status"] for row in read_rows(out))
    assert "ok" in statuses and "failed" in statuses


def test_a_study_whose_data_moved_reruns_once_it_is_back(tmp_path, write_config,
                                                         write_npz):
    # Finished, the rerun reads no data; with a trial to run, it needs the data
    # where the study planned it: data elsewhere could be other data.
    data = write_npz("data.npz", **tiny_arrays())
    config = write_config(study_config(data))
    out = tmp_path / "out"
    assert invoke("search", config, "--out", out, "--workers", 1).exit_code == 0
    moved = data.rename(tmp_path / "moved.npz")

    finished = invoke("search", config, "--out", out, "--workers", 1)
    assert finished.exit_code == 0, finished.output
    assert "3 trials, 0 to run" in finished.stderr

    shutil.rmtree(out / "trial-0002")
    missing = invoke("search", config, "--out", out, "--workers", 1)
    assert missing.exit_code == 2 and "npz file not found" in missing.stderr

    elsewhere = invoke("search", config, "--out", out, "--workers", 1, "--set",
                       f"data.path={moved}")
    assert elsewhere.exit_code == 2
    assert (f"plans its trials on the data at data.path {data}: put the data back"
            " there") in elsewhere.stderr

    moved.rename(data)
    rerun = invoke("search", config, "--out", out, "--workers", 1)
    assert rerun.exit_code == 0, rerun.output
    assert "3 trials, 1 to run" in rerun.stderr
    assert [row["status"] for row in read_rows(out)] == ["ok"] * 3


def test_an_unknown_key_given_by_set_in_search_params_names_the_set(
        tmp_path, write_config, tiny_npz):
    config = write_config(study_config(tiny_npz))
    override = "search.params={optimizer.lrr: {loguniform: [1.0e-3, 1.0e-1]}}"

    result = invoke("search", config, "--out", tmp_path / "out", "--set", override)

    assert result.exit_code == 2
    assert result.stderr == (f"error: --set {override}: invalid search.params:"
                             " 'optimizer.lrr' is not a config key (did you mean"
                             " 'optimizer.lr'?)\n")


# What best.npz holds: the trials monitor search.metric where the config leaves
# train.monitor open, and --ensemble says when their best.npz holds other epochs.


@pytest.mark.parametrize("written, search, monitor", [
    ({}, {"metric": "val_loss"}, "val_loss"),
    ({}, {"metric": "loss"}, "loss"),
    ({}, {"metric": "train_accuracy"}, "train_accuracy"),
    ({"monitor": "val_accuracy"}, {"metric": "val_loss"}, "val_accuracy"),
    ({"monitor": "loss"}, {"metric": "val_accuracy"}, "loss"),
    ({}, {"metric": "data_loss"}, "val_accuracy"),  # no monitor option
    ({}, {"metric": "val_loss", "mode": "max"}, "val_accuracy"),
    ({}, {"metric": "val_loss", "params": {
        "train.monitor": {"choice": ["val_accuracy", "val_loss"]}}}, "val_accuracy"),
])
def test_trials_monitor_the_search_metric_where_the_config_leaves_it_open(
        write_config, tiny_npz, written, search, monitor):
    config = study_config(tiny_npz, **search)
    config["train"].update(written)

    resolved, spec = load_search_config(write_config(config))

    assert resolved["train"]["monitor"] == monitor
    assert spec.monitor_from_metric == (monitor == search["metric"] and not written)
    assert "monitor_from_metric" not in spec.to_json()  # study.json as before


def _with_best_npz(task):
    """_scored_runner, plus a best.npz for --ensemble to find: one that loads,
    holding a single array (the ensemble itself is not run)."""
    from nntrain.checkpoint import save_checkpoint

    result = _scored_runner(task)
    (Path(task["run_dir"]) / "checkpoints").mkdir()
    save_checkpoint(Path(task["run_dir"]) / "checkpoints" / "best.npz",
                    {"config": {}}, {"param": {"w": np.zeros(2)}})
    return result


NOT_RANKED = ("{trials} kept in best.npz the epoch of the {kept} (train.monitor), not"
              " of the {ranked} that the table ranks (its best epoch); --ensemble"
              " averages those checkpoints ({fix} to ensemble the ranked epochs)")


@pytest.mark.parametrize("monitor, search, note", [
    ("val_loss", {"metric": "val_loss"}, None),
    ("val_accuracy", {}, None),
    ("val_accuracy", {"metric": "val_loss"}, NOT_RANKED.format(
        trials="trial 0", kept="highest val_accuracy", ranked="lowest val_loss",
        fix="set train.monitor to val_loss, or leave it out,")),
    ("val_loss", {"metric": "val_loss", "mode": "max"}, NOT_RANKED.format(
        trials="trial 0", kept="lowest val_loss", ranked="highest val_loss",
        fix="no train.monitor keeps the highest val_loss; set search.mode to min"
            " (--set search.mode=min)")),
    ("val_accuracy", {"metric": "data_loss"}, NOT_RANKED.format(
        trials="trial 0", kept="highest val_accuracy", ranked="lowest data_loss",
        fix="data_loss is no train.monitor option; rank by one of val_accuracy,"
            " val_loss, train_accuracy, loss")),
], ids=["agree", "default", "other-monitor", "opposite-mode", "not-a-monitor"])
def test_ensemble_says_when_best_npz_holds_other_epochs_than_the_table_ranks(
        tmp_path, monitor, search, note):
    config = resolve_config({"train": {"epochs": 2, "monitor": monitor}})
    spec = parse_search({"trials": 1, "params": {"optimizer.lr": {
        "loguniform": [1e-3, 1e-1]}}, **search}, config)
    study = Study(tmp_path, config, spec)
    study.run(workers=1, runner=_with_best_npz)
    notes = []

    paths = study.best_checkpoints(2, on_note=notes.append)

    assert paths == [tmp_path / "trial-0000" / "checkpoints" / "best.npz"]
    assert notes == ([] if note is None else [note])


def test_ensemble_names_the_trials_whose_searched_monitor_is_another(tmp_path):
    config = base_config()
    spec = parse_search({"trials": 4, "seed": 3, "metric": "val_loss", "params": {
        "optimizer.lr": {"loguniform": [1e-3, 1e-1]},
        "train.monitor": {"choice": ["val_accuracy", "val_loss"]}}}, config)
    study = Study(tmp_path, config, spec)
    rows = study.run(workers=1, runner=_with_best_npz)
    other = [row["trial"] for row in rows
             if row["values"]["train.monitor"] == "val_accuracy"]
    assert 0 < len(other) < 4  # the seed draws both monitors
    notes = []

    study.best_checkpoints(4, on_note=notes.append)

    listed = ("trials " if len(other) > 1 else "trial ") + ", ".join(map(str, other))
    assert notes == [NOT_RANKED.format(
        trials=listed, kept="highest val_accuracy", ranked="lowest val_loss",
        fix="set train.monitor to val_loss, or leave it out,")]


@pytest.fixture(scope="module")
def val_loss_study(tmp_path_factory):
    """A study ranking by val_loss, whose config leaves train.monitor open, on data
    where val_accuracy peaks before val_loss does: folder, config path, result."""
    folder = tmp_path_factory.mktemp("val_loss_study")
    npz = folder / "tiny.npz"
    np.savez(npz, **tiny_arrays())
    config = study_config(npz, trials=2, metric="val_loss",
                          params={"optimizer.lr": {"choice": [0.05, 0.07]}})
    config["train"]["epochs"] = 6
    config_path = folder / "search.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    out = folder / "out"
    result = invoke("search", config_path, "--out", out, "--workers", 1,
                    "--ensemble", 2)
    return out, config_path, result


def _first_best_epoch(run_dir: Path, metric: str) -> int:
    """The first epoch with the highest ``metric`` in the trial's metrics.jsonl."""
    with open(run_dir / "metrics.jsonl", encoding="utf-8") as file:
        epochs = [record for record in map(json.loads, file)
                  if record["kind"] == "epoch"]
    return max(epochs, key=lambda record: record[metric])["epoch"]


def test_best_npz_holds_the_epoch_the_table_ranks(val_loss_study):
    from nntrain.checkpoint import load_checkpoint

    out, _, result = val_loss_study
    assert result.exit_code == 0, result.output
    assert "kept in best.npz" not in result.stderr
    assert json.loads((out / "study.json").read_text())["config"]["train"][
        "monitor"] == "val_loss"
    rows = read_rows(out)
    assert [row["status"] for row in rows] == ["ok", "ok"]
    for row in rows:
        run_dir = out / f"trial-{int(row['trial']):04d}"
        meta = load_checkpoint(run_dir / "checkpoints" / "best.npz").meta
        progress = meta["solver"]["progress"]
        assert meta["config"]["train"]["monitor"] == "val_loss"
        assert progress["best_epoch"] == int(row["best_epoch"])
        assert progress["best_value"] == float(row["val_loss"])
    # val_accuracy, the default monitor, would have kept another epoch.
    assert any(_first_best_epoch(out / f"trial-{int(row['trial']):04d}",
                                 "val_accuracy") != int(row["best_epoch"])
               for row in rows)


def test_a_study_planned_before_trials_monitored_the_metric_resumes_as_planned(
        val_loss_study, tmp_path):
    out, config_path, _ = val_loss_study
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    plan = json.loads((copy / "study.json").read_text())
    plan["config"]["train"]["monitor"] = "val_accuracy"  # as planned before
    (copy / "study.json").write_text(json.dumps(plan))
    (copy / "trial-0001" / "result.json").unlink()

    result = invoke("search", config_path, "--out", copy, "--workers", 1,
                    "--ensemble", 1)

    assert result.exit_code == 0, result.output
    assert "2 trials, 1 to run" in result.stderr
    trial_config_file = copy / "trial-0001" / "config.yaml"
    assert yaml.safe_load(trial_config_file.read_text())["train"][
        "monitor"] == "val_accuracy"
    assert ("(train.monitor), not of the lowest val_loss that the table ranks (its"
            " best epoch); --ensemble averages those checkpoints (the study was"
            " planned before trials monitored search.metric; run it again in a new"
            " --out folder to ensemble the ranked epochs)\n") in result.stderr

    changed = invoke("search", config_path, "--out", copy, "--set",
                     "train.monitor=val_loss")
    assert changed.exit_code == 2
    assert "plans another study (config.train.monitor differs)" in changed.stderr


@pytest.mark.parametrize("search, problem", [
    ({"trials": 2, None: 1, "params": {"optimizer.lr": {"uniform": [0.1, 0.2]}}},
     "unknown key search.null (valid keys: trials,"),
    ({"trials": 2, "params": {True: {"uniform": [0.1, 0.2]}}},
     "invalid search.params: true is not a config key"),
])
def test_search_keys_that_yaml_reads_as_null_or_true_are_named_as_yaml_spells_them(
        search, problem):
    config = resolve_config({"train": {"epochs": 2}})
    with pytest.raises(ConfigError) as caught:
        parse_search(search, config)
    assert str(caught.value).startswith(problem)


def test_a_study_whose_config_output_is_a_file_is_refused_naming_it(
        tmp_path, tiny_npz, write_config):
    out = tmp_path / "file"
    out.write_text("x")
    config = write_config({**study_config(tiny_npz), "output": str(out)})

    result = invoke("search", config)

    assert result.exit_code == 2, result.output
    assert result.stderr == (f"error: {out} is a file, not a folder; choose a folder"
                             " for the study with --out or the config's output\n")
    assert out.read_text() == "x"


@pytest.mark.parametrize("config, spec, problem", [
    (None, "SPEC", "config is NoneType; give the study's config"),
    ({"bogus": 1}, None, "spec is NoneType; give the SearchSpec"),
    ("CONFIG", {"trials": 2}, "spec is dict; give the SearchSpec"),
])
def test_a_study_given_no_config_or_spec_is_refused_before_its_folder_is_touched(
        tmp_path, config, spec, problem):
    search = {"trials": 2, "params": {"optimizer.lr": PARAMS["optimizer.lr"]}}
    real_config = base_config()
    places = {"CONFIG": real_config, "SPEC": parse_search(search, real_config)}
    config, spec = (places[value] if isinstance(value, str) else value
                    for value in (config, spec))

    with pytest.raises(TypeError, match=re.escape(problem)):
        Study(tmp_path / "study", config, spec)
    assert not (tmp_path / "study").exists()


@pytest.mark.parametrize("workers", [0, -1, 1.5, "2", True])
def test_study_run_refuses_a_worker_count_that_is_no_positive_int(tmp_path, workers):
    search = {"trials": 2, "params": {"optimizer.lr": PARAMS["optimizer.lr"]}}
    config = base_config()
    with Study(tmp_path / "study", config, parse_search(search, config)) as study:
        with pytest.raises(ValueError, match=re.escape(
                f"workers must be an int >= 1 or None (the usable cores), not"
                f" {workers!r}")):
            study.run(workers=workers, runner=_scored_runner)


@pytest.mark.parametrize("count", [0, -1, "2", True])
def test_best_checkpoints_refuses_a_count_that_is_no_positive_int(tmp_path, count):
    search = {"trials": 2, "params": {"optimizer.lr": PARAMS["optimizer.lr"]}}
    config = base_config()
    with Study(tmp_path / "study", config, parse_search(search, config)) as study:
        with pytest.raises(ValueError, match=re.escape(
                f"count must be an int >= 1, not {count!r}")):
            study.best_checkpoints(count)


def test_dask_s_own_cancellation_of_a_lost_scheduler_reads_as_one_line(capfd):
    distributed = pytest.importorskip("distributed")
    FutureCancelledError = getattr(distributed.client, "FutureCancelledError", None)
    if FutureCancelledError is None:
        pytest.skip("this dask.distributed cancels futures with no reason to read")

    class Dropped:
        def exception(self):
            raise FutureCancelledError("run_trial-5f1e", "scheduler-connection-lost",
                                       "Client lost the connection to the scheduler."
                                       " Please check your connection.")

    with trial_module._dask_logs_quiet():
        # As Dask's client logs the loss: its own logger, level and handler.
        logging.getLogger("distributed.client").error("Failed to reconnect")
        with pytest.raises(ClusterError) as caught:
            trial_module._dask_outcome(Dropped(), "tcp://127.0.0.1:8786")

    assert str(caught.value).startswith(
        "the Dask cluster at tcp://127.0.0.1:8786 dropped the study's trials"
        " (scheduler-connection-lost); check")
    assert "Failed to reconnect" not in capfd.readouterr().err


def test_more_worker_processes_than_cores_are_warned_of(monkeypatch):
    from nntrain import cli_search

    monkeypatch.setattr(cli_search, "usable_cores", lambda: 2)

    assert cli_search._workers_warning(2) is None
    assert cli_search._workers_warning(3) == (
        "3 worker processes share the 2 cores this machine lets nntrain use, so each"
        " trial runs slower and the study no faster; give --workers 2 or fewer")


@pytest.fixture
def data_path_study(tmp_path, write_config, tiny_npz, monkeypatch):
    """A finished 2-trial study searching data.path among two relative names, run
    from tmp_path/first: (study folder, config path, the first folder)."""
    first = tmp_path / "first"
    first.mkdir()
    for name in ("a.npz", "b.npz"):
        shutil.copy(tiny_npz, first / name)
    params = {"data.path": {"choice": ["a.npz", "b.npz"]}}
    config_path = write_config(study_config(tiny_npz, params=params, trials=2))
    monkeypatch.chdir(first)
    out = tmp_path / "study"
    assert invoke("search", config_path, "--out", out, "--workers", 1).exit_code == 0
    return out, config_path, first


def test_a_study_rerun_from_another_folder_names_its_searched_data(
        data_path_study, tmp_path, monkeypatch):
    out, config_path, first = data_path_study
    other = tmp_path / "other"
    other.mkdir()
    monkeypatch.chdir(other)

    result = invoke("search", config_path, "--out", out, "--workers", 1)

    assert result.exit_code == 2, result.output
    assert result.stderr == (
        f"error: {out / 'study.json'} plans its trials on the data paths"
        " search.params chooses among, as they were when it was planned (a relative"
        " path names a file in the folder the study was first run from): put the"
        " data back there, or rerun from that folder, to run the rest of the study"
        " (trials must all train on the same data), or give --out another folder\n")


def test_a_study_planned_with_relative_searched_paths_is_refused_naming_them(
        data_path_study):
    # Planned before searched paths were made absolute: study.json holds them as
    # written, and nothing tells from which folder the study ran, so its trials
    # could train on other files.
    out, config_path, first = data_path_study
    plan = json.loads((out / "study.json").read_text())
    for param in plan["search"]["params"]:
        if param[0] == "data.path":
            param[2] = [Path(path).name for path in param[2]]
    for trial in plan["trials"]:
        trial["values"]["data.path"] = Path(trial["values"]["data.path"]).name
    (out / "study.json").write_text(json.dumps(plan))

    result = invoke("search", config_path, "--out", out, "--workers", 1)

    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(
        f"error: {out / 'study.json'} plans its trials on the data paths"
        " search.params chooses among, as they were when it was planned")


def test_a_searched_data_path_holding_a_nul_is_bad_input(tmp_path, write_config,
                                                          tiny_npz):
    params = {"data.path": {"choice": [str(tiny_npz), "a\x00b.npz"]}}
    config_path = write_config(study_config(tiny_npz, params=params, trials=2))

    result = invoke("search", config_path, "--out", tmp_path / "study")

    assert result.exit_code == 2, result.output
    assert result.stderr == ("error: search.params.data.path 'a\\x00b.npz' holds a"
                             " NUL character (\\x00), which no path can; remove it\n")


def test_a_study_whose_searched_data_differs_in_more_than_its_path_says_so(
        tmp_path, write_config, tiny_npz):
    def config(validation):
        options = [{"name": "npz", "path": str(tiny_npz), "validation": validation},
                   {"name": "npz", "path": str(tiny_npz), "validation": 8}]
        return write_config(study_config(tiny_npz, trials=2,
                                         params={"data": {"choice": options}}))
    out = tmp_path / "study"
    assert invoke("search", config(10), "--out", out, "--workers", 1).exit_code == 0

    result = invoke("search", config(12), "--out", out, "--workers", 1)

    assert result.exit_code == 2, result.output
    assert "plans another study (search.params" in result.stderr


def test_a_searched_data_path_whose_links_loop_is_bad_input(tmp_path, write_config,
                                                             tiny_npz, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "loop.npz").symlink_to("loop.npz")
    params = {"data.path": {"choice": [str(tiny_npz), "loop.npz"]}}
    config_path = write_config(study_config(tiny_npz, params=params, trials=2))

    result = invoke("search", config_path, "--out", tmp_path / "study")

    assert result.exit_code == 2, result.output
    assert result.stderr == ("error: search.params.data.path loop.npz: its symbolic"
                             " links form a loop; fix them, or give the data's own"
                             " path\n")


@pytest.mark.parametrize("trials, rounds, done, largest", [
    (8, 2, 0, 4), (8, 2, 3, 4), (8, 2, 4, 4), (9, 2, 4, 4), (9, 2, 5, 4),
    (8, 1, 7, 1), (8, 2, 8, 0),
])
def test_the_workers_shown_are_the_most_trials_a_round_can_run_at_once(
        trials, rounds, done, largest):
    from nntrain import cli_search

    spec = spec_of(trials=trials, rounds=rounds, keep=1,
                   params={"optimizer.lr": {"loguniform": [1e-4, 1e-1]}})

    assert cli_search._largest_batch(spec, done) == largest
