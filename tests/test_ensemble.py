"""Tests of nntrain.ensemble and `nntrain ensemble` on tiny checkpoints.

Three members are trained once on the tiny npz (4-8-3 ReLU networks): two softmax
ones with seeds 0 and 1, and an SVM one with seed 0. The oracle is the same
networks computed here by hand from the checkpoint arrays in float64.
"""

import json
import re

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import tiny_arrays, tiny_config_dict

from nntrain.cli import Group
from nntrain.cli_search import ensemble, search
from nntrain.config import apply_overrides, resolve_config
from nntrain.ensemble import EnsembleResult, MemberResult, _difference
from nntrain.ensemble import ensemble as average
from nntrain.errors import DataError, NNTrainWarning
from nntrain.pipeline import fit

CLI = Group(name="nntrain", commands=[search, ensemble])


def invoke(*args):
    return CliRunner().invoke(CLI, [str(arg) for arg in args])


def train(folder, name, npz, *overrides):
    raw = apply_overrides(tiny_config_dict(npz), ["train.plots=false", *overrides])
    config = resolve_config(raw)
    fit(config, folder / name, quiet=True)
    return folder / name / "checkpoints" / "best.npz"


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    """{name: best.npz}: softmax seeds 0 and 1, an SVM, one of other data, one like
    b trained on a byte-identical copy of the data, and one with named classes."""
    folder = tmp_path_factory.mktemp("members")
    npz = folder / "tiny.npz"
    np.savez(npz, **tiny_arrays())
    other = folder / "other.npz"
    np.savez(other, **tiny_arrays(seed=5))
    copy = folder / "copy" / "tiny.npz"
    copy.parent.mkdir()
    copy.write_bytes(npz.read_bytes())
    named = folder / "named.npz"
    np.savez(named, class_names=np.array(LONG_NAMES), **tiny_arrays())
    return {
        "a": train(folder, "a", npz),
        "b": train(folder, "b", npz, "seed=1"),
        "svm": train(folder, "svm", npz, "model.loss=svm"),
        "other": train(folder, "other", other),
        "b_copy": train(folder, "b_copy", copy, "seed=1"),
        "named": train(folder, "named", named),
    }


LONG_NAMES = ["a class with a long name", "another class with a long name",
              "the last class, also with a long name"]


def manual_probabilities(path, X):
    """Softmax of the 4-8-3 ReLU network stored in ``path``: (N, 3), float64."""
    with np.load(path, allow_pickle=False) as archive:
        arrays = {key: archive[key].astype(np.float64) for key in archive.files
                  if key != "meta"}
    X = (X - arrays["prep/center.mean"]) * arrays["prep/scale.factor"]
    hidden = np.maximum(X @ arrays["param/affine1.W"] + arrays["param/affine1.b"], 0)
    scores = hidden @ arrays["param/affine2.W"] + arrays["param/affine2.b"]
    exp = np.exp(scores - scores.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def test_ensemble_predicts_the_argmax_of_the_mean_softmax(members):
    data = tiny_arrays()
    result = average([members["a"], members["b"]])
    mean = (manual_probabilities(members["a"], data["X_test"])
            + manual_probabilities(members["b"], data["X_test"])) / 2
    np.testing.assert_allclose(result.probabilities, mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(result.predictions, mean.argmax(axis=1))
    assert result.accuracy == pytest.approx(np.mean(mean.argmax(axis=1)
                                                    == data["y_test"]))
    assert result.samples == len(data["y_test"])


def test_ensemble_loss_is_the_mean_negative_log_of_the_true_class(members):
    data = tiny_arrays()
    result = average([members["a"], members["b"]])
    mean = (manual_probabilities(members["a"], data["X_test"])
            + manual_probabilities(members["b"], data["X_test"])) / 2
    true = mean[np.arange(len(data["y_test"])), data["y_test"]]
    assert result.loss == pytest.approx(-np.log(true).mean(), rel=1e-5)


def test_each_member_is_reported_as_it_scores_alone(members):
    data = tiny_arrays()
    result = average([members["a"], members["b"]])
    for member, path in zip(result.members, (members["a"], members["b"])):
        probabilities = manual_probabilities(path, data["X_test"])
        assert member.checkpoint == str(path)
        assert member.accuracy == pytest.approx(
            np.mean(probabilities.argmax(axis=1) == data["y_test"]))
        true = probabilities[np.arange(len(data["y_test"])), data["y_test"]]
        assert member.loss == pytest.approx(-np.log(true).mean(), rel=1e-5)


def test_an_svm_member_contributes_the_softmax_of_its_scores(members):
    data = tiny_arrays()
    result = average([members["a"], members["svm"]])
    mean = (manual_probabilities(members["a"], data["X_test"])
            + manual_probabilities(members["svm"], data["X_test"])) / 2
    np.testing.assert_allclose(result.probabilities, mean, rtol=1e-5, atol=1e-6)


def test_members_of_other_data_are_refused_naming_both(members):
    with pytest.raises(DataError, match=(
            rf"^{re.escape(str(members['a']))} and {re.escape(str(members['other']))}"
            r" were trained on different data \(their test splits hold other"
            r" samples\); an ensemble needs members of the same dataset$")):
        average([members["a"], members["other"]])


def test_a_copy_of_the_data_at_another_path_is_the_same_data(members):
    expected = average([members["a"], members["b"]])
    for data_path in (None, members["a"].parents[2] / "copy" / "tiny.npz"):
        result = average([members["a"], members["b_copy"]], data_path=data_path)
        np.testing.assert_array_equal(result.probabilities, expected.probabilities)


def test_data_found_through_nntrain_data_is_the_data_of_data_path(
        tmp_path, monkeypatch, write_idx_dataset):
    rng = np.random.default_rng(0)
    folder = write_idx_dataset(
        tmp_path / "datasets" / "mnist",
        train=(rng.integers(0, 256, (40, 2, 2)), np.arange(40) % 10),
        test=(rng.integers(0, 256, (10, 2, 2)), np.arange(10) % 10))
    given = train(tmp_path, "given", folder, "data.name=mnist", "train.epochs=1")
    monkeypatch.setenv("NNTRAIN_DATA", str(tmp_path / "datasets"))
    found = train(tmp_path, "found", folder, "data.name=mnist", "data.path=null",
                  "train.epochs=1")

    # The same data found two ways trains the same weights.
    with pytest.warns(NNTrainWarning, match="give the same probabilities"):
        assert average([given, found]).samples == 10


def test_other_class_names_are_shown_where_they_differ(members):
    with pytest.raises(DataError, match=re.escape(
            "were trained on different data (class 0 is named '0' in the first,"
            " 'a class with a long name' in the second); an ensemble needs members"
            " of the same dataset")):
        average([members["a"], members["named"]])


def test_other_numbers_of_classes_are_shown_as_counts():
    names = [str(index) for index in range(10)]
    assert _difference("class_names", names, names[:3]) == (
        "10 classes in the first, 3 in the second")


def test_members_with_other_validation_splits_are_refused_on_val(members):
    with pytest.raises(DataError, match=r"hold different val splits .*--split test"):
        average([members["a"], members["b"]], split="val")
    assert average([members["a"], members["svm"]], split="val").samples == 10


def test_ensemble_command_prints_members_and_the_ensemble(members):
    result = invoke("ensemble", members["a"], members["b"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == ("ensemble of 2 checkpoints on the test split (15 samples);"
                        " loss: mean -log p(true class)")
    assert lines[2].endswith(str(members["a"]))
    assert lines[3].endswith(str(members["b"]))
    assert "ensemble (mean of the members' softmax probabilities)" in lines[4]


@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_ensemble_command_of_one_checkpoint_notes_that_it_is_evaluated_alone(
        members, json_flag):
    result = invoke("ensemble", members["a"], *json_flag)

    assert result.exit_code == 0, result.output
    assert result.stderr == (
        "note: one checkpoint was given, so it is evaluated alone (its ensemble is"
        " itself); give two or more checkpoints to ensemble them\n")
    assert str(members["a"]) in result.stdout


def test_ensemble_command_of_two_checkpoints_has_no_note(members):
    result = invoke("ensemble", members["a"], members["b"])

    assert result.exit_code == 0, result.output
    assert result.stderr == ""


def test_ensemble_command_json(members):
    result = invoke("ensemble", members["a"], members["b"], "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    expected = average([members["a"], members["b"]])
    assert report["split"] == "test" and report["samples"] == 15
    assert [m["checkpoint"] for m in report["members"]] == [
        str(members["a"]), str(members["b"])]
    assert report["ensemble"] == {"accuracy": expected.accuracy,
                                  "loss": expected.loss}


def test_ensemble_command_json_writes_null_for_non_finite_numbers(monkeypatch):
    import nntrain.ensemble

    def nan_ensemble(paths, split, data_path):
        member = MemberResult(paths[0], 0.5, float("nan"))
        return EnsembleResult(split, 2, [member], 0.5, float("inf"), None, None)

    monkeypatch.setattr(nntrain.ensemble, "ensemble", nan_ensemble)
    result = invoke("ensemble", "a.npz", "--json")

    assert result.exit_code == 0, result.output
    assert "NaN" not in result.stdout and "Infinity" not in result.stdout
    report = json.loads(result.stdout)
    assert report["members"][0]["loss"] is None
    assert report["ensemble"] == {"accuracy": 0.5, "loss": None}


def test_ensemble_command_refuses_mismatched_members_in_one_line(members):
    result = invoke("ensemble", members["a"], members["other"])
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "were trained on different data" in lines[0]


def test_ensemble_command_refuses_a_checkpoint_given_twice(members, tmp_path):
    link = tmp_path / "link.npz"
    link.symlink_to(members["a"])
    fix = "give each checkpoint once (a repeated one would count twice in the average)"

    twice = invoke("ensemble", members["a"], members["b"], members["a"])
    linked = invoke("ensemble", members["a"], link)

    assert twice.exit_code == 2, twice.output
    assert twice.stderr == f"error: {members['a']} is given twice; {fix}\n"
    assert linked.exit_code == 2, linked.output
    assert linked.stderr == (f"error: {members['a']} and {link} are the same file;"
                             f" {fix}\n")


def test_ensemble_expands_a_tilde_before_comparing_its_members(members, tmp_path,
                                                               monkeypatch):
    from nntrain.ensemble import ensemble as ensemble_api
    from nntrain.errors import BadInputError

    monkeypatch.setenv("HOME", str(members["a"].parent))

    with pytest.raises(BadInputError, match="^" + re.escape(
            f"{members['a']} is given twice; give each checkpoint once")):
        ensemble_api([f"~/{members['a'].name}", members["a"]])
    with pytest.raises(TypeError, match=r"^paths\[1\] is NoneType; give a"
                                        r" checkpoint's path"):
        ensemble_api([members["a"], None])


def test_ensemble_command_warns_of_a_copy_that_counts_twice(members, tmp_path):
    copy = tmp_path / "copy.npz"
    copy.write_bytes(members["a"].read_bytes())

    result = invoke("ensemble", members["a"], members["b"], copy)

    assert result.exit_code == 0, result.output
    assert result.stderr == (
        f"warning: {members['a']} and {copy} give the same probabilities on every"
        " sample (the same weights?), so the average counts them twice\n")


def test_ensemble_command_needs_a_checkpoint():
    result = invoke("ensemble")
    assert result.exit_code == 2
    assert "Missing argument 'CKPT...'" in result.stderr


def test_ensemble_command_refuses_a_missing_checkpoint(tmp_path, members):
    result = invoke("ensemble", members["a"], tmp_path / "nope.npz")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ")


def test_ensemble_report_keeps_losses_of_any_width_in_their_column():
    from nntrain.ensemble import EnsembleResult, MemberResult, format_report

    members = [MemberResult("a.npz", 0.5, 0.6931), MemberResult("b.npz", 0.25, 3.5e7),
               MemberResult("c.npz", 0.25, 1234567.0),
               MemberResult("d.npz", 0.25, 999999.0)]
    result = EnsembleResult("test", 4, members, 0.5, 1.25, np.zeros((4, 2)),
                            np.zeros(4, dtype=int))

    lines = format_report(result)

    # Every column starts where its header does, whatever the loss's width.
    assert lines[1] == "  accuracy  loss         model"
    assert lines[2] == "  0.5000    0.6931       a.npz"
    assert lines[3] == "  0.2500    3.5e+07      b.npz"
    assert lines[4] == "  0.2500    1.235e+06    c.npz"
    assert lines[5] == "  0.2500    999999.0000  d.npz"
    assert lines[6].startswith("  0.5000    1.2500       ensemble")
