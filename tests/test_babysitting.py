"""Watching a run: start-of-run checks, sanity, diagnostics, warnings, early
stopping and the non-finite guard."""

import json
import math
import re

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import tiny_config_dict

from nntrain.checkpoint import load_checkpoint
from nntrain.cli import cli
from nntrain.config import resolve_config
from nntrain.pipeline import fit
from nntrain.train.checks import expected_first_loss
from nntrain.train.diagnostics import Watcher, layer_statistics


def invoke(*args):
    return CliRunner().invoke(cli, [str(arg) for arg in args])


def records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text()
            .splitlines()]


def test_expected_first_loss_is_ln_c_for_softmax_and_c_minus_1_for_svm():
    assert expected_first_loss("softmax", 10)[0] == pytest.approx(math.log(10))
    assert expected_first_loss("svm", 10)[0] == 9.0


def test_digits_with_small_weights_starts_within_0_05_of_ln_10(tmp_path):
    result = invoke("fit", "configs/digits.yaml", "--out", tmp_path / "run",
                    "--set", "model.init=small", "--set", "train.epochs=1")
    assert result.exit_code == 0, result.output
    line = next(line for line in result.stdout.splitlines()
                if line.startswith("first loss:"))
    data_loss = float(line.split("(data ")[1].split()[0])
    assert abs(data_loss - math.log(10)) < 0.05
    assert "warning" not in result.stderr
    assert "training samples per class" in result.stdout
    assert "affine1" in result.stdout  # parameters per layer


def test_small_weights_with_a_far_off_first_loss_warn(tmp_path, tiny_npz,
                                                      write_config):
    raw = tiny_config_dict(tiny_npz)
    # Huge unscaled inputs make even 'small' weights give large scores.
    raw["data"]["preprocess"] = []
    raw["model"].update(init="small", init_std=5.0)
    result = invoke("fit", write_config(raw), "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert "far from ln(3)" in result.stderr


def test_sanity_reaches_100_percent_on_50_digits():
    result = invoke("sanity", "configs/digits.yaml")
    assert result.exit_code == 0, result.output
    assert "passed: 100% training accuracy" in result.stdout


def test_sanity_fails_with_exit_1_when_it_cannot_learn():
    result = invoke("sanity", "configs/digits.yaml", "--set", "optimizer.lr=1e-9",
                    "--max-iterations", "20")
    assert result.exit_code == 1
    assert "did not reach 100%" in result.stderr


def test_diverging_sgd_on_digits_exits_1_in_the_first_epoch(tmp_path):
    out = tmp_path / "run"
    result = invoke("fit", "configs/digits.yaml", "--out", out, "--quiet",
                    "--set", "optimizer.name=sgd", "--set", "optimizer.lr=1e3")
    assert result.exit_code == 1
    message = result.stderr.splitlines()[-1]
    assert "became nan" in message or "became inf" in message
    assert "(epoch 1)" in message and "lower optimizer.lr" in message
    assert not (out / "checkpoints" / "last.npz").exists()


@pytest.mark.parametrize("overrides, cause", [
    (["model.init=small", "model.init_std=1e30"],
     r"the loss became nan at iteration 1 \(epoch 1\); no update has run yet, so"
     r" the starting weights are likely too large \(model.init small,"
     r" model.init_std 1e\+30\): lower model.init_std"),
    (["model.l2=1e308"],
     r"the loss became inf at iteration 1 .*; no update has run yet, but the L2"
     r" penalty on affine1.W overflows: l2 = 1e\+308 is far too strong; lower"
     r" model.l2"),
    (["model.l1=1e300"],
     r"the gradient of affine1.W became inf at iteration 1 .*; no update has run"
     r" yet, but the L1 penalty on affine1.W overflows: l1 = 1e\+300 .*lower"
     r" model.l1"),
])
def test_non_finite_before_any_update_blames_init_or_penalty_not_the_rate(
        tmp_path, tiny_config, overrides, cause):
    settings = [arg for override in overrides for arg in ("--set", override)]
    result = invoke("fit", tiny_config, "--out", tmp_path / "run", "--quiet",
                    *settings)

    assert result.exit_code == 1, result.output
    message = result.stderr.splitlines()[-1]
    assert re.search(cause, message), message
    assert "optimizer.lr" not in message


@pytest.mark.parametrize("overrides, kind", [
    (["model.l2=1e38", "optimizer.lr=1e-10"], "l2"),
    (["model.l1=1e38"], "l1"),
])
def test_non_finite_after_updates_blames_a_huge_penalty_not_the_rate(
        tmp_path, overrides, kind):
    settings = [arg for override in overrides for arg in ("--set", override)]
    result = invoke("fit", "configs/digits.yaml", "--out", tmp_path / "run",
                    "--quiet", *settings)

    assert result.exit_code == 1, result.output
    message = result.stderr.splitlines()[-1]
    assert re.search(rf"became (nan|inf) at iteration [2-9]\d* .*; {kind} = 1e\+38"
                     rf" is far stronger than any useful penalty .*: lower"
                     rf" model\.{kind}", message), message
    assert "optimizer.lr" not in message


def test_a_good_checkpoint_survives_a_later_divergence(tmp_path, tiny_npz,
                                                       write_config):
    raw = tiny_config_dict(tiny_npz)
    raw["optimizer"] = {"name": "sgd", "lr": 0.01}
    raw["schedule"] = {"name": "step", "step_epochs": 2, "gamma": 1e12}
    raw["train"]["epochs"] = 6
    out = tmp_path / "run"
    result = invoke("fit", write_config(raw), "--out", out, "--quiet")
    assert result.exit_code == 1, result.output
    last = load_checkpoint(out / "checkpoints" / "last.npz")
    assert last.meta["solver"]["progress"]["epoch"] == 2
    for value in last.group("param").values():
        assert np.isfinite(value).all()


def test_early_stopping_ends_an_overfitting_run_and_best_holds_the_best(tmp_path,
                                                                        tiny_npz):
    raw = tiny_config_dict(tiny_npz)
    raw["model"] = {"hidden": [64]}
    raw["optimizer"] = {"name": "adam", "lr": 0.05}
    raw["train"].update(epochs=60, monitor="val_loss",
                        early_stopping={"patience": 2})
    result = fit(resolve_config(raw), tmp_path / "run", quiet=True)
    losses = [record["val_loss"] for record in result.history]

    assert result.progress.epoch < 60
    best = int(np.argmin(losses))
    # It stopped two evaluations after the last improvement.
    assert len(losses) == best + 3
    events = [r for r in records(tmp_path / "run") if r["kind"] == "event"]
    assert events and events[-1]["event"] == "early_stop"

    evaluation = invoke("eval", tmp_path / "run" / "checkpoints" / "best.npz",
                        "--split", "val", "--json")
    assert json.loads(evaluation.stdout)["loss"] == pytest.approx(losses[best],
                                                                  rel=1e-5)


def test_diagnostics_join_the_epoch_records(tmp_path, tiny_npz):
    raw = tiny_config_dict(tiny_npz)
    raw["model"] = {"hidden": [8], "activation": "tanh"}
    raw["train"].update(batch_size=50)
    fit(resolve_config(raw), tmp_path / "run", quiet=True)
    epoch = [r for r in records(tmp_path / "run") if r["kind"] == "epoch"][0]
    for key in ("update_ratio/affine1.W", "update_ratio/affine2.W",
                "act_mean/tanh1", "act_std/tanh1", "saturated_fraction/tanh1",
                "grad_norm/affine1.W", "grad_norm/affine2.b"):
        assert key in epoch, key
    assert 0 < epoch["update_ratio/affine1.W"] < 1


def test_diagnostics_can_be_switched_off(tmp_path, tiny_npz):
    raw = tiny_config_dict(tiny_npz)
    raw["train"]["diagnostics"] = False
    fit(resolve_config(raw), tmp_path / "run", quiet=True)
    assert not any("/" in key for r in records(tmp_path / "run") for key in r)


class _Layer:
    def __init__(self, name, kind):
        self.name, self.kind, self.sized = name, kind, False


class _Model:
    def __init__(self, *layers):
        self.layers = layers


def test_dead_and_saturated_fractions_count_units():
    out_relu = np.zeros((40, 4))
    out_relu[:, 0] = 1.0  # one live unit of four
    out_tanh = np.full((40, 2), 0.995)
    out_tanh[:, 1] = 0.2  # one saturated unit of two
    stats = layer_statistics(_Model(_Layer("relu1", "relu"), _Layer("tanh1", "tanh")),
                             [out_relu, out_tanh])
    assert stats["dead_fraction/relu1"] == 0.75
    assert stats["saturated_fraction/tanh1"] == 0.5


def test_watcher_warns_once_per_problem():
    said = []
    watcher = Watcher(said.append)
    watcher.check_diagnostics({"update_ratio/affine1.W": 1e-7,
                               "dead_fraction/relu1": 0.9})
    watcher.check_diagnostics({"update_ratio/affine1.W": 1e-7})
    assert len(said) == 2
    assert "too low" in said[0] and "dead" in said[1]

    for train, val in [(0.8, 0.9), (0.85, 0.88), (0.9, 0.86)]:
        watcher.check_curve(train, val)
    assert "overfitting" in said[-1]


@pytest.mark.parametrize("warmup, warned", [(11, False), (12, True)])
def test_a_warmup_as_long_as_the_run_is_a_warning(tmp_path, tiny_npz, write_config,
                                                  warmup, warned):
    raw = tiny_config_dict(tiny_npz)  # 3 epochs of 4 updates: 12 in all
    raw["schedule"] = {"name": "cosine", "warmup": warmup}
    result = invoke("fit", write_config(raw), "--out", tmp_path / "run")

    assert result.exit_code == 0, result.output
    expected = (f"warning: schedule.warmup is {warmup} updates but the run has 12: the"
                " rate climbs all run and the cosine never starts; lower"
                " schedule.warmup")
    assert (expected in result.stderr.splitlines()) is warned
