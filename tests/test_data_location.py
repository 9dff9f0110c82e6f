"""Where eval, fit and resume look for IDX data, end to end through the CLI.

A place the user gives now (a new run's data.path, eval's --data, a resume's --set
data.path) must hold the data; only the place a checkpoint recorded, given by no
one now, falls back on another copy, with one warning. Every folder searched is in
tmp_path: HOME, NNTRAIN_DATA and the system folder are moved there.
"""

import tracemalloc
import zlib

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from conftest import tiny_config_dict

from nntrain.cli import cli
from nntrain.data import datasets

IDX_NAMES = ("train-images-idx3-ubyte, train-labels-idx1-ubyte,"
             " t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte")
TRAIN_IMAGES, TEST_IMAGES, VALIDATION = 40, 10, 10


def invoke(*args):
    return CliRunner().invoke(cli, [str(arg) for arg in args])


def images(count: int, seed: int):
    """(X (count, 2, 2) uint8, y (count,) labels 0..9 in turn)."""
    X = np.random.default_rng(seed).integers(0, 256, (count, 2, 2), dtype=np.uint8)
    return X, (np.arange(count) % 10).astype(np.uint8)


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("NNTRAIN_DATA", raising=False)
    monkeypatch.setattr(datasets, "SYSTEM_DATA", tmp_path / "system")


@pytest.fixture
def mnist(tmp_path, write_idx_dataset):
    """The run's data: 40 training and 10 test images of 2x2 pixels."""
    return write_idx_dataset(tmp_path / "mnist", images(TRAIN_IMAGES, 0),
                             images(TEST_IMAGES, 1))


def fit_config(tmp_path, path, plots: bool = False):
    raw = tiny_config_dict(None)
    raw["data"].update(name="mnist", path=None if path is None else str(path))
    raw["train"].update(epochs=1, plots=plots)
    config = tmp_path / "mnist.yaml"
    config.write_text(yaml.safe_dump(raw))
    return config


def train(tmp_path, path, plots: bool = False):
    """Fit a one-epoch run on the data at ``path``; -> its run directory."""
    run = tmp_path / "run"
    result = invoke("fit", fit_config(tmp_path, path, plots), "--out", run, "--quiet")
    assert result.exit_code == 0, result.output
    return run


def a_copy(tmp_path, monkeypatch, write_idx_dataset):
    """The run's data copied into $NNTRAIN_DATA/mnist."""
    monkeypatch.setenv("NNTRAIN_DATA", str(tmp_path / "env"))
    return write_idx_dataset(tmp_path / "env" / "mnist", images(TRAIN_IMAGES, 0),
                             images(TEST_IMAGES, 1))


def lacks_data(option: str, place, problem: str, copy) -> str:
    return (f"error: mnist: {option}{place} {problem}; point it at the folder"
            f" holding the four IDX files ({IDX_NAMES}, each may be gzipped), or"
            f" drop {option.strip(' =')} to use the copy in {copy}\n")


@pytest.mark.parametrize("make, problem", [
    (lambda path: None, "does not exist"),
    (lambda path: path.write_bytes(b"x"), "is a file, not a folder"),
    (lambda path: (path / "t10k-images-idx3-ubyte.gz").unlink(),
     "lacks t10k-images-idx3-ubyte (or .gz)"),
])
def test_eval_with_a_data_option_without_the_data_exits_2(
        tmp_path, mnist, monkeypatch, write_idx_dataset, make, problem):
    run = train(tmp_path, mnist)
    a_copy(tmp_path, monkeypatch, write_idx_dataset)
    given = tmp_path / "given"
    if "lacks" in problem:
        write_idx_dataset(given, images(TRAIN_IMAGES, 0), images(TEST_IMAGES, 1))
    make(given)

    result = invoke("eval", run / "checkpoints" / "best.npz", "--data", given)

    assert result.exit_code == 2
    # Without --data the run's own data.path is searched first: that is the copy.
    assert result.stderr == lacks_data("--data ", given, problem, mnist)


def test_a_new_run_whose_data_path_lacks_the_data_exits_2(
        tmp_path, monkeypatch, write_idx_dataset):
    copy = a_copy(tmp_path, monkeypatch, write_idx_dataset)
    config = fit_config(tmp_path, tmp_path / "nonexistent")

    result = invoke("fit", config, "--out", tmp_path / "run")

    assert result.exit_code == 2
    assert result.stderr == lacks_data("data.path ", tmp_path / "nonexistent",
                                       "does not exist", copy)
    assert not (tmp_path / "run").exists()


def test_a_resume_whose_set_data_path_lacks_the_data_exits_2(
        tmp_path, mnist, monkeypatch, write_idx_dataset):
    run = train(tmp_path, mnist)
    records = (run / "metrics.jsonl").read_bytes()

    result = invoke("fit", fit_config(tmp_path, mnist), "--resume", run, "--set",
                    "train.epochs=2", "--set", f"data.path={tmp_path / 'typo'}")

    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1] + "\n" == lacks_data(
        "--set data.path=", tmp_path / "typo", "does not exist", mnist)
    assert (run / "metrics.jsonl").read_bytes() == records


def test_a_resume_whose_set_data_path_is_the_recorded_one_lacking_data_exits_2(
        tmp_path, mnist, monkeypatch, write_idx_dataset):
    # Given now, the recorded folder must hold the data as any other would: no
    # quiet fall-back on the copy in NNTRAIN_DATA.
    run = train(tmp_path, mnist)
    copy = a_copy(tmp_path, monkeypatch, write_idx_dataset)
    (mnist / "t10k-images-idx3-ubyte.gz").unlink()
    records = (run / "metrics.jsonl").read_bytes()

    result = invoke("fit", fit_config(tmp_path, mnist), "--resume", run, "--set",
                    "train.epochs=2", "--set", f"data.path={mnist}")

    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1] + "\n" == lacks_data(
        "--set data.path=", mnist, "lacks t10k-images-idx3-ubyte (or .gz)", copy)
    assert (run / "metrics.jsonl").read_bytes() == records


@pytest.mark.parametrize("given", [None, False, True])
def test_fit_api_resume_says_whether_the_recorded_data_path_was_given(
        tmp_path, mnist, monkeypatch, write_idx_dataset, given):
    # None, the Python API's default: a data.path equal to the recorded one was
    # not given now, so a copy stands in for the data it lost.
    from nntrain.checkpoint import load_checkpoint
    from nntrain.errors import DataError
    from nntrain.pipeline import fit
    from nntrain.train.resume import resumed_config

    run = train(tmp_path, mnist)
    copy = a_copy(tmp_path, monkeypatch, write_idx_dataset)
    (mnist / "t10k-images-idx3-ubyte.gz").unlink()
    path = run / "checkpoints" / "last.npz"
    checkpoint = load_checkpoint(path)
    config = resumed_config(checkpoint, ["train.epochs=2"], path)

    if given:
        with pytest.raises(DataError, match="--set data.path="):
            fit(config, run, quiet=True, resume=checkpoint, data_path_given=given)
        return
    fit(config, run, quiet=True, resume=checkpoint, data_path_given=given)
    assert f"using the copy in {copy}" in (run / "train.log").read_text()


def test_eval_of_a_run_whose_data_moved_uses_a_copy_with_one_warning(
        tmp_path, mnist, monkeypatch, write_idx_dataset):
    run = train(tmp_path, mnist)
    copy = a_copy(tmp_path, monkeypatch, write_idx_dataset)
    mnist.rename(tmp_path / "moved")

    result = invoke("eval", run / "checkpoints" / "best.npz")

    assert result.exit_code == 0, result.output
    assert result.stderr == (
        f"warning: mnist: {mnist}, where the run found its data, no longer holds the"
        f" four IDX files; using the copy in {copy}\n")
    assert f"{TEST_IMAGES} samples" in result.stdout.splitlines()[0]


@pytest.mark.plots
def test_a_resumed_run_whose_data_moved_warns_once_and_logs_it(
        tmp_path, mnist, monkeypatch, write_idx_dataset):
    run = train(tmp_path, mnist, plots=True)
    copy = a_copy(tmp_path, monkeypatch, write_idx_dataset)
    mnist.rename(tmp_path / "moved")

    result = invoke("fit", fit_config(tmp_path, mnist, plots=True), "--resume", run,
                    "--set", "train.epochs=2")

    assert result.exit_code == 0, result.output
    warning = (f"warning: mnist: {mnist}, where the run found its data, no longer"
               f" holds the four IDX files; using the copy in {copy}")
    assert result.stderr.count("warning:") == 1
    assert warning in result.stderr.splitlines()
    log = (run / "train.log").read_text().splitlines()
    assert log.count(warning) == 1
    assert (run / "plots" / "activations.png").is_file()


def test_eval_with_other_idx_data_says_it_is_not_the_checkpoints_data(
        tmp_path, mnist, write_idx_dataset):
    run = train(tmp_path, mnist)
    # Fewer training images than the run's data.validation: no split can be drawn.
    other = write_idx_dataset(tmp_path / "other", images(VALIDATION - 2, 2),
                              images(4, 3))

    result = invoke("eval", run / "checkpoints" / "best.npz", "--data", other)

    assert result.exit_code == 2
    assert result.stderr == (
        f"error: the data in {other} is not the data the checkpoint was trained on"
        f" (it holds {VALIDATION - 2} training samples, the checkpoint's"
        f" {TRAIN_IMAGES}); point --data at the data the checkpoint was trained on\n")


def test_eval_where_nntrain_data_leads_to_other_data_names_it(
        tmp_path, monkeypatch, write_idx_dataset):
    a_copy(tmp_path, monkeypatch, write_idx_dataset)
    run = train(tmp_path, None)  # found through NNTRAIN_DATA, data.path null
    other = write_idx_dataset(tmp_path / "elsewhere" / "mnist",
                              images(VALIDATION - 2, 2), images(4, 3))
    monkeypatch.setenv("NNTRAIN_DATA", str(tmp_path / "elsewhere"))

    result = invoke("eval", run / "checkpoints" / "best.npz")

    assert result.exit_code == 2
    assert result.stderr == (
        f"error: the data in {other} (found through NNTRAIN_DATA) is not the data"
        f" the checkpoint was trained on (it holds {VALIDATION - 2} training samples,"
        f" the checkpoint's {TRAIN_IMAGES}); point --data at the data the checkpoint"
        " was trained on\n")


def test_eval_of_an_npz_run_with_a_folder_as_data_asks_for_an_npz_file(
        tmp_path, tiny_config):
    run = tmp_path / "run"
    assert invoke("fit", tiny_config, "--out", run, "--quiet").exit_code == 0
    folder = tmp_path / "moved"
    folder.mkdir()

    result = invoke("eval", run / "checkpoints" / "best.npz", "--data", folder)

    assert result.exit_code == 2
    assert result.stderr == f"error: {folder} is a folder; give an .npz file\n"


def test_a_relative_npz_path_not_found_says_it_is_read_from_the_current_folder(
        tmp_path, tiny_npz, monkeypatch):
    # The config sits beside its data, but nntrain runs from another folder.
    raw = tiny_config_dict("tiny.npz")
    config = tiny_npz.parent / "relative.yaml"
    config.write_text(yaml.safe_dump(raw))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    result = invoke("fit", config, "--out", tmp_path / "run")

    assert result.exit_code == 2, result.output
    assert result.stderr == (f"error: npz file not found: {elsewhere / 'tiny.npz'}"
                             " (data.path tiny.npz is relative, so it is read from"
                             " the current folder, not the config file's); check"
                             " the path\n")
    assert not (tmp_path / "run").exists()


def test_a_resume_given_a_relative_npz_path_not_there_says_where_it_looked(
        tmp_path, tiny_npz, write_config, monkeypatch):
    config = write_config(tiny_config_dict(tiny_npz))
    run = tmp_path / "run"
    assert invoke("fit", config, "--out", run, "--quiet").exit_code == 0
    monkeypatch.chdir(tmp_path)

    result = invoke("fit", config, "--resume", run, "--set", "train.epochs=4",
                    "--set", "data.path=moved/tiny.npz")

    assert result.exit_code == 2, result.output
    assert result.stderr == (
        f"error: npz file not found: {tmp_path / 'moved' / 'tiny.npz'} (--set"
        " data.path=moved/tiny.npz is relative, so it is read from the current"
        " folder); check the path\n")


def test_a_relative_npz_path_given_by_set_not_there_says_so(tmp_path, tiny_npz,
                                                           write_config,
                                                           monkeypatch):
    config = write_config(tiny_config_dict(tiny_npz))
    monkeypatch.chdir(tmp_path)

    result = invoke("fit", config, "--out", tmp_path / "run", "--set",
                    "data.path=moved/tiny.npz")

    assert result.exit_code == 2, result.output
    assert result.stderr == (
        f"error: npz file not found: {tmp_path / 'moved' / 'tiny.npz'} (--set"
        " data.path=moved/tiny.npz is relative, so it is read from the current"
        " folder); check the path\n")


def test_the_same_values_in_another_dtype_are_found_without_copying_the_split(
        monkeypatch):
    from nntrain import prepare

    monkeypatch.setattr(prepare, "_CAST_VALUES", 1 << 14)  # 128 kB of float64
    # 8 MB of float64 features whose values float32 holds exactly; the run read
    # them as float32.
    X = np.arange(1024 * 1024, dtype=np.float64).reshape(1024, 1024) % 4099
    y = np.arange(1024) % 10
    crc = zlib.crc32(X.astype(np.float32).tobytes())
    fingerprint = format(zlib.crc32(y.tobytes(), crc), "08x")
    other = X + 0.5

    tracemalloc.start()
    try:
        found = (prepare._saved_as((X, y), fingerprint),
                 prepare._saved_as((other, y), fingerprint))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert found == (np.float32, None)
    # A chunk's casts, where the split cast whole would take 4 MB in float32.
    assert peak < X.nbytes // 8


def npz_config(tmp_path, write_config, **arrays):
    """A tiny run's config on a new npz of ``arrays`` (validation 0.2)."""
    data = tmp_path / "z.npz"
    np.savez(data, **arrays)
    raw = tiny_config_dict(data)
    raw["data"]["validation"] = 0.2
    return write_config(raw, "z.yaml"), data


def test_fit_on_a_zero_dimensional_x_train_exits_2(tmp_path, write_config):
    config, data = npz_config(tmp_path, write_config, X_train=np.float32(3),
                              y_train=np.arange(50) % 3)

    result = invoke("fit", config, "--out", tmp_path / "run")

    assert result.exit_code == 2
    assert result.stderr == (f"error: {data}: X_train must have shape (N, D...), one"
                             " row per sample (got shape ())\n")
    assert not (tmp_path / "run").exists()


def test_eval_on_an_npz_with_a_zero_dimensional_x_test_exits_2(tmp_path, tiny_config):
    run = tmp_path / "run"
    assert invoke("fit", tiny_config, "--out", run, "--quiet").exit_code == 0
    other = tmp_path / "other.npz"
    np.savez(other, X_train=np.zeros((60, 4)), y_train=np.arange(60) % 3,
             X_test=np.float32(3), y_test=np.arange(15) % 3)

    result = invoke("eval", run / "checkpoints" / "best.npz", "--data", other)

    assert result.exit_code == 2
    assert result.stderr == (f"error: {other}: X_test must have shape (N, D...), one"
                             " row per sample (got shape ())\n")


def test_fit_whose_test_split_leaves_one_training_class_exits_2(tmp_path,
                                                                write_config):
    X = np.random.default_rng(0).random((10, 4), dtype=np.float32)
    config, data = npz_config(tmp_path, write_config, X_train=X,
                              y_train=np.array([1, 0, 0, 0, 0, 1, 0, 0, 0, 0]))

    result = invoke("fit", config, "--out", tmp_path / "run")

    assert result.exit_code == 2
    assert result.stderr == (
        f"error: {data}: every fifth training row (index % 5 == 0) goes to the test"
        " split, as it has no X_test, which leaves 8 training samples, all of class"
        " 0; a classifier needs samples of at least 2 classes to train on: save"
        " X_test and y_test, or add training samples of other classes\n")
    assert not (tmp_path / "run").exists()


def test_eval_given_a_data_option_naming_no_file_says_to_check_it(tmp_path,
                                                                   tiny_config):
    run = tmp_path / "run"
    assert invoke("fit", tiny_config, "--out", run, "--quiet").exit_code == 0
    absent = tmp_path / "nonexist.npz"

    result = invoke("eval", run / "checkpoints" / "best.npz", "--data", absent)

    assert result.exit_code == 2
    assert result.stderr == (f"error: npz file not found: {absent}; check the path"
                             " given with --data\n")


def test_eval_of_a_run_whose_npz_moved_says_to_pass_its_new_place(tmp_path,
                                                                   tiny_config,
                                                                   tiny_npz):
    run = tmp_path / "run"
    assert invoke("fit", tiny_config, "--out", run, "--quiet").exit_code == 0
    tiny_npz.rename(tmp_path / "moved.npz")

    result = invoke("eval", run / "checkpoints" / "best.npz")

    assert result.exit_code == 2
    assert result.stderr == (f"error: npz file not found: {tiny_npz}; if the data"
                             " moved, pass its new place with --data PATH\n")


def test_a_resume_given_a_set_data_path_naming_no_file_says_to_check_it(
        tmp_path, tiny_config):
    run = tmp_path / "run"
    assert invoke("fit", tiny_config, "--out", run, "--quiet").exit_code == 0
    absent = tmp_path / "nonexist.npz"

    result = invoke("fit", tiny_config, "--resume", run, "--set", "train.epochs=4",
                    "--set", f"data.path={absent}")

    assert result.exit_code == 2
    assert result.stderr == (f"error: npz file not found: {absent}; check the path"
                             " given with --set data.path\n")
