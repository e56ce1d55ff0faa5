"""Strict YAML for every file a user hands moesim (scenarios, profiles, ``--set`` values).

PyYAML's safe loader follows YAML 1.1, which silently alters values: ``1e3`` stays a string, ``on``
and ``yes`` become booleans, ``010`` becomes 8, ``1:30`` becomes 90, a duplicate key keeps only its
last value, and ``*alias`` copies a subtree wherever it is referenced (into provenance, too). This
loader reads the YAML 1.2 core schema instead and refuses what it cannot read faithfully: duplicate
keys, anchors/aliases, merge keys (``<<``), non-UTF-8 bytes and nesting deeper than Python's stack.
Every refusal is one ``MoesimInputError`` line naming the file (or ``--set`` key) and the line.
"""

from __future__ import annotations

import copy
import math
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any

import yaml

from moesim.errors import fail

_INT = re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$")
_FLOAT = re.compile(
    r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
)
_BOOL = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_NULL = re.compile(r"^(?:~|null|Null|NULL|)$")


class StrictYamlError(yaml.YAMLError):
    """A construct the strict loader refuses; ``line`` is 1-based."""

    def __init__(self, problem: str, mark: Any = None):
        super().__init__(problem)
        self.problem = problem
        self.problem_mark = mark


class StrictLoader(yaml.SafeLoader):
    """YAML 1.2 core-schema scalars; no duplicate keys, aliases, anchors or merge keys."""

    yaml_implicit_resolvers: dict = {}

    def compose_node(self, parent: Any, index: Any) -> Any:  # type: ignore[override]
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            raise StrictYamlError(
                f"alias *{event.anchor} is not allowed; write the value out", event.start_mark
            )
        if getattr(event, "anchor", None) is not None:
            raise StrictYamlError(
                f"anchor &{event.anchor} is not allowed; write the value out", event.start_mark
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> dict:  # type: ignore[override]
        if not isinstance(node, yaml.MappingNode):
            raise StrictYamlError(f"expected a mapping, found {node.id}", node.start_mark)
        out: dict = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise StrictYamlError(
                    "merge keys (<<) are not allowed; write the keys out", key_node.start_mark
                )
            key = self.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                raise StrictYamlError("a mapping key must be a scalar", key_node.start_mark) from None
            if key in out:
                raise StrictYamlError(f"duplicate key {key!r}", key_node.start_mark)
            out[key] = self.construct_object(value_node, deep=deep)
        return out

    def construct_yaml_int(self, node: Any) -> int:  # type: ignore[override]
        text = self.construct_scalar(node)
        if text.startswith("0o"):
            return int(text[2:], 8)
        if text.startswith("0x"):
            return int(text[2:], 16)
        return int(text, 10)  # "010" is ten, not YAML 1.1's octal eight

    def construct_yaml_float(self, node: Any) -> float:  # type: ignore[override]
        text = str(self.construct_scalar(node)).lower()
        if text.endswith(".inf"):
            return -math.inf if text.startswith("-") else math.inf
        if text == ".nan":
            return math.nan
        return float(text)

    def construct_yaml_bool(self, node: Any) -> bool:  # type: ignore[override]
        return str(self.construct_scalar(node)).lower() == "true"


StrictLoader.add_constructor("tag:yaml.org,2002:int", StrictLoader.construct_yaml_int)
StrictLoader.add_constructor("tag:yaml.org,2002:float", StrictLoader.construct_yaml_float)
StrictLoader.add_constructor("tag:yaml.org,2002:bool", StrictLoader.construct_yaml_bool)
StrictLoader.add_constructor("tag:yaml.org,2002:map", yaml.SafeLoader.construct_yaml_map)  # type: ignore[type-var]
for _tag, _regexp, _first in (
    ("tag:yaml.org,2002:bool", _BOOL, list("tTfF")),
    ("tag:yaml.org,2002:int", _INT, list("-+0123456789")),
    ("tag:yaml.org,2002:float", _FLOAT, list("-+.0123456789")),
    ("tag:yaml.org,2002:null", _NULL, ["~", "n", "N", ""]),
    ("tag:yaml.org,2002:merge", re.compile(r"^<<$"), ["<"]),
):
    StrictLoader.add_implicit_resolver(_tag, _regexp, _first)


def _where(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    return f" line {mark.line + 1}" if mark is not None else ""


def loads(text: str, origin: str) -> Any:
    """Parse ``text``; every problem is one line starting with ``origin``."""
    try:
        return yaml.load(text, Loader=StrictLoader)  # noqa: S506 - StrictLoader derives from SafeLoader
    except RecursionError:
        fail(f"{origin}: nested too deeply to read; flatten the file")
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        fail(f"{origin}:{_where(exc)} is not valid YAML ({problem})")
    except ValueError as exc:  # e.g. an integer with more digits than Python converts
        fail(f"{origin}: bad YAML value ({str(exc)[:100]})")
    raise AssertionError  # unreachable


def load_file(path: str | Path, what: str = "YAML file") -> Any:
    """Read a UTF-8 YAML file strictly; a missing, unreadable or binary file is one line."""
    src = Path(path)
    try:
        data = src.read_bytes()
    except FileNotFoundError:
        fail(f"{src}: {what} not found")
    except IsADirectoryError:
        fail(f"{src}: is a directory; give a {what}")
    except OSError as exc:
        fail(f"{src}: cannot read {what} ({exc.strerror or exc})")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        fail(f"{src}: not a UTF-8 text file (byte {exc.start}); give a {what}")
    if "\x00" in text:
        fail(f"{src}: binary content (NUL byte); give a {what}")
    return copy.deepcopy(_parsed(text, str(src)))


_PARSED: OrderedDict[str, Any] = OrderedDict()  # recent files' documents, by their text
_PARSED_MAX = 16


def _parsed(text: str, origin: str) -> Any:
    """``loads(text, origin)``, remembered by the text: a sweep reads the same scenario once per
    point (PyYAML takes ~7 ms for one). Callers get a copy, as they may change it."""
    if text in _PARSED:
        _PARSED.move_to_end(text)
        return _PARSED[text]
    doc = loads(text, origin)
    _PARSED[text] = doc
    if len(_PARSED) > _PARSED_MAX:
        _PARSED.popitem(last=False)
    return doc


def scalar(text: str, origin: str) -> Any:
    """One ``--set``/``--grid`` value, read by the same rules as a file. Text that is not YAML at all
    (``[1,``, ``@x``) is the string as typed; refused constructs (duplicate keys, aliases) fail."""
    if not text.strip():
        return None
    try:
        return yaml.load(text, Loader=StrictLoader)  # noqa: S506 - StrictLoader derives from SafeLoader
    except RecursionError:
        fail(f"{origin}: nested too deeply to read")
    except StrictYamlError as exc:
        fail(f"{origin}: {exc.problem}")
    except yaml.YAMLError:
        return text
    raise AssertionError  # unreachable
