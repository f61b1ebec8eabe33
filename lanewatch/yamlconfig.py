"""YAML files validated into pydantic models, with every problem reported as ``FILE:LINE: PATH: WHAT``.

Used by the site inventory and the device configuration: whoever edits them sees all of the problems
at once, each with the line to go to, the path inside the file, and what to do instead.
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from lanewatch.ids import ID_PATTERN, ID_RULE

PathPart = Union[str, int]
Loc = tuple[PathPart, ...]
Model = TypeVar("Model", bound=BaseModel)
Result = TypeVar("Result")


@dataclass(frozen=True)
class Problem:
    loc: Loc
    message: str
    line: Optional[int] = None

    @property
    def path(self) -> str:
        return format_loc(self.loc)

    def format(self, filename: str) -> str:
        where = f"{filename}:{self.line}" if self.line else filename
        return f"{where}: {self.path}: {self.message}" if self.loc else f"{where}: {self.message}"


class ConfigError(Exception):
    """The file cannot be used; ``problems`` says why, one entry per problem."""

    def __init__(self, filename: str, problems: Sequence[Problem]) -> None:
        self.filename = filename
        self.problems = list(problems)
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        return [p.format(self.filename) for p in self.problems]


def format_loc(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


@dataclass
class YamlDocument:
    """A parsed file: its data, the line of every path in it, and problems found while reading."""

    filename: str
    data: Any
    lines: dict[Loc, int]
    problems: list[Problem]

    def fail(self, more: Iterable[Problem] = ()) -> ConfigError:
        """The error to raise: every problem so far, placed on its line and sorted by it."""
        return ConfigError(self.filename, with_lines([*self.problems, *more], self.lines))


def read_yaml(path: Union[str, Path]) -> YamlDocument:
    filename = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(filename, [Problem((), f"cannot read the file: {reason}")]) from None
    return parse_yaml(text, filename)


def parse_yaml(text: str, filename: str = "<string>") -> YamlDocument:
    loader = yaml.SafeLoader(text)  # one parse: the nodes give line numbers, the data comes from them
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        reason = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(filename, [Problem((), f"YAML syntax error: {reason}", line)]) from None
    finally:
        loader.dispose()
    lines: dict[Loc, int] = {}
    problems = list(_index_nodes(root, (), lines)) if root is not None else []
    return YamlDocument(filename, data, lines, problems)


def or_exit(load: Callable[[], Result]) -> Result:
    """``load()``'s result; or, for a command line, every problem on stderr and exit status 1."""
    try:
        return load()
    except ConfigError as exc:
        for line in exc.lines():
            print(line, file=sys.stderr)
        raise SystemExit(1) from None


def load_model(path: Union[str, Path], model: type[Model]) -> Model:
    """Read a YAML file that is one model; ConfigError listing every problem."""
    document = read_yaml(path)
    if not isinstance(document.data, dict):
        got = "an empty file" if document.data is None else f"a {type(document.data).__name__}"
        raise document.fail([Problem((), f"expected a mapping of settings; got {got}")])
    try:
        result = model.model_validate(document.data)
    except ValidationError as exc:
        raise document.fail(pydantic_problems(exc, model, ())) from None
    if document.problems:
        raise document.fail()
    return result


def _index_nodes(node: yaml.Node, loc: Loc, lines: dict[Loc, int]) -> Iterator[Problem]:
    """Record the line of every path in the document, and report duplicate keys (YAML keeps the last)."""
    lines[loc] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key, key_loc, key_line = key_node.value, (*loc, key_node.value), key_node.start_mark.line + 1
            if key in seen:
                yield Problem(
                    key_loc,
                    f"duplicate key (first on line {seen[key]}); YAML would silently keep the last one",
                    key_line,
                )
            seen[key] = key_line
            yield from _index_nodes(value_node, key_loc, lines)
            lines[key_loc] = key_line
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            yield from _index_nodes(item, (*loc, index), lines)


def with_lines(problems: Iterable[Problem], lines: dict[Loc, int]) -> list[Problem]:
    """Each problem on the line of its path (or of the nearest enclosing path), sorted by line."""

    def line_of(loc: Loc) -> Optional[int]:
        for end in range(len(loc), -1, -1):
            if loc[:end] in lines:
                return lines[loc[:end]]
        return None

    placed = [p if p.line else Problem(p.loc, p.message, line_of(p.loc)) for p in problems]
    return sorted(placed, key=lambda p: p.line or 0)


def pydantic_problems(exc: ValidationError, model: type[BaseModel], prefix: Loc) -> Iterator[Problem]:
    for error in exc.errors(include_url=False):
        loc = tuple(error["loc"])
        yield Problem(prefix + loc, _explain(error, _model_at(model, loc[:-1])))


def _model_at(model: type[BaseModel], loc: Loc) -> Optional[type[BaseModel]]:
    """The model class that holds the field at ``loc`` (to list its fields for a typo)."""
    current: Any = model
    for part in loc:
        if isinstance(part, str):
            field = (
                current.model_fields.get(part) if isinstance(current, type) and issubclass(current, BaseModel) else None
            )
            if field is None:
                return None
            current = field.annotation
        while get_origin(current) in (list, Union, Optional):
            current = next(a for a in get_args(current) if a is not type(None))
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _explain(error: ErrorDetails, model: Optional[type[BaseModel]]) -> str:
    """Turn pydantic's wording into what a person editing YAML needs to read."""
    kind, value, ctx = error["type"], error.get("input"), error.get("ctx") or {}
    field = error["loc"][-1] if error["loc"] else ""
    if kind == "missing":
        return "missing required field"
    if kind == "extra_forbidden":
        return unknown_field(str(field), tuple(model.model_fields) if model else ())
    if kind == "string_pattern_mismatch" and ctx.get("pattern") == ID_PATTERN:
        return f"invalid id {value!r}: use {ID_RULE} (ids appear in MQTT topics)"
    if kind in _BOUNDS:
        return f"must be {_BOUNDS[kind]} {next(iter(ctx.values()))}, got {value!r}"
    if kind.endswith(("_type", "_parsing")) or kind == "literal_error":
        expected = error["msg"].replace("Input should be ", "")
        return f"wrong type or value: expected {expected}, got {describe(value)}"
    if kind == "value_error":
        return error["msg"].replace("Value error, ", "")
    return str(error["msg"])


_BOUNDS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}


def describe(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return f"a {'mapping' if isinstance(value, dict) else 'list'}"
    if value is None:
        return "nothing"
    return repr(value)


def unknown_field(name: str, allowed: Sequence[str]) -> str:
    hint = difflib.get_close_matches(name, allowed, n=1)
    suggestion = f" (did you mean '{hint[0]}'?)" if hint else f" (allowed: {', '.join(allowed)})"
    return f"unknown field '{name}'{suggestion}"
