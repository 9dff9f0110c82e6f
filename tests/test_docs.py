"""The docs list every config key with its current type and default."""

import re
from pathlib import Path

import numpy as np
import pytest

from nntrain.config import (
    EPSILON_CEILING,
    EPSILON_FLOOR,
    LAYER_OPTIONS,
    OPTIMIZER_KEYS,
    PREPROCESS_OPTIONS,
    SCHEDULE_KEYS,
    SCHEMA,
    keys_table_markdown,
    resolve_config,
)
from nntrain.data.datasets import load_dataset
from nntrain.errors import ConfigError, DataError
from nntrain.nn.model import build_model
from nntrain.yamlio import parse_yaml

ROOT = Path(__file__).resolve().parent.parent


def test_config_reference_lists_every_key_as_the_schema_says():
    reference = (ROOT / "docs" / "config.md").read_text(encoding="utf-8")
    assert keys_table_markdown() in reference, (
        "docs/config.md is out of date: paste in keys_table_markdown()'s table"
    )


def test_config_reference_states_the_epsilon_floor_the_error_asks_for():
    reference = (ROOT / "docs" / "config.md").read_text(encoding="utf-8")
    assert f"the error asks for one{EPSILON_FLOOR}." in " ".join(reference.split())


def test_config_reference_states_the_epsilon_ceiling_the_error_asks_for():
    reference = " ".join((ROOT / "docs" / "config.md").read_text("utf-8").split())
    assert f"(give one <= {EPSILON_CEILING})" in reference


def test_config_reference_says_unused_settings_are_warnings_not_errors():
    # The README says so too; the reference of what is an error must not leave
    # it out, or a user expects exit status 2.
    intro = (ROOT / "docs" / "config.md").read_text("utf-8").split("| key |")[0]
    assert "A setting the network does not use" in intro
    assert "is not an error but a warning" in " ".join(intro.split())


# A numeric type as the docs write it: "int in [1, 10^9]", "float > 0 or null",
# "list of int in [1, 10^6]", ...
NUMERIC_KIND = re.compile(
    r"(?P<list>list of )?(?P<type>int|float)"
    r"(?: in (?P<low_bracket>[\[(])(?P<low>[^,]+), (?P<high>[^\])]+)"
    r"(?P<high_bracket>[\])])| (?P<op>>=|>) (?P<bound>\S+))?(?P<null> or null)?")


def _number(text: str) -> float:
    """'10^9' -> 1e9, '0.5' -> 0.5."""
    base, _, power = text.partition("^")
    return float(base) ** float(power) if power else float(text)


def _every_key():
    """(dotted key, Key) of every table the docs show."""
    def walk(table, prefix):
        for name, spec in table.items():
            if isinstance(spec, dict):
                yield from walk(spec, f"{prefix}{name}.")
            else:
                yield f"{prefix}{name}", spec

    yield from walk(SCHEMA, "")
    for tables in (OPTIMIZER_KEYS, SCHEDULE_KEYS, PREPROCESS_OPTIONS, LAYER_OPTIONS):
        for owner, table in tables.items():
            yield from walk(table, f"{owner}.")


def _accepts(spec, key, value, as_list) -> bool:
    try:
        spec.check([value] if as_list else value, key)
    except ConfigError:
        return False
    return True


def _probes(match):
    """(value, whether the type column says it is accepted) at each stated bound:
    the bound itself and just past it."""
    step = 1 if match["type"] == "int" else 1e-9
    if match["op"]:
        bound = _number(match["bound"])
        yield bound, match["op"] == ">="
        yield bound - step if match["op"] == ">=" else bound + step, \
            match["op"] == ">"
    elif match["low"]:
        low, high = _number(match["low"]), _number(match["high"])
        yield low, match["low_bracket"] == "["
        yield low - step, False
        yield high, match["high_bracket"] == "]"
        yield high + step, False
    else:
        yield -1e300, True  # no bound stated: none enforced
    if match["null"]:
        yield None, True


@pytest.mark.parametrize("key, spec", [
    pair for pair in _every_key() if pair[1].kind.startswith(("int", "float", "list"))
], ids=lambda value: value if isinstance(value, str) else "")
def test_a_numeric_type_column_states_the_bounds_the_check_enforces(key, spec):
    match = NUMERIC_KIND.fullmatch(spec.kind)
    if match is None:
        assert spec.kind in ("list", "list or null", "int >= 1 or float in (0, 1)",
                             "int >= 1 or float in (0, 1]"), spec.kind
        return

    for value, accepted in _probes(match):
        if match["type"] == "int" and value is not None:
            value = int(value)
        assert _accepts(spec, key, value, bool(match["list"])) == accepted, (
            f"{key} ({spec.kind}) with {value!r}")


def test_the_seeds_row_names_every_stream_it_drives():
    # nntrain/random.py's streams: init, split, shuffle, dropout, search.
    doc = SCHEMA["seed"].doc

    for stream in ("init", "validation split", "shuffling", "dropout masks",
                   "a search's draws"):
        assert stream in doc, stream


def _reference() -> str:
    return (ROOT / "docs" / "config.md").read_text("utf-8")


def _row(key: str) -> str:
    """The line of docs/config.md's table whose key column is ``key``."""
    rows = [line for line in _reference().splitlines()
            if line.startswith(f"| `{key}` |")]
    assert len(rows) == 1, key
    return rows[0]


def _section(title: str) -> str:
    """The prose of docs/config.md's section ``title``, on one line."""
    return " ".join(_reference().split(f"## {title}\n")[1].split("\n## ")[0].split())


def _config(**sections) -> dict:
    raw = {"train": {"epochs": 1}}
    for name, settings in sections.items():
        raw.setdefault(name, {}).update(settings)
    return resolve_config(raw)


@pytest.mark.parametrize("schedule", ["cosine", "plateau"])
def test_schedule_floor_rows_say_the_floor_is_at_most_the_rate(schedule):
    _config(optimizer={"lr": 0.01}, schedule={"name": schedule, "floor": 0.01})
    with pytest.raises(ConfigError, match="give a floor <= the learning rate"):
        _config(optimizer={"lr": 0.01}, schedule={"name": schedule, "floor": 0.02})

    assert "<= optimizer.lr" in _row(f"schedule.({schedule}) floor")


# train.dtype's smallest normal numbers, 2**-126 and 2**-1022.
SMALLEST_NORMAL = {"float32": 1.1754943508222875e-38,
                   "float64": 2.2250738585072014e-308}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_epsilons_are_accepted_from_the_dtypes_smallest_normal_number(dtype):
    tiny = SMALLEST_NORMAL[dtype]
    _config(train={"dtype": dtype}, optimizer={"eps": tiny})
    with pytest.raises(ConfigError, match="is subnormal"):
        _config(train={"dtype": dtype}, optimizer={"eps": float(np.nextafter(tiny, 0))})


def test_epsilon_rows_state_the_smallest_normal_number_not_the_rounded_advice():
    stated = ("(>= train.dtype's smallest normal number: about 1.18e-38 in float32,"
              " 2.23e-308 in float64)")
    for key in ("model.norm_epsilon", "optimizer.(adagrad) eps",
                "optimizer.(rmsprop) eps", "optimizer.(adam) eps",
                "optimizer.(adamw) eps", "model.layers[].batchnorm.epsilon",
                "model.layers[].layernorm.epsilon"):
        assert stated in _row(key), key
    intro = " ".join(_reference().split("| key |")[0].split())
    assert ("below the smallest normal number of `train.dtype` (about 1.18e-38 in"
            " float32, 2.23e-308 in float64; that number itself is accepted)") in intro


def test_the_epsilon_ceiling_holds_in_float32_only_as_the_docs_say():
    # float32 rounds to infinity from 2**128 - 2**103 = 3.4028235677973366e+38.
    _config(optimizer={"eps": 3.40282356e38})
    with pytest.raises(ConfigError, match="rounds to infinity in float32"):
        _config(optimizer={"eps": 3.40282357e38})
    _config(train={"dtype": "float64"}, optimizer={"eps": 1e300})

    intro = " ".join(_reference().split("| key |")[0].split())
    assert "`train.dtype` float32 (from about 3.4028236e+38 up" in intro
    assert "in float64 any finite epsilon is accepted" in intro


def test_the_dtype_row_lists_the_choices_the_check_accepts():
    for dtype in ("float32", "float64"):
        assert _config(train={"dtype": dtype})["train"]["dtype"] == dtype
    with pytest.raises(ConfigError, match="choose one of: float32, float64"):
        _config(train={"dtype": "float16"})

    assert _row("train.dtype").endswith(": float32 &#124; float64 |")


@pytest.mark.parametrize("setting, good, bad", [
    ({"early_stopping": {"patience": 1}}, 10**9, [0, 10**9 + 1]),
    ({"average": {"decay": 0.0}}, 0.999999, [-0.1, 1.0]),
    ({"clip": {"norm": 1e-300}}, 5.0, [0.0, -1.0]),
    ({"clip": {"value": 1e-300}}, 5.0, [0.0, -1.0]),
], ids=["patience", "decay", "clip norm", "clip value"])
def test_the_bounds_of_train_mappings_are_the_ones_their_rows_state(setting, good,
                                                                    bad):
    (name, inner), = setting.items()
    (option, edge), = inner.items()
    for value in (edge, good):
        _config(train={name: {option: value}})
    for value in bad:
        with pytest.raises(ConfigError, match=f"invalid train.{name}.{option}"):
            _config(train={name: {option: value}})

    stated = {"early_stopping": "N an int in [1, 10^9]",
              "average": "D a float in [0, 1)", "clip": "MAX a float > 0"}
    assert stated[name] in _row(f"train.{name}")


def test_the_search_rounds_row_states_its_ceiling():
    assert "| `search.rounds` | int in [1, trials] (so <= 10000) |" in _reference()
    assert "| `search.trials` | int in [1, 10000] |" in _reference()


@pytest.mark.parametrize("setting, named", [
    ({"model": {"drop_probability": 0.1}}, "`model.drop_probability` above 0"),
    ({"model": {"hidden": None, "layers": [{"affine": {"units": 4}}, {"dropout": {}},
                                           {"affine": {}}]}}, "a `dropout` layer"),
    ({"schedule": {"name": "step"}}, "any `schedule.name` but `constant`"),
    ({"train": {"clip": {"norm": 1.0}}}, "`train.clip`"),
    ({"train": {"average": {}}}, "`train.average`"),
    ({"model": {"max_norm": 3.0}}, "(`model.max_norm`, a layer's"),
    ({"model": {"hidden": None, "layers": [{"affine": {"max_norm": 3.0}}]}},
     "a layer's `max_norm`)"),
], ids=["drop_probability", "dropout layer", "schedule", "clip", "average",
        "max_norm", "layer max_norm"])
def test_the_update_rules_section_names_what_lbfgs_refuses(setting, named):
    with pytest.raises(ConfigError, match="optimizer lbfgs"):
        _config(optimizer={"name": "lbfgs"}, **setting)

    assert named in _section("Update rules").split("`lbfgs`", 1)[1]


@pytest.mark.parametrize("text, value", [
    ("+5", 5), ("-3", -3), ("1_000", 1000), ("0x1F", 31), ("-0b101", -5),
    ("1e3", 1000.0), ("1000.0", 1000.0),
    ("017", "017"), ("0o17", "0o17"), ("0X1F", "0X1F"), ("1:30", "1:30"),
])
def test_integers_are_read_as_the_reference_says(text, value):
    read = parse_yaml(text, "test")
    assert (read, type(read)) == (value, type(value))

    intro = " ".join(_reference().split("| key |")[0].split())
    assert f"`{text}`" in intro


def test_the_data_path_row_says_npz_needs_it_and_digits_refuses_it():
    with pytest.raises(DataError, match="^data.name is npz but data.path is not set;"
                                        " set it to the .npz file in the config, or"
                                        " --set data.path=FILE$"):
        load_dataset({"name": "npz", "path": None, "validation": 0.1,
                      "preprocess": []}, seed=0)
    with pytest.raises(DataError, match="the digits data is bundled with nntrain"):
        load_dataset({"name": "digits", "path": str(ROOT), "validation": 0.1,
                      "preprocess": []}, seed=0)

    row = _row("data.path")
    assert "npz: the .npz file (required)" in row
    assert "digits: refused (the data is bundled)" in row


@pytest.mark.parametrize("kind", ["affine", "maxout"])
def test_the_reference_says_which_layers_need_units(kind):
    layers = [{kind: {}}, {"relu": {}}, {"affine": {}}]
    with pytest.raises(ConfigError, match=re.escape(
            f"model.layers[0].{kind}.units: {kind}1 needs units (its width)")):
        build_model(_config(model={"hidden": None, "layers": layers}), 4, 3)

    assert "required" in _row(f"model.layers[].{kind}.units")
    assert ("Every `maxout` layer, and every `affine` layer but the last, needs"
            " `units` (its width)") in _section("Explicit layers")
