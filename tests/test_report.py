"""What a run prints: numbers in a readable form, counts in the right number."""

import re

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import tiny_config_dict

from nntrain.cli import cli
from nntrain.train.report import Reporter, short_number


def invoke(*args):
    return CliRunner().invoke(cli, [str(arg) for arg in args])


@pytest.mark.parametrize("value, text", [
    (0.69314718, "0.6931"),
    (-0.0, "-0.0000"),
    (999999.0, "999999.0000"),
    (-999999.0, "-999999.0000"),
    (1e6, "1e+06"),
    (1234567.0, "1.235e+06"),
    (-2.5e300, "-2.5e+300"),
    (float("inf"), "inf"),
    (float("nan"), "nan"),
])
def test_short_number_keeps_4_decimals_below_a_million(value, text):
    assert short_number(value) == text


def test_a_huge_first_loss_is_printed_in_scientific_notation(tmp_path, tiny_config):
    result = invoke("fit", tiny_config, "--out", tmp_path / "run", "--set",
                    "model.l2=1e300")

    assert result.exit_code == 1, result.output
    [line] = [line for line in result.stdout.splitlines()
              if line.startswith("first loss:")]
    # l2 / 2 times the squared norm of he weights: 1e300 times a few.
    assert re.fullmatch(r"first loss: \d\.\d{3}e\+300 \(data \d\.\d{4} \+ reg"
                        r" \d\.\d{3}e\+300\) on 50 training samples; small weights"
                        r" would give data 1\.0986 \(ln\(3\)\)", line), line


def test_counts_of_one_are_singular(tmp_path, write_npz, write_config):
    # Samples of one feature. (A single training sample, of one class, is refused.)
    path = write_npz(X_train=np.array([[-1.0], [1.0], [-1.2], [1.2]]),
                     y_train=np.array([0, 1, 0, 1]),
                     X_test=np.array([[-1.0], [1.0]]), y_test=np.array([0, 1]))
    raw = tiny_config_dict(path)
    raw["data"].update(validation=1, preprocess=[])
    raw["train"].update(epochs=5, batch_size=1, plots=False,
                        early_stopping={"patience": 1})

    result = invoke("fit", write_config(raw), "--out", tmp_path / "run")

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[1] == ("data: 1 feature (samples of shape 1), 2 classes; train 3,"
                        " val 1, test 2")
    assert ("early stopping: val_accuracy has not improved by more than 0 for 1"
            " evaluation\n") in result.stdout


def test_an_epoch_line_shows_a_loss_of_millions_in_scientific_notation(
        tmp_path, tiny_config):
    # l2 = 1e6 on he weights (squared norm near 13): a penalty near 6e6, which
    # sgd at lr 1e-9 barely moves.
    result = invoke("fit", tiny_config, "--out", tmp_path / "run", "--set",
                    "model.l2=1e6", "--set", "optimizer={name: sgd, lr: 1e-9}")

    assert result.exit_code == 0, result.output
    epochs = [line for line in result.stdout.splitlines()
              if line.startswith("epoch")]
    assert len(epochs) == 3
    for line in epochs:
        assert re.search(r"  loss \d(\.\d{1,3})?e\+0[67]  train_acc 0\.\d{4}  val_loss"
                         r" \d\.\d{4}  val_acc", line), line


def test_eval_shows_a_huge_loss_in_scientific_notation():
    from nntrain.cli import _format_evaluation

    result = {"weights": "raw", "split": "test", "checkpoint": "c.npz",
              "samples": 1, "loss": 3.5e200, "accuracy": 0.0,
              "per_class_accuracy": [0.0, None], "confusion_matrix": [[0, 1],
                                                                      [0, 0]]}
    lines = _format_evaluation(result, ["a", "b"])
    assert lines[:3] == ["test split of c.npz: 1 sample", "loss      3.5e+200",
                         "accuracy  0.0000"]


def _evaluation_lines(class_names):
    from nntrain.cli import _format_evaluation

    result = {"weights": "raw", "split": "test", "checkpoint": "c.npz",
              "samples": 120, "loss": 0.5, "accuracy": 0.5,
              "per_class_accuracy": [0.5, 1.0, None],
              "confusion_matrix": [[50, 0, 1], [3, 60, 0], [0, 0, 6]]}
    lines = _format_evaluation(result, class_names)
    start = next(index for index, line in enumerate(lines)
                 if line.startswith("confusion matrix"))
    return lines[start:]


def test_eval_labels_the_confusion_matrix_by_short_class_names_both_ways():
    assert _evaluation_lines(["cat", "dog", "bird"]) == [
        "confusion matrix (rows: true class, columns: predicted):",
        "         cat  dog bird",
        "  cat     50    0    1",
        "  dog      3   60    0",
        "  bird     0    0    6",
    ]


def test_eval_labels_the_confusion_matrix_by_index_when_names_are_long():
    assert _evaluation_lines(["T-shirt/top", "Trouser", "Ankle boot"]) == [
        "confusion matrix (rows: true class, columns: predicted, by class index):",
        "                  0  1  2",
        "  0 T-shirt/top  50  0  1",
        "  1 Trouser       3 60  0",
        "  2 Ankle boot    0  0  6",
    ]


@pytest.mark.parametrize("classes, printed", [(30, True), (31, False)])
def test_eval_prints_the_confusion_matrix_of_at_most_30_classes(classes, printed):
    from nntrain.cli import _format_evaluation

    names = [f"c{index}" for index in range(classes)]
    result = {"split": "test", "checkpoint": "best.npz", "weights": "raw",
              "samples": classes, "loss": 1.0, "accuracy": 1.0,
              "per_class_accuracy": [1.0] * classes,
              "confusion_matrix": np.eye(classes, dtype=int).tolist()}

    lines = _format_evaluation(result, names)

    start = next(index for index, line in enumerate(lines)
                 if line.startswith("confusion matrix"))
    if printed:
        assert len(lines) - start == 2 + classes
    else:
        assert lines[start:] == ["confusion matrix: 31 classes, too many to print"
                                 " (at most 30); --json holds it"]


@pytest.mark.parametrize("say, shown", [
    ("line", "run directory: a\\nb\\x1b[2J"),
    ("note", "note: run directory: a\\nb\\x1b[2J"),
    ("warn", "warning: run directory: a\\nb\\x1b[2J"),
])
def test_reporter_writes_each_line_escaped_to_the_terminal_and_the_log(capsys, say,
                                                                      shown):
    logged = []
    reporter = Reporter(log=logged.append)

    getattr(reporter, say)("run directory: a\nb\x1b[2J")

    captured = capsys.readouterr()
    assert captured.out + captured.err == shown + "\n"
    assert logged == [shown]
