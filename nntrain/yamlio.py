"""YAML reading for configs and ``--set`` values: safe, strict, and numeric-friendly.

PyYAML follows YAML 1.1, where ``1e-3`` (no dot) is a string, not a float; people write
learning rates that way, so this loader also reads ``1e-3`` and ``5E-4`` as floats. It
refuses duplicated keys instead of keeping the last one silently, and it never builds
Python objects (``!!python/...`` tags are errors), because it extends ``SafeLoader``.
"""

import re

import yaml

from nntrain.errors import ConfigError

# A YAML 1.2 float: also accepts an exponent without a dot ("1e-3", "5E-4").
_FLOAT_PATTERN = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that reads ``1e-3`` as a float and rejects duplicated keys."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                line = key_node.start_mark.line + 1
                raise ConfigError(
                    f"duplicated key '{key}' on line {line}: keep only one of them"
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


# Replace the YAML 1.1 float resolver with the wider pattern above.
StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers
            if tag != "tag:yaml.org,2002:float"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", _FLOAT_PATTERN, list("-+0123456789.")
)


def parse_yaml(text: str, source: str):
    """Parse YAML ``text``; ``source`` names it in errors (a file path or ``--set``)."""
    try:
        return yaml.load(text, Loader=StrictLoader)
    except ConfigError as error:
        raise ConfigError(f"{source}: {error}") from None
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        problem = error.problem or "invalid YAML"
        raise ConfigError(
            f"{source}: {problem} at {where}; fix the YAML syntax there"
        ) from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{source}: invalid YAML ({error})") from None


class _ConfigDumper(yaml.SafeDumper):
    """Sections as blocks, lists of scalars on one line: how people write configs."""


def _represent_list(dumper, items):
    flat = all(not isinstance(item, (dict, list)) for item in items)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", items, flow_style=flat)


_ConfigDumper.add_representer(list, _represent_list)


def dump_yaml(data) -> str:
    """Write ``data`` (plain dicts, lists, scalars) as YAML, keys in their order."""
    return yaml.dump(
        data, Dumper=_ConfigDumper, sort_keys=False, default_flow_style=False, width=88
    )
