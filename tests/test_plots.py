"""Tests for nntrain.plots: the figures of tiny runs and evaluations, the metrics
reader, the worst-example ranking against a numpy oracle, and the message shown
when matplotlib is missing."""

import json
import os
import re
import shlex
import shutil
import sys
import warnings

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from conftest import hang_ends_after, tiny_config_dict

import nntrain.restore
from nntrain import plots
from nntrain.checkpoint import load_checkpoint
from nntrain.cli import cli
from nntrain.config import resolve_config
from nntrain.errors import BadInputError, DataError
from nntrain.pipeline import fit
from nntrain.plots import (
    PlotsUnavailable,
    PlotWarning,
    plot_evaluation,
    plot_run,
    read_metrics,
    require_matplotlib,
    smooth,
    training_sample,
    worst_examples,
)
from nntrain.prepare import prepare_data
from nntrain.restore import restore

# nntrain.plots imports matplotlib only when it draws, so the imports above work
# without it; every test here draws.
pytest.importorskip("matplotlib")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
METRIC_FIGURES = {"loss.png", "accuracy.png", "learning_rate.png"}


def image_arrays(seed: int = 0) -> dict:
    """X_train (60, 4, 4) and y_train (60,): three noisy strokes (a row, a column,
    the diagonal); no X_test, so every fifth row becomes the test split."""
    strokes = np.zeros((3, 4, 4))
    strokes[0, 1, :] = 1.0
    strokes[1, :, 2] = 1.0
    strokes[2] = np.eye(4)
    rng = np.random.default_rng(seed)
    y = np.arange(60) % 3
    X = 10.0 * strokes[y] + rng.normal(size=(60, 4, 4))
    return {"X_train": X, "y_train": y.astype(np.int64)}


def fit_run(folder, npz, data=None, model=None):
    """Train the tiny config on ``npz`` (with data/model keys changed) in folder/run."""
    raw = tiny_config_dict(npz)
    raw["data"].update(data or {})
    raw["model"].update(model or {})
    return fit(resolve_config(raw), folder / "run", quiet=True).run_dir


def logged_update_ratios(run_dir) -> bool:
    records = read_metrics(run_dir / "metrics.jsonl")
    return any(key.startswith("update_ratio/") for record in records for key in record)


def assert_pngs(paths, folder):
    for path in paths:
        assert path.parent == folder
        assert path.read_bytes()[:8] == PNG_SIGNATURE, path


def lowest_true_probability(scores, y, per_class):
    """The oracle: per class, indices sorted by p(true class), then by index."""
    shifted = scores.astype(np.float64) - scores.max(axis=1, keepdims=True)
    p = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    p_true = p[np.arange(len(y)), y]
    expected = {}
    for c in range(scores.shape[1]):
        members = np.flatnonzero(y == c)
        expected[c] = members[np.lexsort((members, p_true[members]))][:per_class]
    return expected, p_true


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    """A finished run on 4x4 images with hidden [8]."""
    folder = tmp_path_factory.mktemp("image_run")
    np.savez(folder / "images.npz", **image_arrays())
    return fit_run(folder, folder / "images.npz")


def test_plot_run_writes_every_figure_of_an_image_run(image_run, tmp_path):
    out = tmp_path / "figures"
    paths = plot_run(image_run, out)

    expected = METRIC_FIGURES | {"activations.png", "first_layer_weights.png"}
    if logged_update_ratios(image_run):
        expected.add("update_ratios.png")
    assert {path.name for path in paths} == expected
    assert_pngs(paths, out)


def test_plot_run_shows_no_weight_images_for_feature_data(tiny_npz, tmp_path):
    run_dir = fit_run(tmp_path, tiny_npz)

    paths = plot_run(run_dir)

    assert {path.name for path in paths} >= METRIC_FIGURES | {"activations.png"}
    assert "first_layer_weights.png" not in {path.name for path in paths}
    assert_pngs(paths, run_dir / "plots")


def test_plot_run_shows_no_weight_images_when_pca_changes_the_width(tmp_path):
    np.savez(tmp_path / "images.npz", **image_arrays())
    run_dir = fit_run(tmp_path, tmp_path / "images.npz",
                      data={"preprocess": ["center", {"pca": {"components": 6}}]})

    names = {path.name for path in plot_run(run_dir)}

    assert "first_layer_weights.png" not in names
    assert "activations.png" in names


def test_plot_run_of_a_linear_model_shows_class_templates_and_no_histograms(
        tmp_path):
    np.savez(tmp_path / "images.npz", **image_arrays())
    run_dir = fit_run(tmp_path, tmp_path / "images.npz", model={"hidden": []})

    names = {path.name for path in plot_run(run_dir)}

    assert "first_layer_weights.png" in names
    assert "activations.png" not in names


def metric_lines() -> list[str]:
    """An L-BFGS-like log (no lr) with update ratios, a zero among them."""
    records = []
    for step in range(1, 7):
        records.append({"kind": "iter", "iteration": step, "epoch": step,
                        "loss": 2.0 / step, "data_loss": 1.9 / step, "reg_loss": 0.1})
        records.append({"kind": "epoch", "iteration": step, "epoch": step,
                        "loss": 2.0 / step, "train_accuracy": 0.5 + step / 20,
                        "val_loss": 2.1 / step, "val_accuracy": 0.45 + step / 20,
                        "update_ratio/affine1.W": 2e-3 / step,
                        "update_ratio/affine2.W": 0.0 if step == 1 else 1e-3})
    return [json.dumps(record) for record in records]


def test_read_metrics_drops_a_truncated_last_line_and_says_so(tmp_path):
    lines = metric_lines()
    path = tmp_path / "metrics.jsonl"
    path.write_text("\n".join(lines) + "\n" + lines[0][:25], encoding="utf-8")

    with pytest.warns(PlotWarning) as caught:
        records = read_metrics(path)

    assert records == [json.loads(line) for line in lines]
    assert [str(warning.message) for warning in caught] == [
        f"{path}: skipped 1 line, the last (line 13): not a JSON record; a run killed"
        " while writing leaves it cut short"]


def test_read_metrics_says_a_skipped_last_line_is_not_utf8(tmp_path):
    lines = metric_lines()
    path = tmp_path / "metrics.jsonl"
    path.write_bytes("\n".join(lines).encode() + b"\n\xff\xfe{\x00")

    with pytest.warns(PlotWarning) as caught:
        records = read_metrics(path)

    assert records == [json.loads(line) for line in lines]
    assert [str(warning.message) for warning in caught] == [
        f"{path}: skipped 1 line, the last (line 13): not a JSON record (not UTF-8"
        " text)"]


def test_read_metrics_names_a_damaged_line_that_is_not_utf8(tmp_path):
    lines = [line.encode() for line in metric_lines()]
    lines[3] = b"\xff" + lines[3]
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")

    with pytest.raises(BadInputError) as caught:
        read_metrics(path)

    assert str(caught.value) == (f"{path}, line 4: not a JSON record (not UTF-8"
                                 " text); the file is damaged")


@pytest.mark.parametrize("value, shown", [
    (1e308, "1e+308"), (0, "0"), (-3, "-3"), (2.0, "2.0"), ("7", '"7"'),
    (True, "true"), (None, "null"), (10**16, "10000000000000000"),
    ("x" * 50, '"' + "x" * 36 + "..."),
])
@pytest.mark.parametrize("kind, key", [("iter", "iteration"), ("epoch", "iteration"),
                                       ("epoch", "epoch")])
def test_read_metrics_refuses_a_drawn_record_whose_count_is_not_one_or_more(
        tmp_path, kind, key, value, shown):
    records = [{"kind": kind, "iteration": 1, "epoch": 1, "loss": 1.0},
               {"kind": kind, "iteration": 2, "epoch": 1, "loss": 0.5}]
    records[1][key] = value
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(record) + "\n" for record in records),
                    encoding="utf-8")

    with pytest.raises(BadInputError) as caught:
        read_metrics(path)

    assert str(caught.value) == (f"{path}, line 2: {key} {shown} is not a whole"
                                 " number from 1 to 1e+15; the file is damaged")


@pytest.mark.parametrize("line", ['{"loss": 1' + "0" * 5000 + "}", "[" * 100000],
                         ids=["an integer of 5001 digits", "lists nested deep"])
def test_read_metrics_refuses_a_line_json_cannot_hold(tmp_path, line):
    lines = metric_lines()
    path = tmp_path / "metrics.jsonl"
    path.write_text("\n".join([lines[0], line, *lines[1:]]) + "\n", encoding="utf-8")

    with pytest.raises(BadInputError) as caught:
        read_metrics(path)

    assert str(caught.value) == (f"{path}, line 2: not a JSON record; the file is"
                                 " damaged")


def test_read_metrics_refuses_a_drawn_record_without_an_iteration(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"kind": "iter", "iteration": 1, "loss": 1.0}\n'
                    '{"kind": "iter", "loss": 0.5}\n'
                    '{"kind": "iter", "iteration": 3, "loss": 0.2}\n',
                    encoding="utf-8")

    with pytest.raises(BadInputError) as caught:
        read_metrics(path)

    assert str(caught.value) == (f"{path}, line 2: an iter record without an"
                                 " iteration; the file is damaged")


def test_read_metrics_leaves_the_counts_of_other_records_alone(tmp_path):
    path = tmp_path / "metrics.jsonl"
    records = [{"kind": "iter", "iteration": 1, "loss": 1.0},
               {"kind": "event", "event": "early_stop", "iteration": 0.5}]
    path.write_text("".join(json.dumps(record) + "\n" for record in records),
                    encoding="utf-8")

    assert read_metrics(path) == records


def test_read_metrics_refuses_a_damaged_line_before_the_last(tmp_path):
    lines = metric_lines()
    lines[1] = lines[1][:30]
    path = tmp_path / "metrics.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    with pytest.raises(BadInputError, match="line 2: not a JSON record"):
        read_metrics(path)


def test_plot_run_from_metrics_alone_warns_and_skips_checkpoint_figures(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    text = "\n".join(metric_lines()) + '\n{"kind": "iter", "itera'
    (run_dir / "metrics.jsonl").write_text(text, encoding="utf-8")

    with pytest.warns(PlotWarning, match="no last.npz or best.npz"), \
            pytest.warns(PlotWarning, match="config.yaml does not say train.monitor"), \
            pytest.warns(PlotWarning, match="skipped 1 line, the last"):
        paths = plot_run(run_dir)

    assert {path.name for path in paths} == {"loss.png", "accuracy.png",
                                             "update_ratios.png"}
    assert_pngs(paths, run_dir / "plots")


def test_plot_run_of_moved_data_warns_naming_the_data_option(tiny_npz, tmp_path):
    run_dir = fit_run(tmp_path, tiny_npz)
    tiny_npz.rename(tmp_path / "moved.npz")

    with pytest.warns(PlotWarning, match=r"activations\.png is left out \(if the"
                                         r" data moved, give its new place with"
                                         r" --data\)"):
        paths = plot_run(run_dir)

    assert "activations.png" not in {path.name for path in paths}


def test_plot_run_with_data_of_another_width_is_an_error(tiny_npz, tmp_path,
                                                         write_npz):
    run_dir = fit_run(tmp_path, tiny_npz)
    other = write_npz("other.npz", X_train=np.zeros((20, 3)),
                      y_train=np.arange(20) % 3)

    with pytest.raises(DataError, match="the data has 3 features"):
        plot_run(run_dir, tmp_path / "figures" / "new" / ".." / "other",
                 data_path=other)
    # The folders the refused command made are gone again.
    assert not (tmp_path / "figures").exists()


def test_plot_run_of_a_missing_folder_is_bad_input(tmp_path):
    with pytest.raises(BadInputError, match="run directory .* not found"):
        plot_run(tmp_path / "nowhere")


def test_missing_matplotlib_says_how_to_install_it(monkeypatch, tmp_path):
    for name in [name for name in sys.modules if name.split(".")[0] == "matplotlib"]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    install = re.escape("pip install 'nntrain[plot]'")

    with pytest.raises(PlotsUnavailable):
        require_matplotlib()
    with pytest.raises(PlotsUnavailable, match=install) as caught:
        plot_run(tmp_path, tmp_path / "plots")
    with pytest.raises(PlotsUnavailable, match=install):
        plot_evaluation(np.zeros((1, 2)), np.zeros(1, int), ["a", "b"],
                        np.zeros((1, 4)), (2, 2), tmp_path / "eval")
    assert caught.value.exit_code == 2
    assert not (tmp_path / "plots").exists() and not (tmp_path / "eval").exists()


def fake_matplotlib(monkeypatch, folder, init: str) -> None:
    """matplotlib swapped, until the test ends, for a package of ``init``."""
    for name in [name for name in sys.modules if name.split(".")[0] == "matplotlib"]:
        monkeypatch.delitem(sys.modules, name)
    package = folder / "site" / "matplotlib"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(init, encoding="utf-8")
    monkeypatch.syspath_prepend(str(package.parent))


@pytest.fixture
def broken_matplotlib(monkeypatch, tmp_path):
    """matplotlib swapped for a package whose import raises, as an install built
    for another NumPy does; the message it raises."""
    fake_matplotlib(monkeypatch, tmp_path, 'raise RuntimeError("module compiled'
                                           ' against ABI version 0x1000009")\n')
    return ("plots need matplotlib, which fails to import, raising RuntimeError:"
            " module compiled against ABI version 0x1000009; reinstall it with: pip"
            " install --force-reinstall matplotlib")


@pytest.mark.parametrize("init, missing", [
    ("import kiwisolver_removed_by_the_test\n", "kiwisolver_removed_by_the_test"),
    # An empty package: matplotlib.backends is gone, as after a half-done
    # uninstall; "pip install" would answer that it is already there.
    ("", "matplotlib.backends"),
], ids=["a-dependency", "a-part-of-itself"])
def test_a_matplotlib_missing_a_module_is_named_broken(monkeypatch, tmp_path, init,
                                                       missing):
    fake_matplotlib(monkeypatch, tmp_path, init)

    with pytest.raises(PlotsUnavailable) as caught:
        plot_run(tmp_path, tmp_path / "plots")

    assert str(caught.value) == (
        "plots need matplotlib, which fails to import, raising ModuleNotFoundError:"
        f" No module named '{missing}'; reinstall it with: pip install"
        " --force-reinstall matplotlib")


def test_a_broken_matplotlib_is_named_with_the_reinstall_command(broken_matplotlib,
                                                                   tmp_path):
    with pytest.raises(PlotsUnavailable):
        require_matplotlib()
    with pytest.raises(PlotsUnavailable) as caught:
        plot_run(tmp_path, tmp_path / "plots")

    assert str(caught.value) == broken_matplotlib
    assert caught.value.exit_code == 2
    assert not (tmp_path / "plots").exists()


def test_plot_command_with_a_broken_matplotlib_is_bad_input(broken_matplotlib,
                                                            tmp_path):
    run_dir = metrics_run(tmp_path, losses(3)[0])

    result = CliRunner().invoke(cli, ["plot", str(run_dir)])

    assert result.exit_code == 2
    assert result.stderr == f"error: {broken_matplotlib}\n"


@pytest.mark.plots
def test_fit_with_a_broken_matplotlib_says_how_to_draw_the_plots(broken_matplotlib,
                                                                  tmp_path):
    from nntrain.pipeline import _write_plots

    lines = []
    reporter = type("Lines", (), {"line": staticmethod(lines.append)})()
    _write_plots(tmp_path / "a run", reporter)

    assert lines == [
        "plots: skipped, matplotlib fails to import, raising RuntimeError: module"
        " compiled against ABI version 0x1000009 (pip install --force-reinstall"
        f" matplotlib, then: nntrain plot {shlex.quote(str(tmp_path / 'a run'))})"]


@pytest.mark.plots
def test_fit_that_finds_a_user_file_in_its_plots_folder_warns_and_finishes(
        tiny_config, tmp_path):
    run_dir = tmp_path / "run"
    assert CliRunner().invoke(cli, ["fit", str(tiny_config), "--out", str(run_dir),
                                    "--quiet"]).exit_code == 0
    before = users_png(run_dir / "plots" / "loss.png")

    result = CliRunner().invoke(cli, ["fit", str(tiny_config), "--resume",
                                      str(run_dir), "--set", "train.epochs=4"])

    assert result.exit_code == 0, result.output
    assert (f"warning: plots: skipped, {run_dir / 'plots' / 'loss.png'} is not a plot"
            " that nntrain wrote, and loss.png would replace it; move it, then draw"
            f" them with: nntrain plot {shlex.quote(str(run_dir))}\n") in result.stderr
    assert result.stdout.splitlines()[-1].startswith("Done: 4 epochs")
    assert (run_dir / "plots" / "loss.png").read_bytes() == before


def test_search_with_a_broken_matplotlib_notes_search_png_is_skipped(
        broken_matplotlib, tmp_path, capsys):
    from nntrain.cli_search import _plot_study
    from nntrain.search import plot_study

    assert plot_study([], None, tmp_path / "search.png") is None
    _plot_study(None, [], None, tmp_path / "search.png")

    assert capsys.readouterr().err == (
        "note: search.png skipped, matplotlib fails to import, raising RuntimeError:"
        " module compiled against ABI version 0x1000009 (pip install"
        " --force-reinstall matplotlib)\n")
    assert not (tmp_path / "search.png").exists()


def test_plot_command_of_losses_too_large_for_an_axis_says_what_it_left_out(
        tmp_path):
    records = [{"kind": "iter", "iteration": 1, "loss": 1e308},
               {"kind": "iter", "iteration": 2, "loss": -1e308}]
    run_dir = metrics_run(tmp_path, records, "val_accuracy")

    result = CliRunner().invoke(cli, ["plot", str(run_dir)])

    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert result.stderr.splitlines()[1:] == [
        "warning: loss.png is left out: no record holds a finite loss within"
        " ±1e+306",
        "warning: accuracy.png is left out: the run logged no evaluation (no epoch"
        " record)",
    ]


def test_plot_command_refuses_an_iteration_that_is_no_count(tmp_path):
    records = [{"kind": "iter", "iteration": 1e308, "loss": 1.0},
               {"kind": "iter", "iteration": 2, "loss": 0.5}]
    run_dir = metrics_run(tmp_path, records, "val_accuracy")

    result = CliRunner().invoke(cli, ["plot", str(run_dir)])

    assert result.exit_code == 2
    assert result.stderr == (f"error: {run_dir / 'metrics.jsonl'}, line 1: iteration"
                             " 1e+308 is not a whole number from 1 to 1e+15; the"
                             " file is damaged\n")
    assert not (run_dir / "plots").exists()


def test_plot_evaluation_shows_the_lowest_true_class_probabilities(image_run,
                                                                    tmp_path):
    restored = restore(image_run / "checkpoints" / "best.npz")
    prepared = prepare_data(restored.config, restored.preprocessor,
                            splits=("test",), spec=restored.data)
    X, y = prepared.splits["test"]
    X_raw, _ = prepared.dataset.split("test")
    scores = restored.model.predict(X)

    result = plot_evaluation(scores, y, restored.data["class_names"], X_raw,
                             restored.data["input_shape"], tmp_path, per_class=2)

    expected, p_true = lowest_true_probability(scores, y, 2)
    assert result.worst.keys() == expected.keys()
    for c in expected:
        np.testing.assert_array_equal(result.worst[c], expected[c])
    np.testing.assert_allclose(result.true_probability, p_true, rtol=1e-6)
    assert [path.name for path in result.paths] == ["confusion_matrix.png",
                                                    "worst_examples.png"]
    assert_pngs(result.paths, tmp_path)


def test_plot_evaluation_lists_feature_data_in_a_table(tmp_path):
    rng = np.random.default_rng(1)
    y = np.array([0, 2, 0, 0, 2, 2, 0, 2, 0, 0])  # class 1 has no samples
    scores = rng.normal(size=(10, 3))

    result = plot_evaluation(scores, y, ["a", "b", "c"], rng.normal(size=(10, 4)),
                             (4,), tmp_path, per_class=4)

    expected, _ = lowest_true_probability(scores, y, 4)
    for c in range(3):
        np.testing.assert_array_equal(result.worst[c], expected[c])
    assert len(result.worst[1]) == 0 and len(result.worst[2]) == 4
    assert_pngs(result.paths, tmp_path)


def test_worst_examples_break_ties_by_the_lower_index():
    scores = np.zeros((6, 2))
    y = np.array([1, 0, 1, 0, 1, 1])

    worst = worst_examples(scores, y, per_class=3)

    np.testing.assert_array_equal(worst[0], [1, 3])
    np.testing.assert_array_equal(worst[1], [0, 2, 4])


def test_smooth_is_a_bias_corrected_moving_average():
    weight = 0.8
    values = np.array([4.0, 1.0, 7.0])

    smoothed = smooth(values, weight)

    # The closed form of s_t / (1 - w^t) for the first two points, and a constant
    # series staying constant.
    np.testing.assert_allclose(smoothed[:2], [4.0, (weight * 4.0 + 1.0) / (1 + weight)])
    np.testing.assert_allclose(smooth(np.full(5, 3.0), 0.9), np.full(5, 3.0))


def test_a_figure_replaces_a_symbolic_link_instead_of_writing_through_it(
        image_run, tmp_path):
    out = tmp_path / "figures"
    out.mkdir()
    victim = tmp_path / "victim.npz"
    victim.write_bytes(b"a checkpoint")
    (out / "loss.png").symlink_to(victim)

    plot_run(image_run, out)

    assert victim.read_bytes() == b"a checkpoint"
    assert not (out / "loss.png").is_symlink()
    assert (out / "loss.png").read_bytes().startswith(b"\x89PNG")


# What ``plot --out`` and ``eval --plots`` find at a figure's name in their folder
# before they draw: a user's own file, or a folder.

def users_png(path):
    """A PNG another program wrote: the signature and a Software entry of its own."""
    text = b"Software\x00GIMP 2.10"
    chunk = len(text).to_bytes(4, "big") + b"tEXt" + text + b"\x00" * 4
    path.write_bytes(PNG_SIGNATURE + chunk)
    return path.read_bytes()


@pytest.mark.parametrize("make", ["user's png", "text file", "folder", "pipe"])
def test_plot_run_refuses_to_replace_what_it_did_not_write(image_run, tmp_path, make):
    out = tmp_path / "figures"
    out.mkdir()
    target = out / "update_ratios.png"
    before = None
    if make == "folder":
        target.mkdir()
    elif make == "pipe":
        os.mkfifo(target)  # reading it to look for a PNG would block for good
    else:
        before = (users_png(target) if make == "user's png"
                  else target.write_text("mine") and target.read_bytes())

    what = {"folder": "is a folder, where update_ratios.png would be written",
            "pipe": "is not a regular file (a pipe or a device), where"
                    " update_ratios.png would be written"}.get(
        make, "is not a plot that nntrain wrote, and update_ratios.png would"
              " replace it")
    with pytest.raises(BadInputError, match=re.escape(
            f"{target} {what}; move it, or give --out another folder")), \
            hang_ends_after(60):
        plot_run(image_run, out)

    # Refused before any figure was drawn, the file untouched.
    assert [path.name for path in out.iterdir()] == ["update_ratios.png"]
    if before is not None:
        assert target.read_bytes() == before


def test_plot_run_replaces_the_figures_it_wrote_itself(image_run, tmp_path):
    out = tmp_path / "figures"
    first = plot_run(image_run, out)

    again = plot_run(image_run, out)  # not refused: nntrain wrote them

    assert again == first


def test_eval_plots_refuses_a_user_file_before_drawing_either_figure(tmp_path):
    np.savez(tmp_path / "images.npz", **image_arrays())
    run_dir = fit_run(tmp_path, tmp_path / "images.npz")
    out = tmp_path / "figures"
    out.mkdir()
    before = users_png(out / "worst_examples.png")

    result = CliRunner().invoke(cli, ["eval", str(run_dir / "checkpoints" /
                                                  "best.npz"), "--plots", str(out)])

    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == (
        f"error: {out / 'worst_examples.png'} is not a plot that nntrain wrote, and"
        " worst_examples.png would replace it; move it, or give --plots another"
        " folder")
    assert [path.name for path in out.iterdir()] == ["worst_examples.png"]
    assert (out / "worst_examples.png").read_bytes() == before


def test_plot_run_draws_from_best_npz_when_last_npz_is_damaged(image_run, tmp_path,
                                                              monkeypatch):
    run_dir = tmp_path / "run"
    shutil.copytree(image_run, run_dir)
    last = run_dir / "checkpoints" / "last.npz"
    last.write_bytes(last.read_bytes()[:100])
    loaded, real_restore = [], nntrain.restore.restore

    def spy(path, *args, **kwargs):
        loaded.append(path)
        return real_restore(path, *args, **kwargs)

    monkeypatch.setattr(nntrain.restore, "restore", spy)

    with pytest.warns(PlotWarning, match=r"last\.npz.*; activations\.png and"
                      r" first_layer_weights\.png show best\.npz instead"):
        paths = plot_run(run_dir)

    assert {"activations.png", "first_layer_weights.png"} <= {p.name for p in paths}
    assert loaded == [last, run_dir / "checkpoints" / "best.npz"]


@pytest.fixture
def drawn(monkeypatch):
    """name -> the matplotlib Figure of each PNG written while the test runs."""
    figures = {}
    save = plots._save

    def keep(figure, path):
        figures[path.name] = figure
        return save(figure, path)

    monkeypatch.setattr(plots, "_save", keep)
    return figures


def metrics_run(folder, records, monitor=None, **train):
    """A run folder of ``records`` alone (no checkpoint), with a config.yaml
    setting ``train.monitor`` and ``train`` unless monitor is None."""
    run_dir = folder / "run"
    run_dir.mkdir()
    text = "".join(json.dumps(record) + "\n" for record in records)
    (run_dir / "metrics.jsonl").write_text(text, encoding="utf-8")
    if monitor is not None:
        config = {"train": {"monitor": monitor, **train}}
        (run_dir / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return run_dir


def plot_metrics(folder, records, monitor=None, **train):
    """plot_run on ``metrics_run(folder, records, monitor, **train)``."""
    run_dir = metrics_run(folder, records, monitor, **train)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".* holds no last.npz", PlotWarning)
        warnings.filterwarnings("ignore", ".* is left out: ", PlotWarning)
        plot_run(run_dir)


def plot_warnings(run_dir) -> tuple[list[str], list[str]]:
    """(names of the PNGs plot_run wrote, the PlotWarnings it gave but the one on
    the missing checkpoint), with every other warning made an error."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("error")
        warnings.simplefilter("always", PlotWarning)
        paths = plot_run(run_dir)
    said = [str(warning.message) for warning in caught]
    return ([path.name for path in paths],
            [text for text in said if "holds no last.npz" not in text])


def evaluations(**series) -> list[dict]:
    """One "epoch" record per value, epochs 1, 2, ..., of each named series."""
    count = len(next(iter(series.values())))
    return [{"kind": "epoch", "epoch": epoch, "iteration": 4 * epoch,
             **{key: values[epoch - 1] for key, values in series.items()}}
            for epoch in range(1, count + 1)]


def losses(count: int) -> tuple[list[dict], np.ndarray]:
    """``count`` "iter" records of a noisy falling loss, and the losses."""
    loss = 2.0 / np.arange(1, count + 1) + 0.1 * (np.arange(count) % 3)
    records = [{"kind": "iter", "iteration": 10 * (t + 1), "epoch": 1,
                "loss": float(loss[t])} for t in range(count)]
    return records, loss


def legend_texts(ax) -> list[str]:
    return [text.get_text() for text in ax.get_legend().get_texts()]


def visible_x_ticks(figure) -> np.ndarray:
    figure.canvas.draw()
    ax = figure.axes[0]
    low, high = sorted(ax.get_xlim())
    ticks = ax.get_xticks()
    return ticks[(ticks >= low) & (ticks <= high)]


def star(ax):
    """The (x, y) of the star marking the best evaluation, and its legend text."""
    [line] = [line for line in ax.get_lines() if line.get_marker() == "*"]
    return (list(line.get_xdata()), list(line.get_ydata())), line.get_label()


def test_loss_of_twenty_points_is_drawn_raw_without_a_smoothed_line(tmp_path,
                                                                     drawn):
    records, loss = losses(20)

    plot_metrics(tmp_path, records, "val_accuracy")

    ax = drawn["loss.png"].axes[0]
    [line] = ax.get_lines()
    np.testing.assert_array_equal(line.get_xdata(), 10 * np.arange(1, 21))
    np.testing.assert_array_equal(line.get_ydata(), loss)
    assert line.get_marker() == "o" and line.get_alpha() is None
    assert legend_texts(ax) == ["loss (logged iterations)"]


def test_loss_of_forty_points_gets_a_moving_average_that_names_its_weight(
        tmp_path, drawn):
    records, loss = losses(40)

    plot_metrics(tmp_path, records, "val_accuracy")

    # 40 points average over a span of 40 / 20 = 2: weight 1 - 2 / (2 + 1) = 1/3.
    # The oracle sums the series directly: s_t = sum_k (1 - w) w^(t-k) v_k over
    # k <= t, divided by 1 - w^t.
    w = 1 / 3
    t = np.arange(1, 41)
    powers = np.tril(w ** (t[:, None] - t[None, :]))
    expected = (1 - w) * powers @ loss / (1 - w**t)
    ax = drawn["loss.png"].axes[0]
    raw, smoothed = ax.get_lines()
    np.testing.assert_array_equal(raw.get_ydata(), loss)
    np.testing.assert_allclose(smoothed.get_ydata(), expected, rtol=1e-12)
    assert legend_texts(ax) == [
        "loss (logged iterations)",
        "smoothed: 0.67 x point + 0.33 x the average before it",
    ]


def fitted_title(figure) -> str:
    """The figure's title, its lines joined, once checked to lie wholly inside the
    figure as the PNG is drawn."""
    figure.set_dpi(plots.DPI)
    figure.canvas.draw()
    [title] = figure.texts
    extent = title.get_window_extent(figure.canvas.get_renderer())
    assert 0 <= extent.x0 and extent.x1 <= figure.bbox.width
    assert 0 <= extent.y0 and extent.y1 <= figure.bbox.height
    return title.get_text().replace("\n", " ")


@pytest.mark.parametrize("hidden", [[8], [8, 8, 8, 8]])
def test_activations_title_fits_inside_the_figure(tiny_npz, tmp_path, drawn,
                                                  hidden):
    run_dir = fit_run(tmp_path, tiny_npz, model={"hidden": hidden})

    plot_run(run_dir)

    figure = drawn["activations.png"]
    assert fitted_title(figure) == (
        "Hidden-layer activations on 50 training samples (evaluation mode)")
    assert len([ax for ax in figure.axes if ax.axison]) == len(hidden)


@pytest.mark.parametrize("weight", [1e36, 3e38, np.nan])
def test_activations_of_blown_up_weights_are_drawn_without_numpy_warnings(
        tiny_npz, tmp_path, drawn, weight):
    restored = restore(fit_run(tmp_path, tiny_npz) / "checkpoints" / "last.npz")
    restored.model.params["affine1.W"][...] = weight
    X = training_sample(restored)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = restored.model.layers[1].forward(
            restored.model.layers[0].forward(X, False), False).astype(np.float64)
    finite = expected[np.isfinite(expected)]

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # NumPy's overflow warnings included
        plots._plot_activations(restored.model, X, tmp_path / "activations.png")

    [title] = [ax.get_title() for ax in drawn["activations.png"].axes if ax.axison]
    if finite.size:
        assert title.startswith(f"relu1\nmean {finite.mean():.3g}, std"
                                f" {finite.std():.3g}, "), title
    else:
        assert title.startswith("relu1\nno finite value, "), title
    not_finite = expected.size - finite.size
    assert title.endswith(f", {not_finite:,} not finite (not drawn)") == (
        not_finite > 0), title


def test_class_template_title_fits_inside_the_figure(tmp_path, drawn):
    np.savez(tmp_path / "images.npz", **image_arrays())
    run_dir = fit_run(tmp_path, tmp_path / "images.npz", model={"hidden": []})

    plot_run(run_dir)

    assert fitted_title(drawn["first_layer_weights.png"]) == (
        "First-layer weights (affine1): one template per class, each scaled to its"
        " own range")


def test_epoch_and_iteration_axes_have_whole_number_ticks(tmp_path, drawn):
    records = evaluations(loss=[1.0, 0.8, 0.7], lr=[0.1, 0.1, 0.1],
                          train_accuracy=[0.5, 0.6, 0.7],
                          val_accuracy=[0.4, 0.5, 0.6],
                          **{"update_ratio/affine1.W": [2e-3, 1e-3, 5e-4]})

    plot_metrics(tmp_path, records, "val_accuracy")

    assert set(drawn) == {"loss.png", "accuracy.png", "learning_rate.png",
                          "update_ratios.png"}
    for name, figure in drawn.items():
        ticks = visible_x_ticks(figure)
        assert len(ticks) >= 2, name
        np.testing.assert_array_equal(ticks, np.round(ticks), err_msg=name)


# Four evaluations where each monitor picks another best: val_loss ties at epochs 2
# and 3 (the first is kept), val_accuracy at 3 and 4, and the training loss gains
# less than early stopping's min_delta at epoch 3, which best.npz still takes.
MONITORED = evaluations(val_loss=[0.5, 0.3, 0.3, 0.4],
                        val_accuracy=[0.6, 0.7, 0.9, 0.9],
                        train_accuracy=[0.6, 0.8, 0.8, 0.85],
                        loss=[0.6, 0.4, 0.39995, 0.45])


@pytest.mark.parametrize("monitor, epoch, y, where", [
    ("val_loss", 2, 0.7, ", marked on the validation curve"),
    ("val_accuracy", 3, 0.9, ""),
    ("train_accuracy", 4, 0.85, ""),
    # The training loss's star sits on the train curve, not the validation one.
    ("loss", 3, 0.8, ", marked on the train curve"),
])
def test_accuracy_star_marks_the_evaluation_the_monitor_chose(tmp_path, drawn,
                                                              monitor, epoch, y,
                                                              where):
    plot_metrics(tmp_path, MONITORED, monitor,
                 early_stopping={"patience": 3, "min_delta": 0.01})

    ax = drawn["accuracy.png"].axes[0]
    assert star(ax) == (([epoch], [y]), f"best {monitor} (best.npz){where}")
    assert f"best {monitor} (best.npz){where}" in legend_texts(ax)


@pytest.mark.parametrize("best, shown", [(0.25, "0.2500"), (2.5e7, "2.5e+07")])
def test_accuracy_star_is_annotated_with_the_best_value_as_the_log_writes_it(
        tmp_path, drawn, best, shown):
    records = evaluations(val_loss=[4e7, best], val_accuracy=[0.5, 0.6])

    plot_metrics(tmp_path, records, "val_loss")

    texts = [text.get_text() for text in drawn["accuracy.png"].axes[0].texts]
    assert texts == [f"val_loss {shown}"]


def test_accuracy_star_of_a_run_without_config_claims_only_the_best_value(
        tmp_path, drawn):
    with pytest.warns(PlotWarning, match="config.yaml does not say train.monitor;"
                                         " the star on accuracy.png marks the best"
                                         " val_accuracy"):
        plot_metrics(tmp_path, MONITORED)

    assert star(drawn["accuracy.png"].axes[0]) == (([3], [0.9]), "best val_accuracy")


def test_accuracy_star_of_a_fit_agrees_with_best_npz(tiny_npz, tmp_path, drawn):
    raw = tiny_config_dict(tiny_npz)
    raw["train"].update(epochs=5, monitor="val_loss")
    run_dir = fit(resolve_config(raw), tmp_path / "run", quiet=True).run_dir
    best = load_checkpoint(run_dir / "checkpoints" / "best.npz")
    iteration = best.meta["solver"]["progress"]["iteration"]
    [record] = [record for record in read_metrics(run_dir / "metrics.jsonl")
                if record["kind"] == "epoch" and record["iteration"] == iteration]

    plot_run(run_dir)

    ax = drawn["accuracy.png"].axes[0]
    assert star(ax) == (([record["epoch"]], [record["val_accuracy"]]),
                        "best val_loss (best.npz), marked on the validation curve")


def test_worst_examples_table_says_which_listed_samples_are_right(tmp_path, drawn):
    # Class 0's two samples: sample 0 predicted 0 with p 0.88 (right, but the
    # less sure of the two), sample 1 predicted 0 with p 0.98 (right); class 1's
    # sample 2 predicted 0 (wrong).
    scores = np.array([[2.0, 0.0], [4.0, 0.0], [1.0, 0.0]])
    y = np.array([0, 0, 1])

    plot_evaluation(scores, y, ["a", "b"], np.zeros((3, 4)), (4,), tmp_path,
                    per_class=1)

    table = drawn["worst_examples.png"].axes[0].tables[0]
    cells = table.get_celld()
    rows = [[cells[row, column].get_text().get_text() for column in range(5)]
            for row in range(3)]
    assert rows == [["true class", "sample", "predicted", "right", "p(true class)"],
                    # 1 / (1 + e^-2) = 0.8808, 1 / (1 + e) = 0.2689.
                    ["a", "0", "a", "yes", "0.881"],
                    ["b", "2", "a", "no", "0.269"]]
    assert cells[2, 2].get_text().get_color() == "tab:red"
    assert cells[1, 2].get_text().get_color() != "tab:red"


@pytest.mark.parametrize("p, shown", [
    (0.5, "0.500"), (0.88, "0.880"), (0.973, "0.9730"), (0.99973, "0.999730"),
    (0.00314, "0.00314"), (1 - 3.1e-8, "1-3.1e-08"), (2e-9, "2.0e-09"),
    (1.0, "1"), (0.0, "0"),
])
def test_probability_text_keeps_three_digits_of_the_distance_to_0_or_1(p, shown):
    assert plots.probability_text(p) == shown


def test_worst_example_tiles_tell_probabilities_near_one_apart(tmp_path, drawn):
    # p(true class) = 1 / (1 + e^-s) for scores (s, 0): s = 6 gives 0.99753,
    # s = 8 gives 0.99966; both read p=1.00 at two decimals.
    scores = np.array([[6.0, 0.0], [8.0, 0.0]])

    plot_evaluation(scores, np.array([0, 0]), ["a", "b"], np.zeros((2, 4)),
                    (2, 2), tmp_path, per_class=2)

    texts = [text.get_text() for text in drawn["worst_examples.png"].axes[0].texts]
    assert texts[:2] == ["a\np=0.99753", "a\np=0.999665"]


def test_an_empty_metrics_file_says_the_metric_figures_are_left_out(tmp_path):
    run_dir = metrics_run(tmp_path, [], "val_accuracy")

    names, said = plot_warnings(run_dir)

    assert names == []
    assert said == [f"{run_dir / 'metrics.jsonl'} holds no records (a run stopped"
                    " before its first one leaves none); loss.png, accuracy.png,"
                    " learning_rate.png and update_ratios.png are left out"]


def test_records_of_nan_only_name_each_figure_left_out(tmp_path):
    # The run writes NaN as null.
    records = [{"kind": "iter", "iteration": 1, "epoch": 1, "lr": None,
                "loss": None},
               {"kind": "epoch", "iteration": 1, "epoch": 1, "lr": None,
                "loss": None, "train_accuracy": None, "val_accuracy": None,
                "update_ratio/affine1.W": None}]
    run_dir = metrics_run(tmp_path, records, "val_accuracy")

    names, said = plot_warnings(run_dir)

    assert names == []
    assert said == [
        "loss.png is left out: no record holds a finite loss",
        "accuracy.png is left out: no record holds a finite train_accuracy or"
        " val_accuracy",
        "learning_rate.png is left out: no record holds a finite lr",
        "update_ratios.png is left out: no record holds a finite update ratio"
        " above 0",
    ]


def test_a_run_stopped_before_its_first_evaluation_says_accuracy_is_left_out(
        tmp_path):
    records, _ = losses(5)
    run_dir = metrics_run(tmp_path, records, "val_accuracy")

    names, said = plot_warnings(run_dir)

    assert names == ["loss.png"]
    assert said == ["accuracy.png is left out: the run logged no evaluation (no"
                    " epoch record)"]


def test_a_run_without_rate_or_diagnostics_leaves_their_figures_out_silently(
        tmp_path):
    # L-BFGS logs no lr, and a run without train.diagnostics no update ratios:
    # nothing is missing.
    records = [{"kind": "epoch", "iteration": step, "epoch": step, "loss": 1 / step,
                "val_accuracy": 0.5} for step in (1, 2)]
    run_dir = metrics_run(tmp_path, records, "val_accuracy")

    assert plot_warnings(run_dir) == (["loss.png", "accuracy.png"], [])


def test_losses_too_large_for_an_axis_are_left_out_with_a_note(tmp_path, drawn):
    records = [{"kind": "iter", "iteration": step, "loss": loss}
               for step, loss in enumerate([1.0, 1e308, 0.5, -1e308, 0.25], 1)]
    run_dir = metrics_run(tmp_path, records, "val_accuracy")

    names, said = plot_warnings(run_dir)

    assert names == ["loss.png"]
    assert said[0] == ("loss.png leaves out 2 values of loss beyond ±1e+306, too"
                       " large to draw")
    [line] = drawn["loss.png"].axes[0].get_lines()
    assert list(line.get_xdata()) == [1, 3, 5]
    assert list(line.get_ydata()) == [1.0, 0.5, 0.25]


def test_losses_all_too_large_for_an_axis_leave_the_figure_out(tmp_path):
    records = [{"kind": "iter", "iteration": 1, "loss": 1e308},
               {"kind": "iter", "iteration": 2, "loss": -1e308}]
    run_dir = metrics_run(tmp_path, records, "val_accuracy")

    names, said = plot_warnings(run_dir)

    assert names == []
    assert said[0] == ("loss.png is left out: no record holds a finite loss within"
                       " ±1e+306")


def test_accuracy_star_too_large_for_an_axis_is_not_drawn(tmp_path, drawn):
    records = evaluations(val_accuracy=[0.5, 1e308], val_loss=[1.0, 0.5],
                          loss=[1.0, 0.5])
    run_dir = metrics_run(tmp_path, records, "val_loss")

    names, said = plot_warnings(run_dir)

    assert "accuracy.png" in names
    assert said == ["accuracy.png leaves out 1 value of accuracy beyond ±1e+306,"
                    " too large to draw"]
    assert not [line for line in drawn["accuracy.png"].axes[0].get_lines()
                if line.get_marker() == "*"]


def test_a_loss_that_blew_up_over_hundreds_of_decades_is_drawn_whole(tmp_path,
                                                                      drawn):
    # A float64 run at a rate far too high: its loss grows ~9 decades an update.
    loss = np.geomspace(14.7, 7.7e304, 35)
    records = [{"kind": "iter", "iteration": step, "loss": float(value)}
               for step, value in enumerate(loss, 1)]
    run_dir = metrics_run(tmp_path, records, "val_accuracy")

    names, said = plot_warnings(run_dir)  # a NumPy overflow warning would raise

    assert names == ["loss.png"]
    figure = drawn["loss.png"]
    figure.canvas.draw()
    ax = figure.axes[0]
    low, high = ax.get_ylim()
    assert ax.get_yscale() == "log"
    assert low <= 14.7 and 7.7e304 <= high < np.inf
    assert np.isfinite(ax.get_yticks()).all()


def test_a_constant_loss_gets_a_decade_either_side_without_warnings(tmp_path,
                                                                     drawn):
    records = [{"kind": "iter", "iteration": step, "loss": 1e5}
               for step in range(1, 41)]
    run_dir = metrics_run(tmp_path, records, "val_accuracy")

    names, _ = plot_warnings(run_dir)  # matplotlib's own warning would raise

    assert names == ["loss.png"]
    np.testing.assert_allclose(drawn["loss.png"].axes[0].get_ylim(), (1e4, 1e6))


@pytest.mark.parametrize("text, problem", [
    ("train: [unclosed\n".encode(),
     "expected ',' or ']', but got '<stream end>' at line 2, column 1"),
    (b"train:\n  monitor: val_loss \xff\n", "not UTF-8 text"),
])
def test_an_unreadable_config_is_named_with_what_it_means_for_the_star(
        tmp_path, text, problem):
    run_dir = metrics_run(tmp_path, evaluations(val_accuracy=[0.5, 0.6],
                                                loss=[1.0, 0.5]))
    (run_dir / "config.yaml").write_bytes(text)

    _, said = plot_warnings(run_dir)

    assert said == [f"cannot read {run_dir / 'config.yaml'} ({problem}), so the"
                    " run's train.monitor is unknown: the star on accuracy.png"
                    " marks the best val_accuracy, the default, which may not be"
                    " the evaluation best.npz holds"]
