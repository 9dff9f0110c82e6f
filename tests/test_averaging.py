"""Averaged weights and snapshot checkpoints."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import tiny_config_dict

from nntrain.checkpoint import load_checkpoint
from nntrain.cli import cli
from nntrain.config import resolve_config
from nntrain.pipeline import fit
from nntrain.train.averaging import WeightAverage


def test_polyak_average_is_the_mean_of_every_iterate():
    average = WeightAverage("polyak")
    iterates = [np.array([1.0, 2.0]), np.array([3.0, 6.0]), np.array([-1.0, 1.0])]
    for value in iterates:
        average.update({"w": value.copy()})
    np.testing.assert_allclose(average.arrays["w"], np.mean(iterates, axis=0))


def test_exponential_average_follows_its_recurrence():
    average = WeightAverage("exponential", decay=0.9)
    average.update({"w": np.array([1.0])})
    average.update({"w": np.array([3.0])})
    average.update({"w": np.array([5.0])})
    expected = 0.9 * (0.9 * 1.0 + 0.1 * 3.0) + 0.1 * 5.0
    np.testing.assert_allclose(average.arrays["w"], [expected])


def test_run_keeps_averages_snapshots_and_eval_can_use_them(tmp_path, tiny_npz):
    raw = tiny_config_dict(tiny_npz)
    raw["train"].update(epochs=4, average={"kind": "polyak"}, snapshot_every=2)
    fit(resolve_config(raw), tmp_path / "run", quiet=True)

    checkpoints = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in checkpoints.glob("snapshot-*")) == [
        "snapshot-epoch-0002.npz", "snapshot-epoch-0004.npz"]
    last = load_checkpoint(checkpoints / "last.npz")
    assert set(last.group("average")) == set(last.group("param"))
    assert last.meta["solver"]["average_count"] == 16  # 4 epochs of 4 updates

    records = [json.loads(line) for line in
               (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    final = [r for r in records if r["kind"] == "epoch"][-1]
    result = CliRunner().invoke(cli, ["eval", str(checkpoints / "last.npz"), "--split",
                                      "val", "--json", "--average"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["accuracy"] == final["avg_val_accuracy"]
    assert json.loads(result.stdout)["loss"] == pytest.approx(final["avg_val_loss"])


def test_eval_average_of_a_run_without_averages_is_refused(tmp_path, tiny_npz):
    raw = tiny_config_dict(tiny_npz)
    fit(resolve_config(raw), tmp_path / "run", quiet=True)
    result = CliRunner().invoke(cli, ["eval", str(tmp_path / "run" / "checkpoints" /
                                                  "last.npz"), "--average"])
    assert result.exit_code == 2
    assert "no averaged weights" in result.stderr


def test_snapshots_follow_epochs_even_when_evaluations_do_not(tmp_path, tiny_npz):
    raw = tiny_config_dict(tiny_npz)
    raw["train"].update(epochs=4, snapshot_every=2, eval_every=3)  # 4 updates/epoch
    fit(resolve_config(raw), tmp_path / "run", quiet=True)
    snapshots = sorted(p.name for p in (tmp_path / "run" / "checkpoints")
                       .glob("snapshot-*"))
    assert snapshots == ["snapshot-epoch-0002.npz", "snapshot-epoch-0004.npz"]
    second = load_checkpoint(tmp_path / "run" / "checkpoints" / snapshots[0])
    assert second.meta["solver"]["progress"]["iteration"] == 8
