"""YAML reading for configs and ``--set`` values: safe, strict, and numeric-friendly.

PyYAML follows YAML 1.1, where ``1e-3`` (no dot) is a string, not a float; people write
learning rates that way, so this loader also reads ``1e-3`` and ``5E-4`` as floats.
YAML 1.1 also reads ``017`` as octal 15 and ``1:30`` as base-60 90; this loader leaves
them text, so that a number key refuses them instead of taking a value nobody meant. It
refuses duplicated keys instead of keeping the last one silently, and it never builds
Python objects (``!!python/...`` tags are errors), because it extends ``SafeLoader``.

A config comes from anyone, so reading one is bounded: the text's length, the nesting
depth (the composer recurses once per level) and the number of values, where an alias
counts as every value it stands for (a "billion laughs" file of nested aliases is
tiny as text but huge once something walks it). Each limit is checked while the
document is composed, before the work it would cost.
"""

import re

import yaml

from nntrain.errors import ConfigError

# A YAML 1.2 float: also accepts an exponent without a dot ("1e-3", "5E-4").
_FLOAT_PATTERN = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)


# A YAML 1.2 integer, with YAML 1.1's 0b and 0x forms: no octal "017" (1.1 reads 15)
# and no base 60 "1:30" (1.1 reads 90). Such text stays text, which a number key
# refuses (config_checks.refuse says why).
_INT_PATTERN = re.compile(
    r"""^(?:[-+]?0b[0-1_]+
    |[-+]?(?:0|[1-9][0-9_]*)
    |[-+]?0x[0-9a-fA-F_]+)$""",
    re.X,
)


# Real configs are < 10 kB, a few hundred values, nested 4 levels deep.
MAX_CHARS = 1_000_000
MAX_DEPTH = 100
MAX_VALUES = 10_000


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that reads ``1e-3`` as a float, rejects duplicated keys, and bounds
    the depth and the number of values (aliases expanded) of what it composes."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0
        self._values = 0
        self._expanded_sizes = {}  # anchor -> values it stands for, once composed

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            self._count_alias(event)
            return super().compose_node(parent, index)

        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise ConfigError(f"values nested deeper than {MAX_DEPTH} levels on"
                              f" line {_line(event)}; a config needs only a few")
        first = self._values
        self._count(1, event)
        node = super().compose_node(parent, index)
        self._depth -= 1
        if event.anchor is not None:
            self._expanded_sizes[event.anchor] = self._values - first
        return node

    def _count_alias(self, event) -> None:
        if event.anchor not in self.anchors:
            return  # the composer reports the undefined alias
        size = self._expanded_sizes.get(event.anchor)
        if size is None:
            raise ConfigError(f"alias *{event.anchor} on line {_line(event)} refers to"
                              " a value that contains it; recursive values are not"
                              " allowed")
        self._count(size, event)

    def _count(self, values: int, event) -> None:
        self._values += values
        if self._values > MAX_VALUES:
            raise ConfigError(
                f"more than {MAX_VALUES} values (aliases counted as what they repeat)"
                f" by line {_line(event)}; a config needs only a few hundred"
            )

    def construct_undefined(self, node):
        tag = node.tag.replace("tag:yaml.org,2002:", "!!")
        raise ConfigError(f"the tag {tag} on line {node.start_mark.line + 1} is not"
                          " allowed: a config holds plain numbers, text, lists and"
                          " mappings, never Python objects; remove the tag")

    def construct_object(self, node, deep=False):
        # PyYAML's constructors fail with Python's errors on "2001-13-45", "0x_", an
        # integer of 5000 digits, or an explicit tag on text it does not fit
        # ("!!bool x" raises KeyError, "!!timestamp x" AttributeError).
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, OverflowError, LookupError, AttributeError,
                TypeError) as error:
            if isinstance(error, (ValueError, OverflowError)):
                reason = str(error).split(";")[0]  # drop Python's advice on ints
            else:
                reason = "not a valid " + node.tag.replace("tag:yaml.org,2002:", "!!")
            line = node.start_mark.line + 1
            raise ConfigError(f"cannot read the value on line {line} ({reason});"
                              " write it as a plain number or text") from None

    def construct_mapping(self, node, deep=False):
        if not isinstance(node, yaml.MappingNode):  # "!!set a": SafeLoader refuses it
            return super().construct_mapping(node, deep=deep)
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # "<<: *base": the base's keys are defaults, not duplicates
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            try:
                hash(key)
            except TypeError:
                raise ConfigError(f"the key on line {line} is a list or mapping; keys"
                                  " must be plain names") from None
            if key in seen:
                raise ConfigError(f"duplicated key '{key_text(key)}' on line {line}:"
                                  " keep only one of them")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _line(event) -> int:
    return event.start_mark.line + 1


# Replace the YAML 1.1 float and int resolvers with the patterns above.
StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers
            if tag not in ("tag:yaml.org,2002:float", "tag:yaml.org,2002:int")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
StrictLoader.add_constructor(None, StrictLoader.construct_undefined)
StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", _FLOAT_PATTERN, list("-+0123456789.")
)
StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:int", _INT_PATTERN, list("-+0123456789")
)


def parse_yaml(text: str, source: str):
    """Parse YAML ``text``; ``source`` names it in errors (a file path or ``--set``)."""
    if len(text) > MAX_CHARS:
        raise ConfigError(f"{source}: {len(text)} characters is too long for a config"
                          f" (limit {MAX_CHARS}); check that this is the right file")
    try:
        return yaml.load(text, Loader=StrictLoader)
    except ConfigError as error:
        raise ConfigError(f"{source}: {error}") from None
    except RecursionError:  # MAX_DEPTH stops nesting long before; this is a backstop
        raise ConfigError(f"{source}: values nested too deeply") from None
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        problem = error.problem or "invalid YAML"
        fix = _tab_fix(text, mark) if "\\t" in problem else "fix the YAML syntax there"
        if "another document" in problem:
            # PyYAML's problem ("but found another document") reads on from its
            # context; a config is one document.
            problem = "a config is one YAML document, but another one starts"
            fix = "remove that '---' line (or the document after it)"
        raise ConfigError(f"{source}: {problem} at {where}; {fix}") from None
    except yaml.reader.ReaderError as error:
        # It has no mark, only an offset into the text: shown as a line and column.
        line = text.count("\n", 0, error.position) + 1
        column = error.position - (text.rfind("\n", 0, error.position) + 1) + 1
        where = f"line {line}, column {column}"
        code = error.character
        if isinstance(code, int) and 0xDC80 <= code <= 0xDCFF:
            # Python's stand-in for a byte of a command-line argument that is not
            # UTF-8 ("surrogateescape"): name the byte the user typed.
            raise ConfigError(f"{source}: holds the byte 0x{code - 0xDC00:02X},"
                              f" which is not UTF-8 text ({where}); write the value"
                              " as text") from None
        character = f"U+{code:04X}" if isinstance(code, int) else repr(code)
        raise ConfigError(f"{source}: YAML does not allow the non-printable character"
                          f" {character} ({where}); remove it") from None
    except yaml.YAMLError as error:
        # Other errors may span lines ("... in <unicode string>"): one line here.
        raise ConfigError(f"{source}: invalid YAML ({' '.join(str(error).split())})"
                          ) from None


def _tab_fix(text: str, mark) -> str:
    """The fix for a tab that PyYAML refuses at ``mark``: one that only blanks
    precede on its line is indentation; any other stands inside the line (after
    a colon, between values), where YAML wants spaces as well."""
    start = text[mark.index - mark.column:mark.index] if mark else ""
    if not start.strip(" \t"):
        return "indent with spaces (YAML refuses tabs)"
    return "a tab is not allowed there (after a colon or inside a line): use spaces"


class _StrictResolver(yaml.resolver.Resolver):
    """What StrictLoader reads plain text as (its float and int patterns)."""

    yaml_implicit_resolvers = StrictLoader.yaml_implicit_resolvers


_STRICT_RESOLVER = _StrictResolver()


class _QuotingDumper(yaml.SafeDumper):
    """SafeDumper quoting the text that StrictLoader would read as another type.

    A dumper quotes text that its resolver reads as something else; SafeDumper's
    is YAML 1.1's, for which "1e3" is text, so it wrote 1e3 plain and StrictLoader
    read back 1000.0. This one quotes text that either resolver reads as another
    type: StrictLoader's, so that what it writes reads back the same; YAML 1.1's,
    so that what earlier versions quoted ('017') is still quoted."""

    def resolve(self, kind, value, implicit):
        tag = _STRICT_RESOLVER.resolve(kind, value, implicit)
        if tag != self.DEFAULT_SCALAR_TAG:
            return tag
        return super().resolve(kind, value, implicit)


class _ConfigDumper(_QuotingDumper):
    """Sections as blocks, lists of scalars on one line: how people write configs."""


def _represent_list(dumper, items):
    flat = all(not isinstance(item, (dict, list)) for item in items)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", items, flow_style=flat)


_ConfigDumper.add_representer(list, _represent_list)


def key_text(key) -> str:
    """A mapping's key as YAML spells it: null, true and false for the keys that
    Python calls None, True and False; any other as str() gives it."""
    if key is None:
        return "null"
    if isinstance(key, bool):
        return "true" if key else "false"
    return str(key)


def one_line_yaml(data) -> str:
    """``data`` as YAML on one line, e.g. ``{uniform: [0.1, 0.2]}``."""
    return yaml.dump(data, Dumper=_QuotingDumper, default_flow_style=True,
                     width=float("inf")).strip()


def dump_yaml(data) -> str:
    """Write ``data`` (plain dicts, lists, scalars) as YAML, keys in their order."""
    return yaml.dump(
        data, Dumper=_ConfigDumper, sort_keys=False, default_flow_style=False, width=88
    )
