"""The docs list every config key with its current type and default."""

import re
from pathlib import Path

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
)
from nntrain.errors import ConfigError

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
