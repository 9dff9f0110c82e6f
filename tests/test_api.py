"""The Python API's arguments: fit, restore and load_config called from a notebook
refuse what the command line cannot be given (a changed config on resume, a
truthy string for a flag, no path) with an error naming the argument. And its
names import from the modules they were defined in before those were split."""

import importlib
import re
import shutil

import pytest
import yaml
from conftest import tiny_arrays, tiny_config_dict

from nntrain.checkpoint import load_checkpoint
from nntrain.config import load_config
from nntrain.errors import CheckpointError, ConfigError
from nntrain.pipeline import fit
from nntrain.restore import restore

# tiny_config: 50 training rows in batches of 16, so 4 updates an epoch.
PER_EPOCH = 4


@pytest.fixture
def one_epoch_run(tmp_path, tiny_config):
    """(config path, run directory) of the tiny config trained for 1 epoch."""
    run = tmp_path / "run"
    fit(load_config(tiny_config, ["train.epochs=1"]), run, quiet=True)
    return tiny_config, run


def _iteration(run) -> int:
    meta = load_checkpoint(run / "checkpoints" / "last.npz").meta
    return meta["solver"]["progress"]["iteration"]


@pytest.mark.parametrize("override, key, given, saved", [
    ("optimizer.lr=0.5", "optimizer.lr", "0.5", "0.01"),
    ("model.l2=0.5", "model.l2", "0.5", "0.0"),
    ("train.batch_size=7", "train.batch_size", "7", "16"),
    ("model.hidden=[5]", "model.hidden", "[5]", "[8]"),
])
def test_fit_refuses_a_resume_whose_config_differs_from_the_checkpoints(
        one_epoch_run, override, key, given, saved):
    config_path, run = one_epoch_run
    last = run / "checkpoints" / "last.npz"
    config = load_config(config_path, ["train.epochs=2", override])

    with pytest.raises(ConfigError, match="^" + re.escape(
            f"{key} is {given}, but {saved} in {last}: a resumed run keeps its"
            " checkpoint's config; only train.epochs, train.iterations,"
            " train.threads and data.path (where the data lies now) may change")
            ) as refused:
        fit(config, run, quiet=True, resume=load_checkpoint(last))

    assert refused.value.key == key
    assert _iteration(run) == PER_EPOCH


def test_fit_resumes_with_what_a_resume_may_change(one_epoch_run, tmp_path):
    config_path, run = one_epoch_run
    moved = tmp_path / "moved.npz"
    moved.write_bytes((tmp_path / "tiny.npz").read_bytes())  # the same data
    config = load_config(config_path, ["train.epochs=2", "train.threads=1",
                                       f"data.path={moved}", "output=elsewhere"])

    fit(config, run, quiet=True, resume=load_checkpoint(run / "checkpoints"
                                                        / "last.npz"))

    assert _iteration(run) == 2 * PER_EPOCH


@pytest.mark.parametrize("where", ["file", "run directory"])
def test_fit_resumes_from_a_path(one_epoch_run, where):
    config_path, run = one_epoch_run
    resume = str(run / "checkpoints" / "last.npz") if where == "file" else run

    fit(load_config(config_path, ["train.epochs=2"]), run, quiet=True,
        resume=resume)

    assert _iteration(run) == 2 * PER_EPOCH


def test_fit_refuses_a_resume_that_is_no_checkpoint_nor_path(one_epoch_run):
    config_path, run = one_epoch_run

    with pytest.raises(TypeError, match=r"^resume is int; give a loaded Checkpoint"):
        fit(load_config(config_path, ["train.epochs=2"]), run, resume=3)


@pytest.mark.parametrize("name, value", [("force", "no"), ("quiet", "yes"),
                                         ("force", 1), ("data_path_given", "no")])
def test_fit_flags_must_be_bools(one_epoch_run, name, value):
    config_path, run = one_epoch_run
    before = (run / "metrics.jsonl").read_bytes()

    with pytest.raises(TypeError, match=f"^{name} is {re.escape(repr(value))};"
                       " give True or False$"):
        fit(load_config(config_path), run, **{name: value})

    assert (run / "metrics.jsonl").read_bytes() == before  # "no" wiped nothing


def test_fit_without_a_run_directory_is_a_type_error(tiny_config):
    with pytest.raises(TypeError, match=r"^run_dir is NoneType; give the run"
                       r" directory's path, a str or pathlib\.Path$"):
        fit(load_config(tiny_config), None)


@pytest.mark.parametrize("path, kind", [(None, "NoneType"), (3, "int")])
def test_restore_without_a_path_is_a_type_error(path, kind):
    with pytest.raises(TypeError, match=rf"^path is {kind}; give the checkpoint's"
                       r" path, a str or pathlib\.Path$"):
        restore(path)


def test_load_config_without_a_path_says_the_defaults_set_no_length():
    with pytest.raises(ConfigError, match=re.escape(
            "the default config (no path) sets no length: give train.epochs or"
            ' train.iterations, as in load_config(None, ["train.epochs=5"])')):
        load_config(None)


def test_load_config_without_a_path_blames_an_override_that_unsets_the_length():
    with pytest.raises(ConfigError, match=r"^--set train\.epochs=null: set exactly"
                       r" one of train\.epochs and train\.iterations"):
        load_config(None, ["train.epochs=null"])


def test_fit_refuses_to_resume_a_run_into_another_runs_folder(one_epoch_run,
                                                              tmp_path):
    # The other folder's metrics and checkpoints would be overwritten with this
    # run's continuation.
    from nntrain.errors import BadInputError

    config_path, run = one_epoch_run
    other = tmp_path / "other"
    fit(load_config(config_path, ["train.epochs=1", "seed=7"]), other, quiet=True)
    before = (other / "metrics.jsonl").read_bytes()
    last = load_checkpoint(run / "checkpoints" / "last.npz")

    with pytest.raises(BadInputError, match=re.escape(
            f"a resumed run continues in its own run directory ({run.resolve()}),"
            f" not in {other}")):
        fit(load_config(config_path, ["train.epochs=2"]), other, quiet=True,
            resume=last)

    assert (other / "metrics.jsonl").read_bytes() == before


def test_fit_resuming_a_finished_run_does_nothing_and_says_so(one_epoch_run):
    from nntrain.errors import NNTrainWarning

    config_path, run = one_epoch_run
    files = {path: path.read_bytes() for path in run.rglob("*") if path.is_file()}
    last = run / "checkpoints" / "last.npz"

    with pytest.warns(NNTrainWarning, match=re.escape(
            f"{last} is from a finished run ({PER_EPOCH} iterations, epoch 1):"
            " nothing to do. To train longer, extend it past those:"
            " train.epochs=N with N > 1")):
        result = fit(load_config(config_path, ["train.epochs=1"]), run, resume=last)

    assert result.progress.iteration == PER_EPOCH and len(result.history) == 1
    assert {path: path.read_bytes() for path in run.rglob("*")
            if path.is_file()} == files


def test_fit_shows_the_callers_notes_on_a_finished_run_as_notes(one_epoch_run,
                                                                capsys):
    from nntrain.errors import NNTrainWarning

    config_path, run = one_epoch_run
    last = run / "checkpoints" / "last.npz"

    with pytest.warns(NNTrainWarning) as warned:
        fit(load_config(config_path, ["train.epochs=1"]), run, resume=last,
            notes=["the caller's note"])

    assert capsys.readouterr().err == "note: the caller's note\n"
    assert [str(warning.message) for warning in warned] == [
        f"{last} is from a finished run ({PER_EPOCH} iterations, epoch 1):"
        " nothing to do. To train longer, extend it past those: train.epochs=N"
        " with N > 1"]


def test_fit_resuming_brings_a_stale_best_npz_up_to_last_npz(tmp_path, tiny_config):
    # As `fit --resume` does: a best.npz older than a last.npz that counts its own
    # evaluation as the best (an old nntrain stopped between the two saves).
    import shutil

    run = tmp_path / "run"
    fit(load_config(tiny_config, ["train.epochs=3", "train.snapshot_every=1",
                                  "train.monitor=val_loss"]), run, quiet=True)
    checkpoints = run / "checkpoints"
    progress = load_checkpoint(checkpoints / "last.npz").meta["solver"]["progress"]
    assert progress["best_iteration"] == progress["iteration"] == 3 * PER_EPOCH
    shutil.copyfile(checkpoints / "snapshot-epoch-0001.npz", checkpoints / "best.npz")

    # The run is finished: nothing trains, so only the repair can move best.npz.
    fit(load_config(tiny_config, ["train.epochs=3", "train.snapshot_every=1",
                                  "train.monitor=val_loss"]), run, quiet=True,
        resume=run)

    best = load_checkpoint(checkpoints / "best.npz").meta["solver"]["progress"]
    assert best["iteration"] == 3 * PER_EPOCH


# What moved out of nntrain.pipeline and nntrain.config into modules of their own,
# by new home: notebooks may still import it from the old module.
MOVED = {
    "nntrain.pipeline": {
        "nntrain.prepare": ["EVAL_DATA_FIX", "FEATURE_DTYPES", "RESUME_DATA_FIX",
                            "SPLITS", "Prepared", "data_fingerprints", "data_spec",
                            "prepare_data"],
        "nntrain.restore": ["Restored", "evaluate_checkpoint", "migrate_config",
                            "restore", "without_lbfgs_average",
                            "without_lbfgs_ignored", "without_lbfgs_max_norm"],
    },
    "nntrain.config": {
        "nntrain.config_checks": ["MAX_LAYERS", "Key", "boolean", "choice",
                                  "close_match", "components", "integer", "list_of",
                                  "number", "optional_choice", "optional_number",
                                  "optional_text", "path_text", "validation_size"],
    },
}


@pytest.mark.parametrize("old", sorted(MOVED))
def test_moved_names_still_import_from_their_old_module(old):
    module = importlib.import_module(old)
    for home, names in MOVED[old].items():
        for name in names:
            assert getattr(module, name) is getattr(importlib.import_module(home),
                                                    name), f"{old}.{name}"


def test_pipeline_exports_the_fit_run_and_what_moved_out_of_it():
    import nntrain.pipeline

    moved = [name for names in MOVED["nntrain.pipeline"].values() for name in names]
    assert sorted(nntrain.pipeline.__all__) == sorted(["FitResult", "environment",
                                                       "fit", *moved])


def test_fit_records_the_run_directory_it_wrote_as_output(tmp_path, tiny_config):
    # The file's output names another folder: config.yaml and the checkpoint must
    # name this run's, or rerunning the recorded config trains into that folder.
    config = load_config(tiny_config, ["train.epochs=1", "output=elsewhere"])
    run = tmp_path / "notebook-run"

    fit(config, run, quiet=True)

    recorded = load_config(run / "config.yaml")["output"]
    saved = load_checkpoint(run / "checkpoints" / "last.npz").meta["config"]["output"]
    assert recorded == saved == str(run)
    assert config["output"] == "elsewhere"  # the caller's dict is left alone


@pytest.mark.parametrize("override, message", [
    # A typo is named unknown, as in a new run.
    ("train.epochz=3", "--set train.epochz=3: unknown key train.epochz (did you mean"
                       " 'epochs'?)"),
    ("model.l2=0.5", "--set model.l2: a resumed run keeps its checkpoint's config"),
    # Not "set it whole with --set 'model.hidden={...}'": a resume refuses that too.
    ("model.hidden.x=1", "--set model.hidden.x: a resumed run keeps its checkpoint's"
                         " config"),
], ids=["typo", "kept", "into-a-kept-value"])
def test_resumed_config_refuses_an_override_saying_why(one_epoch_run, override,
                                                       message):
    from nntrain.train.resume import resumed_config

    _, run = one_epoch_run
    last = run / "checkpoints" / "last.npz"
    with pytest.raises(ConfigError, match="^" + re.escape(message)):
        resumed_config(load_checkpoint(last), [override], last)


def test_resumed_config_takes_an_override_that_repeats_the_checkpoints_value(
        one_epoch_run):
    from nntrain.train.resume import resumed_config

    _, run = one_epoch_run
    last = run / "checkpoints" / "last.npz"
    saved = load_checkpoint(last).meta["config"]

    config = resumed_config(load_checkpoint(last), [
        f"train.batch_size={saved['train']['batch_size']}", "train.epochs=2"], last)

    assert config["train"]["batch_size"] == saved["train"]["batch_size"]
    assert config["train"]["epochs"] == 2


def test_the_package_lists_its_lazy_functions():
    import nntrain

    assert {"load_config", "build_model", "__version__"} <= set(dir(nntrain))


LONG_NAME = "a" * 300  # past the 255 bytes a name may have


@pytest.mark.parametrize("call", [
    lambda: load_config(f"{LONG_NAME}.yaml"),
    lambda: restore(f"{LONG_NAME}.npz"),
    lambda: load_checkpoint(f"{LONG_NAME}.npz"),
    lambda: importlib.import_module("nntrain.restore").evaluate_checkpoint(
        f"{LONG_NAME}.npz"),
    lambda: importlib.import_module("nntrain.search").load_search_config(LONG_NAME),
    lambda: importlib.import_module("nntrain.plots").plot_run(LONG_NAME),
], ids=["load_config", "restore", "load_checkpoint", "evaluate_checkpoint",
        "load_search_config", "plot_run"])
def test_a_path_too_long_for_the_system_is_bad_input_from_python(call):
    from nntrain.errors import BadInputError

    with pytest.raises(BadInputError, match=r"^a path is too long for this system"
                                            r" \(30\d characters: "):
        call()


def test_fit_expands_a_home_folder_in_run_dir_as_the_cli_does(tmp_path, tiny_config,
                                                               monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)

    result = fit(load_config(tiny_config, ["train.epochs=1"]), "~/run", quiet=True)

    assert result.run_dir == tmp_path / "home" / "run"
    assert (tmp_path / "home" / "run" / "checkpoints" / "last.npz").is_file()
    assert not (tmp_path / "~").exists()


# Path arguments of the API beyond fit and restore: checked as theirs are, a
# leading ~ expanded where a folder is made, a too long path bad input.

@pytest.fixture
def home(tmp_path, monkeypatch):
    folder = tmp_path / "home"
    folder.mkdir()
    monkeypatch.setenv("HOME", str(folder))
    monkeypatch.chdir(tmp_path)
    return folder


def test_a_study_folder_is_checked_and_its_tilde_expanded(home, tmp_path):
    from nntrain.errors import BadInputError
    from nntrain.search import Study
    from nntrain.search.space import parse_search

    config = load_config(None, ["train.epochs=1"])
    spec = parse_search({"trials": 1, "params": {
        "optimizer.lr": {"loguniform": [1e-4, 1e-1]}}}, config)

    with pytest.raises(BadInputError, match="^out is empty; give the study folder's"):
        Study("", config, spec)
    with pytest.raises(TypeError, match="^out is NoneType; give the study folder's"):
        Study(None, config, spec)
    Study("~/study", config, spec).close()

    assert (home / "study" / "study.json").is_file()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["home"]


def test_plot_run_checks_its_paths_and_expands_a_tilde_in_out_dir(home, tmp_path):
    pytest.importorskip("matplotlib")
    from nntrain.errors import BadInputError
    from nntrain.plots import plot_run

    fit(load_config(None, ["train.epochs=1", "train.plots=false"]), "run",
        quiet=True)

    with pytest.raises(BadInputError, match="^out_dir is empty; give a folder path"):
        plot_run("run", "")
    with pytest.raises(TypeError, match="^run_dir is NoneType; give the run"):
        plot_run(None)
    written = plot_run("~/../run", "~/figures")  # the run is beside home

    assert {path.parent for path in written} == {home / "figures"}
    assert sorted(path.name for path in tmp_path.iterdir()) == ["home", "run"]


def test_every_path_the_api_reads_expands_a_tilde_as_the_cli_does(home, tiny_npz):
    from nntrain.restore import evaluate_checkpoint
    from nntrain.search.space import load_search_config

    raw = tiny_config_dict(tiny_npz)
    raw["train"].update(epochs=1, plots=False)
    (home / "tiny.yaml").write_text(yaml.safe_dump(raw))
    shutil.copy(tiny_npz, home / "tiny.npz")
    config = load_config("~/tiny.yaml")
    fit(config, home / "run", quiet=True)
    best = "~/run/checkpoints/best.npz"

    assert load_checkpoint(best).meta["solver"]["progress"]["epoch"] == 1
    assert restore(best).config == config | {"output": str(home / "run")}
    metrics = evaluate_checkpoint(best, data_path="~/tiny.npz")[3]
    assert metrics["samples"] == len(tiny_arrays()["y_test"])
    raw["search"] = {"trials": 1, "params": {"optimizer.lr": {"choice": [0.1]}}}
    (home / "search.yaml").write_text(yaml.safe_dump(raw))
    assert load_search_config("~/search.yaml")[1].trials == 1


def test_fit_resuming_from_a_path_too_long_for_the_system_is_bad_input(home):
    from nntrain.errors import BadInputError

    with pytest.raises(BadInputError, match="a path is too long for this system"):
        fit(load_config(None, ["train.epochs=1"]), "run", resume="x" * 300)


def test_ensemble_of_one_path_string_asks_for_a_list(tmp_path):
    from nntrain.ensemble import ensemble

    with pytest.raises(TypeError, match="^paths is str; give a list of checkpoint"
                                        " paths$"):
        ensemble("runs/a/checkpoints/best.npz")
    with pytest.raises(CheckpointError, match="checkpoint not found: nowhere.npz"):
        ensemble(path for path in ["nowhere.npz"])  # any iterable of paths


def test_a_rule_refuses_a_step_before_moving_anything():
    import numpy as np

    from nntrain.optim.rules import SGD, Adam

    rule = Adam(0.1)
    params = {"a": np.ones(3), "b": np.ones(3)}

    with pytest.raises(ValueError, match=r"^grads\['b'\] is missing"):
        rule.step(params, {"a": np.ones(3)})
    assert rule.steps == 0 and rule.state == {}
    np.testing.assert_array_equal(params["a"], np.ones(3))
    with pytest.raises(TypeError, match=r"^params\['w'\] is a NumPy scalar"
                                        r" \(float32\); give writable floating-point"
                                        r" NumPy arrays, which the rule updates in"
                                        r" place$"):
        SGD(0.1).step({"w": np.float32(1.0)}, {"w": np.float32(0.5)})
    with pytest.raises(TypeError, match=r"^params\['w'\] is an array of int64;"):
        SGD(0.1).step({"w": np.ones(3, np.int64)}, {"w": np.ones(3)})
    read_only = np.ones(3)
    read_only.flags.writeable = False
    moved = np.ones(3)
    with pytest.raises(TypeError, match=r"^params\['b'\] is a read-only array;"):
        SGD(0.1).step({"a": moved, "b": read_only}, {"a": np.ones(3), "b": np.ones(3)})
    np.testing.assert_array_equal(moved, np.ones(3))


def test_load_search_config_and_resumed_config_check_their_arguments(tmp_path):
    from nntrain.search.space import load_search_config
    from nntrain.train.resume import resumed_config

    with pytest.raises(TypeError, match="^path is NoneType; give the study config's"):
        load_search_config(None)
    with pytest.raises(TypeError, match="^overrides is"):
        load_search_config(tmp_path / "study.yaml", "search.trials=2")
    with pytest.raises(TypeError, match=r"^checkpoint is str; give a loaded"
                                        r" Checkpoint: nntrain\.checkpoint\."
                                        r"load_checkpoint\(path\)$"):
        resumed_config("runs/a/checkpoints/last.npz", ["train.epochs=5"], "x")


def test_numpy_scalars_in_a_config_dict_are_taken_as_the_numbers_they_hold():
    import numpy as np

    import nntrain

    raw = {"seed": np.int64(2), "train": {"epochs": np.int32(1), "clip": None},
           "model": {"hidden": [np.int64(3)], "batchnorm": np.bool_(False)},
           "optimizer": {"lr": np.float64(0.01)}}

    resolved = nntrain.config.resolve_config(raw)

    assert resolved["model"]["hidden"] == [3] and type(resolved["seed"]) is int
    assert resolved["optimizer"]["lr"] == 0.01
    assert type(resolved["model"]["batchnorm"]) is bool
    named = nntrain.config.resolve_config({**raw, "optimizer": {
        "name": np.str_("sgd"), "lr": np.longdouble(0.01)}})
    assert type(named["optimizer"]["name"]) is str  # YAML writes no np.str_
    assert named["optimizer"] == {"name": "sgd", "lr": 0.01}
    assert nntrain.build_model(raw, 64, 10).layers[0].params["W"].shape == (64, 3)


def test_prepare_data_and_a_closed_study_refuse_what_they_cannot_use(tmp_path):
    from nntrain.prepare import prepare_data
    from nntrain.search import Study
    from nntrain.search.space import parse_search

    with pytest.raises(TypeError, match="^config is NoneType; give a config dict"):
        prepare_data(None)
    config = load_config(None, ["train.epochs=1"])
    spec = parse_search({"trials": 1, "params": {
        "optimizer.lr": {"loguniform": [1e-4, 1e-1]}}}, config)
    study = Study(tmp_path / "study", config, spec)
    study.close()
    with pytest.raises(RuntimeError, match="is closed; open the study again with a"
                                           " new Study to write its results$"):
        study.write_results()
    assert not (tmp_path / "study" / "results.csv").exists()


def test_model_loss_refuses_one_sample_in_training_mode_with_batch_norm():
    import numpy as np

    import nntrain

    config = nntrain.load_config(None, ["train.epochs=1", "model.batchnorm=true"])
    model = nntrain.build_model(config, 4, 3)
    X = np.random.default_rng(0).normal(size=(2, 4)).astype(np.float32)
    [norm] = [layer for layer in model.layers if layer.kind == "batchnorm"]
    before = {name: value.copy() for name, value in norm.buffers.items()}

    with pytest.raises(ValueError, match="^batch norm needs at least 2 samples in"
                                         " training mode; give model.loss 2 or more"
                                         " rows"):
        model.loss(X[:1], np.array([0]))
    for name, value in norm.buffers.items():  # its running statistics untouched
        np.testing.assert_array_equal(value, before[name])
    loss, _ = model.loss(X, np.array([0, 1]))  # two rows train as usual
    assert np.isfinite(loss)
    assert model.loss(X[:1]).shape == (1, 3)  # evaluation mode takes one
