"""A resume checks the optimizer state and weights it loads; a blown-up run never
saves; a copied model still trains."""

import copy
import hashlib
import json
import pickle

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import tiny_arrays, tiny_config_dict

from nntrain.checkpoint import load_checkpoint, save_checkpoint
from nntrain.cli import cli
from nntrain.config import load_config
from nntrain.nn.model import build_model
from nntrain.optim.rules import Adam
from nntrain.train.solver import EVALUATED_STATE


def invoke(*args):
    return CliRunner().invoke(cli, [str(arg) for arg in args])


@pytest.fixture
def adam_run(tmp_path, tiny_npz, write_config):
    """A finished 2-epoch Adam run: (its config file, its last.npz)."""
    raw = tiny_config_dict(tiny_npz)
    raw["train"].update(epochs=2, plots=False)
    config = write_config(raw)
    result = invoke("fit", config, "--out", tmp_path / "run", "--quiet")
    assert result.exit_code == 0, result.output
    return config, tmp_path / "run" / "checkpoints" / "last.npz"


def _rewrite(path, change):
    """Rewrite the checkpoint at ``path`` with ``change(arrays)`` applied to its
    {prefix: {name: array}} arrays (fresh checksums: a well-formed file)."""
    checkpoint = load_checkpoint(path)
    arrays = {prefix: dict(group) for prefix, group in checkpoint.arrays.items()}
    change(arrays)
    save_checkpoint(path, checkpoint.meta, arrays)


def _forge(path, change):
    """Rewrite the checkpoint at ``path`` with ``change(checkpoint)`` applied to the
    loaded Checkpoint (its meta or arrays), with fresh checksums."""
    checkpoint = load_checkpoint(path)
    change(checkpoint)
    save_checkpoint(path, checkpoint.meta, checkpoint.arrays)


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


SLOT = "affine1.W/decayed_gradient_sum"


@pytest.mark.parametrize("change, message", [
    (lambda a: a["optim"].update({SLOT: a["optim"][SLOT][0]}),
     "optim/affine1.W/decayed_gradient_sum is float32 (8,), the parameter float32"
     " (4, 8)"),
    (lambda a: a["optim"].pop("affine1.W/decayed_square_sum"),
     "optim/affine1.W/decayed_square_sum is missing"),
    (lambda a: a["optim"].update({"affine1.W/velocity": a["optim"][SLOT]}),
     "optim/affine1.W/velocity is not kept by the adam rule"),
    (lambda a: a["optim"].update({"affine9.W/decayed_gradient_sum": a["optim"][SLOT]}),
     "optim/affine9.W/... is for no parameter of the model"),
    (lambda a: a["optim"].update({SLOT: a["optim"][SLOT].astype(np.float64)}),
     "is float64 (4, 8), the parameter float32 (4, 8)"),
    (lambda a: a["optim"][SLOT].__setitem__((0, 0), np.nan),
     "holds NaN or infinite values"),
    (lambda a: a["optim"]["affine1.W/decayed_square_sum"].__setitem__((0, 0), -1),
     "holds negative values, but it sums squares"),
    (lambda a: a["optim"].update({"affine1.W/first_moment": a["optim"][SLOT]}),
     "optim/affine1.W holds decayed_gradient_sum under its old and its new name"),
])
def test_a_resume_refuses_unusable_optimizer_state_with_exit_2(adam_run, change,
                                                               message):
    config, last = adam_run
    _rewrite(last, change)
    before = _digest(last)

    result = invoke("fit", config, "--resume", last, "--set", "train.epochs=3")

    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert _digest(last) == before


def test_old_adam_slots_are_checked_and_named_as_stored(adam_run):
    config, last = adam_run

    def old_int_moment(arrays):
        optim = arrays["optim"]
        optim["affine1.W/first_moment"] = optim.pop(SLOT).astype(np.int32)

    _rewrite(last, old_int_moment)
    result = invoke("fit", config, "--resume", last, "--set", "train.epochs=3")
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert "optim/affine1.W/first_moment is int32, not floating point" in (
        result.stderr)


def test_old_adam_slots_with_nan_name_the_stored_array(adam_run):
    config, last = adam_run

    def old_nan_moment(arrays):
        optim = arrays["optim"]
        optim["affine1.W/first_moment"] = optim.pop(SLOT)
        optim["affine1.W/first_moment"][0, 0] = np.nan

    _rewrite(last, old_nan_moment)
    result = invoke("fit", config, "--resume", last, "--set", "train.epochs=3")
    assert result.exit_code == 2
    assert "optim/affine1.W/first_moment (old name) holds NaN" in result.stderr


@pytest.mark.parametrize("change, message", [
    (lambda c: c.arrays["optim"].update({"junk": np.zeros(2, np.float32)}),
     "optim/junk names no parameter and slot"),
    (lambda c: c.meta["solver"].update(optimizer_steps=-1),
     "solver.optimizer_steps is -1, not a count (an integer >= 0)"),
])
def test_a_resume_refuses_malformed_optimizer_entries(adam_run, change, message):
    config, last = adam_run
    _forge(last, change)
    result = invoke("fit", config, "--resume", last, "--set", "train.epochs=3")
    assert result.exit_code == 2, result.output
    assert message in result.stderr


SHUFFLE = "shuffle_state_at_epoch_start"


def _set(*keys_and_value):
    """A change that puts the last argument at solver[keys...] of the meta."""
    *keys, last, value = keys_and_value

    def change(checkpoint):
        place = checkpoint.meta["solver"]
        for key in keys:
            place = place[key]
        place[last] = value
    return change


def _before_final(**progress):
    """A change that gives the checkpoint a state from before a final evaluation:
    a copy of its own, with ``progress`` counters changed."""
    def change(checkpoint):
        solver = checkpoint.meta["solver"]
        before = copy.deepcopy({key: solver[key] for key in EVALUATED_STATE})
        before["progress"].update(progress)
        solver["before_final_evaluation"] = before
    return change


@pytest.mark.parametrize("change, message", [
    (_set(SHUFFLE, "bit_generator", "MT19937"),
     f'solver.{SHUFFLE}.bit_generator is "MT19937", not "PCG64"'),
    (_set(SHUFFLE, "state", -1), f"solver.{SHUFFLE}.state is -1, not a JSON object"),
    (_set(SHUFFLE, "state", "state", -1),
     f"solver.{SHUFFLE}.state.state is -1, not a 128-bit count"),
    (_set("dropout_state", {"bit_generator": "PCG64"}),
     "solver.dropout_state.state is missing"),
    (_set("curve", "abc"), 'solver.curve is "abc", not a list'),
    (_set("curve", [[0.5, 0.5, 0.5]]), "solver.curve[0] is [0.5, 0.5, 0.5], not a"
     " list of 2"),
    (_set("progress", "best_value", "x"),
     'solver.progress.best_value is "x", not a finite number'),
    (_set("progress", "iteration", -1),
     "solver.progress.iteration is -1, not a count (an integer >= 0)"),
    (_set("progress", "epoch", True), "solver.progress.epoch is true, not a count"),
    (_set("progress", "last_eval_iteration", 99),
     "solver.progress.last_eval_iteration is 99, past solver.progress.iteration (8)"),
    (_set("progress", "batch_in_epoch", 7),
     "solver.progress.batch_in_epoch is 7, but an epoch of this run has 4 updates"),
    (_set("progress", "speed", 1), "solver.progress.speed is no key nntrain writes"),
    (_set("schedule", {"current": 0.1}),
     'solver.schedule holds ["current"], but the run\'s schedule keeps nothing'),
    (_set("running_means", "sums", "loss", None),
     "solver.running_means.sums.loss is null, not a finite number"),
    (_set("history", [1]), "solver.history[0] is 1, not a JSON object"),
    (_set("history", [{"val_loss": 1.0}]), "solver.history[0].iteration is missing"),
    (_set("history", [{"iteration": 99}]),
     "solver.history[0].iteration is 99, past solver.progress.iteration (8)"),
    (_set("seconds", -1.0), "solver.seconds is -1.0, not a number of seconds >= 0"),
    (lambda c: c.meta["solver"].pop("divergence"), "solver.divergence is missing"),
    (_set("before_final_evaluation", 5),
     "solver.before_final_evaluation is 5, not a JSON object"),
    (_before_final(iteration=7), "solver.before_final_evaluation.progress.iteration"
     " is 7, not solver.progress.iteration (8)"),
    (_before_final(best_iteration=9),
     "solver.before_final_evaluation.progress.best_iteration is 9, past"
     " solver.before_final_evaluation.progress.iteration (8)"),
])
def test_a_resume_refuses_forged_solver_state_naming_the_key(adam_run, change,
                                                            message):
    config, last = adam_run
    _forge(last, change)
    metrics = last.parent.parent / "metrics.jsonl"
    records = metrics.read_bytes()

    result = invoke("fit", config, "--resume", last, "--set", "train.epochs=3")

    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"error: {last}: {message}")
    assert result.stderr.endswith("; the checkpoint is damaged or was edited: resume"
                                  " from another checkpoint, or start over with"
                                  " --force\n")
    assert result.stderr.count("\n") == 1
    assert metrics.read_bytes() == records


def _set_data(*keys_and_value):
    """A change that puts the last argument at data[keys...] of the meta."""
    *keys, last, value = keys_and_value

    def change(checkpoint):
        place = checkpoint.meta
        for key in ["data", *keys]:
            place = place[key]
        place[last] = value
    return change


DATA_FORGERIES = [
    (lambda c: c.meta.update(data=None), "data is null, not a JSON object"),
    (lambda c: c.meta.pop("data"), "data is missing"),
    (_set_data("sizes", "train", "x"),
     'data.sizes.train is "x", not a count (an integer >= 0)'),
    (lambda c: c.meta["data"].pop("sizes"), "data.sizes is missing"),
    (_set_data("num_features", "x"), 'data.num_features is "x", not a count >= 1'),
    (_set_data("num_classes", 2.5), "data.num_classes is 2.5, not a count >= 1"),
    (_set_data("class_names", 5), "data.class_names is 5, not a list"),
    (_set_data("class_names", ["a"]),
     "data.class_names holds 1 names, but data.num_classes is 3"),
    (_set_data("input_shape", [5]), "data.input_shape is [5], which does not hold"
     " data.num_features (4) values"),
    (_set_data("fingerprints", "train", 5), "data.fingerprints.train is 5, not a"
     " string"),
    (_set_data("path", 7), "data.path is 7, not a string"),
]


@pytest.mark.parametrize("change, message", DATA_FORGERIES)
def test_a_resume_refuses_a_forged_data_spec_naming_the_key(adam_run, change,
                                                            message):
    config, last = adam_run
    _forge(last, change)

    result = invoke("fit", config, "--resume", last, "--set", "train.epochs=3")

    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"error: {last}: {message}; the checkpoint is"
                                    " damaged or was edited")
    assert result.stderr.count("\n") == 1


@pytest.mark.parametrize("change, message", DATA_FORGERIES[6:8])
def test_predict_refuses_a_forged_data_spec_naming_the_key(adam_run, tmp_path,
                                                           change, message):
    _, last = adam_run
    _forge(last, change)
    samples = tmp_path / "x.npy"
    np.save(samples, np.zeros((2, 4)))

    result = invoke("predict", last, samples)

    assert result.exit_code == 2, result.output
    assert result.stderr == (f"error: {last}: {message}; the file is damaged"
                             " or was edited: use another checkpoint\n")


def test_a_run_directory_resumes_past_a_last_checkpoint_with_forged_state(adam_run):
    config, last = adam_run
    _forge(last, _set("curve", "abc"))

    result = invoke("fit", config, "--resume", last.parent.parent, "--set",
                    "train.epochs=3")

    assert result.exit_code == 0, result.output
    assert 'note: skipped last.npz: ' in result.stderr
    assert 'solver.curve is "abc", not a list' in result.stderr
    assert "resuming from best.npz" in result.stderr


def test_a_run_directory_whose_checkpoints_are_all_damaged_names_each_fault(
        adam_run):
    config, last = adam_run
    _forge(last, _set("progress", "iteration", -1))
    (last.parent / "best.npz").write_bytes(b"junk")

    result = invoke("fit", config, "--resume", last.parent.parent, "--set",
                    "train.epochs=3")

    assert result.exit_code == 2, result.output
    assert result.stderr == (
        f"error: every checkpoint in {last.parent} is damaged (best.npz is a text"
        " file (a config or a log?), not a checkpoint; last.npz:"
        " solver.progress.iteration is -1, not a count (an integer >= 0)); start"
        " over with --force\n")


def test_a_resume_without_the_averages_it_needs_exits_2(tmp_path, tiny_npz,
                                                         write_config):
    raw = tiny_config_dict(tiny_npz)
    raw["train"].update(epochs=2, plots=False, average={"kind": "polyak"})
    config = write_config(raw)
    assert invoke("fit", config, "--out", tmp_path / "run", "--quiet").exit_code == 0
    last = tmp_path / "run" / "checkpoints" / "last.npz"
    _rewrite(last, lambda arrays: arrays.pop("average"))
    result = invoke("fit", config, "--resume", last, "--set", "train.epochs=3")
    assert result.exit_code == 2
    assert "lacks average/affine1.W" in result.stderr


def test_a_resume_refuses_negative_batch_norm_variances(tmp_path, tiny_npz,
                                                        write_config):
    raw = tiny_config_dict(tiny_npz)
    raw["model"] = {"hidden": [8], "batchnorm": True}
    raw["train"].update(epochs=2, plots=False)
    config = write_config(raw)
    assert invoke("fit", config, "--out", tmp_path / "run", "--quiet").exit_code == 0
    last = tmp_path / "run" / "checkpoints" / "last.npz"
    _rewrite(last, lambda a: a["buffer"]["batchnorm1.running_var"].__setitem__(0, -1))
    result = invoke("fit", config, "--resume", last, "--set", "train.epochs=3")
    assert result.exit_code == 2
    assert "buffer/batchnorm1.running_var holds negative variances" in result.stderr


def test_a_resume_refuses_non_finite_weights_with_exit_2(adam_run):
    config, last = adam_run
    _rewrite(last, lambda a: a["param"]["affine2.b"].__setitem__(0, np.inf))
    result = invoke("fit", config, "--resume", last, "--set", "train.epochs=3")
    assert result.exit_code == 2
    assert "param/affine2.b holds NaN or infinite values" in result.stderr


def test_a_resume_refuses_a_non_finite_preprocessing_state_with_exit_2(adam_run):
    config, last = adam_run
    _rewrite(last, lambda a: a["prep"]["scale.factor"].__setitem__(1, np.nan))
    before = _digest(last)

    result = invoke("fit", config, "--resume", last, "--set", "train.epochs=3")

    assert result.exit_code == 2, result.output
    assert f"{last}: prep/scale.factor holds NaN or infinite values" in result.stderr
    assert _digest(last) == before


def test_a_resume_checks_the_weights_against_the_config_before_building(
        adam_run, monkeypatch):
    import nntrain.pipeline

    def refuse_to_build(*args, **kwargs):
        raise AssertionError("the network was built before its weights were checked")

    monkeypatch.setattr(nntrain.pipeline, "build_model", refuse_to_build)
    config, last = adam_run
    _forge(last, lambda c: c.meta["config"]["model"].update(hidden=[100_000]))

    result = invoke("fit", config, "--resume", last, "--set", "train.epochs=3")

    assert result.exit_code == 2, result.output
    assert ("param/affine1.W is float32 (4, 8), the model its config describes"
            " needs float32 (4, 100000)") in result.stderr


def test_a_resume_reads_adam_moments_under_their_old_names(adam_run):
    config, last = adam_run
    reference = load_checkpoint(last).arrays["optim"]

    def to_old_names(arrays):
        optim = arrays["optim"]
        for name in ("affine1.W", "affine1.b", "affine2.W", "affine2.b"):
            optim[f"{name}/first_moment"] = 0.1 * optim.pop(
                f"{name}/decayed_gradient_sum")
            optim[f"{name}/second_moment"] = 0.001 * optim.pop(
                f"{name}/decayed_square_sum")

    _rewrite(last, to_old_names)
    result = invoke("fit", config, "--resume", last, "--set", "train.epochs=2")
    assert result.exit_code == 0, result.output  # nothing left to do: loads only
    resumed = invoke("fit", config, "--resume", last, "--set", "train.epochs=3",
                     "--quiet")
    assert resumed.exit_code == 0, resumed.output
    assert set(load_checkpoint(last).arrays["optim"]) == set(reference)


def test_weights_blown_past_float32_stop_the_run_before_any_save(tmp_path):
    out = tmp_path / "run"
    result = invoke("fit", "configs/digits.yaml", "--out", out, "--quiet",
                    "--set", "optimizer.name=sgd", "--set", "optimizer.lr=1e3",
                    "--set", "train.eval_every=1", "--set", "train.plots=false")
    assert result.exit_code == 1
    assert "the validation loss became nan at iteration" in result.stderr
    stopped_at = int(result.stderr.split("at iteration ")[1].split()[0])
    # Earlier evaluations saved good checkpoints; the blown-up weights never were.
    for name in ("best.npz", "last.npz"):
        checkpoint = load_checkpoint(out / "checkpoints" / name)
        assert checkpoint.meta["solver"]["progress"]["iteration"] < stopped_at
        assert all(np.isfinite(value).all()
                   for value in checkpoint.arrays["param"].values())
    for line in (out / "metrics.jsonl").read_text().splitlines():
        json.loads(line, parse_constant=lambda name: pytest.fail(name))


@pytest.mark.parametrize("duplicate", [copy.deepcopy,
                                       lambda m: pickle.loads(pickle.dumps(m))])
def test_a_copied_model_keeps_one_vector_and_trains(duplicate):
    model = build_model(load_config("configs/digits.yaml"), 64, 10)
    X = np.random.default_rng(0).standard_normal((20, 64)).astype(np.float32)
    y = np.arange(20) % 10
    twin = duplicate(model)
    assert all(np.shares_memory(layer.params[key], twin.params.vector)
               for layer in twin.layers for key in layer.params)
    assert not np.shares_memory(twin.params.vector, model.params.vector)

    rule = copy.deepcopy(Adam(lr=0.01))
    first, _ = twin.loss(X, y)
    for _ in range(20):
        _, grads = twin.loss(X, y)
        rule.step(twin.params, grads)
    assert twin.loss(X, y)[0] < 0.5 * first


def test_a_shallow_copy_shares_everything_and_the_original_still_trains():
    model = build_model(load_config("configs/digits.yaml"), 64, 10)
    X = np.random.default_rng(0).standard_normal((20, 64)).astype(np.float32)
    y = np.arange(20) % 10
    twin = copy.copy(model)
    assert twin.params is model.params and twin.layers is model.layers
    rule = Adam(lr=0.01)
    first, _ = model.loss(X, y)
    for _ in range(20):
        _, grads = model.loss(X, y)
        rule.step(model.params, grads)
    assert model.loss(X, y)[0] < 0.5 * first


def test_an_lbfgs_resume_refuses_optimizer_state_it_does_not_keep(tmp_path, tiny_npz,
                                                                   write_config):
    raw = tiny_config_dict(tiny_npz)
    raw["optimizer"] = {"name": "lbfgs"}
    raw["train"].update(epochs=2, plots=False)
    config = write_config(raw)
    assert invoke("fit", config, "--out", tmp_path / "run", "--quiet").exit_code == 0
    last = tmp_path / "run" / "checkpoints" / "last.npz"
    _rewrite(last, lambda a: a.update(
        optim={"affine1.W/velocity": np.zeros((4, 8), np.float32)}))
    result = invoke("fit", config, "--resume", last, "--set", "train.epochs=3")
    assert result.exit_code == 2
    assert "optim/affine1.W/velocity is there, but L-BFGS keeps no state" in (
        result.stderr)


@pytest.mark.parametrize("names", [["a", "a", "b"], [["a"], ["a"], ["b"]],
                                   ["a", " ", "c"]])
def test_a_checkpoint_from_data_with_names_now_refused_still_evaluates_and_resumes(
        adam_run, tiny_npz, names):
    # Before nntrain refused repeated, 2-D and blank class names, runs trained on
    # such data recorded the names flattened; the same data must still load for them.
    config, last = adam_run
    np.savez(tiny_npz, **tiny_arrays(), class_names=np.array(names))
    flat = list(np.array(names).reshape(-1))
    _forge(last, lambda c: c.meta["data"].update(class_names=flat))

    evaluated = invoke("eval", last, "--json")
    resumed = invoke("fit", config, "--resume", last, "--set", "train.epochs=3",
                     "--quiet")

    assert evaluated.exit_code == 0, evaluated.output
    assert resumed.exit_code == 0, resumed.output
    assert load_checkpoint(last).meta["data"]["class_names"] == flat


def test_a_checkpoint_from_bytes_class_names_shown_as_bytes_still_evaluates(
        adam_run, tiny_npz):
    # nntrain once recorded bytes names as str() made them: "b'a'". Decoded now,
    # the same data must still load for such a checkpoint, under its names.
    config, last = adam_run
    np.savez(tiny_npz, **tiny_arrays(), class_names=np.array([b"a", b"b", b"c"]))
    _forge(last, lambda c: c.meta["data"].update(class_names=["b'a'", "b'b'",
                                                               "b'c'"]))

    evaluated = invoke("eval", last)

    assert evaluated.exit_code == 0, evaluated.output
    assert "  b'a'  " in evaluated.stdout


@pytest.mark.parametrize("command", ["eval", "predict"])
def test_a_checkpoint_with_a_surrogate_class_name_is_refused(adam_run, tmp_path,
                                                             command):
    # JSON's "\ud800" reads as a lone surrogate, which no table or CSV can write.
    _, last = adam_run
    _forge(last, lambda c: c.meta["data"].update(class_names=["a", "\ud800", "c"]))
    samples = tmp_path / "samples.npy"
    np.save(samples, tiny_arrays()["X_test"][:2])

    result = invoke(command, last, *([samples] if command == "predict" else []))

    assert result.exit_code == 2, result.output
    assert (f'{last}: data.class_names[1] is "\\ud800", which holds a lone'
            " surrogate, no text UTF-8 can write") in result.stderr


def test_a_checkpoint_with_an_epsilon_that_rounds_to_infinity_is_refused(adam_run):
    # Such a run trained a dead network: nothing to evaluate or resume.
    config, last = adam_run
    _forge(last, lambda c: c.meta["config"]["optimizer"].update(eps=1e39))
    message = (f"{last}: its config is not valid here (invalid optimizer.eps: 1e+39"
               " rounds to infinity in float32 (train.dtype), whose largest number"
               " is 3.4028235e+38; train a new run with a value <= 3.4e+38)")

    evaluated = invoke("eval", last)
    resumed = invoke("fit", config, "--resume", last, "--set", "train.epochs=3")

    assert evaluated.exit_code == 2 and message in evaluated.stderr
    assert resumed.exit_code == 2 and message in resumed.stderr


def test_repeated_class_names_other_than_the_checkpoints_are_refused(adam_run,
                                                                     tiny_npz):
    config, last = adam_run
    np.savez(tiny_npz, **tiny_arrays(), class_names=np.array(["a", "a", "b"]))

    result = invoke("eval", last)

    assert result.exit_code == 2
    assert (f"{tiny_npz}: class_names[1] is 'a', as is class_names[0]"
            in result.stderr)


def test_a_checkpoint_with_a_subnormal_epsilon_is_evaluated_and_resumed_raised(
        adam_run):
    # nntrain accepted such epsilons before it refused them for new runs; a
    # checkpoint of that time gets them raised to float32's smallest normal number.
    config, last = adam_run
    _forge(last, lambda c: c.meta["config"]["optimizer"].update(eps=1e-40))
    tiny = float(np.finfo(np.float32).tiny)
    warning = (f"{last} sets optimizer.eps to 1e-40, below float32's smallest normal"
               " number, which nntrain now refuses as an epsilon; it is raised to"
               " 1.1754944e-38: results change only where it is added to a value"
               " that small, but a resumed run may no longer end bit for bit where"
               " the original run would have")

    evaluated = invoke("eval", last, "--json")
    resumed = invoke("fit", config, "--resume", last, "--set", "train.epochs=3")

    assert evaluated.exit_code == 0, evaluated.output
    assert warning in evaluated.stderr
    assert resumed.exit_code == 0, resumed.output
    assert resumed.stderr.count(warning) == 1
    assert load_checkpoint(last).meta["config"]["optimizer"]["eps"] == tiny


def test_a_new_run_with_a_subnormal_epsilon_is_still_refused(tmp_path, tiny_npz,
                                                             write_config):
    raw = tiny_config_dict(tiny_npz)
    raw["model"]["norm_epsilon"] = 1e-40
    result = invoke("fit", write_config(raw), "--out", tmp_path / "run")
    assert result.exit_code == 2
    assert "invalid model.norm_epsilon: 1e-40 is subnormal in float32" in (
        result.stderr)
