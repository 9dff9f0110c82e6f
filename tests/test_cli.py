"""End-to-end tests of the command line through Click's CliRunner, on tiny data.

One tiny training run (4-8-3 network, 50 training samples, batch 16, 3 epochs: 4
iterations per epoch, 12 in all) is shared by the tests that only read its files;
tests that change files work on copies in their own tmp_path.
"""

import csv
import errno
import importlib.metadata
import io
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from conftest import (
    TINY_BATCH,
    TINY_TEST,
    TINY_TRAIN,
    TINY_VALIDATION,
    tiny_arrays,
    tiny_config_dict,
)

import nntrain
from nntrain.cli import cli
from nntrain.config import load_config
from nntrain.data import datasets
from nntrain.data.datasets import load_dataset
from nntrain.errors import DataError, DataWarning, DownloadError, one_line

TRAIN_ROWS = TINY_TRAIN - TINY_VALIDATION  # 50
PER_EPOCH = -(-TRAIN_ROWS // TINY_BATCH)  # ceil(50 / 16) = 4
EPOCH_KEYS = {"kind", "iteration", "epoch", "lr", "loss", "data_loss", "reg_loss",
              "train_accuracy", "val_loss", "val_accuracy", "seconds"}
ITER_KEYS = {"kind", "iteration", "epoch", "lr", "loss", "data_loss", "reg_loss",
             "grad_norm", "seconds"}


def plain_keys(record: dict) -> set:
    """A record's keys without the per-layer diagnostics (named like act_std/relu1)."""
    return {key for key in record if "/" not in key}


def invoke(*args):
    return CliRunner().invoke(cli, [str(arg) for arg in args])


def assert_one_line_error(result, code, pattern):
    """Exit status ``code``, one line on stderr matching ``pattern``, no traceback."""
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    assert re.search(pattern, lines[0]), lines[0]
    assert "Traceback" not in result.output


def read_metrics(run_dir):
    text = (run_dir / "metrics.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines()]


def read_checkpoint(path):
    with np.load(path, allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}
    meta = json.loads(str(arrays.pop("meta")))
    return arrays, meta


def manual_scores(arrays, X):
    """Class scores (N, 3) of the 4-8-3 ReLU network in ``arrays``, in float64."""
    X = (X - arrays["prep/center.mean"]) * arrays["prep/scale.factor"]
    W1, b1 = arrays["param/affine1.W"], arrays["param/affine1.b"]
    W2, b2 = arrays["param/affine2.W"], arrays["param/affine2.b"]
    hidden = np.maximum(X @ W1.astype(np.float64) + b1, 0.0)
    return hidden @ W2.astype(np.float64) + b2


def manual_cross_entropy(scores, y):
    top = scores.max(axis=1, keepdims=True)
    log_norm = top[:, 0] + np.log(np.exp(scores - top).sum(axis=1))
    return float(np.mean(log_norm - scores[np.arange(len(y)), y]))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished 3-epoch run: (folder, config path, run dir, fit result)."""
    folder = tmp_path_factory.mktemp("trained")
    npz = folder / "tiny.npz"
    np.savez(npz, **tiny_arrays())
    raw = tiny_config_dict(npz)
    raw["model"]["l2"] = 1e-3
    raw["train"]["plots"] = False  # this module-wide run is not under the autouse stub
    config = folder / "tiny.yaml"
    config.write_text(yaml.safe_dump(raw))
    run_dir = folder / "run"

    result = invoke("fit", config, "--out", run_dir)

    assert result.exit_code == 0, result.output
    return folder, config, run_dir, result




def test_version_prints_the_package_version():
    result = invoke("--version")

    assert result.exit_code == 0
    assert result.stdout == f"nntrain, version {nntrain.__version__}\n"
    assert importlib.metadata.version("nntrain") == nntrain.__version__


def test_python_dash_m_runs_the_cli():
    result = subprocess.run([sys.executable, "-m", "nntrain", "--version"],
                            capture_output=True, text=True, timeout=60,
                            check=False)

    assert result.returncode == 0
    assert result.stdout == f"nntrain, version {nntrain.__version__}\n"


def test_unknown_command_is_a_usage_error():
    result = invoke("fly")

    assert result.exit_code == 2
    assert "No such command 'fly'" in result.stderr


@pytest.mark.parametrize("args, command", [
    (["eval", "best.npz", "--split"], "nntrain eval"),
    (["eval", "--bogus"], "nntrain eval"),
    (["data", "download", "--dir"], "nntrain data download"),
    (["fly"], "nntrain"),
])
def test_a_usage_error_points_at_the_help_of_its_command(args, command):
    result = CliRunner().invoke(cli, args, prog_name="nntrain")

    assert result.exit_code == 2
    assert result.stderr.endswith(f" (see: {command} --help)\n"), result.stderr


@pytest.mark.parametrize("args, written", [
    (["--set", "train.epochs", "5"], "train.epochs=5"),
    (["--set=train.epochs", "5"], "train.epochs=5"),
    (["--set", "model.hidden", "[4, 4]"], "'model.hidden=[4, 4]'"),
])
def test_a_set_value_given_as_two_arguments_says_to_write_key_equals_value(
        tiny_config, args, written):
    result = invoke("fit", tiny_config, *args)

    key = args[-2].removeprefix("--set=")
    assert_one_line_error(result, 2, "^" + re.escape(
        f"error: Got unexpected extra argument ({args[-1]}); --set {key} has no '=':"
        f" write KEY=VALUE, here --set {written}") + r" \(see: .* --help\)$")


@pytest.mark.parametrize("args, written", [
    (["--set", "train.epochs=50", "train.batch_size=4"],
     " (train.batch_size=4); each setting takes its own --set: --set"
     " train.batch_size=4"),
    (["--set=train.epochs=50", "train.epochs=5", "model.hidden=[4, 4]"],
     "s (train.epochs=5 model.hidden=[4, 4]); each setting takes its own --set:"
     " --set train.epochs=5 --set 'model.hidden=[4, 4]'"),
])
def test_settings_after_one_set_say_that_each_takes_its_own(tiny_config, args,
                                                            written):
    result = invoke("fit", tiny_config, *args)

    assert_one_line_error(result, 2, "^" + re.escape(
        f"error: Got unexpected extra argument{written}") + r" \(see: .* --help\)$")


@pytest.mark.parametrize("arguments", [
    ["{config}", "--set", "train.epochs=5", "extra"],
    ["{config}", "--set=", "extra"],  # no key to name
    ["--set", "train.epochs", "{config}", "extra"],  # the config is no value
    ["{config}", "--set", "train.epochs 5", "extra"],  # no key either
], ids=["complete-set", "empty-set", "config-after-key", "spaced-key"])
def test_an_extra_argument_without_a_split_set_gets_no_set_hint(tiny_config,
                                                                arguments):
    result = invoke("fit", *[str(tiny_config) if argument == "{config}" else argument
                             for argument in arguments])

    assert_one_line_error(result, 2, r"^error: Got unexpected extra argument \(extra\)"
                                     r" \(see: .* --help\)$")


# What a message quotes (a URL, a server's words) may hold a newline or a terminal
# escape; the CLI prints it escaped, on one line.

def raise_from_download(monkeypatch, error):
    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr("nntrain.data.download.download", fail)


@pytest.mark.parametrize("error, code, line", [
    (DownloadError("bad\nnews\x1b[2J"), 1, r"error: bad\nnews\x1b[2J"),
    (DataError("tab\there"), 2, r"error: tab\there"),
    (RuntimeError("two\nlines"), 1, r"internal error: RuntimeError: two\nlines (this"),
], ids=["run-time", "bad-input", "internal"])
def test_an_error_holding_a_newline_or_escape_is_printed_on_one_line(
        tmp_path, monkeypatch, error, code, line):
    raise_from_download(monkeypatch, error)

    result = invoke("data", "download", "mnist", "--dir", tmp_path)

    assert result.exit_code == code
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith(line)


def test_paths_holding_a_newline_or_escape_are_printed_escaped(trained, tmp_path):
    _, _, run_dir, _ = trained
    folder = tmp_path / "a\nb\x1b[2J"
    folder.mkdir()
    checkpoint = folder / "best.npz"
    shutil.copy(run_dir / "checkpoints" / "best.npz", checkpoint)
    samples = tmp_path / "samples.npy"
    np.save(samples, tiny_arrays()["X_test"][:2])
    shown = str(tmp_path / "a\\nb\\x1b[2J")

    evaluated = invoke("eval", checkpoint)
    predicted = invoke("predict", run_dir / "checkpoints" / "best.npz", samples,
                       "--out", folder / "p.csv")
    ensembled = invoke("ensemble", checkpoint, run_dir / "checkpoints" / "last.npz")

    assert evaluated.stdout.splitlines()[0] == (f"test split of {shown}/best.npz:"
                                                " 15 samples")
    assert predicted.stderr == f"wrote 2 predictions to {shown}/p.csv\n"
    assert f"  {shown}/best.npz" in ensembled.stdout.splitlines()[2]


def test_a_warning_holding_a_newline_is_printed_on_one_line(tmp_path, monkeypatch):
    def warn(*args, **kwargs):
        warnings.warn("first\nsecond", DataWarning, stacklevel=1)
        return [tmp_path / "a-labels.gz"]

    monkeypatch.setattr("nntrain.data.download.download", warn)

    result = invoke("data", "download", "mnist", "--dir", tmp_path)

    assert result.exit_code == 0
    assert result.stderr == "warning: first\\nsecond\n"


def test_one_line_escapes_only_what_cannot_be_printed():
    assert one_line("plain text, café, C:\\data") == "plain text, café, C:\\data"
    assert one_line("a\nb\r\tc\x1b[0m\u2028\xa0") == r"a\nb\r\tc\x1b[0m\u2028\xa0"
    assert one_line(one_line("a\nb")) == r"a\nb"
    assert str(DataError("one\ntwo")) == r"one\ntwo"




def test_fit_writes_the_run_directory_layout(trained):
    _, _, run_dir, _ = trained

    assert sorted(p.name for p in run_dir.iterdir()) == [
        "checkpoints", "config.yaml", "metrics.jsonl", "train.log"]
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [
        "best.npz", "last.npz"]


def test_fit_writes_the_resolved_config_with_every_default(trained):
    _, config_path, run_dir, _ = trained

    written = yaml.safe_load((run_dir / "config.yaml").read_text())

    assert written == {**load_config(config_path), "output": str(run_dir)}
    assert written["optimizer"] == {"name": "adam", "lr": 0.01, "beta1": 0.9,
                                    "beta2": 0.999, "eps": 1e-8}
    assert written["train"] == {"epochs": 3, "iterations": None, "batch_size": 16,
                                "eval_every": None, "log_every": 5, "clip": None,
                                "monitor": "val_accuracy", "early_stopping": None,
                                "average": None, "snapshot_every": None,
                                "diagnostics": True, "plots": False,
                                "threads": None, "dtype": "float32"}
    assert written["model"]["init"] == "he" and written["model"]["l2"] == 1e-3
    assert written["data"]["preprocess"] == ["center", "scale"]
    assert load_config(run_dir / "config.yaml") == written


def test_fit_metrics_have_an_epoch_record_per_epoch_with_designs_keys(trained):
    _, _, run_dir, _ = trained

    records = read_metrics(run_dir)

    epochs = [r for r in records if r["kind"] == "epoch"]
    assert [(r["iteration"], r["epoch"]) for r in epochs] == [(4, 1), (8, 2), (12, 3)]
    for record in epochs:
        assert plain_keys(record) == EPOCH_KEYS
        assert record["lr"] == 0.01
        assert record["loss"] == pytest.approx(record["data_loss"] + record["reg_loss"],
                                               rel=1e-6)
        assert record["reg_loss"] > 0
        # accuracies are counts over 50 training and 10 validation samples
        assert record["train_accuracy"] * TRAIN_ROWS == pytest.approx(
            round(record["train_accuracy"] * TRAIN_ROWS), abs=1e-9)
        assert record["val_accuracy"] * TINY_VALIDATION == pytest.approx(
            round(record["val_accuracy"] * TINY_VALIDATION), abs=1e-9)
        assert 0.0 <= record["val_accuracy"] <= 1.0


def test_fit_metrics_have_iter_records_every_log_every(trained):
    _, _, run_dir, _ = trained

    iters = [r for r in read_metrics(run_dir) if r["kind"] == "iter"]

    assert [(r["iteration"], r["epoch"]) for r in iters] == [(5, 2), (10, 3)]
    for record in iters:
        assert set(record) == ITER_KEYS
        assert record["lr"] == 0.01


def test_fit_metrics_time_never_runs_backwards(trained):
    _, _, run_dir, _ = trained

    seconds = [r["seconds"] for r in read_metrics(run_dir)]

    assert seconds == sorted(seconds)
    assert all(s >= 0 for s in seconds)


def test_fit_train_log_is_what_the_terminal_showed(trained):
    _, _, run_dir, result = trained

    log = (run_dir / "train.log").read_text()

    assert log == result.stdout
    assert log.splitlines()[0] == f"run directory: {run_dir}"
    assert ("data: 4 features (samples of shape 4), 3 classes; train 50, val 10,"
            " test 15") in log
    assert "model: 4-8-3, 67 parameters" in log
    assert log.splitlines()[-1].startswith("Done: 3 epochs, 12 iterations in ")
    assert str(run_dir / "checkpoints" / "best.npz") in log.splitlines()[-1]
    assert result.stderr == ""


def test_fit_checkpoints_follow_the_contract(trained):
    _, config_path, run_dir, _ = trained

    arrays, meta = read_checkpoint(run_dir / "checkpoints" / "last.npz")

    params = {"param/affine1.W": (4, 8), "param/affine1.b": (8,),
              "param/affine2.W": (8, 3), "param/affine2.b": (3,)}
    assert {k: v.shape for k, v in arrays.items() if k.startswith("param/")} == params
    assert all(arrays[k].dtype == np.float32 for k in params)
    for name in ("affine1.W", "affine1.b", "affine2.W", "affine2.b"):
        for slot in ("decayed_gradient_sum", "decayed_square_sum"):
            assert arrays[f"optim/{name}/{slot}"].shape == params[f"param/{name}"]
    assert arrays["prep/center.mean"].shape == (4,)
    assert arrays["prep/scale.factor"].shape == (4,)
    assert {k.split("/")[0] for k in arrays} == {"param", "optim", "prep"}
    assert type(meta["format"]) is int
    assert meta["nntrain_version"] == nntrain.__version__
    assert meta["config"] == {**load_config(config_path), "output": str(run_dir)}
    assert meta["data"]["num_features"] == 4 and meta["data"]["num_classes"] == 3
    assert meta["data"]["sizes"] == {"train": 50, "val": 10, "test": 15}
    assert meta["solver"]["progress"]["iteration"] == 12
    assert meta["solver"]["progress"]["epoch"] == 3


def test_fit_preprocessing_state_is_the_training_split_statistics(trained):
    _, config_path, run_dir, _ = trained
    config = load_config(config_path)
    train = load_dataset(config["data"], config["seed"]).X_train

    arrays, _ = read_checkpoint(run_dir / "checkpoints" / "last.npz")

    assert len(train) == TRAIN_ROWS
    np.testing.assert_allclose(arrays["prep/center.mean"], train.mean(axis=0),
                               rtol=1e-6)
    np.testing.assert_allclose(arrays["prep/scale.factor"], 1 / train.std(axis=0),
                               rtol=1e-5)
    whole = tiny_arrays()["X_train"]
    assert not np.allclose(arrays["prep/center.mean"], whole.mean(axis=0), rtol=1e-6)


def test_best_checkpoint_is_the_best_monitored_evaluation(trained):
    _, _, run_dir, _ = trained
    epochs = [r for r in read_metrics(run_dir) if r["kind"] == "epoch"]
    best_value = max(r["val_accuracy"] for r in epochs)
    first_best = next(r for r in epochs if r["val_accuracy"] == best_value)

    _, meta = read_checkpoint(run_dir / "checkpoints" / "best.npz")
    result = invoke("eval", run_dir / "checkpoints" / "best.npz", "--split", "val",
                    "--json")

    assert meta["solver"]["progress"]["iteration"] == first_best["iteration"]
    assert json.loads(result.stdout)["accuracy"] == best_value


def test_last_checkpoint_measures_what_the_last_record_says(trained):
    _, _, run_dir, _ = trained
    last = [r for r in read_metrics(run_dir) if r["kind"] == "epoch"][-1]

    result = invoke("eval", run_dir / "checkpoints" / "last.npz", "--split", "val",
                    "--json")

    measured = json.loads(result.stdout)
    assert measured["accuracy"] == last["val_accuracy"]
    assert measured["loss"] == pytest.approx(last["val_loss"], rel=1e-6)


def test_fit_quiet_prints_nothing_but_still_logs(tmp_path, tiny_config):
    result = invoke("fit", tiny_config, "--out", tmp_path / "run", "--quiet")

    assert result.exit_code == 0
    assert result.stdout == "" and result.stderr == ""
    assert "Done: 3 epochs" in (tmp_path / "run" / "train.log").read_text()


def test_fit_quiet_drops_notes_and_warnings_and_says_nothing_when_done(
        tmp_path, tiny_config, write_config):
    out = tmp_path / "run"
    assert invoke("fit", tiny_config, "--out", out, "--quiet").exit_code == 0
    other = yaml.safe_load(tiny_config.read_text())
    other["seed"] = 1  # a config that differs from the checkpoint's: a note

    finished = invoke("fit", write_config(other, "other.yaml"), "--resume", out,
                      "-q")
    # Starting weights of 1e30 overflow: NumPy warns before the error.
    overflowing = invoke("fit", tiny_config, "--out", tmp_path / "nan", "-q",
                         "--set", "model.init=small", "--set", "model.init_std=1e30")

    assert finished.exit_code == 0, finished.output
    assert finished.stdout == "" and finished.stderr == ""
    assert overflowing.exit_code == 1
    assert_one_line_error(overflowing, 1, r"^error: the loss became nan")


@pytest.mark.parametrize("flags", [[], ["--quiet"]])
def test_a_resumes_note_on_its_config_file_is_shown_and_kept_in_train_log(
        tmp_path, tiny_config, write_config, flags):
    out = tmp_path / "run"
    assert invoke("fit", tiny_config, "--out", out, "--quiet").exit_code == 0
    other = yaml.safe_load(tiny_config.read_text())
    other["seed"] = 1
    other["model"]["l2"] = 0.5
    other_path = write_config(other, "other.yaml")
    note = (f"note: {other_path} differs from the checkpoint's config in seed (1 in"
            " the file, 0 in the checkpoint) and 1 other setting; a resumed run"
            " keeps the checkpoint's")

    result = invoke("fit", other_path, "--resume", out, "--set", "train.epochs=4",
                    *flags)

    assert result.exit_code == 0, result.output
    assert result.stderr == ("" if flags else f"{note}\n")
    log = (out / "train.log").read_text().splitlines()
    assert log[log.index(note) + 1] == f"run directory: {out}"


def test_a_resume_keeps_the_output_as_first_written_while_it_names_the_run(
        tmp_path, tiny_config, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert invoke("fit", tiny_config, "--out", "runs/o", "--quiet").exit_code == 0

    resumed = invoke("fit", tiny_config, "--resume", "runs/o", "--set",
                     "train.epochs=4", "--quiet")
    kept = load_config(tmp_path / "runs" / "o" / "config.yaml")["output"]
    monkeypatch.chdir(tmp_path / "runs")  # from here "runs/o" names another folder
    moved = invoke("fit", tiny_config, "--resume", "o", "--set", "train.epochs=5",
                   "--quiet")

    assert resumed.exit_code == 0 and moved.exit_code == 0, moved.output
    assert kept == "runs/o"
    assert load_config(tmp_path / "runs" / "o" / "config.yaml")["output"] == str(
        (tmp_path / "runs" / "o").resolve())


def test_a_resumes_note_on_a_changed_list_of_layers_stays_on_one_short_line():
    from nntrain.config import resolve_config
    from nntrain.train.resume import differences_note

    def layers(units):
        return resolve_config({"train": {"epochs": 1}, "model": {"layers": [
            {"affine": {"units": units}}, {"relu": {}}, {"affine": {}}]}})

    note = differences_note("new.yaml", layers(16), layers(8))

    assert "\n" not in note
    assert note.startswith("new.yaml differs from the checkpoint's config in"
                           ' model.layers ([{"affine": {"units": 16, ')
    assert note.endswith('... in the checkpoint); a resumed run keeps the'
                         " checkpoint's")
    assert len(note) < 300  # two values of at most 60 characters


def test_fit_without_out_uses_runs_and_the_config_stem(tmp_path, tiny_config,
                                                       monkeypatch):
    monkeypatch.chdir(tmp_path)

    result = invoke("fit", tiny_config, "--quiet")

    assert result.exit_code == 0, result.output
    assert (tmp_path / "runs" / "tiny" / "checkpoints" / "best.npz").is_file()


def test_fit_without_out_uses_the_configs_output(tmp_path, tiny_npz, write_config,
                                                 monkeypatch):
    raw = tiny_config_dict(tiny_npz)
    raw["output"] = "elsewhere/run1"
    config = write_config(raw, "named.yaml")
    monkeypatch.chdir(tmp_path)

    result = invoke("fit", config, "--quiet")

    assert result.exit_code == 0, result.output
    assert (tmp_path / "elsewhere" / "run1" / "metrics.jsonl").is_file()
    assert not (tmp_path / "runs").exists()




def test_fit_refuses_a_non_empty_run_directory(tmp_path, tiny_config):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")

    result = invoke("fit", tiny_config, "--out", out)

    assert_one_line_error(result, 2, rf"run directory {re.escape(str(out))} is not"
                                     r" empty; pass --force")
    # Nothing there to resume, so --resume is not offered.
    assert "--resume" not in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_a_refused_run_directory_with_a_checkpoint_offers_resume(tmp_path,
                                                                 tiny_config):
    out = tmp_path / "run"
    assert invoke("fit", tiny_config, "--out", out, "--quiet").exit_code == 0

    result = invoke("fit", tiny_config, "--out", out)

    assert_one_line_error(result, 2, r"pass --force to start over, --resume to"
                                     r" continue it, or --out")


@pytest.mark.parametrize("command, option, fix", [
    (["plot", "{run}"], "--out", "give a folder for the PNGs (made if missing)"),
    (["eval", "{best}"], "--plots", "give a folder for the PNGs (made if missing)"),
    (["data", "download", "mnist"], "--dir",
     "give a folder for the dataset's files (made if missing)"),
    (["search", "{config}"], "--out",
     "give a new or empty folder, or a study's own folder to go on"),
], ids=["plot", "eval", "download", "search"])
def test_a_folder_option_given_a_file_names_the_fix(tmp_path, tiny_config, command,
                                                    option, fix):
    given = tmp_path / "file"
    given.write_text("x")
    places = {"{run}": str(tmp_path / "run"), "{config}": str(tiny_config),
              "{best}": str(tmp_path / "run" / "checkpoints" / "best.npz")}

    result = invoke(*[places.get(part, part) for part in command], option, given)

    assert_one_line_error(result, 2, "^" + re.escape(
        f"error: Invalid value for '{option}': {given} is a file, not a folder;"
        f" {fix}") + r" \(see: .* --help\)$")
    assert given.read_text() == "x"


@pytest.mark.parametrize("command, name, fix", [
    (["fit", "{folder}"], "CONFIG", "give the path of a YAML config file"),
    (["gradcheck", "{folder}"], "[CONFIG]", "give the path of a YAML config file"),
    (["sanity", "{folder}"], "CONFIG", "give the path of a YAML config file"),
    (["search", "{folder}"], "CONFIG", "give the path of a YAML config file"),
    (["predict", "{config}", "{folder}"], "INPUT",
     "give a .npy or .npz file of samples"),
    (["predict", "{config}", "{config}", "--out", "{folder}"], "--out",
     "give the name of a .csv or .npz file to write"),
], ids=["fit", "gradcheck", "sanity", "search", "predict", "predict-out"])
def test_a_file_argument_given_a_folder_names_the_fix(tmp_path, tiny_config, command,
                                                      name, fix):
    folder = tmp_path / "folder"
    folder.mkdir()
    places = {"{folder}": str(folder), "{config}": str(tiny_config)}

    result = invoke(*[places.get(part, part) for part in command])

    assert_one_line_error(result, 2, "^" + re.escape(
        f"error: Invalid value for '{name}': {folder} is a folder, not a file;"
        f" {fix}") + r" \(see: .* --help\)$")


def test_a_run_folder_in_a_symlink_loop_is_refused_by_its_own_check(tmp_path,
                                                                     tiny_config):
    (tmp_path / "loop_a").symlink_to(tmp_path / "loop_b")
    (tmp_path / "loop_b").symlink_to(tmp_path / "loop_a")

    result = invoke("fit", tiny_config, "--out", tmp_path / "loop_a" / "run")

    assert_one_line_error(result, 2, r"^error: cannot write to run directory .*"
                                     r"loop_a/run \(Too many levels of symbolic"
                                     r" links\); choose another folder with --out$")


def test_fit_refuses_an_out_that_is_a_file(tmp_path, tiny_config):
    out = tmp_path / "file"
    out.write_text("x")

    result = invoke("fit", tiny_config, "--out", out)

    assert_one_line_error(result, 2, "^" + re.escape(
        f"error: Invalid value for '--out': {out} is a file, not a folder; give a"
        " new or empty folder, or a run's own folder with --resume or --force")
        + r" \(see: .* --help\)$")
    assert out.read_text() == "x"


def test_fit_refuses_a_config_output_that_is_a_file_without_naming_out(
        tmp_path, tiny_npz, write_config):
    out = tmp_path / "file"
    out.write_text("x")
    config = write_config({**tiny_config_dict(tiny_npz), "output": str(out)})

    result = invoke("fit", config)

    assert_one_line_error(result, 2, "^" + re.escape(
        f"error: run directory {out} is a file, not a folder; choose a folder with"
        " --out or the config's output") + "$")
    assert out.read_text() == "x"


def test_fit_force_starts_over_and_keeps_foreign_files(tmp_path, tiny_config):
    out = tmp_path / "run"
    assert invoke("fit", tiny_config, "--out", out, "--quiet").exit_code == 0
    (out / "notes.txt").write_text("mine")

    again = invoke("fit", tiny_config, "--out", out, "--quiet")
    forced = invoke("fit", tiny_config, "--out", out, "--quiet", "--force")

    assert again.exit_code == 2
    assert forced.exit_code == 0, forced.output
    epochs = [r for r in read_metrics(out) if r["kind"] == "epoch"]
    assert [r["iteration"] for r in epochs] == [4, 8, 12]
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "train.log").read_text().count("Done:") == 1


@pytest.mark.parametrize("name, content", [
    ("config.yaml", "# my notes\ntrain: {epochs: 2}\n"),
    # Every section, no comment, but not laid out as nntrain writes a config.
    ("config.yaml", "seed: 7\ndata: {name: digits}\nmodel: {hidden: [32]}\n"
                    "optimizer: {name: sgd}\nschedule: {name: constant}\n"
                    "train: {epochs: 1}\noutput: A\n"),
    ("metrics.jsonl", "my own log\n"),
    ("train.log", "my own log\n"),
])
@pytest.mark.parametrize("flags", [["--force"], []])
def test_fit_with_or_without_force_names_a_users_file_of_a_runs_name(
        tmp_path, tiny_config, name, content, flags):
    # Without --force too: "pass --force" would only lead to this refusal.
    out = tmp_path / "run"
    out.mkdir()
    (out / name).write_text(content)

    result = invoke("fit", tiny_config, "--out", out, "--quiet", *flags)

    assert_one_line_error(result, 2, rf"^error: {re.escape(str(out / name))} is not a"
                                     rf" run's {re.escape(name)} \(nntrain did not"
                                     r" write it\); --force removes only what a run"
                                     r" wrote")
    assert (out / name).read_text() == content


@pytest.mark.parametrize("flags", [["--force"], []])
def test_fit_with_or_without_force_names_a_checkpoints_folder_that_is_a_link(
        tmp_path, tiny_config, flags):
    out, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "last.npz").write_bytes(b"mine")
    out.mkdir()
    (out / "checkpoints").symlink_to(elsewhere)

    result = invoke("fit", tiny_config, "--out", out, "--quiet", *flags)

    assert_one_line_error(result, 2, "^" + re.escape(
        f"error: {out / 'checkpoints'} is a symbolic link; nntrain will not clear it"
        " with --force: remove it or choose another --out") + "$")
    assert (elsewhere / "last.npz").read_bytes() == b"mine"


def test_fit_force_keeps_a_train_log_beside_checkpoints_no_run_wrote(tmp_path,
                                                                     tiny_config):
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "mine.npz").write_bytes(b"x")
    (out / "train.log").write_text("my notes\n")

    result = invoke("fit", tiny_config, "--out", out, "--quiet", "--force")

    assert result.exit_code == 2
    assert (out / "train.log").read_text() == "my notes\n"


def _put_in_the_way(path, kind):
    """Replace whatever is at ``path`` by ``kind``: a file, a folder (holding a
    file) or a broken symbolic link."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
    if kind == "a file":
        path.write_text("mine\n")
    elif kind == "a folder":
        path.mkdir()
        (path / "mine.txt").write_text("mine\n")
    else:
        path.symlink_to(path.parent / "nowhere" / "at-all")


MISPLACED = [
    ("checkpoints", "a file", "where nntrain keeps the run's checkpoints"),
    ("checkpoints", "a broken symbolic link",
     "where nntrain keeps the run's checkpoints"),
    ("plots", "a file", "where nntrain keeps the run's plots"),
    ("config.yaml", "a folder", "where nntrain writes a file of that name"),
    ("metrics.jsonl", "a folder", "where nntrain writes a file of that name"),
    ("train.log", "a folder", "where nntrain writes a file of that name"),
    ("checkpoints/last.npz", "a folder", "where nntrain writes a file of that name"),
    ("checkpoints/best.npz", "a folder", "where nntrain writes a file of that name"),
    ("checkpoints/snapshot-epoch-0002.npz", "a folder",
     "where nntrain writes a file of that name"),
    ("plots/loss.png", "a folder", "where nntrain writes a file of that name"),
]


@pytest.mark.parametrize("flags", [["--force"], []])
@pytest.mark.parametrize("name, kind, where", MISPLACED)
def test_fit_refuses_a_run_folder_entry_of_the_wrong_kind_before_removing(
        tmp_path, tiny_config, name, kind, where, flags):
    out = tmp_path / "run"
    assert invoke("fit", tiny_config, "--out", out, "--quiet").exit_code == 0
    (out / "plots").mkdir(exist_ok=True)
    _put_in_the_way(out / name, kind)
    before = sorted(path.relative_to(out) for path in out.rglob("*"))

    result = invoke("fit", tiny_config, "--out", out, "--quiet", *flags)

    assert_one_line_error(result, 2, rf"^error: {re.escape(str(out / name))} is"
                                     rf" {kind}, {where}; remove or rename it$")
    assert sorted(path.relative_to(out) for path in out.rglob("*")) == before


@pytest.mark.parametrize("name, kind, where", [
    entry for entry in MISPLACED if entry[0] not in ("checkpoints", "metrics.jsonl")])
def test_a_resume_refuses_a_run_folder_entry_of_the_wrong_kind(
        tmp_path, tiny_config, name, kind, where):
    out = tmp_path / "run"
    assert invoke("fit", tiny_config, "--out", out, "--quiet").exit_code == 0
    (out / "plots").mkdir(exist_ok=True)
    _put_in_the_way(out / name, kind)

    result = invoke("fit", tiny_config, "--resume", out, "--set", "train.epochs=4",
                    "--quiet")

    assert_one_line_error(result, 2, rf"^error: {re.escape(str(out / name))} is"
                                     rf" {kind}, {where}; remove or rename it$")


def test_a_resume_refuses_a_train_log_that_is_a_broken_link(tmp_path, tiny_config):
    out = tmp_path / "run"
    assert invoke("fit", tiny_config, "--out", out, "--quiet").exit_code == 0
    _put_in_the_way(out / "train.log", "a broken symbolic link")

    result = invoke("fit", tiny_config, "--resume", out, "--set", "train.epochs=4",
                    "--quiet")

    assert_one_line_error(result, 2, rf"^error: cannot append to"
                                     rf" {re.escape(str(out / 'train.log'))} \(a"
                                     r" broken symbolic link\); remove or rename it")


def test_fit_force_reruns_a_runs_own_config_in_its_folder(tmp_path, tiny_config):
    out = tmp_path / "run"
    assert invoke("fit", tiny_config, "--out", out, "--quiet").exit_code == 0

    again = invoke("fit", out / "config.yaml", "--out", out, "--quiet", "--force")

    assert again.exit_code == 0, again.output
    assert (out / "train.log").read_text().count("Done:") == 1


def test_same_config_and_seed_give_identical_parameters(tmp_path, tiny_config):
    for name in ("a", "b"):
        assert invoke("fit", tiny_config, "--out", tmp_path / name,
                      "--quiet").exit_code == 0

    first, _ = read_checkpoint(tmp_path / "a" / "checkpoints" / "last.npz")
    second, _ = read_checkpoint(tmp_path / "b" / "checkpoints" / "last.npz")

    assert first.keys() == second.keys()
    for key in first:
        np.testing.assert_array_equal(first[key], second[key])




def test_print_config_prints_yaml_and_writes_nothing(tmp_path, tiny_config,
                                                     monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())

    result = invoke("fit", tiny_config, "--print-config", "--out", tmp_path / "run",
                    "--set", "optimizer.lr=5E-4")

    assert result.exit_code == 0
    printed = yaml.safe_load(result.stdout)
    assert printed == {**load_config(tiny_config, ["optimizer.lr=5E-4"]),
                       "output": str(tmp_path / "run")}
    assert printed["optimizer"]["lr"] == 0.0005
    assert printed["train"]["log_every"] == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_malformed_config_exits_2_with_one_line(tmp_path, write_config):
    config = write_config("train:\n  epochs: 2: 3\n")

    result = invoke("fit", config, "--out", tmp_path / "run")

    assert_one_line_error(result, 2, r"mapping values are not allowed here at line 2")
    assert result.stdout == ""
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("overrides, pattern", [
    (["train.epoch=3"], r"unknown key train\.epoch \(did you mean 'epochs'\?\)"),
    (["train.iterations=5"], r"set exactly one of train\.epochs and train\.iterations"),
    (["train.epochs=null"], r"set exactly one of train\.epochs and train\.iterations"),
    (["optimizer.beta1=0.8", "optimizer.name=sgd"],
     r"optimizer\.beta1 is not a setting of 'sgd'"),
    (["train.batch_size=0"], r"invalid train\.batch_size: 0"),
    (["model.hidden=[8"], r"--set model\.hidden: "),
])
def test_config_errors_through_set_exit_2_with_one_line(tmp_path, tiny_config,
                                                        overrides, pattern):
    args = [arg for override in overrides for arg in ("--set", override)]

    result = invoke("fit", tiny_config, *args, "--out", tmp_path / "run")

    assert_one_line_error(result, 2, pattern)
    assert not (tmp_path / "run").exists()


def test_duplicated_key_through_the_cli_exits_2(tmp_path, write_config):
    config = write_config("train:\n  epochs: 2\n  epochs: 3\n")

    result = invoke("fit", config, "--print-config")

    assert_one_line_error(result, 2, r"duplicated key 'epochs' on line 3")


def test_missing_config_file_exits_2(tmp_path):
    result = invoke("fit", tmp_path / "absent.yaml")

    assert_one_line_error(result, 2, r"config file not found")


def test_missing_dataset_exits_2_listing_the_places(tmp_path, write_config,
                                                    monkeypatch):
    monkeypatch.setenv("NNTRAIN_DATA", str(tmp_path / "env"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(datasets, "SYSTEM_DATA", tmp_path / "system")
    config = write_config({"data": {"name": "mnist"}, "train": {"epochs": 1}})

    result = invoke("fit", config, "--out", tmp_path / "run")

    assert_one_line_error(result, 2, r"mnist not found \(searched: ")
    assert str(tmp_path / "env" / "mnist") in result.stderr
    assert str(tmp_path / "system" / "mnist") in result.stderr
    assert not (tmp_path / "run").exists()


def test_bad_npz_data_exits_2(tmp_path, write_npz, write_config):
    arrays = tiny_arrays()
    arrays["y_train"] = arrays["y_train"].astype(float)
    raw = tiny_config_dict(write_npz(**arrays))

    result = invoke("fit", write_config(raw), "--out", tmp_path / "run")

    assert_one_line_error(result, 2, r"y_train must hold integer labels")


def test_diverging_run_exits_1_naming_the_learning_rate(tmp_path, write_npz,
                                                        write_config):
    raw = diverging_config(write_npz)

    result = invoke("fit", write_config(raw), "--out", tmp_path / "run", "--quiet")

    assert result.exit_code == 1
    last = result.stderr.splitlines()[-1]
    assert re.match(r"error: (the loss|the gradient norm|parameter \S+) became"
                    r" (nan|inf) at iteration \d+", last)
    assert "lower optimizer.lr" in last


def diverging_config(write_npz):
    rng = np.random.default_rng(0)
    path = write_npz("big.npz", X_train=rng.normal(size=(40, 3)) * 1e3,
                     y_train=np.arange(40) % 3)
    return {"data": {"name": "npz", "path": str(path), "validation": 5,
                     "preprocess": []},
            "model": {"hidden": [8]},
            "optimizer": {"name": "sgd", "lr": 1e10},
            "train": {"epochs": 2, "batch_size": 8}}


def test_diverging_run_prints_one_line_on_stderr(tmp_path, write_npz, write_config):
    config = write_config(diverging_config(write_npz))

    result = subprocess.run(
        [sys.executable, "-m", "nntrain", "fit", str(config), "--out",
         str(tmp_path / "run"), "--quiet"],
        capture_output=True, text=True, timeout=120, check=False,
    )

    assert result.returncode == 1
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert "Warning" not in result.stderr




def test_iterations_mode_evaluates_every_eval_every_and_at_the_end(tmp_path,
                                                                   tiny_config):
    out = tmp_path / "run"

    result = invoke("fit", tiny_config, "--out", out, "--quiet",
                    "--set", "train.epochs=null", "--set", "train.iterations=11",
                    "--set", "train.eval_every=3")

    assert result.exit_code == 0, result.output
    records = read_metrics(out)
    epochs = [(r["iteration"], r["epoch"]) for r in records if r["kind"] == "epoch"]
    assert epochs == [(3, 1), (6, 2), (9, 3), (11, 3)]
    assert all(plain_keys(r) == EPOCH_KEYS for r in records if r["kind"] == "epoch")
    iters = [(r["iteration"], r["epoch"]) for r in records if r["kind"] == "iter"]
    assert iters == [(5, 2), (10, 3)]
    _, meta = read_checkpoint(out / "checkpoints" / "last.npz")
    assert meta["solver"]["progress"]["iteration"] == 11
    assert meta["config"]["train"]["epochs"] is None


def test_iterations_mode_evaluates_once_per_epochs_worth_by_default(tmp_path,
                                                                   tiny_config):
    out = tmp_path / "run"

    result = invoke("fit", tiny_config, "--out", out, "--quiet",
                    "--set", "train.epochs=null", "--set", "train.iterations=10")

    assert result.exit_code == 0, result.output
    epochs = [(r["iteration"], r["epoch"]) for r in read_metrics(out)
              if r["kind"] == "epoch"]
    assert epochs == [(PER_EPOCH, 1), (2 * PER_EPOCH, 2), (10, 3)]




def test_eval_json_matches_a_manual_computation_from_the_checkpoint(trained):
    _, _, run_dir, _ = trained
    best = run_dir / "checkpoints" / "best.npz"
    arrays, _ = read_checkpoint(best)
    data = tiny_arrays()

    result = invoke("eval", best, "--json")

    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 1
    measured = json.loads(result.stdout)
    assert {"loss", "accuracy"} <= set(measured)
    scores = manual_scores(arrays, data["X_test"])
    predictions = scores.argmax(axis=1)
    assert measured["accuracy"] == float(np.mean(predictions == data["y_test"]))
    assert measured["loss"] == pytest.approx(
        manual_cross_entropy(scores, data["y_test"]), rel=1e-5)
    assert measured["samples"] == TINY_TEST
    matrix = np.zeros((3, 3), dtype=int)
    np.add.at(matrix, (data["y_test"], predictions), 1)
    assert measured["confusion_matrix"] == matrix.tolist()
    per_class = [matrix[c, c] / matrix[c].sum() for c in range(3)]
    assert measured["per_class_accuracy"] == pytest.approx(per_class, abs=1e-15)


def test_eval_train_split_measures_the_fifty_training_rows(trained):
    _, _, run_dir, _ = trained

    result = invoke("eval", run_dir / "checkpoints" / "last.npz", "--split", "train",
                    "--json")

    assert result.exit_code == 0
    assert json.loads(result.stdout)["samples"] == TRAIN_ROWS


def test_eval_text_report_shows_loss_accuracy_and_confusion_matrix(trained):
    _, _, run_dir, _ = trained
    best = run_dir / "checkpoints" / "best.npz"
    measured = json.loads(invoke("eval", best, "--json").stdout)

    result = invoke("eval", best)

    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0] == f"test split of {best}: 15 samples"
    assert f"accuracy  {measured['accuracy']:.4f}" in lines
    assert "confusion matrix (rows: true class, columns: predicted):" in lines
    assert sum(int(v) for line in lines[-3:] for v in line.split()[1:]) == TINY_TEST


def test_eval_data_option_finds_moved_data(trained, tmp_path):
    folder, config, _, _ = trained
    out = tmp_path / "run"
    moved_npz = tmp_path / "moved.npz"
    shutil.copy(folder / "tiny.npz", tmp_path / "tiny.npz")
    raw = yaml.safe_load(config.read_text())
    raw["data"]["path"] = str(tmp_path / "tiny.npz")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    assert invoke("fit", tmp_path / "c.yaml", "--out", out, "--quiet").exit_code == 0
    best = out / "checkpoints" / "best.npz"
    before = json.loads(invoke("eval", best, "--json").stdout)
    (tmp_path / "tiny.npz").rename(moved_npz)

    lost = invoke("eval", best, "--json")
    found = invoke("eval", best, "--json", "--data", moved_npz)

    assert_one_line_error(lost, 2, r"npz file not found")
    assert found.exit_code == 0
    assert json.loads(found.stdout)["accuracy"] == before["accuracy"]


def test_eval_refuses_data_whose_split_differs_from_the_recorded_one(trained,
                                                                     tmp_path):
    _, _, run_dir, _ = trained
    arrays = tiny_arrays()
    arrays["X_test"], arrays["y_test"] = arrays["X_test"][:9], arrays["y_test"][:9]
    other = tmp_path / "other.npz"
    np.savez(other, **arrays)

    result = invoke("eval", run_dir / "checkpoints" / "best.npz", "--data", other,
                    "--json")

    assert_one_line_error(result, 2, rf"the data in {re.escape(str(other))} is not"
                                     r" the data the checkpoint was trained on \(its"
                                     r" test split holds other samples or labels\)")


def test_plot_with_a_data_path_that_does_not_exist_is_bad_input(trained, tmp_path):
    pytest.importorskip("matplotlib")
    _, _, run_dir, _ = trained
    missing = tmp_path / "nonexist.npz"

    result = invoke("plot", run_dir, "--data", missing, "--out", tmp_path / "plots")

    assert_one_line_error(result, 2, rf"--data {re.escape(str(missing))} not found")
    assert not (tmp_path / "plots").exists()


@pytest.mark.parametrize("given, what", [
    ("checkpoints", "the checkpoints folder of a run"),
    ("checkpoints/best.npz", "a file in a run's checkpoints folder"),
])
def test_plot_of_a_runs_checkpoints_names_the_run_directory(trained, given, what):
    pytest.importorskip("matplotlib")
    _, _, run_dir, _ = trained
    path = run_dir / given

    result = invoke("plot", path)

    assert_one_line_error(result, 2, re.escape(
        f"{path} is {what}, not its run directory; give the run directory"
        f" {run_dir}") + "$")


@pytest.mark.parametrize("command, option", [
    ("eval", "--plots"), ("plot", "--out"),
])
def test_an_output_folder_that_cannot_be_made_is_bad_input(trained, tmp_path,
                                                           command, option):
    pytest.importorskip("matplotlib")
    _, _, run_dir, _ = trained
    target = run_dir / "checkpoints" / "best.npz" if command == "eval" else run_dir
    blocked = tmp_path / "a-file"
    blocked.write_text("in the way")

    result = invoke(command, target, option, blocked / "plots")

    assert_one_line_error(
        result, 2, re.escape(f"cannot create the output folder {blocked / 'plots'}"
                             f" (Not a directory); give {option} a folder"))


@pytest.mark.parametrize("command, option, give", [
    ("eval", "--plots", "give a folder path for the PNGs"),
    ("eval", "--data", "give the file or folder where the data lies now"),
    ("plot", "--out", "give a folder path, or leave --out out for RUN_DIR/plots"),
    ("plot", "--data", "give the file or folder where the data lies now"),
    ("predict", "--out", "give a .csv or .npz file, or leave --out out"),
    ("ensemble", "--data", "give the file or folder where the data lies now"),
])
def test_an_empty_output_or_data_option_is_refused(trained, tmp_path, monkeypatch,
                                                   command, option, give):
    _, _, run_dir, _ = trained
    best = run_dir / "checkpoints" / "best.npz"
    samples = tmp_path / "samples.npy"
    np.save(samples, tiny_arrays()["X_test"][:3])
    targets = {"eval": [best], "plot": [run_dir], "predict": [best, samples],
               "ensemble": [best]}[command]
    monkeypatch.chdir(tmp_path)  # where an empty path would write

    result = invoke(command, *targets, option, "")

    assert_one_line_error(result, 2, re.escape(f"{option} is empty; {give}"))
    assert sorted(tmp_path.iterdir()) == [samples]


def test_eval_refuses_data_of_another_width(trained, tmp_path):
    _, _, run_dir, _ = trained
    arrays = tiny_arrays()
    other = tmp_path / "other.npz"
    np.savez(other, **{k: (v[:, :3] if k.startswith("X") else v)
                       for k, v in arrays.items()})

    result = invoke("eval", run_dir / "checkpoints" / "best.npz", "--data", other)

    assert_one_line_error(result, 2, r"the data has 3 features and 3 classes, the"
                                     r" checkpoint was trained on 4 and 3")


def test_eval_refuses_data_with_another_class_count(trained, tmp_path):
    _, _, run_dir, _ = trained
    arrays = tiny_arrays()
    arrays["y_train"] = np.arange(TINY_TRAIN) % 5
    other = tmp_path / "other.npz"
    np.savez(other, **arrays)

    result = invoke("eval", run_dir / "checkpoints" / "best.npz", "--data", other)

    assert_one_line_error(result, 2, r"the data has 4 features and 5 classes, the"
                                     r" checkpoint was trained on 4 and 3")


@pytest.fixture
def corrupt(trained, tmp_path):
    """corrupt(transform) writes transform(best.npz bytes) to a new file."""
    _, _, run_dir, _ = trained
    original = (run_dir / "checkpoints" / "best.npz").read_bytes()

    def make(transform, name="broken.npz"):
        path = tmp_path / name
        path.write_bytes(transform(bytearray(original)))
        return path

    return make


def truncate(data):
    return bytes(data[: len(data) // 2])


def random_bytes(data):
    return np.random.default_rng(7).bytes(len(data))


def first_array_byte_flipped(data):
    start = data.find(b"\x93NUMPY")
    header_length = struct.unpack("<H", data[start + 8:start + 10])[0]
    data[start + 10 + header_length + 3] ^= 0xFF
    return bytes(data)


@pytest.mark.parametrize("damage, pattern", [
    (truncate, r"is not a readable checkpoint .*truncated or corrupt"),
    # What a crash or a full disk leaves of a checkpoint: no "not a checkpoint".
    (random_bytes, r"is not a readable checkpoint .*truncated or corrupt"),
    (first_array_byte_flipped, r"(Bad CRC-32|checksum)"),
    (lambda data: b"", r"is empty \(0 bytes\), as a crash or a full disk can leave"),
    (lambda data: bytes(len(data)), r"is not a readable checkpoint .*truncated or"
                                    r" corrupt"),
])
def test_eval_of_a_corrupt_checkpoint_exits_2_with_one_line(corrupt, damage, pattern):
    path = corrupt(damage)

    result = invoke("eval", path, "--json")

    assert_one_line_error(result, 2, pattern)
    assert str(path) in result.stderr
    assert result.stdout == ""


def test_eval_of_a_checkpoint_with_a_damaged_zip_directory_exits_2(corrupt):
    def unknown_method(data):
        entry = data.find(b"PK\x01\x02")
        data[entry + 10:entry + 12] = struct.pack("<H", 99)
        return bytes(data)

    result = invoke("eval", corrupt(unknown_method), "--json")

    assert_one_line_error(result, 2, r"not a readable checkpoint")


def test_eval_of_a_missing_checkpoint_exits_2(tmp_path):
    result = invoke("eval", tmp_path / "absent.npz")

    assert_one_line_error(result, 2, r"checkpoint not found")


def test_eval_of_a_data_npz_is_not_a_checkpoint(trained):
    folder, _, _, _ = trained

    result = invoke("eval", folder / "tiny.npz")

    assert_one_line_error(result, 2, "^" + re.escape(
        f"error: {folder / 'tiny.npz'} holds data (X_train, ...): not an nntrain"
        " checkpoint; give a checkpoint, such as runs/NAME/checkpoints/best.npz")
        + "$")


def test_fit_of_a_checkpoint_says_it_is_no_config(trained):
    folder, _, _, _ = trained
    checkpoint = next(folder.rglob("best.npz"))

    result = invoke("fit", checkpoint)

    assert_one_line_error(result, 2, "^" + re.escape(
        f"error: {checkpoint} is an .npz archive (a checkpoint or data?), not a YAML"
        " config; give the config (a run keeps its own as config.yaml)") + "$")


def test_eval_refuses_an_array_with_a_foreign_prefix(corrupt, tmp_path, trained):
    _, _, run_dir, _ = trained
    with np.load(run_dir / "checkpoints" / "best.npz", allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}
    arrays["code/run"] = np.zeros(2)
    path = tmp_path / "foreign.npz"
    np.savez(path, **arrays)

    result = invoke("eval", path)

    assert_one_line_error(result, 2, r"unknown entry 'code/run'")


def test_eval_refuses_a_newer_checkpoint_format(tmp_path, trained):
    _, _, run_dir, _ = trained
    with np.load(run_dir / "checkpoints" / "best.npz", allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}
    meta = json.loads(str(arrays["meta"]))
    meta["format"] += 1
    arrays["meta"] = np.array(json.dumps(meta))
    path = tmp_path / "newer.npz"
    np.savez(path, **arrays)

    result = invoke("eval", path)

    assert_one_line_error(result, 2, rf"has checkpoint format {meta['format']}, newer")




def test_fit_refuses_a_surrogate_class_name_before_making_the_run_directory(
        write_npz, write_config, tmp_path):
    data = write_npz(**tiny_arrays(), class_names=np.array(["a", "\ud800", "c"]))
    config = write_config(tiny_config_dict(data))

    result = invoke("fit", config, "--out", tmp_path / "run")

    assert_one_line_error(result, 2, re.escape(
        f"error: {data}: class_names[1] is '\\ud800', which holds a lone"
        " surrogate"))
    assert not (tmp_path / "run").exists()


def test_bytes_class_names_are_recorded_and_shown_as_text(write_npz, write_config,
                                                          tmp_path):
    names = np.array([b"ant", b"bee", b"cow"])
    data = write_npz(**tiny_arrays(), class_names=names)
    raw = tiny_config_dict(data)
    raw["train"]["epochs"] = 1
    best = tmp_path / "run" / "checkpoints" / "best.npz"
    samples, out = tmp_path / "samples.npy", tmp_path / "pred.csv"
    np.save(samples, tiny_arrays()["X_test"][:2])

    fitted = invoke("fit", write_config(raw), "--out", tmp_path / "run", "--quiet")
    evaluated = invoke("eval", best)
    predicted = invoke("predict", best, samples, "--out", out)

    assert fitted.exit_code == 0, fitted.output
    _, meta = read_checkpoint(best)
    assert meta["data"]["class_names"] == ["ant", "bee", "cow"]
    assert evaluated.exit_code == 0, evaluated.output
    assert "  ant  " in evaluated.stdout and "b'" not in evaluated.stdout
    assert predicted.exit_code == 0, predicted.output
    header = next(csv.reader(io.StringIO(out.read_text())))
    assert header == ["index", "class", "name", "p_ant", "p_bee", "p_cow"]


def test_predict_writes_one_csv_row_per_sample_with_probabilities(trained, tmp_path):
    _, _, run_dir, _ = trained
    best = run_dir / "checkpoints" / "best.npz"
    X = tiny_arrays()["X_test"][:7]
    samples = tmp_path / "samples.npy"
    np.save(samples, X)
    out = tmp_path / "pred.csv"

    result = invoke("predict", best, samples, "--out", out)

    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert result.stderr == f"wrote 7 predictions to {out}\n"
    rows = list(csv.reader(io.StringIO(out.read_text())))
    assert rows[0] == ["index", "class", "name", "p_0", "p_1", "p_2"]
    assert len(rows) == 1 + 7
    arrays, _ = read_checkpoint(best)
    expected = manual_scores(arrays, X).argmax(axis=1)
    for index, row in enumerate(rows[1:]):
        probabilities = [float(p) for p in row[3:]]
        assert int(row[0]) == index
        assert int(row[1]) == expected[index] and row[2] == str(expected[index])
        assert sum(probabilities) == pytest.approx(1.0, abs=3 * 5e-7)
        assert int(np.argmax(probabilities)) == expected[index]


def test_predict_of_an_svm_model_notes_that_its_probabilities_are_a_softmax(
        tmp_path, tiny_npz, write_config):
    raw = tiny_config_dict(tiny_npz)
    raw["model"]["loss"] = "svm"
    raw["train"]["plots"] = False
    assert invoke("fit", write_config(raw), "--out", tmp_path / "run").exit_code == 0
    samples = tmp_path / "samples.npy"
    np.save(samples, tiny_arrays()["X_test"][:3])

    result = invoke("predict", tmp_path / "run" / "checkpoints" / "best.npz",
                    samples)

    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 4
    assert result.stderr == (
        "note: this model was trained with the svm loss, whose scores are no"
        " probabilities; the probabilities written are their softmax, which ranks"
        " the classes as the scores do\n")


def test_predict_without_out_writes_csv_to_stdout(trained, tmp_path):
    _, _, run_dir, _ = trained
    samples = tmp_path / "samples.npz"
    np.savez(samples, X=tiny_arrays()["X_test"][:3])

    result = invoke("predict", run_dir / "checkpoints" / "best.npz", samples)

    assert result.exit_code == 0
    assert len(result.stdout.splitlines()) == 4
    assert result.stderr == ""


def test_predict_one_sample_of_d_values(trained, tmp_path):
    _, _, run_dir, _ = trained
    samples = tmp_path / "one.npy"
    np.save(samples, tiny_arrays()["X_test"][0])

    result = invoke("predict", run_dir / "checkpoints" / "best.npz", samples)

    assert result.exit_code == 0
    assert len(result.stdout.splitlines()) == 2


@pytest.mark.parametrize("make, pattern", [
    (lambda p: np.save(p, np.zeros((3, 5))),
     r"samples of shape \(3, 5\) do not match the model's input of 4 features;"
     r" give an \(N, 4\) array, or one sample of shape \(4,\)$"),
    (lambda p: np.save(p, np.full((3, 4), np.nan)),
     r"NaN or infinite values; remove those samples, or replace the values"),
    (lambda p: np.save(p, np.full((3, 4), -1e39)),
     r"samples hold values up to 1e\+39 in magnitude, beyond float32's range"),
    (lambda p: p.write_bytes(b"not numbers at all"), r"not a readable \.npy/\.npz"),
    (lambda p: None, r"input file not found"),
    (lambda p: np.save(p, np.ones((3, 4), bool)),
     r"samples must be numbers, not bool; save them as a float or integer array$"),
    (lambda p: np.save(p, np.zeros((0, 4))), r"holds no samples; save at least one$"),
])
def test_predict_refuses_bad_input_with_exit_2(trained, tmp_path, make, pattern):
    _, _, run_dir, _ = trained
    samples = tmp_path / "bad.npy"
    make(samples)

    result = invoke("predict", run_dir / "checkpoints" / "best.npz", samples)

    assert_one_line_error(result, 2, pattern)


@pytest.mark.parametrize("name", ["pred.npy", "pred", "pred.txt"])
def test_predict_refuses_an_out_file_of_another_format(trained, tmp_path, name):
    _, _, run_dir, _ = trained
    samples = tmp_path / "samples.npy"
    np.save(samples, tiny_arrays()["X_test"][:3])
    out = tmp_path / name

    result = invoke("predict", run_dir / "checkpoints" / "best.npz", samples,
                    "--out", out)

    assert_one_line_error(result, 2, re.escape(
        f"--out {out}: predict writes .csv or .npz files; give a name ending in one"
        " of those, or leave --out out for CSV on stdout"))
    assert not out.exists()


def test_predict_refuses_an_out_name_that_ends_as_a_folder(trained, tmp_path):
    folder, _, run_dir, _ = trained
    out = f"{tmp_path / 'predictions.npz'}{os.sep}"

    result = invoke("predict", run_dir / "checkpoints" / "best.npz",
                    folder / "tiny.npz", "--out", out)

    assert_one_line_error(result, 2, "^" + re.escape(
        f"error: Invalid value for '--out': {out} ends with '{out[-1]}', which names a"
        " folder; give the name of a .csv or .npz file to write") + r" \(see: .*$")
    assert not (tmp_path / "predictions.npz").exists()


def test_predict_writes_npz_under_an_upper_case_suffix_as_given(trained, tmp_path):
    _, _, run_dir, _ = trained
    samples = tmp_path / "samples.npy"
    np.save(samples, tiny_arrays()["X_test"][:3])
    out = tmp_path / "pred.NPZ"

    result = invoke("predict", run_dir / "checkpoints" / "best.npz", samples,
                    "--out", out)

    assert result.exit_code == 0, result.output
    assert sorted(np.load(out).files) == ["classes", "probabilities"]
    assert not (tmp_path / "pred.NPZ.npz").exists()


def test_predict_refuses_an_npz_holding_several_sample_arrays(trained, tmp_path):
    _, _, run_dir, _ = trained
    X = tiny_arrays()["X_test"]
    samples = tmp_path / "samples.npz"
    np.savez(samples, X=X[:3], X_test=X[3:], y=np.zeros(3))

    result = invoke("predict", run_dir / "checkpoints" / "best.npz", samples)

    assert_one_line_error(result, 2, re.escape(
        f"{samples} holds X and X_test, each of which predict would take for the"
        " samples; save only the array to classify"))


@pytest.fixture(scope="module")
def image_checkpoint(tmp_path_factory):
    """best.npz of a run on the tiny data as 2x2 images: input_shape (2, 2)."""
    folder = tmp_path_factory.mktemp("images")
    arrays = tiny_arrays()
    for key in ("X_train", "X_test"):
        arrays[key] = arrays[key].reshape(-1, 2, 2)
    np.savez(folder / "images.npz", **arrays)
    raw = tiny_config_dict(folder / "images.npz")
    raw["train"].update(epochs=1, plots=False)
    (folder / "images.yaml").write_text(yaml.safe_dump(raw))

    result = invoke("fit", folder / "images.yaml", "--out", folder / "run", "-q")

    assert result.exit_code == 0, result.output
    return folder / "run" / "checkpoints" / "best.npz"


@pytest.mark.parametrize("shape, rows", [
    ((5, 4), 5), ((5, 2, 2), 5), ((4,), 1), ((2, 2), 1), ((1, 4), 1),
])
def test_predict_takes_rows_images_or_one_sample(image_checkpoint, tmp_path, shape,
                                                 rows):
    samples = tmp_path / "samples.npy"
    np.save(samples, np.zeros(shape))

    result = invoke("predict", image_checkpoint, samples)

    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 1 + rows


@pytest.mark.parametrize("shape", [(5, 1, 4), (4, 1), (1, 1, 4), (5, 4, 1), (2,)])
def test_predict_refuses_shapes_the_model_was_not_trained_on(image_checkpoint,
                                                             tmp_path, shape):
    samples = tmp_path / "samples.npy"
    np.save(samples, np.zeros(shape))

    result = invoke("predict", image_checkpoint, samples)

    assert_one_line_error(
        result, 2, re.escape(f"samples of shape {shape} do not match the model's"
                             " input of 4 features; give an (N, 4) or (N, 2, 2)"
                             " array, or one sample of shape (4,) or (2, 2)"))


def test_predict_refuses_a_truncated_npz_input_with_exit_2(trained, tmp_path):
    _, _, run_dir, _ = trained
    whole = tmp_path / "whole.npz"
    np.savez(whole, X=tiny_arrays()["X_test"])
    samples = tmp_path / "half.npz"
    samples.write_bytes(whole.read_bytes()[:200])

    result = invoke("predict", run_dir / "checkpoints" / "best.npz", samples)

    assert_one_line_error(result, 2, r"half\.npz")




def test_gradcheck_without_config_checks_the_library_and_passes():
    result = invoke("gradcheck")

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == ("gradient check: every layer and loss of the library, on"
                        " 8 random samples")
    assert lines[-1].startswith("PASSED: all ")
    for name in ("affine.x", "affine.W", "affine.b", "relu.x", "softmax_loss.scores"):
        assert any(line.split()[0] == name and line.split()[-1] == "ok"
                   for line in lines[1:]), name


def test_gradcheck_of_the_tiny_config_passes_for_every_parameter(tiny_config):
    result = invoke("gradcheck", tiny_config)

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"gradient check: {tiny_config} (npz, 8 samples")
    assert "float64" in lines[0]
    rows = {line.split()[0]: line for line in lines[2:6]}
    assert sorted(rows) == ["affine1.W", "affine1.b", "affine2.W", "affine2.b"]
    assert all("FAIL" not in row for row in rows.values())
    assert lines[-1] == "PASSED: all 4 arrays agree"


@pytest.mark.parametrize("seed", range(3))
def test_gradcheck_measures_the_bias_after_a_dropout_layer(tiny_config, seed):
    # With biases at 0, a sample whose 5 inputs to affine2 are all dropped (1 in
    # 32 at p = 0.5) sits on relu2's kink for every probe of affine2.b, and the
    # check measured none of it.
    result = invoke("gradcheck", tiny_config, "--samples", "32", "--set",
                    "model.hidden=[5, 4]", "--set", "model.drop_probability=0.5",
                    "--set", f"seed={seed}")

    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line.split()[1] for line in result.stdout.splitlines()
            if line.startswith("affine")}
    assert rows == {"affine1.W": "20/20", "affine1.b": "5/5", "affine2.W": "20/20",
                    "affine2.b": "4/4", "affine3.W": "12/12", "affine3.b": "3/3"}


def test_gradcheck_with_l2_passes(tiny_config):
    result = invoke("gradcheck", tiny_config, "--set", "model.l2=0.5")

    assert result.exit_code == 0, result.output
    assert "l2=0.5" in result.stdout.splitlines()[0]


@pytest.mark.parametrize("penalty", ["model.l2=300", "model.l1=100"])
def test_gradcheck_of_digits_with_a_strong_penalty_passes(penalty):
    # The biases carry no penalty: its rounding noise must not fail them.
    from pathlib import Path

    config = Path(__file__).resolve().parents[1] / "configs" / "digits.yaml"
    result = invoke("gradcheck", config, "--set", penalty)

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == "PASSED: all 4 arrays agree"


def test_gradcheck_with_l2_catches_a_doubled_penalty_gradient(monkeypatch,
                                                             tiny_config):
    from nntrain.nn.model import Model

    right = Model.forward_backward

    def doubled_l2_gradient(self, X, y):
        result = right(self, X, y)
        for penalty in self.penalties:
            result.grads[penalty.name] += penalty.l2 * self.params[penalty.name]
        return result

    monkeypatch.setattr(Model, "forward_backward", doubled_l2_gradient)

    result = invoke("gradcheck", tiny_config, "--set", "model.l2=300")

    assert result.exit_code == 1
    rows = {line.split()[0]: line.split()[-1]
            for line in result.stdout.splitlines()[2:6]}
    assert rows == {"affine1.W": "FAIL", "affine1.b": "ok", "affine2.W": "FAIL",
                    "affine2.b": "ok"}


def test_gradcheck_builds_the_model_for_the_width_pca_leaves(tiny_config):
    result = invoke("gradcheck", tiny_config, "--set",
                    "data.preprocess=[{pca: {components: 2}}]")

    assert result.exit_code == 0, result.output
    assert re.search(r"^affine1\.W +16/16 ", result.stdout, re.M)  # 2 x 8 units
    assert result.stdout.splitlines()[-1] == "PASSED: all 4 arrays agree"


def test_gradcheck_set_without_config_is_bad_input():
    result = invoke("gradcheck", "--set", "model.l2=0.5")

    assert_one_line_error(result, 2, r"--set needs a CONFIG")


def test_gradcheck_with_l1_skips_the_weights_within_the_step_of_zero(tiny_config):
    # Weights of std 1e-5 lie mostly within h = 1e-5 of 0, where |w| has a kink.
    result = invoke("gradcheck", tiny_config, "--set", "model.init=small", "--set",
                    "model.init_std=1e-5", "--set", "model.l1=0.001")

    assert result.exit_code == 0, result.output
    assert ", l2=0, l1=0.001, float64)" in result.stdout.splitlines()[0]
    assert re.search(r"^affine1\.W .* ok  \(\d+ probes crossed a kink and were"
                     r" skipped\)$", result.stdout, re.M)


def test_gradcheck_of_the_library_refuses_more_random_samples_than_it_draws():
    result = invoke("gradcheck", "--samples", "1000000000")

    assert_one_line_error(result, 2, "^" + re.escape(
        "error: --samples 1000000000: the library's check draws at most 10,000"
        " random samples; give fewer (a few already test every path)") + "$")


def test_gradcheck_title_shows_no_l1_when_none_is_set(tiny_config):
    result = invoke("gradcheck", tiny_config)

    assert result.exit_code == 0, result.output
    assert "l1=" not in result.stdout.splitlines()[0]


def test_gradcheck_title_gives_the_range_of_per_layer_l2(tiny_config):
    result = invoke("gradcheck", tiny_config, "--set", "model.hidden=null", "--set",
                    "model.layers=[{affine: {units: 8, l2: 0.5}}, {relu: {}},"
                    " {affine: {l1: 0.0001}}]")

    assert result.exit_code == 0, result.output
    assert ", l2=0 to 0.5, l1=0.0001, float64)" in result.stdout.splitlines()[0]


def test_gradcheck_layer_checks_only_that_layers_parameters(tiny_config):
    result = invoke("gradcheck", tiny_config, "--layer", "affine2")

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [line.split()[:2] for line in lines[2:4]] == [["affine2.W", "24/24"],
                                                          ["affine2.b", "3/3"]]
    assert lines[-1] == "PASSED: all 2 arrays agree"


@pytest.mark.parametrize("layer, message", [
    ("afine1", r"^error: --layer afine1: .*tiny\.yaml has no layer of that name \(its"
               r" layers with parameters: affine1, affine2; did you mean"
               r" 'affine1'\?\)$"),
    ("affine3", r"^error: --layer affine3: .*tiny\.yaml has no layer of that name"
                r" \(its layers with parameters: affine1, affine2; did you mean"
                r" 'affine2'\?\)$"),
    ("ReLU1", r"^error: --layer ReLU1: .*tiny\.yaml has no layer of that name \(its"
              r" layers with parameters: affine1, affine2\)$"),
    ("relu1", r"^error: --layer relu1 has no parameters to check; give one that"
              r" has: affine1, affine2$"),
    ("", r"^error: --layer is empty; give a layer name"),
])
def test_gradcheck_layer_not_in_the_config_exits_2(tiny_config, layer, message):
    result = invoke("gradcheck", tiny_config, "--layer", layer)

    assert_one_line_error(result, 2, message)


def test_gradcheck_without_config_checks_one_layer_type_on_the_given_samples():
    result = invoke("gradcheck", "--layer", "maxout", "--samples", "3")

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "gradient check: the library's maxout layer, on 3 random samples"
    # x: (3, 6); 3 pieces of 6 x 4 weights and of 4 biases.
    assert [line.split()[:2] for line in lines[2:5]] == [
        ["maxout.x", "18/18"], ["maxout.W", "72/72"], ["maxout.b", "12/12"]]


def test_gradcheck_without_config_honours_samples():
    result = invoke("gradcheck", "--samples", "3")

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0].endswith("on 3 random samples")
    assert re.search(r"^affine\.x +18/18 ", result.stdout, re.M)  # (3, 6)


def test_gradcheck_unknown_library_layer_exits_2_naming_the_types():
    result = invoke("gradcheck", "--layer", "relu1")

    assert_one_line_error(result, 2, r"^error: --layer relu1: the library has no"
                                     r" layer of that name \(its layers: affine,"
                                     r" maxout, relu, .*; did you mean 'relu'\?\)$")


@pytest.mark.parametrize("args", [
    ["--samples", "1"],
    ["--samples", "1", "--layer", "batchnorm"],
    ["CONFIG", "--samples", "1", "--set", "model.batchnorm=true"],
])
def test_gradcheck_of_batchnorm_on_one_sample_exits_2(tiny_config, args):
    args = [tiny_config if arg == "CONFIG" else arg for arg in args]

    result = invoke("gradcheck", *args)

    assert_one_line_error(result, 2, r"^error: batch norm needs at least 2 samples in"
                                     r" the gradient check, not 1; give --samples 2")


@pytest.mark.parametrize("validation, fix", [
    (1, "give its data more training samples"),
    (2, "give its data more training samples, or hold out fewer of its samples for"
        " validation (now 2)"),
])
@pytest.mark.parametrize("samples", ["5", "1"])
def test_gradcheck_of_batchnorm_on_a_one_sample_training_split_names_the_split(
        write_npz, write_config, validation, fix, samples):
    # 1 + validation training rows, validation of them held out: 1 is left, which
    # no --samples can make 2.
    rows = 1 + validation
    X = np.arange(rows * 2, dtype=np.float64).reshape(rows, 2)
    data = write_npz(X_train=X, y_train=np.arange(rows) % 2, X_test=X[:2],
                     y_test=np.array([0, 1]))
    config = write_config({"data": {"name": "npz", "path": str(data),
                                    "validation": validation},
                           "model": {"hidden": [4], "batchnorm": True},
                           "train": {"epochs": 1}})

    result = invoke("gradcheck", config, "--samples", samples)

    assert_one_line_error(result, 2, "^" + re.escape(
        "error: batch norm needs at least 2 samples in the gradient check, but the"
        f" training split of {config} holds only 1 (--samples asks for {samples});"
        f" {fix}") + "$")


def test_gradcheck_that_overflows_on_huge_data_exits_2_naming_the_scale(
        write_npz, write_config):
    # Scores of order 1e157 overflow float64 once squared: the check could only
    # report noise, as a false "FAILED", with NumPy's overflow warnings.
    arrays = tiny_arrays()
    for split in ("X_train", "X_test"):
        arrays[split] = arrays[split] * 1e155
        arrays[split][:, 3] = 3e157  # the largest absolute value, in every row
    raw = tiny_config_dict(write_npz(**arrays))
    raw["data"]["preprocess"] = []
    config = write_config(raw)

    result = invoke("gradcheck", config, "--set", "train.dtype=float64")

    assert_one_line_error(result, 2, "^" + re.escape(
        f"error: the gradient check overflows float64 on {config}, so it measures"
        " no gradient: its data reaches 3e+157; divide the data by a power of ten"
        " such as 1e158") + "$")
    assert "FAILED" not in result.stdout


def test_gradcheck_that_overflows_on_small_data_blames_the_weights(tiny_config):
    result = invoke("gradcheck", tiny_config, "--set", "model.init=small",
                    "--set", "model.init_std=1e160")

    assert_one_line_error(result, 2, r"overflows float64 on .*so the network's"
                          r" starting weights are too large: check model\.init_std$")


@pytest.mark.parametrize("kind, strength", [("l2", "1e+300"), ("l1", "1e+308")])
def test_gradcheck_that_overflows_with_a_huge_penalty_names_it(tiny_config, kind,
                                                               strength):
    result = invoke("gradcheck", tiny_config, "--set", f"model.{kind}={strength}")

    assert_one_line_error(result, 2, re.escape(
        f"overflows float64 on {tiny_config}, so it measures no gradient: {kind} ="
        f" {strength} is far stronger than any useful penalty (useful ones are"
        f" below 1): lower model.{kind} (or the layer's {kind})") + "$")


def test_gradcheck_of_one_sample_without_batchnorm_runs(tiny_config):
    assert invoke("gradcheck", "--samples", "1", "--layer", "relu").exit_code == 0
    assert invoke("gradcheck", tiny_config, "--samples", "1").exit_code == 0


def test_gradcheck_that_measured_nothing_exits_1(monkeypatch):
    from nntrain import gradcheck

    unmeasured = gradcheck.ParamCheck("relu.x", 6, 0, 0.0, 0.0, (), kinks=6)
    monkeypatch.setattr(gradcheck, "check_library", lambda *args: [unmeasured])

    result = invoke("gradcheck")

    assert_one_line_error(result, 1, r"^error: the gradient check measured nothing")
    assert result.stdout.splitlines()[-1] == "NOT CHECKED: no array was measured"


@pytest.mark.parametrize("command, example", [("gradcheck", "model.l2=0.01"),
                                              ("sanity", "optimizer.lr=0.01")])
def test_set_help_of_checks_shows_an_override_that_matters_there(command, example):
    result = invoke(command, "--help")

    assert result.exit_code == 0, result.output
    help_text = " ".join(result.stdout.split())
    assert f"e.g. {example}." in help_text
    assert "train.epochs" not in help_text


def test_gradcheck_of_a_bad_config_exits_2(write_config):
    result = invoke("gradcheck", write_config("train: {epochs: 0}"))

    assert_one_line_error(result, 2, r"invalid train\.epochs: 0")




def rewritten_params(source, path, change):
    """Save ``source`` as ``path`` with every parameter array replaced by
    ``change(array)``; everything else is kept."""
    from nntrain.checkpoint import save_checkpoint

    arrays, meta = read_checkpoint(source)
    for key in ("checksums", "format", "nntrain_version"):
        meta.pop(key)
    groups = {}
    for key, value in arrays.items():
        prefix, _, name = key.partition("/")
        groups.setdefault(prefix, {})[name] = (
            change(value) if prefix == "param" else value)
    save_checkpoint(path, meta, groups)
    return path


@pytest.fixture
def zero_weights_checkpoint(trained, tmp_path):
    """best.npz with every parameter set to 0: all class scores tie at 0."""
    _, _, run_dir, _ = trained
    return rewritten_params(run_dir / "checkpoints" / "best.npz",
                            tmp_path / "zero.npz", np.zeros_like)


def strict_json(text):
    """json.loads, refusing NaN and Infinity as JSON itself does."""
    def refuse(name):
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_eval_refuses_weights_whose_scores_overflow(trained, tmp_path):
    _, _, run_dir, _ = trained
    # Weights of 1e30 are finite, but the class scores overflow (the loss was NaN,
    # and predictions class 0): no scaling of the samples helps, the file is bad.
    huge = rewritten_params(run_dir / "checkpoints" / "best.npz",
                            tmp_path / "huge.npz", lambda W: np.full_like(W, 1e30))

    result = invoke("eval", huge, "--json")

    assert_one_line_error(result, 2, re.escape(
        f"{huge}: its weights give NaN or infinite class scores for samples of the"
        " test split even scaled into [-1, 1]; the file is damaged or was edited:"
        " use another checkpoint"))
    assert result.stdout == ""


def test_eval_json_writes_null_for_a_non_finite_value():
    from nntrain.evaluate import json_text

    assert strict_json(json_text({"loss": float("nan"), "accuracy": [float("inf"),
                                                                     0.5]})) == {
        "loss": None, "accuracy": [None, 0.5]}


def test_eval_of_tied_scores_predicts_the_lowest_class(zero_weights_checkpoint):
    result = invoke("eval", zero_weights_checkpoint, "--json")

    assert result.exit_code == 0, result.output
    measured = json.loads(result.stdout)
    # y_test is 0, 1, 2, 0, 1, 2, ...: five of each; every prediction is class 0.
    assert measured["accuracy"] == pytest.approx(5 / 15, abs=1e-15)
    assert measured["loss"] == pytest.approx(np.log(3), rel=1e-6)
    assert measured["confusion_matrix"] == [[5, 0, 0], [5, 0, 0], [5, 0, 0]]
    assert measured["per_class_accuracy"] == [1.0, 0.0, 0.0]


def test_predict_of_tied_scores_gives_uniform_probabilities(zero_weights_checkpoint,
                                                            tmp_path):
    samples = tmp_path / "samples.npy"
    np.save(samples, tiny_arrays()["X_test"][:4])

    result = invoke("predict", zero_weights_checkpoint, samples)

    assert result.exit_code == 0, result.output
    rows = list(csv.reader(io.StringIO(result.stdout)))[1:]
    assert [row[1] for row in rows] == ["0"] * 4
    assert all(row[3:] == ["0.333333"] * 3 for row in rows)


def test_predict_and_eval_name_the_class_of_the_highest_score_however_close(
        trained, tmp_path):
    # Scores 0, 1e-20 and 2e-20: distinct in float32, but their softmax rounds to
    # three equal probabilities, whose argmax would be the lowest class.
    _, _, run_dir, _ = trained

    def nearly_tied(groups, meta):
        for name, value in groups["param"].items():
            groups["param"][name] = np.zeros_like(value)
        groups["param"]["affine2.b"] = np.array([0, 1e-20, 2e-20], np.float32)

    checkpoint = forged(run_dir / "checkpoints" / "best.npz", tmp_path / "near.npz",
                        nearly_tied)
    samples = tmp_path / "samples.npy"
    np.save(samples, tiny_arrays()["X_test"][:4])

    predicted = invoke("predict", checkpoint, samples)
    measured = invoke("eval", checkpoint, "--json")

    assert predicted.exit_code == 0, predicted.output
    rows = list(csv.reader(io.StringIO(predicted.stdout)))[1:]
    assert [row[1] for row in rows] == ["2"] * 4
    assert measured.exit_code == 0, measured.output
    assert json.loads(measured.stdout)["confusion_matrix"] == [[0, 0, 5]] * 3


def forged(source, path, change):
    """Save ``source`` as ``path`` after ``change(groups, meta)``, where groups is
    {prefix: {name: array}}; the checksums are computed afresh, so the file is
    well formed and only its content is wrong."""
    from nntrain.checkpoint import save_checkpoint

    arrays, meta = read_checkpoint(source)
    groups = {}
    for key, value in arrays.items():
        prefix, _, name = key.partition("/")
        groups.setdefault(prefix, {})[name] = value
    change(groups, meta)
    save_checkpoint(path, meta, groups)
    return path


def _set_prep(name, value):
    return lambda groups, meta: groups["prep"].__setitem__(name, value)


@pytest.mark.parametrize("change, message", [
    (_set_prep("scale.factor", np.full(4, np.nan)),
     r"prep/scale\.factor holds NaN or infinite values"),
    (_set_prep("center.mean", np.array([0.0, np.inf, 0.0, 0.0])),
     r"prep/center\.mean holds NaN or infinite values"),
    (_set_prep("pca.components", np.zeros((4, 2))),
     r"holds prep/pca\.components, which no step of its data\.preprocess"
     r" \(center, scale\) keeps"),
    (_set_prep("center.mean", np.array([3, 0, 0, 50])),
     r"prep/center\.mean is int64, but preprocessing statistics are float64"),
])
@pytest.mark.parametrize("command", ["eval", "predict", "ensemble"])
def test_a_forged_preprocessing_state_is_refused_with_exit_2(trained, tmp_path,
                                                             change, message,
                                                             command):
    _, _, run_dir, _ = trained
    best = run_dir / "checkpoints" / "best.npz"
    path = forged(best, tmp_path / "forged.npz", change)
    samples = tmp_path / "samples.npy"
    np.save(samples, tiny_arrays()["X_test"][:2])
    arguments = {"eval": [path], "predict": [path, samples],
                 "ensemble": [best, path]}[command]

    result = invoke(command, *arguments)

    assert_one_line_error(result, 2, r"forged\.npz:? " + message)


@pytest.mark.parametrize("change, message", [
    (_set_prep("whiten.basis", np.zeros((4, 2))),
     "prep/whiten.basis has shape (4, 2), which does not fit its mean and scale:"
     " expected (4, 3)"),
    (_set_prep("whiten.scale", np.zeros(0)), "prep/whiten.scale is empty"),
])
def test_a_forged_whitening_state_names_the_checkpoint_and_the_array(
        tmp_path, write_config, tiny_npz, change, message):
    config = write_config(tiny_config_dict(tiny_npz))
    run = tmp_path / "run"
    assert invoke("fit", config, "--out", run, "--quiet", "--set",
                  "data.preprocess=[{whiten: {components: 3}}]").exit_code == 0
    path = forged(run / "checkpoints" / "best.npz", tmp_path / "forged.npz", change)

    result = invoke("eval", path)

    assert_one_line_error(result, 2, "^" + re.escape(
        f"error: {path}: {message}; the file is damaged or was edited: use another"
        " checkpoint") + "$")


def test_a_config_edited_to_a_huge_network_is_refused_before_building_it(
        trained, tmp_path):
    _, _, run_dir, _ = trained

    def widen(groups, meta):
        meta["config"]["model"]["hidden"] = [100_000, 100_000]

    path = forged(run_dir / "checkpoints" / "best.npz", tmp_path / "wide.npz",
                  widen)
    result = invoke("eval", path)

    # 100000 x 100000 float64 would be 74.5 GiB: refused from the shapes alone.
    assert_one_line_error(result, 2, re.escape(
        "param/affine1.W is float32 (4, 8), the model its config describes needs"
        " float32 (4, 100000)"))


def test_restore_draws_no_random_weights_it_would_overwrite(trained, monkeypatch):
    import nntrain.nn.layers
    from nntrain.restore import restore

    _, _, run_dir, _ = trained
    generators = []
    real = nntrain.nn.layers.init_weights

    def recording(scheme, fan_in, fan_out, rng, *args):
        generators.append(rng)
        return real(scheme, fan_in, fan_out, rng, *args)

    monkeypatch.setattr(nntrain.nn.layers, "init_weights", recording)
    restored = restore(run_dir / "checkpoints" / "best.npz")

    assert generators == [None, None]  # affine1 and affine2, no generator
    arrays, _ = read_checkpoint(run_dir / "checkpoints" / "best.npz")
    np.testing.assert_array_equal(restored.model.params["affine2.W"],
                                  arrays["param/affine2.W"])


def test_fit_refuses_features_that_centering_overflows(tmp_path, write_npz,
                                                       write_config):
    arrays = tiny_arrays()
    # Feature 2 is 3e38 twice and -3e38 once, repeated: its mean is 1e38, and
    # -3e38 - 1e38 is past float32's largest value, 3.4e38. Stored as float32,
    # the features are centred in float32 (float64 ones would be in float64).
    for split in ("X_train", "X_test"):
        rows = len(arrays[split])
        arrays[split][:, 2] = np.where(np.arange(rows) % 3 == 2, -3e38, 3e38)
        arrays[split] = arrays[split].astype(np.float32)
    config = write_config(tiny_config_dict(write_npz("huge.npz", **arrays)))

    result = invoke("fit", config, "--out", tmp_path / "run")

    assert_one_line_error(result, 2, re.escape(
        "preprocessing step center made feature 2 (counted from 0) of the training"
        " split NaN or infinite") + ".*scale the data down")




def test_gradcheck_exits_1_when_one_gradient_is_wrong(monkeypatch):
    from nntrain.nn import functional

    right = functional.affine_backward

    def zero_bias_gradient(dout, x, W, need_dx=True, dW=None, db=None):
        dx, dW, db = right(dout, x, W, need_dx, dW=dW)
        return dx, dW, np.zeros_like(db)

    monkeypatch.setattr(functional, "affine_backward", zero_bias_gradient)

    result = invoke("gradcheck")

    assert result.exit_code == 1
    assert result.stderr == "error: the gradient check failed (see the table above)\n"
    failed = [line.split()[0] for line in result.stdout.splitlines()
              if line.split()[-1:] == ["FAIL"]]
    assert "affine.b" in failed
    assert "affine.W" not in failed and "affine.x" not in failed
    assert result.stdout.splitlines()[-1].startswith("FAILED: ")


def test_gradcheck_of_a_config_exits_1_when_a_weight_gradient_is_wrong(monkeypatch,
                                                                       tiny_config):
    from nntrain.nn import functional

    right = functional.affine_backward

    def scaled_weight_gradient(dout, x, W, need_dx=True, dW=None, db=None):
        dx, dW, db = right(dout, x, W, need_dx, db=db)
        return dx, 1.01 * dW, db

    monkeypatch.setattr(functional, "affine_backward", scaled_weight_gradient)

    result = invoke("gradcheck", tiny_config)

    assert result.exit_code == 1
    table = result.stdout.splitlines()[2:6]
    rows = {line.split()[0]: line.split()[-1] for line in table}
    assert rows == {"affine1.W": "FAIL", "affine1.b": "ok", "affine2.W": "FAIL",
                    "affine2.b": "ok"}




def test_fit_and_eval_on_bundled_digits(tmp_path):
    from pathlib import Path

    config = Path(__file__).resolve().parents[1] / "configs" / "digits.yaml"
    out = tmp_path / "digits"

    fitted = invoke("fit", config, "--out", out, "--quiet", "--set", "train.epochs=1",
                    "--set", "model.hidden=[8]", "--set", "train.dtype=float64")
    result = invoke("eval", out / "checkpoints" / "best.npz", "--json")

    assert fitted.exit_code == 0, fitted.output
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["samples"] == 360
    arrays, meta = read_checkpoint(out / "checkpoints" / "best.npz")
    assert arrays["param/affine1.W"].shape == (64, 8)
    assert arrays["param/affine1.W"].dtype == np.float64
    assert meta["data"]["sizes"] == {"train": 1293, "val": 144, "test": 360}


def test_fit_accepts_an_existing_empty_run_directory(tmp_path, tiny_config):
    out = tmp_path / "empty"
    out.mkdir()

    result = invoke("fit", tiny_config, "--out", out, "--quiet")

    assert result.exit_code == 0, result.output
    assert (out / "checkpoints" / "last.npz").is_file()


@pytest.mark.parametrize("overrides", [
    ["data.preprocess=[center, {pca: {components: 2}}]"],
    ["data.preprocess=[{whiten: {components: 3, epsilon: 0.01}}]"],
    ["model.batchnorm=true", "model.drop_probability=0.3"],
    ["model.activation=maxout", "model.loss=svm", "model.layernorm=true"],
])
def test_eval_reproduces_the_logged_validation_accuracy(tmp_path, write_config,
                                                          tiny_npz, overrides):
    config = write_config(tiny_config_dict(tiny_npz))
    run = tmp_path / "run"
    sets = [arg for item in overrides for arg in ("--set", item)]
    assert invoke("fit", config, "--out", run, "--quiet", *sets).exit_code == 0

    records = [r for r in read_metrics(run) if r["kind"] == "epoch"]
    best = max(r["val_accuracy"] for r in records)
    result = invoke("eval", run / "checkpoints" / "best.npz", "--split", "val",
                    "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["accuracy"] == best


def test_running_out_of_memory_is_a_one_line_error(monkeypatch, tmp_path,
                                                   write_config, tiny_npz):
    from nntrain import pipeline

    def too_large(*args, **kwargs):
        raise MemoryError("Unable to allocate 7.28 TiB for an array with shape"
                          " (1000000, 1000000) and data type float64")

    monkeypatch.setattr(pipeline, "build_model", too_large)
    config = write_config(tiny_config_dict(tiny_npz))

    result = invoke("fit", config, "--out", tmp_path / "run", "--quiet")

    assert_one_line_error(result, 1, r"^error: out of memory \(Unable to allocate"
                          r" 7\.28 TiB .*\); use a smaller network")


@pytest.mark.parametrize("text, where, fix", [
    ("train:\n\tepochs: 1\n", "line 2, column 1",
     "indent with spaces (YAML refuses tabs)"),
    ("train:\n  \tepochs: 1\n", "line 2, column 3",
     "indent with spaces (YAML refuses tabs)"),
    ("name:\tdigits\n", "line 1, column 6",
     "a tab is not allowed there (after a colon or inside a line): use spaces"),
    ("model:\n  hidden: [8,\t8]\n", "line 2, column 14",
     "a tab is not allowed there (after a colon or inside a line): use spaces"),
], ids=["indent", "after-spaces", "after-colon", "inside-list"])
def test_a_tab_in_the_yaml_is_named_with_its_fix(tmp_path, text, where, fix):
    config = tmp_path / "tabs.yaml"
    config.write_text(text)

    result = invoke("fit", config, "--print-config")

    assert_one_line_error(result, 2, "^" + re.escape(
        f"error: {config}: found character '\\t' that cannot start any token at"
        f" {where}; {fix}") + "$")


def test_sanity_of_a_diverging_run_says_the_loss_became_nan(tiny_config):
    result = invoke("sanity", tiny_config, "--set", "optimizer.lr=1e30",
                    "--max-iterations", "50")

    # One line: NumPy's overflow warnings are not shown.
    assert_one_line_error(result, 1, r"^error: the loss became (nan|inf) after \d+"
                                     r" updates? on \d+ samples?: lower optimizer\.lr")


@pytest.mark.parametrize("sets", [[], ["model.batchnorm=true"],
                                  ["optimizer={name: lbfgs}"], ["model.loss=svm"]])
def test_sanity_on_a_one_sample_training_split_exits_2(write_npz, write_config,
                                                       sets):
    # 3 rows, 2 held out: one training sample, which the biases alone fit.
    X = np.arange(6, dtype=np.float64).reshape(3, 2)
    data = write_npz(X_train=X, y_train=np.array([0, 1, 0]), X_test=X[:2],
                     y_test=np.array([0, 1]))
    config = write_config({"data": {"name": "npz", "path": str(data),
                                    "validation": 2},
                           "model": {"hidden": [4]}, "train": {"epochs": 1}})

    result = invoke("sanity", config, *[arg for text in sets
                                        for arg in ("--set", text)])

    assert_one_line_error(result, 2, "^" + re.escape(
        "error: the sanity check needs at least 2 training samples, but the training"
        f" split of {config} holds only 1 (one is fitted by the biases alone); give"
        " its data more training samples, or hold out fewer of its samples for"
        " validation (now 2)") + "$")


def test_sanity_on_samples_of_one_class_exits_2(write_npz, write_config):
    # Sorted by class: whichever row is held out, the first 3 training samples are
    # all of class 0.
    X = np.arange(16, dtype=np.float64).reshape(8, 2)
    data = write_npz(X_train=X, y_train=np.repeat([0, 1], 4), X_test=X[:2],
                     y_test=np.array([0, 1]), class_names=np.array(["cat", "dog"]))
    config = write_config({"data": {"name": "npz", "path": str(data),
                                    "validation": 1},
                           "model": {"hidden": [4]}, "train": {"epochs": 1}})

    result = invoke("sanity", config, "--samples", "3")

    assert_one_line_error(result, 2, "^" + re.escape(
        f"error: the 3 sanity samples (the first of the training split of {config})"
        " are all of class cat, which the biases alone fit; give --samples more (the"
        " split holds 7), or shuffle the data's training samples") + "$")


def test_sanity_on_a_one_class_training_split_asks_for_other_samples(
        write_npz, write_config):
    # 4 rows of classes 0, 1, 0, 1, of which seed 1 holds out the two of class 0:
    # the 2 training samples left (50 asked for) are both of class 1, and no
    # --samples can add another class.
    X = np.arange(8, dtype=np.float64).reshape(4, 2)
    data = write_npz(X_train=X, y_train=np.array([0, 1, 0, 1]), X_test=X[:2],
                     y_test=np.array([0, 1]))
    config = write_config({"seed": 1, "data": {"name": "npz", "path": str(data),
                                               "validation": 2},
                           "model": {"hidden": [4]}, "train": {"epochs": 1}})

    result = invoke("sanity", config)

    assert result.exit_code == 2, result.output
    assert "give --samples more" not in result.stderr
    assert "the split holds no other; give its data more training samples" in (
        result.stderr)


@pytest.mark.parametrize("command, shown", [
    ("sanity", "sanity check: {} training samples,"),
    ("gradcheck", "{} samples"),
])
def test_a_check_notes_that_the_split_holds_fewer_samples_than_asked(
        tiny_config, command, shown):
    result = invoke(command, tiny_config, "--samples", "5000")

    assert result.exit_code == 0, result.output
    assert result.stderr == (
        f"note: --samples 5000 asks for more than the training split of {tiny_config}"
        f" holds; the check uses all {TINY_TRAIN - TINY_VALIDATION}\n")
    assert shown.format(TINY_TRAIN - TINY_VALIDATION) in result.stdout


@pytest.mark.parametrize("samples", ["1", "0", "-3"])
def test_sanity_of_fewer_than_two_samples_says_to_give_more(tiny_config, samples):
    result = invoke("sanity", tiny_config, "--samples", samples)

    why = " (one is fitted by the biases alone)" if samples == "1" else ""
    assert_one_line_error(result, 2, "^" + re.escape(
        f"error: the sanity check needs at least 2 training samples, not {samples}"
        f"{why}; give --samples 2 or more") + "$")


@pytest.mark.parametrize("threads, warned", [(1, False), (1024, True)])
def test_more_threads_than_cores_is_a_warning_naming_the_cores(
        tmp_path, tiny_npz, write_config, monkeypatch, threads, warned):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1}, raising=False)
    raw = tiny_config_dict(tiny_npz)
    raw["train"].update(epochs=1, plots=False, threads=threads)

    result = invoke("fit", write_config(raw), "--out", tmp_path / "run")

    assert result.exit_code == 0, result.output
    warning = ("warning: train.threads is 1024, but this process may use only 2"
               " cores; extra BLAS threads slow training down: set train.threads to"
               " 2 or null")
    assert (warning in result.output) == warned


def test_a_second_run_on_a_folder_in_use_is_refused(tmp_path, tiny_config):
    from nntrain.train.rundir import RunDirectory

    out = tmp_path / "run"
    holder = RunDirectory(out)  # as a run in progress holds it
    try:
        result = invoke("fit", tiny_config, "--out", out, "--quiet", "--force")
    finally:
        holder.close()

    assert_one_line_error(result, 2, rf"^error: another nntrain process is writing"
                                     rf" to {re.escape(str(out))}; wait for it")
    assert invoke("fit", tiny_config, "--out", out, "--quiet",
                  "--force").exit_code == 0


@pytest.mark.parametrize("target, role", [
    ("checkpoint", "is the CHECKPOINT file"), ("input", "is the INPUT file"),
    ("other checkpoint", "is an nntrain checkpoint"),
    ("training data", "is the data file this checkpoint was trained on"),
])
def test_predict_never_writes_over_what_it_reads_or_a_checkpoint(trained, tmp_path,
                                                                 target, role):
    folder, _, run_dir, _ = trained
    best = run_dir / "checkpoints" / "best.npz"
    samples = tmp_path / "samples.npz"
    np.savez(samples, X=tiny_arrays()["X_test"][:3])
    other = tmp_path / "other.npz"
    shutil.copy(run_dir / "checkpoints" / "last.npz", other)
    out = {"checkpoint": best, "input": samples, "other checkpoint": other,
           "training data": folder / "tiny.npz"}[target]
    before = out.read_bytes()

    result = invoke("predict", best, samples, "--out", out)

    assert_one_line_error(result, 2, rf"^error: --out {re.escape(str(out))} {role},"
                                     r" which the predictions would replace")
    assert out.read_bytes() == before


def test_predict_refuses_to_replace_a_read_only_file(trained, tmp_path):
    _, _, run_dir, _ = trained
    samples = tmp_path / "samples.npz"
    np.savez(samples, X=tiny_arrays()["X_test"][:3])
    out = tmp_path / "kept.csv"
    out.write_text("mine")
    out.chmod(0o444)

    result = invoke("predict", run_dir / "checkpoints" / "best.npz", samples,
                    "--out", out)

    assert_one_line_error(result, 2, "^" + re.escape(
        f"error: --out {out} is a read-only file; give another file, or make it"
        " writable (chmod u+w) to replace it") + "$")
    assert out.read_text() == "mine"


def test_predict_npz_holds_classes_and_probabilities(trained, tmp_path):
    _, _, run_dir, _ = trained
    samples = tmp_path / "samples.npz"
    np.savez(samples, X=tiny_arrays()["X_test"][:3])
    out = tmp_path / "PRED.NPZ"

    result = invoke("predict", run_dir / "checkpoints" / "best.npz", samples,
                    "--out", out)

    assert result.exit_code == 0, result.output
    assert result.stderr == f"wrote 3 predictions to {out}\n"
    saved = np.load(out)
    assert saved["classes"].shape == (3,) and saved["probabilities"].shape == (3, 3)
    np.testing.assert_allclose(saved["probabilities"].sum(axis=1), 1.0, rtol=1e-12)


@pytest.mark.parametrize("count, noun, text", [
    (0, "sample", "0 samples"), (1, "sample", "1 sample"), (2, "update", "2 updates"),
])
def test_counts_take_the_number_of_their_noun(count, noun, text):
    from nntrain.train.report import counted

    assert counted(count, noun) == text


def test_predict_replaces_a_symbolic_link_at_out_instead_of_writing_through_it(
        trained, tmp_path):
    _, _, run_dir, _ = trained
    samples = tmp_path / "samples.npz"
    np.savez(samples, X=tiny_arrays()["X_test"][:3])
    victim = tmp_path / "metrics.jsonl"
    victim.write_text('{"kind": "epoch"}\n')
    out = tmp_path / "pred.csv"
    out.symlink_to(victim)

    result = invoke("predict", run_dir / "checkpoints" / "best.npz", samples,
                    "--out", out)

    assert result.exit_code == 0, result.output
    assert victim.read_text() == '{"kind": "epoch"}\n'
    assert not out.is_symlink() and len(out.read_text().splitlines()) == 4


def test_a_ctrl_c_while_the_command_loads_is_one_line_and_exit_130():
    # A finder that raises where a Ctrl-C during the import of the commands would.
    code = ("import sys\n"
            "class Interrupting:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'nntrain.cli':\n"
            "            raise KeyboardInterrupt\n"
            "sys.meta_path.insert(0, Interrupting())\n"
            "from nntrain.__main__ import main\n"
            "main()\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True,
                            text=True, timeout=120)

    assert result.returncode == 130
    assert result.stderr == ("stopped by SIGINT before the command started: nothing"
                             " was written\n")


def test_plot_with_other_data_draws_nothing(trained, tmp_path):
    pytest.importorskip("matplotlib")
    _, _, run_dir, _ = trained
    arrays = tiny_arrays(seed=1)  # same shapes, other samples
    other = tmp_path / "other.npz"
    np.savez(other, **arrays)
    out = tmp_path / "plots"

    result = invoke("plot", run_dir, "--data", other, "--out", out)

    assert result.exit_code == 2
    assert "is not the data the checkpoint was trained on" in result.stderr
    assert not out.exists() or not list(out.glob("*.png"))


@pytest.mark.parametrize("given", ["run", "run/checkpoints", "run/checkpoints/"])
def test_eval_of_a_run_folder_names_its_best_checkpoint(trained, given):
    folder, _, run_dir, _ = trained

    result = invoke("eval", f"{folder}/{given}")

    assert_one_line_error(result, 2, "^" + re.escape(
        f"error: {Path(folder, given)} is a folder, not a checkpoint; give one of"
        f" its checkpoints, such as {run_dir / 'checkpoints' / 'best.npz'}") + "$")


@pytest.mark.parametrize("command", ["predict", "ensemble"])
def test_predict_and_ensemble_of_a_run_folder_name_its_best_checkpoint(trained,
                                                                        command):
    # As eval does, rather than click's "File ... is a directory".
    folder, _, run_dir, _ = trained
    best = run_dir / "checkpoints" / "best.npz"
    args = [run_dir, folder / "tiny.npz"] if command == "predict" else [best,
                                                                         run_dir]
    result = invoke(command, *args)

    assert_one_line_error(result, 2, "^" + re.escape(
        f"error: {run_dir} is a folder, not a checkpoint; give one of its"
        f" checkpoints, such as {best}") + "$")


def test_eval_of_a_folder_of_runs_names_a_runs_checkpoint(trained):
    folder, _, run_dir, _ = trained  # it holds tiny.npz, data, not a checkpoint

    result = invoke("eval", folder)

    assert_one_line_error(result, 2, "^" + re.escape(
        f"error: {folder} is a folder, not a checkpoint; give a run's checkpoint,"
        f" such as {run_dir / 'checkpoints' / 'best.npz'}") + "$")


def test_eval_of_a_run_folder_holding_only_last_npz_names_it(trained, tmp_path):
    _, _, run_dir, _ = trained
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(run_dir / "checkpoints" / "last.npz", run / "checkpoints")

    from_run = invoke("eval", run)
    from_best = invoke("eval", run / "checkpoints" / "best.npz")

    assert_one_line_error(from_run, 2, "^" + re.escape(
        f"error: {run} is a folder, not a checkpoint; give one of its checkpoints,"
        f" such as {run / 'checkpoints' / 'last.npz'}") + "$")
    assert_one_line_error(from_best, 2, "^" + re.escape(
        f"error: checkpoint not found: {run / 'checkpoints' / 'best.npz'};"
        f" {run / 'checkpoints' / 'last.npz'} is there: give that one, or check"
        " the path") + "$")


@pytest.mark.parametrize("best", ["users-npz", "damaged"])
def test_eval_of_a_run_folder_names_no_best_npz_that_is_not_a_checkpoint(
        trained, tmp_path, best):
    _, _, run_dir, _ = trained
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(run_dir / "checkpoints" / "last.npz", run / "checkpoints")
    if best == "users-npz":
        np.savez(run / "checkpoints" / "best.npz", x=np.arange(3))
    else:
        (run / "checkpoints" / "best.npz").write_bytes(
            (run_dir / "checkpoints" / "best.npz").read_bytes()[:300])

    result = invoke("eval", run)

    assert_one_line_error(result, 2, "^" + re.escape(
        f"error: {run} is a folder, not a checkpoint; give one of its checkpoints,"
        f" such as {run / 'checkpoints' / 'last.npz'}") + "$")


def test_eval_of_a_folder_without_checkpoints_says_it_holds_none(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)

    result = invoke("eval", run)

    assert_one_line_error(result, 2, "^" + re.escape(
        f"error: {run} is a folder, not a checkpoint; it holds no checkpoint: give"
        f" a checkpoint (.npz), such as {Path('runs/NAME/checkpoints/best.npz')}")
        + "$")


@pytest.mark.parametrize("command", ["eval", "predict", "ensemble", "fit"])
@pytest.mark.parametrize("text", ["seed: 0\ntrain: {epochs: 2}\n",
                                  '{"kind": "iter", "iteration": 1}\n'])
def test_a_text_file_given_as_a_checkpoint_is_named_as_text(
        tmp_path, tiny_config, command, text):
    given = tmp_path / "given.txt"
    given.write_text(text)
    samples = tmp_path / "x.npy"
    np.save(samples, np.zeros((2, 4)))
    args = {"eval": [given], "predict": [given, samples], "ensemble": [given],
            "fit": [tiny_config, "--resume", given]}[command]

    result = invoke(command, *args)

    assert_one_line_error(result, 2, "^" + re.escape(
        f"error: {given} is a text file (a config or a log?), not a checkpoint;"
        " give a checkpoint (.npz), such as"
        f" {Path('runs/NAME/checkpoints/best.npz')}") + "$")


@pytest.mark.parametrize("content, kind", [
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "a PNG image"),
    (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", "a JPEG image"),
    (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", "a PDF document"),
    (b"\x1f\x8b\x08\x00\x00\x00\x00\x00", "a gzip file"),
    (b"", "an empty file"),
    (bytes(range(256)), "a file of another kind (an .npz starts with the bytes PK)"),
], ids=["png", "jpeg", "pdf", "gzip", "empty", "other"])
def test_a_file_of_another_kind_given_as_a_checkpoint_is_named_for_what_it_is(
        tmp_path, content, kind):
    given = tmp_path / "loss.png"
    given.write_bytes(content)

    result = invoke("eval", given)

    assert_one_line_error(result, 2, "^" + re.escape(
        f"error: {given} is {kind}, not a checkpoint; give a checkpoint (.npz), such"
        f" as {Path('runs/NAME/checkpoints/best.npz')}") + "$")


def test_a_single_array_given_as_a_checkpoint_says_what_to_give(tmp_path):
    given = tmp_path / "some.npy"
    np.save(given, np.zeros((2, 4)))

    result = invoke("eval", given)

    assert_one_line_error(result, 2, "^" + re.escape(
        f"error: {given} is a single array (.npy), not a checkpoint; give a"
        f" checkpoint (.npz), such as {Path('runs/NAME/checkpoints/best.npz')}")
        + "$")
# A name of 256 bytes: pathlib's exists() raises ENAMETOOLONG rather than saying
# False, wherever a command first checks its paths.
LONG_NAME = "a" * 256


@pytest.mark.parametrize("args", [
    ["fit", LONG_NAME],
    ["eval", f"{LONG_NAME}/best.npz"],
    ["predict", LONG_NAME, "x.npz"],
    ["plot", LONG_NAME],
    ["gradcheck", LONG_NAME],
    ["sanity", LONG_NAME],
    ["search", LONG_NAME],
    ["ensemble", LONG_NAME],
], ids=lambda args: " ".join(args[:1] + [a for a in args[1:] if a != LONG_NAME
                                         and "/" not in a]))
def test_a_path_too_long_for_the_system_is_bad_input(tmp_path, tiny_config,
                                                      monkeypatch, args):
    monkeypatch.chdir(tmp_path)
    args = [str(tiny_config) if arg == "CONFIG" else arg for arg in args]

    result = invoke(*args)

    assert result.exit_code == 2, result.output
    [line] = result.stderr.splitlines()
    assert line.startswith("error: a path is too long for this system (2"), line
    assert line.endswith("; Linux allows 255 bytes for a name in a path and 4,096"
                         " for the whole: choose a shorter one"), line
    assert sorted(path.name for path in tmp_path.iterdir()) == ["tiny.npz",
                                                                 "tiny.yaml"]


@pytest.mark.parametrize("code", [errno.EACCES, errno.EPERM])
def test_a_path_behind_a_folder_that_cannot_be_entered_is_bad_input(
        monkeypatch, tmp_path, code):
    # As pathlib's exists() raises it for a file in a folder of mode 000 (tests
    # run as root here, whom permissions do not stop, so the error is raised).
    raise_from_download(monkeypatch, PermissionError(code, "Permission denied",
                                                     "locked/best.npz"))

    result = invoke("data", "download", "mnist", "--dir", tmp_path)

    assert_one_line_error(result, 2, "^" + re.escape(
        "error: permission denied for 'locked/best.npz': check the permissions of"
        " the file and of each folder above it (a folder must allow entering, x,"
        " for its files to be reached)") + "$")


def test_a_data_path_whose_links_form_a_loop_is_bad_input(tmp_path, tiny_config,
                                                          monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "loop.npz").symlink_to("loop.npz")

    result = invoke("fit", tiny_config, "--set", "data.path=loop.npz", "--out", "run")

    assert_one_line_error(result, 2, "^" + re.escape(
        "error: data.path loop.npz: its symbolic links form a loop; fix them, or"
        " give the data's own path") + "$")
    assert not (tmp_path / "run").exists()


def test_other_os_errors_are_still_reported_as_bugs(monkeypatch, tmp_path):
    raise_from_download(monkeypatch, OSError(5, "Input/output error", "x"))

    result = invoke("data", "download", "mnist", "--dir", tmp_path)

    assert result.exit_code == 1
    assert result.stderr.startswith("internal error: OSError: [Errno 5]")


def deep_path(root, length: int):
    """A path under ``root`` of ``length`` bytes, of names within the 255 allowed."""
    text = str(root)
    while len(text) < length:
        room = length - len(text) - 1
        # A byte short: the last name grows by one, as a name of none would be
        # a trailing "/" that the path drops (and the test's length with it).
        text += "/" + "d" * min(200, room) if room else "d"
    return text


@pytest.mark.parametrize("command", ["fit", "search"])
@pytest.mark.parametrize("spare", [11, 90])  # room left for 11 or 90 more bytes
def test_an_output_folder_too_deep_for_its_files_is_refused_before_any_write(
        tmp_path, tiny_npz, write_config, command, spare):
    raw = tiny_config_dict(tiny_npz)
    if command == "search":
        raw["search"] = {"trials": 2, "params": {
            "optimizer.lr": {"loguniform": [1e-3, 1e-2]}}}
    config = write_config(raw)
    out = deep_path(tmp_path / "out", 4096 - spare)

    result = invoke(command, config, "--out", out)

    assert result.exit_code == 2, result.output
    [line] = result.stderr.splitlines()
    if command == "search" and spare == 11:
        # Its study.json's path is past the limit: the first look at it says so.
        assert line.startswith("error: a path is too long for this system"), line
    else:
        assert line.endswith(f": it is {4096 - spare:,} bytes long, so the files"
                             " written in it would reach the 4,096 bytes the system"
                             " allows for a path; choose a shorter one with --out")
    assert not (tmp_path / "out").exists()


def test_an_output_folder_just_within_the_room_for_its_files_trains(
        tmp_path, tiny_config):
    # 128 bytes are kept for the files below a run folder: this one leaves 129.
    out = deep_path(tmp_path / "out", 4096 - 129)

    result = invoke("fit", tiny_config, "--out", out)

    assert result.exit_code == 0, result.output
    assert (Path(out) / "checkpoints" / "last.npz").is_file()


def test_a_relative_output_folder_is_measured_as_given(tmp_path, tiny_config,
                                                       monkeypatch):
    # The system limits the path each call is given: a short relative one works
    # under a working folder that is itself near the limit.
    deep = Path(deep_path(tmp_path / "cwd", 4096 - 64))
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)

    result = invoke("fit", tiny_config, "--out", "run")

    assert result.exit_code == 0, result.output
    assert (Path("run") / "checkpoints" / "last.npz").is_file()


def test_an_output_folder_with_a_name_too_long_is_refused(tmp_path, tiny_config):
    result = invoke("fit", tiny_config, "--out", tmp_path / ("x" * 300) / "run")

    assert result.exit_code == 2, result.output
    assert result.stderr.endswith(": a name in it is 300 bytes long, over the 255"
                                  " the file system allows; choose a shorter one"
                                  " with --out\n"), result.stderr
