"""Averaged weights and snapshot checkpoints."""

import json
import tracemalloc

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import tiny_config_dict

from nntrain.checkpoint import load_checkpoint, save_checkpoint
from nntrain.cli import cli
from nntrain.config import resolve_config
from nntrain.nn.flat import FlatArrays
from nntrain.nn.model import build_model
from nntrain.optim.rules import UPDATE_BLOCK
from nntrain.pipeline import fit
from nntrain.prepare import prepare_data
from nntrain.restore import restore
from nntrain.train.averaging import WeightAverage, batchnorm_statistics
from nntrain.train.resume import resumed_config


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



# Over a Model's FlatArrays the average runs in blocks of UPDATE_BLOCK elements; a
# layout of 2.3 blocks ends one block in the middle of a.W and one in a.b.
FLAT_SHAPES = {"a.W": (300, 200), "a.b": (200,), "b.W": (200, 75)}


def _iterates(count: int, dtype=np.float32) -> list:
    rng = np.random.default_rng(7)
    return [{name: rng.normal(size=shape).astype(dtype)
             for name, shape in FLAT_SHAPES.items()} for _ in range(count)]


def _reference_average(iterates: list, kind: str, decay: float) -> dict:
    """The averaging formula in plain float32 NumPy: avg <- avg + (w - avg) x,
    x = 1 - decay or 1 / k at the k-th update, rounded to float32 like every
    operand."""
    average = {name: value.copy() for name, value in iterates[0].items()}
    for k, weights in enumerate(iterates[1:], start=2):
        x = np.float32(1 - decay if kind == "exponential" else 1 / k)
        average = {name: average[name] + (weights[name] - average[name]) * x
                   for name in average}
    return average


def _flat(arrays: dict) -> FlatArrays:
    flat = FlatArrays(FLAT_SHAPES, np.float32)
    for name, value in arrays.items():
        flat[name] = value
    return flat


@pytest.mark.parametrize("kind, decay", [("polyak", 0.0), ("exponential", 0.9),
                                         ("exponential", 0.999)])
@pytest.mark.parametrize("flat", [True, False])
def test_averages_match_the_formula_to_the_bit_and_stay_float32(kind, decay, flat):
    assert sum(np.prod(shape) for shape in FLAT_SHAPES.values()) > 2 * UPDATE_BLOCK
    iterates = _iterates(6)
    average = WeightAverage(kind, decay)
    params = _flat(iterates[0]) if flat else dict(iterates[0])
    for weights in iterates:
        for name, value in weights.items():
            params[name] = value
        average.update(params)

    expected = _reference_average(iterates, kind, decay)
    assert list(average.state_arrays()) == list(FLAT_SHAPES)
    for name, value in average.state_arrays().items():
        assert value.dtype == np.float32
        assert np.array_equal(value, expected[name]), name


def test_averages_loaded_in_another_order_continue_to_the_bit():
    iterates = _iterates(5)
    first = WeightAverage("polyak")
    for weights in iterates[:3]:
        first.update(_flat(weights))
    saved = first.state_arrays()

    resumed = WeightAverage("polyak")
    resumed.load({name: saved[name].copy() for name in reversed(saved)}, 3)
    params = _flat(iterates[3])
    resumed.update(params)
    for name, value in iterates[4].items():
        params[name] = value
    resumed.update(params)

    expected = _reference_average(iterates, "polyak", 0.0)
    for name in FLAT_SHAPES:
        assert np.array_equal(resumed.arrays[name], expected[name]), name


def test_averaging_keeps_one_copy_of_the_weights_and_one_block_of_scratch():
    params = _flat(_iterates(1)[0])
    average = WeightAverage("exponential", 0.9)
    tracemalloc.start()
    try:
        for _ in range(3):
            average.update(params)
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert held < params.vector.nbytes + 4 * UPDATE_BLOCK + 32_768

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


# Batch norm with averaged weights. The tiny dataset keeps 50 training rows, so a
# batch of 64 makes every epoch one full batch: the population statistics of the
# averages are then the plain moments of their pre-batch-norm activations.
EPSILON = 1e-5


def _batchnorm_config(tiny_npz, **train) -> dict:
    raw = tiny_config_dict(tiny_npz)
    raw["model"] = {"hidden": [5, 4], "batchnorm": True}
    raw["train"].update(epochs=6, batch_size=64, dtype="float64", plots=False,
                        average={"kind": "polyak"})
    raw["train"].update(train)
    return resolve_config(raw)


def _split(checkpoint_path, split):
    """(X, y) of ``split``, preprocessed as the run that wrote the checkpoint did."""
    restored = restore(checkpoint_path)
    prepared = prepare_data(restored.config, restored.preprocessor, splits=(split,),
                            spec=restored.data)
    return prepared.splits[split]


def _pre_batchnorm(arrays: dict, X: np.ndarray) -> list:
    """The inputs of batchnorm1 and batchnorm2 of the 5-4 network with weights
    ``arrays``, X: (N, D) going through as one training batch."""
    h1 = X @ arrays["affine1.W"] + arrays["affine1.b"]
    normalized = (h1 - h1.mean(axis=0)) / np.sqrt(h1.var(axis=0) + EPSILON)
    a1 = np.maximum(normalized * arrays["batchnorm1.gamma"]
                    + arrays["batchnorm1.beta"], 0)
    return [h1, a1 @ arrays["affine2.W"] + arrays["affine2.b"]]


def _assert_statistics_of_the_average(checkpoint_path):
    checkpoint = load_checkpoint(checkpoint_path)
    average = checkpoint.group("average")
    X, _ = _split(checkpoint_path, "train")
    for number, h in enumerate(_pre_batchnorm(average, X), start=1):
        np.testing.assert_allclose(average[f"batchnorm{number}.running_mean"],
                                   h.mean(axis=0), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(average[f"batchnorm{number}.running_var"],
                                   h.var(axis=0), rtol=1e-10, atol=1e-12)


def test_averaged_weights_get_the_batchnorm_statistics_of_their_own_activations(
        tmp_path, tiny_npz):
    fit(_batchnorm_config(tiny_npz), tmp_path / "run", quiet=True)
    last = tmp_path / "run" / "checkpoints" / "last.npz"
    _assert_statistics_of_the_average(last)

    checkpoint = load_checkpoint(last)
    assert set(checkpoint.group("average")) == (
        set(checkpoint.group("param")) | set(checkpoint.group("buffer")))
    # The raw run's statistics are another network's, and stay so.
    assert not np.allclose(checkpoint.group("average")["batchnorm1.running_var"],
                           checkpoint.group("buffer")["batchnorm1.running_var"])


def test_a_save_between_evaluations_measures_the_statistics_too(tmp_path, tiny_npz):
    # One update per epoch, evaluations every 2: the snapshot of epoch 1 comes
    # before any evaluation.
    config = _batchnorm_config(tiny_npz, epochs=3, eval_every=2, snapshot_every=1)
    fit(config, tmp_path / "run", quiet=True)
    _assert_statistics_of_the_average(
        tmp_path / "run" / "checkpoints" / "snapshot-epoch-0001.npz")


def test_averaging_leaves_the_raw_run_bit_identical(tmp_path, tiny_npz):
    with_average = _batchnorm_config(tiny_npz, batch_size=16)
    with_average["model"]["drop_probability"] = 0.3
    without = {**with_average, "train": {**with_average["train"], "average": None}}
    fit(with_average, tmp_path / "with", quiet=True)
    fit(without, tmp_path / "without", quiet=True)

    first = load_checkpoint(tmp_path / "with" / "checkpoints" / "last.npz")
    second = load_checkpoint(tmp_path / "without" / "checkpoints" / "last.npz")
    for group in ("param", "buffer", "optim"):
        for name, value in second.group(group).items():
            assert np.array_equal(first.group(group)[name], value), f"{group}/{name}"
    assert (first.meta["solver"]["dropout_state"]
            == second.meta["solver"]["dropout_state"])


def _accuracy_by_hand(arrays: dict, X: np.ndarray, y: np.ndarray) -> float:
    """Evaluation-mode accuracy of the 5-4 network with weights and running
    statistics ``arrays``."""
    out = X
    for number in (1, 2):
        h = out @ arrays[f"affine{number}.W"] + arrays[f"affine{number}.b"]
        bn = f"batchnorm{number}"
        normalized = ((h - arrays[f"{bn}.running_mean"])
                      / np.sqrt(arrays[f"{bn}.running_var"] + EPSILON))
        out = np.maximum(normalized * arrays[f"{bn}.gamma"] + arrays[f"{bn}.beta"], 0)
    scores = out @ arrays["affine3.W"] + arrays["affine3.b"]
    return float(np.mean(scores.argmax(axis=1) == y))


def test_eval_average_of_a_batchnorm_run_uses_the_averages_statistics(tmp_path,
                                                                      tiny_npz):
    fit(_batchnorm_config(tiny_npz), tmp_path / "run", quiet=True)
    last = tmp_path / "run" / "checkpoints" / "last.npz"
    expected = _accuracy_by_hand(load_checkpoint(last).group("average"),
                                 *_split(last, "val"))

    result = CliRunner().invoke(cli, ["eval", str(last), "--split", "val", "--json",
                                      "--average"])
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert json.loads(result.stdout)["accuracy"] == expected
    records = [json.loads(line) for line in
               (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r for r in records if r["kind"] == "epoch"][-1][
        "avg_val_accuracy"] == expected


def _strip_average_statistics(path):
    """Make ``path`` look written before the averages had statistics of their own."""
    checkpoint = load_checkpoint(path)
    average = checkpoint.arrays["average"]
    for name in [name for name in average if ".running_" in name]:
        del average[name]
    save_checkpoint(path, checkpoint.meta, checkpoint.arrays)


def test_eval_average_of_an_older_checkpoint_uses_the_raw_statistics_with_a_warning(
        tmp_path, tiny_npz):
    fit(_batchnorm_config(tiny_npz), tmp_path / "run", quiet=True)
    last = tmp_path / "run" / "checkpoints" / "last.npz"
    _strip_average_statistics(last)
    checkpoint = load_checkpoint(last)
    expected = _accuracy_by_hand(
        {**checkpoint.group("average"), **checkpoint.group("buffer")},
        *_split(last, "val"))

    result = CliRunner().invoke(cli, ["eval", str(last), "--split", "val", "--json",
                                      "--average"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["accuracy"] == expected
    assert result.stderr.startswith(f"warning: {last} keeps no batch norm statistics"
                                    " for its averaged weights")


def test_a_resume_from_an_older_checkpoint_measures_the_statistics_again(tmp_path,
                                                                         tiny_npz):
    whole = tmp_path / "whole"
    fit(_batchnorm_config(tiny_npz, epochs=4), whole, quiet=True)
    part = tmp_path / "part"
    fit(_batchnorm_config(tiny_npz, epochs=2), part, quiet=True)
    _strip_average_statistics(part / "checkpoints" / "last.npz")
    checkpoint = load_checkpoint(part / "checkpoints" / "last.npz")
    fit(resumed_config(checkpoint, ["train.epochs=4"], part), part, quiet=True,
        resume=checkpoint)

    ends = [load_checkpoint(run / "checkpoints" / "last.npz").arrays
            for run in (whole, part)]
    for name, value in ends[0]["average"].items():
        assert np.array_equal(ends[1]["average"][name], value), name


@pytest.mark.parametrize("kept", ["statistics", "nothing"])
def test_eval_average_names_missing_averaged_weights_of_a_run_that_kept_them(
        tmp_path, tiny_npz, kept):
    fit(_batchnorm_config(tiny_npz, epochs=2), tmp_path / "run", quiet=True)
    last = tmp_path / "run" / "checkpoints" / "last.npz"
    checkpoint = load_checkpoint(last)
    average = checkpoint.arrays["average"]
    for name in list(average):
        if kept == "nothing" or ".running_" not in name:
            del average[name]
    save_checkpoint(last, checkpoint.meta, checkpoint.arrays)

    result = CliRunner().invoke(cli, ["eval", str(last), "--average"])
    assert result.exit_code == 2
    assert result.stderr == (f"error: {last} lacks its averaged weights"
                             " (average/<parameter>) although its run set"
                             " train.average; the file is damaged or was edited:"
                             " use another checkpoint, or leave out --average\n")


def test_population_statistics_weigh_each_batch_by_its_size():
    config = resolve_config({"model": {"hidden": [3], "batchnorm": True,
                                       "drop_probability": 0.5},
                             "train": {"epochs": 1, "dtype": "float64"}})
    model = build_model(config, 4, 2)
    raw = {name: value.copy() for name, value in model.buffers.items()}
    dropout = model.layers[3].rng.bit_generator.state
    X = np.random.default_rng(0).normal(size=(10, 4))

    statistics = batchnorm_statistics(model, X, batch_size=4)  # batches 4, 4, 2

    h = X @ model.params["affine1.W"] + model.params["affine1.b"]
    batches = (h[:4], h[4:8], h[8:])
    np.testing.assert_allclose(statistics["batchnorm1.running_mean"], h.mean(axis=0),
                               rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(statistics["batchnorm1.running_var"],
                               sum(len(b) * b.var(axis=0) for b in batches) / 10,
                               rtol=1e-12)
    for name, value in raw.items():
        assert np.array_equal(model.buffers[name], value), name
    assert model.layers[3].rng.bit_generator.state == dropout


def test_stale_statistics_are_never_swapped_in():
    config = resolve_config({"model": {"hidden": [3], "batchnorm": True},
                             "train": {"epochs": 1}})
    model = build_model(config, 4, 2)
    average = WeightAverage("polyak")
    average.update(model.params)
    with pytest.raises(RuntimeError, match="stale"):
        average.swapped_in(model)
    average.measure_buffers(model, np.ones((5, 4), np.float32), 5)
    with average.swapped_in(model):
        assert np.array_equal(model.buffers["batchnorm1.running_var"],
                              average.buffers["batchnorm1.running_var"])
    assert np.array_equal(model.buffers["batchnorm1.running_var"], np.ones(3))


@pytest.mark.parametrize("command", ["eval", "resume"])
def test_forged_average_statistics_are_refused_naming_them(tmp_path, tiny_npz,
                                                           write_config, command):
    config = _batchnorm_config(tiny_npz)
    fit(config, tmp_path / "run", quiet=True)
    last = tmp_path / "run" / "checkpoints" / "last.npz"
    checkpoint = load_checkpoint(last)
    checkpoint.arrays["average"]["batchnorm2.running_var"][0] = -1.0
    save_checkpoint(last, checkpoint.meta, checkpoint.arrays)

    args = (["eval", str(last), "--average"] if command == "eval" else
            ["fit", str(write_config(config)), "--resume", str(last), "--set",
             "train.epochs=8"])
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert "average/batchnorm2.running_var holds negative variances" in result.stderr
