"""The vocabulary of config checks: Key, and the validators its tables are built of.

Their messages name the key, what it expected and, where they can, the fix (a close
spelling, a count written as an integer, a lone number written as a list). Apart from
config.py, which holds the tables themselves (SCHEMA, the settings of each rule,
schedule, preprocessing step and layer) and the loading, because these checks know
no particular key: the search space checks its values with them too.
"""

import difflib
import math
import re
from dataclasses import dataclass
from typing import Any, Callable

import yaml

from nntrain.errors import BadInputError, ConfigError
from nntrain.fileio import expand_home
from nntrain.yamlio import parse_yaml

# The most items a list key takes, and so the most layers a network may have
# (config.layer_list): a bound that keeps a typo (a pasted array) from hanging
# a run.
MAX_LAYERS = 1000


@dataclass(frozen=True)
class Key:
    """One config key: its default, a validator, and the text the docs show."""

    default: Any
    check: Callable[[Any, str], Any]
    kind: str
    doc: str


# Validators take (value, dotted key) and return the normalized value or raise.


# What YAML 1.1 reads as octal (017) or base 60 (1:30); yamlio reads it as text.
_YAML11_INTEGER = re.compile(r"[-+]?(?:0[0-9_]+|[0-9][0-9_]*(?::[0-5]?[0-9])+)")


def refuse(key: str, expected: str, value) -> None:
    """Raise the ConfigError for ``key``'s bad ``value``, naming what was expected."""
    if isinstance(value, str) and _YAML11_INTEGER.fullmatch(value.strip()):
        expected += ("; write a plain decimal number: nntrain reads a leading 0"
                     " (octal in YAML 1.1) or a colon (base 60) as text")
    raise ConfigError(f"invalid {key}: {as_written(value)} (expected {expected})",
                      key)


def as_written(value) -> str:
    """A config value as YAML writes it (true, null, [1, 2], {center: true}), for
    messages; a string quoted, a number as Python prints it, and Python's own
    form for what YAML would spread over lines or cannot write (a Path)."""
    if value is None or isinstance(value, (bool, list, dict)):
        try:
            text = yaml.safe_dump(value, default_flow_style=True, width=10**6,
                                  allow_unicode=True, sort_keys=False)
        except yaml.YAMLError:
            return repr(value)
        text = text.removesuffix("\n").removesuffix("\n...").strip()
        if "\n" not in text:
            return text
    return repr(value)


def refuse_non_mapping(key: str, value) -> None:
    """Fail for a value that should be a mapping; a string holding a colon is
    most likely ``KEY:VALUE`` written without the space YAML needs."""
    if isinstance(value, str) and ":" in value:
        refuse(key, "a mapping of keys; write a space after the colon, 'KEY: VALUE'",
               value)
    refuse(key, "a mapping of keys", value)


def integer(minimum: int | None = None, nullable: bool = False,
            maximum: int | None = None, null_in_message: bool = True):
    """A check for an integer key; ``nullable``: null is accepted too, and said so
    in the message unless ``null_in_message`` is False (where null is valid in
    only some places, as a layer's units)."""
    def check(value, key):
        if value is None and nullable:
            return None
        wanted = "an integer" + (f" >= {minimum}" if minimum is not None else "")
        wanted += f" and <= {maximum:,}" if maximum is not None else ""
        wanted += " or null" if nullable and null_in_message else ""
        if isinstance(value, float) and value.is_integer():
            # 1e3 and 1000.0 are floats in YAML: say how to write the count. Past
            # 2**53 a float is no longer the integer it was written as (1e30).
            inside = ((minimum is None or value >= minimum)
                      and (maximum is None or value <= maximum)
                      and abs(value) < 2**53)
            hint = f"; write it as an integer: {int(value)}" if inside else ""
            refuse(key, wanted + hint, value)
        if isinstance(value, bool) or not isinstance(value, int):
            refuse(key, wanted, value)
        if minimum is not None and value < minimum:
            refuse(key, wanted, value)
        if maximum is not None and value > maximum:
            refuse(key, wanted, value)
        return value

    return check


def number(minimum=None, maximum=None, open_minimum=False, open_maximum=False):
    def check(value, key):
        low = "(" if open_minimum else "["
        high = ")" if open_maximum or maximum is None else "]"
        wanted = f"a number in {low}{minimum}, {maximum}{high}".replace("None", "inf")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            refuse(key, wanted, value)
        try:
            value = float(value)
        except OverflowError:  # an integer past float64's range, such as 10**400
            refuse(key, wanted, value)
        too_low = minimum is not None and (
            value < minimum or (open_minimum and value == minimum)
        )
        too_high = maximum is not None and (
            value > maximum or (open_maximum and value == maximum)
        )
        if not math.isfinite(value) or too_low or too_high:
            refuse(key, wanted, value)
        return value

    return check


# Names that other libraries and texts give to what nntrain calls otherwise: a
# hint offers nntrain's name where it is one of the options.
OTHER_NAMES = {
    "kaiming": "he", "kaiming_normal": "he", "he_normal": "he", "msra": "he",
    "glorot_normal": "glorot", "xavier_normal": "glorot",  # 2 / (fan_in + fan_out)
    "hinge": "svm", "multiclass_hinge": "svm", "multi_margin": "svm",
    "cross_entropy": "softmax", "crossentropy": "softmax", "ce": "softmax",
    "nll": "softmax", "log_loss": "softmax", "softmax_cross_entropy": "softmax",
    "dropout": "drop_probability", "dropout_rate": "drop_probability",
    "drop_rate": "drop_probability", "weight_decay": "l2",
}


def close_match(given: str, options) -> str | None:
    """The option that ``given`` most likely means, spelt as the option is, or
    None: nntrain's name for another library's (OTHER_NAMES), else the closest
    spelling. Case is ignored in the comparison ('Relu' means relu, not elu),
    never in the check: the hint only says how to write it."""
    other = OTHER_NAMES.get(given.lower())
    if other in options:
        return other
    lowered = {}
    for option in options:
        lowered.setdefault(option.lower(), option)
    close = difflib.get_close_matches(given.lower(), list(lowered), n=1)
    return lowered[close[0]] if close else None


def choice(*options: str):
    def check(value, key):
        if value in options:
            return value
        message = (f"invalid {key}: {as_written(value)} (choose one of:"
                   f" {', '.join(options)}")
        close = close_match(str(value), options)
        if close:
            message += f"; did you mean '{close}'?"
        raise ConfigError(message + ")", key)

    return check


def optional_text(value, key):
    # An empty string is no path: null says "the default" unambiguously.
    if value is None or (isinstance(value, str) and value.strip()):
        return value
    refuse(key, "a non-empty string, or null for the default", value)


def path_text(value, key):
    """A path, or null for the default. A leading ``~`` is expanded as a shell
    would (YAML and ``--set`` values reach no shell); a NUL is refused, as no
    file name can hold one."""
    value = optional_text(value, key)
    if value is None:
        return None
    if "\x00" in value:
        raise ConfigError(f"invalid {key}: {value!r} holds a NUL character (\\x00),"
                          " which no path can; remove it", key)
    try:
        return expand_home(value)
    except BadInputError as error:
        raise ConfigError(f"invalid {key}: {error}", key) from None


# Numbers separated by commas, which YAML reads as text ("128, 64").
_NUMBERS = re.compile(r"[\d\s,.eE+-]+")


def _as_list(value, item_check, key: str) -> str:
    """How to write a lone number, or text of numbers, as the list a key wants:
    128 as [128], and 16.0 as [16] where only integers would do; nothing for
    other values, nor where that list would be refused in turn (2.5 for a list of
    integers, "1-2")."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return ""
    text = str(value).strip()
    if isinstance(value, str) and not (_NUMBERS.fullmatch(text)
                                       and any(char.isdigit() for char in text)):
        return ""
    try:
        items = parse_yaml(f"[{text}]", key)
    except ConfigError:
        return ""
    whole = [int(item) if isinstance(item, float) and item.is_integer() else item
             for item in items]
    for candidate, shown in ((items, text),
                             (whole, ", ".join(str(item) for item in whole))):
        try:
            for i, item in enumerate(candidate):
                item_check(item, f"{key}[{i}]")
        except ConfigError:
            continue
        return f"; write [{shown}]"
    return ""


def list_of(item_check, allow_empty=True, nullable=False, max_items=MAX_LAYERS):
    def check(value, key):
        if value is None and nullable:
            return None
        if not isinstance(value, list) or (not value and not allow_empty):
            wanted = "a list" + ("" if allow_empty else " with at least one item")
            refuse(key, wanted + _as_list(value, item_check, key), value)
        if len(value) > max_items:
            raise ConfigError(f"invalid {key}: {len(value):,} items, more than the"
                              f" {max_items:,} nntrain accepts", key)
        return [item_check(item, f"{key}[{i}]") for i, item in enumerate(value)]

    return check


def validation_size(value, key):
    """An int >= 1 is a count of samples; a float in (0, 1) a fraction of them."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    if isinstance(value, float) and 0.0 < value < 1.0:
        return value
    refuse(key, "an integer >= 1 (a count) or a number in (0, 1) (a fraction)", value)


def components(value, key):
    """An int >= 1 is a count of components; a float in (0, 1] the fraction of the
    variance to keep."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    if isinstance(value, float) and 0.0 < value <= 1.0:
        return value
    refuse(key, "an integer >= 1 (a count) or a number in (0, 1] (a variance"
           " fraction)", value)


def optional_number(minimum=None, open_minimum=False):
    check_number = number(minimum, None, open_minimum)

    def check(value, key):
        return None if value is None else check_number(value, key)

    return check


def optional_choice(*options: str):
    def check(value, key):
        return None if value is None else choice(*options)(value, key)

    return check


def boolean(value, key):
    if isinstance(value, bool):
        return value
    refuse(key, "true or false", value)
