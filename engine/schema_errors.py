"""Pydantic validation errors as InputErrors that name file, line and field, for any YamlDocument.

Errors for the members of one union arrive separately for the same node; they are merged into one message. An
unknown key gets a did-you-mean from the keys the schema allows at that place. The offending value is shown
shortened by reprlib, so a huge value (a long list, a deep mapping) never builds a huge string.
"""

from __future__ import annotations

import difflib
import reprlib
import types
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

from engine.errors import InputError
from engine.safe_yaml import YamlDocument, is_union_tag

__all__ = ["short_repr", "validation_errors"]

_REPR = reprlib.Repr()  # attributes, not keyword arguments: Python 3.11's Repr takes none
_REPR.maxlevel = 2
_REPR.maxtuple = _REPR.maxlist = _REPR.maxarray = _REPR.maxdict = _REPR.maxset = _REPR.maxfrozenset = 4
_REPR.maxdeque = 4
_REPR.maxstring = _REPR.maxlong = _REPR.maxother = 40


def short_repr(value: Any) -> str:
    # Strings as before (repr cut at the end); containers through reprlib, which never builds their whole repr.
    text = repr(value[:41]) if isinstance(value, str) else _REPR.repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _unwrap(annotation: Any) -> Any:
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            candidates = [a for a in typing.get_args(annotation) if a is not type(None)]
            containers = [a for a in candidates if _is_model(a) or typing.get_origin(a) in (dict, list)]
            if not containers:
                return None
            annotation = containers[0]
        else:
            return annotation


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _keys_at(root: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The keys the schema allows at ``loc``, for a did-you-mean on unknown keys. Empty when unsure."""
    current: Any = root
    for part in loc:
        current = _unwrap(current)
        if _is_model(current):
            fields = current.model_fields
            match = next((f for n, f in fields.items() if n == part or f.alias == part), None)
            if match is None:
                return []
            current = match.annotation
        elif typing.get_origin(current) is dict:
            current = typing.get_args(current)[1]
        elif typing.get_origin(current) is list:
            current = typing.get_args(current)[0]
        else:
            return []
    current = _unwrap(current)
    if not _is_model(current):
        return []
    return [field.alias or name for name, field in current.model_fields.items()]


def validation_errors(doc: YamlDocument, exc: ValidationError, model: type[BaseModel],
                      prefix: tuple[Any, ...] = ()) -> list[InputError]:
    """One InputError per offending node of `doc` (whose data, at `prefix`, was validated against `model`)."""
    merged: dict[tuple[str, int], tuple[list[str], list[str]]] = {}
    for error in exc.errors(include_url=False):
        loc = prefix + tuple(error["loc"])
        field, line = doc.locate(loc)
        kind = error["type"]
        got = ""
        if kind == "extra_forbidden":
            key = str(loc[-1])
            allowed = _keys_at(model, tuple(p for p in loc[len(prefix):-1] if not is_union_tag(p)))
            message = f"unknown key {key!r}"
            close = difflib.get_close_matches(key, allowed, n=1)
            if close:
                message += f"; did you mean {close[0]!r}?"
            elif allowed:
                message += f" (allowed: {', '.join(allowed)})"
        elif kind == "missing":
            message = "missing required key"
        else:
            message = error["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
            if kind not in ("value_error", "assertion_error") and "input" in error:
                got = short_repr(error["input"])
        entry = merged.setdefault((field, line), ([], []))
        if message not in entry[0]:
            entry[0].append(message)
        if got and got not in entry[1]:
            entry[1].append(got)
    # One "(got ...)" per node, not one per union member that rejected the same value.
    return [InputError(", or ".join(messages) + (f" (got {', '.join(gots)})" if gots else ""),
                       file=doc.file, line=line, field=field or None)
            for (field, line), (messages, gots) in merged.items()]
