"""Validate data files (policies, journeys) so that an error names the entry and the field.

msgspec reports a bad value as ``$.levers.offers[...]`` or ``$.journeys[2].steps[0]``;
marketers editing YAML need ``entry 'levers.offers', field 'of-x'`` or
``entry 'journeys.cart_abandonment.steps.reminder', field 'after_hours'``. The walk
follows the schema; list items are named by their ``id`` when they have one.

>>> import msgspec
>>> class Cap(msgspec.Struct):
...     day: int = 1
>>> try:
...     check_document({"day": "two"}, Cap, "caps.yaml", DataFileError)
... except DataFileError as error:
...     print(error)
caps.yaml: entry '(top)', field 'day': Expected `int`, got `str`; got 'two'
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, NoReturn, get_args, get_origin

import msgspec
import yaml

# Patterns mean nothing to a marketer: say what the pattern stands for.
_PATTERN_HINTS = {"regex '^([01]": "expected a local time 'HH:MM'"}


class DataFileError(ValueError):
    """A data file breaks its schema; the message names the file, the entry and the field."""


def fail(
    source: str, path: Sequence[str], problem: str, error: type[DataFileError] = DataFileError
) -> NoReturn:
    """Raise ``error`` naming ``source``, the entry (all but the last path part) and the field."""
    entry = ".".join(path[:-1]) or "(top)"
    name = path[-1] if path else "(document)"
    message = f"{source}: entry '{entry}', field '{name}': {problem}"
    raise error(message)


def read_document(path: Path, what: str, error: type[DataFileError]) -> Any:
    """Read and parse a YAML (or, by suffix, JSON) data file; raise ``error`` if it cannot be.

    ``what`` names the file in the message, e.g. ``"policies"``.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as problem:
        message = f"{path}: cannot read the {what} file: {problem.strerror or problem}"
        raise error(message) from None
    try:
        return yaml.safe_load(text) if path.suffix != ".json" else msgspec.json.decode(text)
    except (yaml.YAMLError, msgspec.DecodeError) as problem:
        message = f"{path}: cannot be parsed: {problem}"
        raise error(message) from None


def check_document(
    value: Any, kind: Any, source: str, error: type[DataFileError], path: Sequence[str] = ()
) -> None:
    """Walk ``value`` along the schema ``kind``; raise ``error`` at the first bad entry."""
    path = list(path)
    base = get_args(kind)[0] if get_origin(kind) is Annotated else kind
    if _is_struct(base):
        kind = base
        if not isinstance(value, dict):
            fail(source, path, f"expected a mapping; got {type(value).__name__} {value!r}", error)
        fields = {f.encode_name: f.type for f in msgspec.structs.fields(kind)}
        for key in value:
            if key not in fields:
                problem = f"unknown field; expected one of {sorted(fields)}"
                fail(source, [*path, str(key)], problem, error)
        for key, field_type in fields.items():
            if key in value:
                check_document(value[key], field_type, source, error, [*path, key])
        return
    origin = get_origin(base)
    if origin is dict:
        key_type, value_type = get_args(base)
        if not isinstance(value, dict):
            fail(source, path, f"expected a mapping; got {type(value).__name__} {value!r}", error)
        for key, item in value.items():
            try:
                msgspec.convert(key, key_type, strict=True)
            except msgspec.ValidationError as bad:
                fail(source, [*path, str(key)], f"not a valid key: {bad}", error)
            check_document(item, value_type, source, error, [*path, str(key)])
        return
    if origin is list and _is_struct(get_args(base)[0]):
        if not isinstance(value, list):
            fail(source, path, f"expected a list; got {type(value).__name__} {value!r}", error)
        for index, item in enumerate(value):
            name = item.get("id") if isinstance(item, dict) else None
            check_document(item, get_args(base)[0], source, error, [*path, str(name or index)])
        # Length limits and the like are checked on the whole list below.
    try:
        msgspec.convert(value, kind, strict=True)
    except msgspec.ValidationError as bad:
        problem = str(bad).split(" - at ")[0]
        for pattern, hint in _PATTERN_HINTS.items():
            if pattern in problem:
                problem = hint
        fail(source, path, f"{problem}; got {value!r}", error)


def _is_struct(kind: Any) -> bool:
    return isinstance(kind, type) and issubclass(kind, msgspec.Struct)
