"""YAML that a hostile or careless file cannot turn into a hang, a memory blow-up or a silent surprise.

`yaml.safe_load` already refuses to run code, but it accepts a small file whose nested aliases
expand into billions of nodes ("billion laughs"), nesting deep enough to end in a RecursionError,
and duplicate keys, of which the last silently wins. `load` refuses all three before anything is
built, with one line naming the file and where; `check_structure` bounds a tree that was already
parsed (Snakemake parses `--configfile` itself).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from .errors import ConfigError

#: nodes a config may expand to, aliases counted as often as they are used: the seed campaign has ~300
MAX_NODES = 20_000
#: nesting depth of mappings and sequences: a config is 6 deep
MAX_DEPTH = 32
#: the longest message this module raises, so an error never echoes a huge input back
MAX_MESSAGE = 400


def _clip(text: str, limit: int = MAX_MESSAGE) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _Loader(yaml.SafeLoader):
    """SafeLoader that bounds depth and expanded size, and refuses duplicate keys."""

    def __init__(self, stream) -> None:
        super().__init__(stream)
        self._depth = 0
        self._expanded = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            anchor = event.anchor
            node = super().compose_node(parent, index)
            self._expanded += _size(node)
            if self._expanded > MAX_NODES:
                raise ConfigError(
                    f"line {event.start_mark.line + 1}: the alias *{_clip(anchor, 40)} expands the config past "
                    f"{MAX_NODES:,} values (nested aliases, a 'billion laughs' file?); write the values out"
                )
            return node
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise ConfigError(
                    f"line {mark.line + 1}: nested more than {MAX_DEPTH} levels deep; a campaign config is about 6 deep"
                )
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        self._expanded += 1
        if self._expanded > MAX_NODES:
            raise ConfigError(
                f"line {node.start_mark.line + 1}: more than {MAX_NODES:,} values; a campaign config has a few hundred"
            )
        return node

    def construct_object(self, node, deep=False):
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, TypeError, AttributeError, OverflowError, IndexError) as exc:
            # a scalar its tag cannot make: `!!int 0x`, `!!timestamp 2026-13-45`, an int of more than 4300 digits
            what = _clip(repr(node.value), 60) if isinstance(node, yaml.ScalarNode) else "this value"
            raise ConfigError(
                f"line {node.start_mark.line + 1}: {what} cannot be read as {_clip(node.tag, 40)} ({_clip(exc, 80)})"
            ) from None

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node.start_mark.line + 1)
            except TypeError:  # an unhashable key: SafeLoader refuses it below with its own message
                continue
            if first != key_node.start_mark.line + 1:
                raise ConfigError(
                    f"line {key_node.start_mark.line + 1}: key {_clip(repr(key), 80)} is given twice "
                    f"(first on line {first}); the second would silently win: keep one"
                )
        return super().construct_mapping(node, deep=deep)


def _size(node: yaml.Node, budget: int = MAX_NODES + 1) -> int:
    """Nodes under `node` counted with multiplicity, stopping once past `budget` (a shared subtree counts each time)."""
    count, stack = 0, [node]
    while stack and count <= budget:
        n = stack.pop()
        count += 1
        if isinstance(n, yaml.SequenceNode):
            stack.extend(n.value)
        elif isinstance(n, yaml.MappingNode):
            stack.extend(v for pair in n.value for v in pair)
    return count


def load(text: str, where: str) -> Any:
    """Parse YAML text safely and bound the result (`check_structure`); ConfigError naming `where` (the file)
    and the line otherwise."""
    try:
        data = yaml.load(text, Loader=_Loader)  # a SafeLoader subclass: no code runs
    except ConfigError as exc:
        raise ConfigError(_clip(f"{where}: {exc}")) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(_clip(f"{where} is not valid YAML: {line}{problem}")) from None
    except RecursionError:
        raise ConfigError(f"{where}: nested too deeply to read; a campaign config is about 6 deep") from None
    check_structure(data, where)  # an alias inside its own anchor (`a: &a [*a]`) makes a list that contains itself
    return data


def check_structure(obj: Any, where: str = "config") -> None:
    """Bound a parsed tree: at most MAX_NODES values (shared subtrees counted each time) and MAX_DEPTH levels."""
    count, stack = 0, [(obj, 0)]
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > MAX_NODES:
            raise ConfigError(
                f"{where}: more than {MAX_NODES:,} values (nested aliases?); a campaign config has a few hundred"
            )
        if depth > MAX_DEPTH:
            raise ConfigError(
                f"{where}: nested more than {MAX_DEPTH} levels deep (or a value contains itself); a campaign config is "
                "about 6 deep"
            )
        if isinstance(node, Mapping):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, (list, tuple)):
            stack.extend((v, depth + 1) for v in node)
