"""Config errors as one readable line: where the bad value is, what it was, what is allowed."""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import BaseModel, ValidationError

from ddmd_stream.config.run import RunConfig
from ddmd_stream.errors import InputError


class ConfigError(InputError):
    """A config file (or a value in it) is wrong; the message says where and how to fix it."""


def _section_model(loc: tuple) -> type[BaseModel]:
    """The model of the section that holds the key at `loc`."""
    model: type[BaseModel] = RunConfig
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            break
        model = annotation
    return model


def _describe_unknown_key(loc: tuple, location: str) -> str:
    """An unknown key, with the closest allowed one and the full list."""
    allowed = list(_section_model(loc).model_fields)
    close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"{location}: unknown key; {hint}allowed: {', '.join(allowed)}"


def _describe_error(err: dict[str, Any]) -> str:
    """One pydantic error as `field.path: message (got value)`."""
    loc = tuple(err["loc"])
    location = ".".join(str(p) for p in loc)
    message = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        return _describe_unknown_key(loc, location)
    if not loc:  # checks across sections name their fields themselves
        return message
    value = err.get("input")
    shown = "" if isinstance(value, dict) else f" (got {value!r})"
    if err["type"] == "model_type":  # a section given as something other than a mapping
        section = _section_model((*loc, "")).__name__
        message = f"must be a mapping of {section} fields"
    return f"{location}: {message}{shown}"


def format_validation_error(source: str, error: ValidationError) -> str:
    """Every error of a failed validation of `source`, on one line."""
    lines = [_describe_error(e) for e in error.errors()]
    return f"{source}: invalid config: " + "; ".join(lines)
