"""Tests of config reading and validation: defaults, YAML numbers, every error kind.

Expected values are written out by hand from DESIGN.md and the issue, never taken
from the code under test.
"""

import re

import numpy as np
import pytest

from nntrain.config import (
    apply_overrides,
    config_to_yaml,
    load_config,
    resolve_config,
)
from nntrain.errors import BadInputError, ConfigError
from nntrain.nn.model import build_model
from nntrain.yamlio import one_line_yaml, parse_yaml

# Every default, written out by hand from the documented schema.
EXPECTED_DEFAULTS = {
    "seed": 0,
    "data": {
        "name": "digits",
        "path": None,
        "validation": 0.1,
        "preprocess": ["center", "scale"],
    },
    "model": {
        "hidden": [100],
        "activation": "relu",
        "leaky_slope": 0.01,
        "elu_alpha": 1.0,
        "pieces": 2,
        "batchnorm": False,
        "layernorm": False,
        "norm_momentum": 0.9,
        "norm_epsilon": 1e-5,
        "drop_probability": 0.0,
        "init": "he",
        "init_std": 0.01,
        "loss": "softmax",
        "l2": 0.0,
        "l1": 0.0,
        "max_norm": None,
        "layers": None,
    },
    "optimizer": {"name": "adam", "lr": 1e-3, "beta1": 0.9, "beta2": 0.999,
                  "eps": 1e-8},
    "schedule": {"name": "constant"},
    "train": {
        "epochs": 2,
        "iterations": None,
        "batch_size": 128,
        "eval_every": None,
        "log_every": 10,
        "clip": None,
        "early_stopping": None,
        "average": None,
        "snapshot_every": None,
        "diagnostics": True,
        "plots": True,
        "threads": None,
        "monitor": "val_accuracy",
        "dtype": "float32",
    },
    "output": None,
}


def load_text(write_config, text, overrides=()):
    return load_config(write_config(text), list(overrides))




def test_minimal_config_gets_every_default_filled_in(write_config):
    config = load_text(write_config, "train: {epochs: 2}\n")

    assert config == EXPECTED_DEFAULTS
    assert list(config) == ["seed", "data", "model", "optimizer", "schedule", "train",
                            "output"]


@pytest.mark.parametrize("rule, expected", [
    ("sgd", {"name": "sgd", "lr": 0.01}),
    ("momentum", {"name": "momentum", "lr": 0.01, "momentum": 0.9}),
    ("adam", {"name": "adam", "lr": 0.001, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8}),
])
def test_each_update_rule_gets_only_its_own_defaults(write_config, rule, expected):
    text = f"optimizer: {{name: {rule}}}\ntrain: {{epochs: 1}}"

    config = load_text(write_config, text)

    assert config["optimizer"] == expected


def test_empty_sections_are_the_defaults(write_config):
    text = "data:\nmodel:\noptimizer:\nschedule:\ntrain:\n  epochs: 2\n"

    assert load_text(write_config, text) == EXPECTED_DEFAULTS


def test_defaults_are_not_shared_between_configs(write_config):
    first = load_text(write_config, "train: {epochs: 1}")
    first["data"]["preprocess"].append("junk")
    first["model"]["hidden"].append(7)

    second = load_text(write_config, "train: {epochs: 1}")

    assert second["data"]["preprocess"] == ["center", "scale"]
    assert second["model"]["hidden"] == [100]




@pytest.mark.parametrize("text, value", [
    ("1e-3", 0.001), ("5E-4", 0.0005), ("1.0e-3", 0.001), ("2e+1", 20.0),
    ("-3E2", -300.0), ("0.25", 0.25), (".5", 0.5),
])
def test_yaml_scalars_with_exponents_are_floats(text, value):
    parsed = parse_yaml(text, "test")

    assert type(parsed) is float
    assert parsed == value


@pytest.mark.parametrize("text", [
    "1e3", "1.0e5", "+2E-4", ".5e3", "12", "0x1F", "0b11", "1_000", ".inf", ".NaN",
    "true", "no", "null", "Null", "017", "1:30",
])
def test_text_that_reads_as_another_type_is_quoted_in_a_saved_config(text):
    # Written plain, 1e3 read back as the float 1000.0 (YAML 1.1 says it is text).
    config = resolve_config({"train": {"epochs": 1}, "output": text})
    config["data"]["preprocess"] = [text, 1e3]

    saved = config_to_yaml(config)

    assert parse_yaml(saved, "config.yaml") == config
    assert f"output: '{text}'\n" in saved
    assert f"preprocess: ['{text}', 1000.0]\n" in saved
    assert one_line_yaml({"a": [text]}) == f"{{a: ['{text}']}}"


def test_exponent_numbers_in_a_file_are_floats(write_config):
    text = "optimizer: {name: adam, lr: 1e-3, eps: 5E-4}\nmodel: {l2: 5E-4}\n" \
           "train: {epochs: 1}\n"

    config = load_text(write_config, text)

    assert type(config["optimizer"]["lr"]) is float
    assert config["optimizer"]["lr"] == 0.001
    assert config["optimizer"]["eps"] == 0.0005
    assert config["model"]["l2"] == 0.0005


def test_exponent_numbers_through_set_are_floats(write_config):
    config = load_text(write_config, "train: {epochs: 1}",
                       ["optimizer.lr=1e-3", "model.l2=5E-4", "model.init_std=2e-2"])

    assert config["optimizer"]["lr"] == 0.001
    assert config["model"]["l2"] == 0.0005
    assert config["model"]["init_std"] == 0.02


def test_a_quoted_number_is_a_string_and_a_type_error(write_config):
    with pytest.raises(ConfigError,
                       match=r"invalid optimizer\.lr: '1e-3' \(expected a number"):
        load_text(write_config, "optimizer: {lr: '1e-3'}\ntrain: {epochs: 1}")


def test_integers_stay_integers(write_config):
    config = load_text(write_config, "seed: 7\ntrain: {epochs: 3, batch_size: 16}")

    assert config["seed"] == 7 and type(config["seed"]) is int
    assert config["train"]["batch_size"] == 16


def test_set_parses_flow_lists_and_null(write_config):
    config = load_text(write_config, "train: {epochs: 1}",
                       ["model.hidden=[8, 4]", "data.path=null", "output=runs/x"])

    assert config["model"]["hidden"] == [8, 4]
    assert config["data"]["path"] is None
    assert config["output"] == "runs/x"




def test_duplicated_key_is_an_error_naming_key_and_line(write_config):
    text = "train:\n  epochs: 2\n  batch_size: 4\n  epochs: 3\n"

    with pytest.raises(ConfigError, match=r"duplicated key 'epochs' on line 4"):
        load_text(write_config, text)


def test_duplicated_top_level_section_is_an_error(write_config):
    text = "train: {epochs: 2}\nseed: 1\ntrain: {epochs: 3}\n"

    with pytest.raises(ConfigError, match=r"duplicated key 'train' on line 3"):
        load_text(write_config, text)


@pytest.mark.parametrize("text, problem", [
    ("null: 1\n~: 2\n", "duplicated key 'null' on line 2"),
    ("true: 1\n", "unknown key true (valid keys: seed,"),
    ("train: {null: 1}\n", "unknown key train.null (valid keys: epochs,"),
    ("optimizer: {name: sgd, false: 1}\n", "unknown key optimizer.false (valid"
     " keys: name, lr)"),
])
def test_keys_that_yaml_reads_as_null_or_booleans_are_named_as_yaml_spells_them(
        write_config, text, problem):
    with pytest.raises(ConfigError) as caught:
        load_text(write_config, text)

    assert problem in str(caught.value)


def test_python_object_tag_is_refused_and_runs_nothing(write_config, tmp_path):
    marker = tmp_path / "pwned"
    text = f"seed: !!python/object/apply:os.system ['touch {marker}']\n"

    with pytest.raises(ConfigError, match=r"python/object"):
        load_text(write_config, text)
    assert not marker.exists()


def test_python_name_tag_is_refused(write_config):
    with pytest.raises(ConfigError, match=r"python/name:os\.system"):
        load_text(write_config, "seed: !!python/name:os.system ''\n")


@pytest.mark.parametrize("text, where", [
    ("train:\n  epochs: 2: 3\n", "line 2, column 12"),
    ("train:\n  epochs: 2\n  batch_size: [4, 8\nseed: 1\n", "line 4"),
    ("train:\n\tepochs: 2\n", "line 2, column 1"),
])
def test_malformed_yaml_names_the_file_and_line(write_config, text, where):
    path = write_config(text)

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert where in message
    assert "\n" not in message


def test_a_second_yaml_document_is_named_with_its_fix(write_config):
    path = write_config("train:\n  epochs: 2\n---\nseed: 1\n")

    with pytest.raises(ConfigError, match="^" + re.escape(
            f"{path}: a config is one YAML document, but another one starts at line"
            " 3, column 1; remove that '---' line (or the document after it)")):
        load_config(path)


def test_a_setting_given_to_a_layer_without_settings_says_it_takes_none(
        write_config):
    path = write_config("train: {epochs: 1}\nmodel:\n  layers:\n"
                        "    - affine: {units: 4}\n    - relu: {bogus: 1}\n"
                        "    - affine: {}\n")

    with pytest.raises(ConfigError, match=re.escape(
            "unknown key model.layers[1].relu.bogus (relu takes no settings:"
            " write {})")):
        load_config(path)


def test_the_sized_layer_kinds_are_the_layers_with_a_width():
    from nntrain.config import SIZED_LAYERS
    from nntrain.nn.layers import LAYERS

    assert sorted(SIZED_LAYERS) == sorted(k for k, layer in LAYERS.items()
                                          if layer.sized)


@pytest.mark.parametrize("kind", ["affine", "maxout"])
def test_a_layer_without_its_units_is_refused_with_the_config(write_config, kind):
    path = write_config(f"train: {{epochs: 1}}\nmodel:\n  layers:\n"
                        f"    - {kind}: {{}}\n    - relu: {{}}\n    - affine: {{}}\n")

    with pytest.raises(ConfigError, match="^" + re.escape(
            f"{path}: model.layers[0].{kind}.units: {kind}1 needs units (its width);"
            " only the"
            " last layer may leave them out")):
        load_config(path)


def test_missing_config_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"config file not found: .*nope\.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_a_folder_as_config_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"is a folder"):
        load_config(tmp_path)


def test_binary_config_is_a_config_error(tmp_path):
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"\xff\xfe\x00\x81seed: 1")

    with pytest.raises(ConfigError, match=r"not UTF-8"):
        load_config(path)


def test_config_that_is_not_a_mapping_is_an_error(write_config):
    with pytest.raises(ConfigError, match=r"mapping"):
        load_text(write_config, "- 1\n- 2\n")




@pytest.mark.parametrize("text, message", [
    ("train: {epochs: 2, bach_size: 4}",
     "unknown key train.bach_size (did you mean 'batch_size'?)"),
    ("train: {epochs: 2}\noptimiser: {lr: 0.1}",
     "unknown key optimiser (did you mean 'optimizer'?)"),
    ("train: {epochs: 2}\noptimizer: {name: adam, betta1: 0.8}",
     "unknown key optimizer.betta1 (did you mean 'beta1'?)"),
    ("train: {epochs: 2}\ndata: {validaton: 3}",
     "unknown key data.validaton (did you mean 'validation'?)"),
    ("train: {epochs: 2}\nmodel: {hiden: [8]}",
     "unknown key model.hiden (did you mean 'hidden'?)"),
    ("train: {epochs: 2}\noptimizer: {name: adam, LR: 0.1}",
     "unknown key optimizer.LR (did you mean 'lr'?)"),
])
def test_unknown_key_names_the_nearest_valid_key(write_config, text, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_text(write_config, text)


@pytest.mark.parametrize("text, message", [
    ("model: {init: kaiming}", "invalid model.init: 'kaiming' (choose one of: small,"
                               " xavier, glorot, he; did you mean 'he'?)"),
    ("model: {loss: hinge}", "invalid model.loss: 'hinge' (choose one of: softmax,"
                             " svm; did you mean 'svm'?)"),
    ("model: {loss: cross_entropy}", "invalid model.loss: 'cross_entropy' (choose"
                                     " one of: softmax, svm; did you mean"
                                     " 'softmax'?)"),
    ("model: {dropout: 0.5}", "unknown key model.dropout (did you mean"
                              " 'drop_probability'?)"),
    # Keras' and torch's names for 2 / (fan_in + fan_out), which is glorot here.
    ("model: {init: glorot_normal}", "invalid model.init: 'glorot_normal' (choose"
                                     " one of: small, xavier, glorot, he; did you"
                                     " mean 'glorot'?)"),
    ("model: {init: xavier_normal}", "invalid model.init: 'xavier_normal' (choose"
                                     " one of: small, xavier, glorot, he; did you"
                                     " mean 'glorot'?)"),
])
def test_another_librarys_name_gets_nntrains_as_the_hint(write_config, text,
                                                         message):
    # None of these is spelt close to nntrain's name for the same thing.
    with pytest.raises(ConfigError, match=re.escape(message) + "$"):
        load_text(write_config, text + "\ntrain: {epochs: 2}")


@pytest.mark.parametrize("step, message", [
    ("{pca: 5}", "invalid data.preprocess[0].pca: 5 (expected a mapping of step"
                 " options, such as {pca: {components: 0.99}})"),
    ("{whiten: 0.01}", "invalid data.preprocess[0].whiten: 0.01 (expected a mapping"
                       " of step options, such as {whiten: {components: 1.0,"
                       " epsilon: 0.01}})"),
    ("{center: 1}", "invalid data.preprocess[0].center: 1 (expected no options:"
                    " write center)"),
])
def test_step_options_given_bare_show_how_to_write_them(write_config, step,
                                                        message):
    with pytest.raises(ConfigError, match=re.escape(message) + "$"):
        load_text(write_config, f"data: {{preprocess: [{step}]}}\ntrain: {{epochs:"
                                " 2}")


def test_an_out_of_range_norm_epsilon_is_refused_beside_layers_too(write_config):
    # Unused with model.layers (a warning says so), but out of range all the same.
    text = ("model: {norm_epsilon: 1.0e-39, layers: [{affine: {units: 4}},"
            " {relu: {}}, {affine: {}}]}\ntrain: {epochs: 2}")

    with pytest.raises(ConfigError, match=re.escape(
            "invalid model.norm_epsilon: 1e-39 is subnormal in float32")):
        load_text(write_config, text)


@pytest.mark.parametrize("text, message", [
    ("model: {init: true}", "invalid model.init: true (choose one of: small,"
                            " xavier, glorot, he)"),
    ("optimizer: {name: null}", "invalid optimizer.name: null (choose one of:"),
    ("data: {preprocess: {center: true}}", "invalid data.preprocess: {center: true}"
                                           " (expected a list of steps"),
    # Keys in their order, text as written; a newline in a string: Python's form.
    ("data: {preprocess: {scale: 1, center: café}}", "invalid data.preprocess:"
                                                     " {scale: 1, center: café}"),
    ('model: {init: ["a\\nb"]}', "invalid model.init: ['a\\nb'] (choose one of:"),
])
def test_refused_values_are_shown_as_yaml_writes_them(write_config, text, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_text(write_config, text + "\ntrain: {epochs: 2}")


def test_unknown_choice_names_the_nearest_option(write_config):
    message = ("invalid model.init: 'hee' (choose one of: small, xavier, glorot, he;"
               " did you mean 'he'?)")

    with pytest.raises(ConfigError, match=re.escape(message)):
        load_text(write_config, "model: {init: hee}\ntrain: {epochs: 2}")


@pytest.mark.parametrize("key, value, options, meant", [
    ("model.activation", "Relu",
     "relu, leaky_relu, elu, sigmoid, tanh, maxout", "relu"),
    ("optimizer.name", "SGD",
     "sgd, momentum, nesterov, adagrad, rmsprop, adam, adamw, lbfgs", "sgd"),
])
def test_a_choice_in_the_wrong_case_is_refused_naming_its_spelling(
        write_config, key, value, options, meant):
    message = (f"invalid {key}: '{value}' (choose one of: {options}; did you mean"
               f" '{meant}'?)")

    with pytest.raises(ConfigError, match=re.escape(message)):
        load_text(write_config, "train: {epochs: 2}", [f"{key}={value}"])


def test_unknown_key_without_a_near_one_lists_the_valid_keys(write_config):
    with pytest.raises(ConfigError, match=r"unknown key train\.zzzz \(valid keys: "
                                          r"epochs, iterations, batch_size"):
        load_text(write_config, "train: {epochs: 2, zzzz: 1}")


def test_unknown_top_level_key_lists_each_valid_key_once(write_config):
    with pytest.raises(ConfigError) as caught:
        load_text(write_config, "train: {epochs: 2}\nzzzz: 1")

    assert str(caught.value).count("optimizer") == 1




@pytest.mark.parametrize("text, message", [
    ("train: {epochs: 2, batch_size: '16'}",
     "invalid train.batch_size: '16' (expected an integer >= 1 and <="
     " 1,000,000,000)"),
    ("train: {epochs: 2.5}",
     "invalid train.epochs: 2.5 (expected an integer >= 1 and <= 1,000,000,000"
     " or null)"),
    ("train: {epochs: 0}",
     "invalid train.epochs: 0 (expected an integer >= 1 and <= 1,000,000,000 or"
     " null)"),
    ("train: {epochs: 2, threads: 2000}",
     "invalid train.threads: 2000 (expected an integer >= 1 and <= 1,024 or null)"),
    ("seed: true\ntrain: {epochs: 2}",
     "invalid seed: true (expected an integer >= 0)"),
    ("model: {hidden: 8}\ntrain: {epochs: 2}",
     "invalid model.hidden: 8 (expected a list; write [8])"),
    ("model: {hidden: '128, 64'}\ntrain: {epochs: 2}",
     "invalid model.hidden: '128, 64' (expected a list; write [128, 64])"),
    ("model: {hidden: relu}\ntrain: {epochs: 2}",
     "invalid model.hidden: 'relu' (expected a list)"),
    ("train: {epochs: 1e3}",
     "invalid train.epochs: 1000.0 (expected an integer >= 1 and <= 1,000,000,000"
     " or null; write it as an integer: 1000)"),
    ("seed: 1e30\ntrain: {epochs: 2}",
     "invalid seed: 1e+30 (expected an integer >= 0)"),
    ("model: {hidden: 2.5}\ntrain: {epochs: 2}",
     "invalid model.hidden: 2.5 (expected a list)"),
    ("model: {hidden: 16.0}\ntrain: {epochs: 2}",
     "invalid model.hidden: 16.0 (expected a list; write [16])"),
    ("model: {hidden: '16.0, 3e1'}\ntrain: {epochs: 2}",
     "invalid model.hidden: '16.0, 3e1' (expected a list; write [16, 30])"),
    ("model: {hidden: 1e30}\ntrain: {epochs: 2}",
     "invalid model.hidden: 1e+30 (expected a list)"),
    ("model: {hidden: '1e'}\ntrain: {epochs: 2}",
     "invalid model.hidden: '1e' (expected a list)"),
    ("model: {hidden: '1-2'}\ntrain: {epochs: 2}",
     "invalid model.hidden: '1-2' (expected a list)"),
    ("train: {epochs: 1e30}",
     "invalid train.epochs: 1e+30 (expected an integer >= 1 and <= 1,000,000,000"
     " or null)"),
    ("train: {epochs: 0.0}",
     "invalid train.epochs: 0.0 (expected an integer >= 1 and <= 1,000,000,000"
     " or null)"),
    ("model: {hidden: [8, x]}\ntrain: {epochs: 2}",
     "invalid model.hidden[1]: 'x' (expected an integer >= 1 and <= 1,000,000)"),
    ("data: 3\ntrain: {epochs: 2}",
     "invalid data: 3 (expected a mapping of keys)"),
    ("optimizer: adam\ntrain: {epochs: 2}",
     "invalid optimizer: 'adam' (expected a mapping of keys)"),
    ("data: {path: 5}\ntrain: {epochs: 2}",
     "invalid data.path: 5 (expected a non-empty string, or null for the default)"),
    ("optimizer: {lr: fast}\ntrain: {epochs: 2}",
     "invalid optimizer.lr: 'fast' (expected a number in (0, inf))"),
])
def test_wrong_type_is_an_error_naming_key_and_value(write_config, text, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_text(write_config, text)


@pytest.mark.parametrize("text, key", [
    ("train: {epochs: 0}", "train.epochs"),
    ("train: {epochs: 2, batch_size: 0}", "train.batch_size"),
    ("train: {epochs: 2, eval_every: 0}", "train.eval_every"),
    ("train: {epochs: 2}\nseed: -1", "seed"),
    ("train: {epochs: 2}\noptimizer: {lr: 0}", "optimizer.lr"),
    ("train: {epochs: 2}\noptimizer: {lr: -1.0e-3}", "optimizer.lr"),
    ("train: {epochs: 2}\noptimizer: {lr: .inf}", "optimizer.lr"),
    ("train: {epochs: 2}\noptimizer: {lr: .nan}", "optimizer.lr"),
    ("train: {epochs: 2}\noptimizer: {beta1: 1.0}", "optimizer.beta1"),
    ("train: {epochs: 2}\noptimizer: {name: momentum, momentum: -0.1}",
     "optimizer.momentum"),
    ("train: {epochs: 2}\nmodel: {l2: -1e-3}", "model.l2"),
    ("train: {epochs: 2}\nmodel: {init_std: 0}", "model.init_std"),
    ("train: {epochs: 2}\nmodel: {hidden: [8, 0]}", r"model.hidden[1]"),
    ("train: {epochs: 2}\ndata: {validation: 0}", "data.validation"),
    ("train: {epochs: 2}\ndata: {validation: 1.0}", "data.validation"),
    ("train: {epochs: 2}\ndata: {validation: -3}", "data.validation"),
    ("train: {epochs: 2}\ndata: {validation: 1.5}", "data.validation"),
])
def test_out_of_range_value_is_an_error_naming_the_key(write_config, text, key):
    with pytest.raises(ConfigError, match=rf"invalid {re.escape(key)}: "):
        load_text(write_config, text)


HUGE = 10**26  # a typo's worth of zeros: would allocate or loop until killed
BILLION = "1,000,000,000"


@pytest.mark.parametrize("text, key, maximum", [
    ("model: {hidden: [10], activation: maxout, pieces: HUGE}", "model.pieces",
     "1,000"),
    ("model: {layers: [{maxout: {units: 4, pieces: HUGE}}, {affine: {}}]}",
     "model.layers[0].maxout.pieces", "1,000"),
    ("train: {epochs: HUGE}", "train.epochs", BILLION),
    ("train: {iterations: HUGE}", "train.iterations", BILLION),
    ("train: {epochs: 1, batch_size: HUGE}", "train.batch_size", BILLION),
    ("train: {epochs: 1, eval_every: HUGE}", "train.eval_every", BILLION),
    ("train: {epochs: 1, log_every: HUGE}", "train.log_every", BILLION),
    ("train: {epochs: 1, snapshot_every: HUGE}", "train.snapshot_every", BILLION),
    ("train: {epochs: 1, early_stopping: {patience: HUGE}}",
     "train.early_stopping.patience", BILLION),
    ("optimizer: {name: lbfgs, history: HUGE}", "optimizer.history", "1,000"),
    ("schedule: {name: step, step_epochs: HUGE}", "schedule.step_epochs", BILLION),
    ("schedule: {name: cosine, warmup: HUGE}", "schedule.warmup", BILLION),
    ("schedule: {name: plateau, patience: HUGE}", "schedule.patience", BILLION),
])
def test_huge_counts_are_refused_naming_the_maximum(write_config, text, key,
                                                    maximum):
    if "train" not in text:
        text += "\ntrain: {epochs: 1}"

    with pytest.raises(ConfigError, match=rf"invalid {re.escape(key)}: {HUGE} "
                                          rf"\(expected an integer .*<= {maximum}"):
        load_text(write_config, text.replace("HUGE", str(HUGE)))


@pytest.mark.parametrize("monitor", ["val_accuracy", "train_accuracy"])
def test_min_delta_of_1_or_more_is_refused_for_an_accuracy(write_config, monitor):
    text = (f"train: {{epochs: 1, monitor: {monitor},"
            " early_stopping: {patience: 3, min_delta: 10}}")

    with pytest.raises(ConfigError, match=re.escape(
            f"invalid train.early_stopping.min_delta: 10 (an accuracy, train.monitor"
            f" {monitor}, lies in [0, 1] and never gains that much); give a gain"
            " below 1")):
        load_text(write_config, text)


@pytest.mark.parametrize("monitor, min_delta", [
    ("val_accuracy", 0.5), ("val_loss", 10), ("loss", 1),
])
def test_min_delta_fits_its_monitor(write_config, monitor, min_delta):
    config = load_text(write_config, f"train: {{epochs: 1, monitor: {monitor},"
                       f" early_stopping: {{patience: 3, min_delta: {min_delta}}}}}")

    assert config["train"]["early_stopping"]["min_delta"] == min_delta


@pytest.mark.parametrize("value", ["1", "5000", "0.5", "1e-1"])
def test_validation_accepts_counts_and_fractions(write_config, value):
    config = load_text(write_config, f"data: {{validation: {value}}}\n"
                                     "train: {epochs: 1}")

    assert config["data"]["validation"] == parse_yaml(value, "expected")


def test_preprocess_step_listed_twice_is_an_error(write_config):
    with pytest.raises(ConfigError, match=r"'center' is listed twice"):
        load_text(write_config, "data: {preprocess: [center, scale, center]}\n"
                                "train: {epochs: 1}")


def test_config_errors_are_bad_input_with_exit_status_2(write_config):
    with pytest.raises(BadInputError) as caught:
        load_text(write_config, "train: {epochs: 0}")

    assert caught.value.exit_code == 2


def test_resolve_error_names_the_config_file(write_config):
    path = write_config("train: {epochs: 0}")

    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: invalid"):
        load_config(path)




def test_both_epochs_and_iterations_is_an_error(write_config):
    message = "set exactly one of train.epochs and train.iterations" \
              " (got epochs=2, iterations=50)"

    with pytest.raises(ConfigError, match=re.escape(message)):
        load_text(write_config, "train: {epochs: 2, iterations: 50}")


def test_neither_epochs_nor_iterations_is_an_error(write_config):
    message = "set exactly one of train.epochs and train.iterations" \
              " (got epochs=null, iterations=null); for example train: {epochs:" \
              " 10} in the config, or --set train.epochs=10"

    with pytest.raises(ConfigError, match=re.escape(message) + "$"):
        load_text(write_config, "train: {batch_size: 4}")


def test_set_switches_a_run_from_epochs_to_iterations(write_config):
    config = load_text(write_config, "train: {epochs: 3}",
                       ["train.epochs=null", "train.iterations=500"])

    assert config["train"]["epochs"] is None
    assert config["train"]["iterations"] == 500


def test_set_adding_iterations_alone_is_judged_after_overriding(write_config):
    with pytest.raises(ConfigError, match=r"got epochs=3, iterations=500"):
        load_text(write_config, "train: {epochs: 3}", ["train.iterations=500"])


def test_set_creates_missing_sections(write_config):
    config = load_text(write_config, "seed: 1", ["train.epochs=4"])

    assert config["train"]["epochs"] == 4


@pytest.mark.parametrize("override, message", [
    ("train.epochs", "--set 'train.epochs': write KEY=VALUE"),
    ("=3", "--set '=3': write KEY=VALUE"),
    ("seed.x=1", "--set seed.x: seed takes a value, not keys (it holds 1); set it"
     " with --set seed=VALUE"),
    ("train.epochs.x=1", "--set train.epochs.x: train.epochs takes a value, not"
     " keys (it holds 1); set it with --set train.epochs=VALUE"),
    ("model.hidden.0=1", "--set model.hidden.0: model.hidden takes a value, not"
     " keys; set it with --set model.hidden=VALUE"),
    ("model.hidden=[8", "--set model.hidden: "),
    (".=1", "--set '.=1': the key '.' has an empty part or spaces around one;"
     " write a dotted key"),
    ("train..epochs=1", "--set 'train..epochs=1': the key 'train..epochs' has an"
     " empty part"),
    ("train.=1", "--set 'train.=1': the key 'train.' has an empty part"),
    ("train .epochs=1", "--set 'train .epochs=1': the key 'train .epochs' has an"
     " empty part or spaces around one"),
])
def test_malformed_set_is_a_config_error(write_config, override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_text(write_config, "seed: 1\ntrain: {epochs: 1}", [override])


def test_set_reaches_into_settings_that_take_a_mapping(write_config):
    config = load_text(write_config, "train: {epochs: 1}",
                       ["train.early_stopping.patience=4", "train.average.decay=0.9"])

    assert config["train"]["early_stopping"]["patience"] == 4
    assert config["train"]["average"]["decay"] == 0.9


def test_set_of_an_unknown_key_names_the_nearest_one(write_config):
    with pytest.raises(ConfigError, match=re.escape(
            "unknown key train.epoch (did you mean 'epochs'?)")):
        load_text(write_config, "train: {epochs: 1}", ["train.epoch=3"])


@pytest.mark.parametrize("overrides, source, problem", [
    (["optimizer.lr=abc"], "--set optimizer.lr=abc",
     "invalid optimizer.lr: 'abc'"),
    (["train.epoch=3"], "--set train.epoch=3", "unknown key train.epoch"),
    (["model.hidden=[8, 0]"], "--set model.hidden=[8, 0]",
     "invalid model.hidden[1]: 0"),
    (["optimizer={name: sgd, beta1: 0.9}"], "--set optimizer={name: sgd, beta1: 0.9}",
     "optimizer.beta1 is not a setting of 'sgd'"),
    # The last override of a key is the one that counts, so it is the one named.
    (["train.epochs=2", "train.epochs=0"], "--set train.epochs=0",
     "invalid train.epochs: 0"),
    # A value from the file is the file's fault, whatever else --set changed.
    (["optimizer.lr=0.1"], "config.yaml", "invalid train.batch_size: 0"),
    (["optimizer.l=0.1"], "--set optimizer.l=0.1", "unknown key optimizer.l "),
    # An override that makes a section or sets a key inside a bad one.
    (["optimzer.lr=0.1"], "--set optimzer.lr=0.1", "unknown key optimzer "),
    (["train.clip.nrm=1"], "--set train.clip.nrm=1", "invalid train.clip mode: 'nrm'"),
    # Errors about two keys blame an override of either.
    (["train.iterations=100"], "--set train.iterations=100",
     "set exactly one of train.epochs and train.iterations (got epochs=1,"
     " iterations=100); set the other to null"),
    (["optimizer.beta1=0.9", "optimizer.name=sgd"], "--set optimizer.name=sgd",
     "optimizer.beta1 is not a setting of 'sgd'"),
])
def test_error_names_the_override_that_gave_the_bad_value(write_config, overrides,
                                                         source, problem):
    path = write_config("train: {epochs: 1, batch_size: 0}"
                        if source == "config.yaml" else "train: {epochs: 1}")

    with pytest.raises(ConfigError) as caught:
        load_config(path, overrides)

    where = f"{path}: " if source == "config.yaml" else f"{source}: "
    assert str(caught.value).startswith(where + problem)


@pytest.mark.parametrize("text, problem", [
    ("- 1\n- 2\n", "holds a list, not a mapping of sections"),
    ("5\n", "holds a number, not a mapping of sections"),
    ("true\n", "holds a boolean, not a mapping of sections"),
    ("!!binary aGVsbG8=\n", "holds binary data, not a mapping of sections"),
    ("2001-01-01\n", "holds a timestamp, not a mapping of sections"),
    ("train:\n  epochs:1\n", "invalid train: 'epochs:1' (expected a mapping of keys;"
     " write a space after the colon, 'KEY: VALUE')"),
    ("search: {trials: 2}\ntrain: {epochs: 1}\n",
     "unknown key search: a search: section makes a study, which nntrain search"
     " runs; run it so, or leave the search keys out"),
])
def test_file_mistakes_are_named_with_their_fix(write_config, text, problem):
    path = write_config(text)

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    assert str(caught.value).startswith(str(path))
    assert problem in str(caught.value)


def test_apply_overrides_leaves_other_keys_alone():
    raw = {"train": {"epochs": 3, "batch_size": 4}}

    out = apply_overrides(raw, ["train.epochs=5"])

    assert out == {"train": {"epochs": 5, "batch_size": 4}}


@pytest.mark.parametrize("rule, key, owners", [
    ("sgd", "beta1", "adam, adamw"),
    ("sgd", "momentum", "momentum, nesterov"),
    ("momentum", "eps", "adagrad, rmsprop, adam, adamw"),
    ("adam", "momentum", "momentum, nesterov"),
])
def test_key_of_another_update_rule_is_named(write_config, rule, key, owners):
    first_owner = owners.split(",")[0]
    message = (f"optimizer.{key} is not a setting of '{rule}' (it belongs to"
               f" {owners}); remove it or change optimizer.name (with --set,"
               f" 'optimizer={{name: {first_owner}, {key}: 0.5}}' replaces the whole"
               " section)")

    with pytest.raises(ConfigError, match=re.escape(message)):
        load_text(write_config,
                  f"optimizer: {{name: {rule}, {key}: 0.5}}\ntrain: {{epochs: 1}}")


def test_key_of_another_rule_via_set_is_named(write_config):
    with pytest.raises(ConfigError,
                       match=r"optimizer\.beta1 is not a setting of 'sgd'"):
        load_text(write_config, "optimizer: {name: sgd}\ntrain: {epochs: 1}",
                  ["optimizer.beta1=0.9"])


@pytest.mark.parametrize("text, override, message", [
    ("optimizer: {name: adam, lr: 0.001}", "optimizer.name=lbfgs",
     "optimizer.lr is not a setting of 'lbfgs' (it belongs to sgd, momentum,"
     " nesterov, adagrad, rmsprop, adam, adamw); remove it, or replace the whole"
     " section: --set 'optimizer={name: lbfgs}'"),
    ("optimizer: {name: adam, lr: 0.001, beta1: 0.8}", "optimizer.name=adagrad",
     "optimizer.beta1 is not a setting of 'adagrad' (it belongs to adam, adamw);"
     " remove it, or replace the whole section: --set 'optimizer={name: adagrad,"
     " lr: 0.001}'"),
    ("schedule: {name: step, step_epochs: 3, gamma: 0.5}",
     "schedule.name=exponential",
     "schedule.step_epochs is not a setting of 'exponential' (it belongs to"
     " step); remove it, or replace the whole section: --set 'schedule={name:"
     " exponential, gamma: 0.5}'"),
])
def test_a_set_name_is_kept_in_the_fix_for_the_old_rules_keys(write_config, text,
                                                               override, message):
    with pytest.raises(ConfigError) as caught:
        load_text(write_config, f"{text}\ntrain: {{epochs: 1}}", [override])

    assert str(caught.value) == f"--set {override}: {message}"


def test_unknown_update_rule_names_the_nearest(write_config):
    with pytest.raises(ConfigError, match=re.escape(
            "invalid optimizer.name: 'adma' (choose one of: sgd, momentum, nesterov,"
            " adagrad, rmsprop, adam, adamw, lbfgs; did you mean 'adam'?)")):
        load_text(write_config, "optimizer: {name: adma}\ntrain: {epochs: 1}")


@pytest.mark.parametrize("value", ["0", "[]", "false"])
def test_falsy_non_mapping_optimizer_section_is_refused(write_config, value):
    with pytest.raises(ConfigError, match=r"invalid optimizer: .*expected a mapping"):
        load_text(write_config, f"optimizer: {value}\ntrain: {{epochs: 1}}")




EXPLICIT_8_4 = (
    "model:\n"
    "  layers:\n"
    "    - affine: {units: 8}\n"
    "    - relu: {}\n"
    "    - affine: {units: 4}\n"
    "    - relu:\n"
    "    - affine: {}\n"
)


def test_hidden_and_layers_both_set_is_an_error(write_config):
    text = EXPLICIT_8_4.replace("model:\n", "model:\n  hidden: [8, 4]\n")

    with pytest.raises(ConfigError, match=re.escape(
            "set either model.hidden or model.layers, not both")):
        load_text(write_config, text + "train: {epochs: 1}")


def test_hidden_null_without_layers_is_an_error(write_config):
    with pytest.raises(ConfigError, match=r"set model\.hidden .* or model\.layers"):
        load_text(write_config, "model: {hidden: null}\ntrain: {epochs: 1}")


def test_layers_alone_clears_the_default_hidden(write_config):
    config = load_text(write_config, EXPLICIT_8_4 + "train: {epochs: 1}")

    assert config["model"]["hidden"] is None
    unset = {"init": None, "init_std": None, "l2": None, "l1": None, "max_norm": None}
    assert config["model"]["layers"] == [
        {"affine": {"units": 8, **unset}}, {"relu": {}},
        {"affine": {"units": 4, **unset}}, {"relu": {}},
        {"affine": {"units": None, **unset}},
    ]


def test_hidden_shorthand_and_layers_list_build_the_same_network(write_config):
    shorthand = load_text(write_config, "seed: 3\nmodel: {hidden: [8, 4]}\n"
                                        "train: {epochs: 1, dtype: float64}")
    explicit = load_text(write_config, "seed: 3\n" + EXPLICIT_8_4
                         + "train: {epochs: 1, dtype: float64}")

    a = build_model(shorthand, 5, 3)
    b = build_model(explicit, 5, 3)

    shapes = {"affine1.W": (5, 8), "affine1.b": (8,), "affine2.W": (8, 4),
              "affine2.b": (4,), "affine3.W": (4, 3), "affine3.b": (3,)}
    assert {name: p.shape for name, p in a.params.items()} == shapes
    assert {name: p.shape for name, p in b.params.items()} == shapes
    assert list(a.params) == list(b.params) == list(shapes)
    for name in shapes:
        np.testing.assert_array_equal(a.params[name], b.params[name])
    assert [layer.kind for layer in a.layers] == [layer.kind for layer in b.layers] \
        == ["affine", "relu", "affine", "relu", "affine"]

    X = np.random.default_rng(0).normal(size=(6, 5))
    np.testing.assert_array_equal(a.loss(X), b.loss(X))


def test_layers_with_a_different_seed_start_elsewhere(write_config):
    first = load_text(write_config, "seed: 3\n" + EXPLICIT_8_4 + "train: {epochs: 1}")
    second = load_text(write_config, "seed: 4\n" + EXPLICIT_8_4 + "train: {epochs: 1}")

    W3 = build_model(first, 5, 3).params["affine1.W"]
    W4 = build_model(second, 5, 3).params["affine1.W"]

    assert not np.array_equal(W3, W4)


@pytest.mark.parametrize("layers, message", [
    ("[{affine: {units: 8}}, {relu: {}}]", "the last layer must be an affine layer"),
    ("[{rleu: {}}, {affine: {}}]", "did you mean 'relu'?"),
    ("[{affine: {units: 0}}, {affine: {}}]", "invalid model.layers[0].affine.units: 0"),
    ("[{affine: {width: 8}}, {affine: {}}]",
     "unknown key model.layers[0].affine.width"),
    ("[{affine: {units: 8}, relu: {}}]", "invalid model.layers[0]"),
    ("[]", "invalid model.layers: []"),
])
def test_malformed_layers_list_is_an_error(write_config, layers, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_text(write_config, f"model: {{layers: {layers}}}\ntrain: {{epochs: 1}}")


def test_resolve_config_is_idempotent():
    raw = {"train": {"epochs": 2}, "model": {"hidden": [8]}}

    once = resolve_config(raw)
    twice = resolve_config(once)

    assert twice == once


@pytest.mark.parametrize("overrides", ["train.epochs=5", b"train.epochs=5", [5]])
def test_load_config_refuses_overrides_that_are_not_a_list_of_strings(overrides):
    with pytest.raises(TypeError, match=rf"^overrides is {re.escape(repr(overrides))};"
                       r" give a list of KEY=VALUE strings"):
        load_config(None, overrides)


@pytest.mark.parametrize("raw, message", [
    ({"schedule": {"name": "cosine", "floor": 0.01}},
     r"^invalid schedule\.floor: 0\.01 is above optimizer\.lr 0\.001, so the cosine"
     r" schedule would raise the rate"),
    ({"schedule": {"name": "plateau", "floor": 0.5}, "optimizer": {"lr": 0.1}},
     r"^invalid schedule\.floor: 0\.5 is above optimizer\.lr 0\.1"),
    ({"model": {"activation": "leaky_relu", "leaky_slope": 1e308}},
     r"^invalid model\.leaky_slope: 1e\+308 \(expected a number in \[0, 1\]\)"),
    ({"model": {"activation": "elu", "elu_alpha": 1e308}},
     r"^invalid model\.elu_alpha: 1e\+308 \(expected a number in \(0, 100\.0\]\)"),
    ({"train": {"epochs": 1, "average": {"kind": "polyak", "decay": 0.9}}},
     r"^train\.average\.decay is a setting of exponential averaging"),
    ({"output": ""}, r"^invalid output: '' \(expected a non-empty string"),
])
def test_settings_that_would_be_ignored_or_overflow_are_refused(raw, message):
    raw = {"train": {"epochs": 1}, **raw}
    with pytest.raises(ConfigError, match=message):
        resolve_config(raw)


def test_a_resolved_polyak_average_resolves_again():
    resolved = resolve_config({"train": {"epochs": 1, "average": {"kind": "polyak"}}})
    assert resolve_config(resolved) == resolved


@pytest.mark.parametrize("text, key, value", [
    ("optimizer: {name: adam, eps: 1.0e-50}", "optimizer.eps", "1e-50"),
    ("optimizer: {name: adagrad, eps: 1.0e-50}", "optimizer.eps", "1e-50"),
    ("optimizer: {name: rmsprop, eps: 1.0e-50}", "optimizer.eps", "1e-50"),
    ("model: {norm_epsilon: 1.0e-300, batchnorm: true}", "model.norm_epsilon",
     "1e-300"),
    ("model: {hidden: null, layers: [{affine: {units: 4}}, {layernorm: {epsilon:"
     " 1.0e-300}}, {affine: {}}]}", "model.layers[1].layernorm.epsilon", "1e-300"),
])
def test_an_epsilon_that_rounds_to_zero_in_float32_is_refused(write_config, text,
                                                              key, value):
    message = (f"invalid {key}: {value} rounds to 0 in float32 (train.dtype); give a"
               " value >= 1.2e-38, or train.dtype float64")

    with pytest.raises(ConfigError, match=re.escape(message)):
        load_text(write_config, f"{text}\ntrain: {{epochs: 1}}")


def test_a_subnormal_epsilon_is_refused_and_the_smallest_normal_accepted(
        write_config):
    # float32's smallest normal number is 2**-126 = 1.1754944e-38.
    with pytest.raises(ConfigError, match=re.escape(
            "invalid optimizer.eps: 1e-40 is subnormal in float32 (train.dtype), with"
            " few significant bits left; give a value >= 1.2e-38, or train.dtype"
            " float64")):
        load_text(write_config, "optimizer: {eps: 1.0e-40}\ntrain: {epochs: 1}")

    smallest = load_text(write_config, "train: {epochs: 1}",
                         [f"optimizer.eps={2.0**-126!r}"])
    in_float64 = load_text(write_config, "train: {epochs: 1, dtype: float64}",
                           ["optimizer.eps=1e-40"])

    assert smallest["optimizer"]["eps"] == 2.0**-126
    assert in_float64["optimizer"]["eps"] == 1e-40


def test_a_float64_epsilon_below_its_smallest_normal_names_it(write_config):
    # float64's smallest normal number is 2**-1022 = 2.2250738585072014e-308.
    with pytest.raises(ConfigError, match=re.escape(
            "--set optimizer.eps=1e-320: invalid optimizer.eps: 1e-320 is subnormal"
            " in float64 (train.dtype), with few significant bits left; give a"
            " value >= 2.3e-308")):
        load_text(write_config, "train: {epochs: 1, dtype: float64}",
                  ["optimizer.eps=1e-320"])


def test_an_epsilon_set_before_train_dtype_is_blamed_on_its_own_override(
        write_config):
    # 1e-320 is subnormal in float64 too: train.dtype is no fix, so the --set of
    # optimizer.eps is named even when the one of train.dtype comes later.
    with pytest.raises(ConfigError, match=re.escape(
            "--set optimizer.eps=1e-320: invalid optimizer.eps: 1e-320 is subnormal"
            " in float64")):
        load_text(write_config, "train: {epochs: 1}",
                  ["optimizer.eps=1e-320", "train.dtype=float64"])


@pytest.mark.parametrize("overrides, key", [
    (["optimizer.eps=1e39"], "optimizer.eps"),
    (["model.batchnorm=true", "model.norm_epsilon=1e39"], "model.norm_epsilon"),
    (["model.hidden=null", "model.layers=[{affine: {units: 4}}, {layernorm:"
      " {epsilon: 1.0e+39}}, {affine: {}}]"], "model.layers[1].layernorm.epsilon"),
])
def test_an_epsilon_that_rounds_to_infinity_in_float32_is_refused(write_config,
                                                                  overrides, key):
    # float32's largest number is (2 - 2**-23) * 2**127 = 3.4028235e+38.
    message = (f"invalid {key}: 1e+39 rounds to infinity in float32 (train.dtype),"
               " whose largest number is 3.4028235e+38; give a value <= 3.4e+38")

    with pytest.raises(ConfigError, match=re.escape(message)):
        load_text(write_config, "train: {epochs: 1}", overrides)


def test_the_largest_float32_epsilon_is_accepted_and_a_larger_one_in_float64(
        write_config):
    largest = (2 - 2.0**-23) * 2.0**127
    in_float32 = load_text(write_config, "train: {epochs: 1}",
                           [f"optimizer.eps={largest!r}"])
    in_float64 = load_text(write_config, "train: {epochs: 1, dtype: float64}",
                           ["optimizer.eps=1e39"])

    assert in_float32["optimizer"]["eps"] == largest
    assert in_float64["optimizer"]["eps"] == 1e39


def test_an_integer_past_float64s_range_is_refused_for_a_float_key(write_config):
    huge = 10**400
    with pytest.raises(ConfigError, match=re.escape(
            f"invalid optimizer.lr: {huge} (expected a number in (0, inf))")):
        load_text(write_config, "train: {epochs: 1}", [f"optimizer.lr={huge}"])
