"""Finite inputs too large for the network's float32 arithmetic: eval and predict
refuse the scores they overflow to, training blames such validation samples on the
data, and NumPy's own overflow warnings stay off the terminal."""

import re
import warnings

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import tiny_arrays, tiny_config_dict

from nntrain.cli import cli
from nntrain.config import resolve_config
from nntrain.errors import NonFiniteScoresError
from nntrain.evaluate import check_finite_scores
from nntrain.pipeline import evaluate_checkpoint, fit

# Near float32's largest value (3.4e38): four such features times weights of
# either sign overflow the first affine layer of 256 units, and the inf that
# ReLU passes on meets weights of both signs in the next one (inf - inf = NaN).
HUGE = 3e38


def invoke(*args):
    """The CLI, with any RuntimeWarning that NumPy lets out turned into an error:
    a leak then ends the command with a traceback, not the one-line message."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        return CliRunner().invoke(cli, [str(arg) for arg in args])


def assert_one_line_error(result, code: int, text: str) -> None:
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.stderr.splitlines() == [f"error: {text}"], result.stderr


def wide_config(npz) -> dict:
    raw = tiny_config_dict(npz)
    raw["model"]["hidden"] = [256, 256]
    raw["data"]["preprocess"] = []
    raw["train"].update(epochs=1, plots=False)
    return raw


@pytest.fixture
def huge_test_run(tmp_path, write_npz):
    """A run on the tiny data whose test row 3 is HUGE in every feature."""
    arrays = tiny_arrays()
    arrays["X_test"][3] = HUGE
    run = tmp_path / "run"
    fit(resolve_config(wide_config(write_npz("huge.npz", **arrays))), run, quiet=True)
    return run / "checkpoints" / "last.npz"


def test_eval_refuses_a_test_row_that_overflows_the_network(huge_test_run):
    for extra in ([], ["--json"]):
        result = invoke("eval", huge_test_run, *extra)

        assert_one_line_error(
            result, 1, "1 of the 15 samples of the test split (row 3) gives NaN or"
            " infinite class scores: its values overflow float32 arithmetic inside"
            " the network; rescale the samples as the training data was scaled, or"
            " leave those out")
        assert result.stdout == ""


def test_evaluate_checkpoint_raises_for_scores_that_overflow(huge_test_run):
    with pytest.raises(NonFiniteScoresError, match=r"\(row 3\) gives NaN"):
        evaluate_checkpoint(huge_test_run)


def test_predict_refuses_samples_that_overflow_the_network(huge_test_run, tmp_path):
    samples = tmp_path / "in.npy"
    np.save(samples, np.full((2, 4), HUGE, np.float32))
    out = tmp_path / "pred.npz"

    result = invoke("predict", huge_test_run, samples, "--out", out)

    assert_one_line_error(
        result, 1, f"all 2 samples of {samples} (rows 0, 1) give NaN or infinite"
        " class scores: their values overflow float32 arithmetic inside the"
        " network; rescale the samples as the training data was scaled, or leave"
        " those out")
    assert not out.exists()


def test_predict_names_the_first_five_rows_that_overflow(huge_test_run, tmp_path):
    X = np.tile(tiny_arrays()["X_test"][:1], (9, 1))
    X[[1, 2, 4, 5, 6, 8]] = HUGE
    samples = tmp_path / "in.npy"
    np.save(samples, X)

    result = invoke("predict", huge_test_run, samples)

    assert result.exit_code == 1, result.output
    assert (f"6 of the 9 samples of {samples} (rows 1, 2, 4, 5, 6, ...) give NaN"
            in result.stderr), result.stderr
    assert result.stdout == ""


def test_predict_of_a_single_sample_that_overflows(huge_test_run, tmp_path):
    samples = tmp_path / "one.npy"
    np.save(samples, np.full(4, HUGE))

    result = invoke("predict", huge_test_run, samples)

    assert result.exit_code == 1, result.output
    assert f"error: the only sample of {samples} gives NaN" in result.stderr


def test_finite_scores_pass_the_check():
    check_finite_scores(np.array([[1e30, -1e30], [0.0, 1.0]], np.float32), "x")
    with pytest.raises(NonFiniteScoresError, match=r"^1 of the 2 samples of x"
                       r" \(row 1\) gives NaN or infinite class scores: its values"
                       r" overflow float64 arithmetic"):
        check_finite_scores(np.array([[0.0, 1.0], [np.inf, 0.0]]), "x")


def test_a_validation_row_that_overflows_blames_the_data_not_the_rate(
        tmp_path, write_npz, write_config):
    arrays = tiny_arrays()
    arrays["X_val"] = arrays["X_test"][:10].copy()
    arrays["y_val"] = arrays["y_test"][:10]
    arrays["X_val"][0] = HUGE
    largest = np.abs(arrays["X_train"].astype(np.float32)).max()
    config = write_config(wide_config(write_npz("val.npz", **arrays)))

    result = invoke("fit", config, "--out", tmp_path / "run", "--quiet")

    assert result.exit_code == 1, result.output
    [line] = result.stderr.splitlines()
    assert re.fullmatch(
        r"error: the validation loss became nan at iteration 4 \(epoch 1\); 1"
        r" validation sample of 10 reaches values up to 3e\+38, far beyond the"
        rf" training split's largest \({largest:.3g}\), and overflow float32"
        r" arithmetic inside the network: the data's scale is at fault, not the"
        r" learning rate; rescale the validation data as the training data, or"
        r" leave those samples out\. No checkpoint holds it; any earlier"
        r" checkpoint is untouched\.", line), line


def test_data_whose_squares_overflow_batch_norm_is_blamed_not_the_rate(
        tmp_path, write_npz, write_config):
    # sqrt(float32's largest) is 1.8e19: batch norm's variance of 1e30-sized
    # inputs overflows on the first batch, yet normalizes the training loss to a
    # sane value, so only the data's reach can tell.
    arrays = tiny_arrays()
    for split in ("X_train", "X_test"):
        arrays[split] = arrays[split] * 1e30
    largest = np.abs(arrays["X_train"].astype(np.float32)).max()
    raw = wide_config(write_npz("big.npz", **arrays))
    raw["model"]["batchnorm"] = True
    raw["optimizer"] = {"name": "sgd", "lr": 1e-12}

    result = invoke("fit", write_config(raw), "--out", tmp_path / "run", "--quiet")

    assert result.exit_code == 1, result.output
    [line] = result.stderr.splitlines()
    # The running statistics are checked only at a checkpoint save: the message
    # cannot tell at which update they became inf, only by which.
    assert re.match(r"error: buffer/batchnorm1\.running_var became inf by"
                    r" iteration \d+ \(epoch \d+\); ", line), line
    assert (f"; the data's values reach {largest:.3g}, whose squares overflow float32"
            " arithmetic (in batch norm's variance, say): the data's scale is at"
            " fault, not the learning rate; preprocess the data (center, scale) or"
            " divide it by a power of ten. No checkpoint") in line, line
    assert not (tmp_path / "run" / "checkpoints" / "last.npz").exists()


@pytest.mark.parametrize("std, first", [
    # The start-of-run check's pass overflows (matmul, then NaN in the softmax).
    ("1e30", "the loss became nan at iteration 1"),
    # Drawn in float64, the weights overflow float32 in the cast.
    ("1e39", "parameter affine1.W became inf at iteration 0"),
])
def test_starting_weights_that_overflow_stop_the_run_without_numpy_warnings(
        tmp_path, tiny_config, std, first):
    result = invoke("fit", tiny_config, "--out", tmp_path / "run", "--set",
                    "model.init=small", "--set", f"model.init_std={std}")

    assert result.exit_code == 1, result.output
    assert "warning" not in result.stderr, result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: {first} (epoch 1); no update has run yet, so"
                           " the starting weights are likely too large"), line


def test_predict_blames_weights_that_overflow_even_on_small_samples(
        huge_test_run, tmp_path):
    from nntrain.checkpoint import load_checkpoint, save_checkpoint

    loaded = load_checkpoint(huge_test_run)
    meta = {key: value for key, value in loaded.meta.items()
            if key not in ("checksums", "format", "nntrain_version")}
    arrays = {group: dict(values) for group, values in loaded.arrays.items()}
    arrays["param"] = {name: np.full_like(W, 1e30)
                       for name, W in arrays["param"].items()}
    edited = tmp_path / "edited.npz"
    save_checkpoint(edited, meta, arrays)
    samples = tmp_path / "in.npy"
    np.save(samples, tiny_arrays()["X_test"][:2])

    result = invoke("predict", edited, samples)

    assert_one_line_error(
        result, 2, f"{edited}: its weights give NaN or infinite class scores for"
        f" samples of {samples} even scaled into [-1, 1]; the file is damaged or was"
        " edited: use another checkpoint")


@pytest.fixture
def scaled_huge_test_run(tmp_path, write_npz):
    """A run that centres and scales the tiny data, whose test rows 3 and 7 are
    HUGE: feature 1's std is about 0.02, so scaling takes them past float32."""
    arrays = tiny_arrays()
    arrays["X_test"][[3, 7]] = HUGE
    raw = wide_config(write_npz("huge.npz", **arrays))
    raw["data"]["preprocess"] = ["center", "scale"]
    run = tmp_path / "run"
    fit(resolve_config(raw), run, quiet=True)
    return run / "checkpoints" / "last.npz"


def test_eval_names_test_rows_that_overflow_in_preprocessing(scaled_huge_test_run):
    result = invoke("eval", scaled_huge_test_run)

    assert_one_line_error(
        result, 1, "2 of the 15 samples of the test split (rows 3, 7) become NaN or"
        " infinite in preprocessing (center, scale): their values overflow float32"
        " arithmetic; rescale the samples as the training data was scaled, or"
        " leave those out")


def test_predict_names_samples_that_overflow_in_preprocessing(
        scaled_huge_test_run, tmp_path):
    X = tiny_arrays()["X_test"][:3].astype(np.float32)
    X[1] = HUGE
    samples = tmp_path / "in.npy"
    np.save(samples, X)

    result = invoke("predict", scaled_huge_test_run, samples)

    assert_one_line_error(
        result, 1, f"1 of the 3 samples of {samples} (row 1) becomes NaN or"
        " infinite in preprocessing step scale: its values overflow float32"
        " arithmetic; rescale the samples as the training data was scaled, or"
        " leave those out")
    assert result.stdout == ""


def test_an_lbfgs_run_that_diverges_names_the_epoch_under_way(tmp_path, tiny_config):
    # Each L-BFGS iteration is an epoch: its first is epoch 1, as SGD's first
    # update is.
    result = invoke("fit", tiny_config, "--out", tmp_path / "run", "--quiet",
                    "--set", "optimizer={name: lbfgs}", "--set", "train.dtype=float64",
                    "--set", "model.l2=1e200")

    assert result.exit_code == 1, result.output
    assert re.match(r"error: the loss became (nan|inf) at iteration 1 \(epoch 1\); ",
                    result.stderr), result.stderr


def test_eval_loss_of_finite_float32_scores_3e38_apart_is_finite():
    from nntrain.evaluate import measure

    # Their difference, 6e38, is past float32's largest value (3.4e38): the loss
    # is taken again in float64, where it is the closed form below.
    top = float(np.float32(3e38))
    scores = np.array([[top, -top, 0.0], [1.0, 2.0, 3.0]], dtype=np.float32)
    y = np.array([1, 2])
    second = np.log(np.exp(1.0) + np.exp(2.0) + np.exp(3.0)) - 3.0

    loss = measure(scores, y, widen=True)["loss"]

    assert loss == pytest.approx((2 * top + second) / 2, rel=1e-12)
    # Not for a training run's validation loss, whose inf stops the run.
    assert measure(scores, y)["loss"] == np.inf
