"""Checks on what operators and the engine hand to the control plane: bounded printable text, choices, ids, JSON
objects, the `source` of an action. Each failure is an InputError naming the field."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from typing import Any

from engine.controls.audit import canonical_json
from engine.errors import InputError

MAX_TEXT = 2000
_ENGINE_SOURCES = re.compile(r"operator|engine|runbook:[A-Za-z0-9_.\-]+")


def optional_text(value: Any, field: str) -> str | None:
    """A stripped, bounded, printable string, or None for missing / blank; InputError naming `field` otherwise."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        raise InputError(f"expected text, got {type(value).__name__}", field=field)
    text: str = value.strip()
    if len(text) > MAX_TEXT:
        raise InputError(f"is longer than {MAX_TEXT} characters", field=field)
    if any(ord(c) < 32 and c not in "\t\n" for c in text):
        raise InputError("contains control characters", field=field)
    return text


def required_text(value: Any, field: str) -> str:
    """Like optional_text, but missing or blank is an error too (reasons, names, ids)."""
    text = optional_text(value, field)
    if text is None:
        raise InputError("is required and must not be empty", field=field)
    return text


def choice(value: Any, allowed: tuple[str, ...], field: str) -> str:
    if not isinstance(value, str) or value.strip().lower() not in allowed:
        raise InputError(f"expected one of {', '.join(allowed)}, got {value!r}", field=field)
    return value.strip().lower()


def whole_ids(ids: Iterable[int], field: str = "ids") -> list[int]:
    out = []
    for value in ids:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(f"expected whole-number ids, got {value!r}", field=field)
        out.append(value)
    return out


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def json_object(value: Any, field: str) -> str:
    """A mapping as canonical JSON text (what control.db stores and the audit log hashes)."""
    if not isinstance(value, Mapping):
        raise InputError(f"must be a JSON object, got {type(value).__name__}", field=field)
    try:
        return canonical_json(dict(value))
    except (TypeError, ValueError) as exc:
        raise InputError(f"is not representable as JSON: {exc}", field=field) from None


def action_source(source: Any) -> str:
    if not isinstance(source, str) or not _ENGINE_SOURCES.fullmatch(source):
        raise InputError(f"expected 'operator', 'engine' or 'runbook:ID', got {source!r}", field="source")
    return source


def actor_for(source: str, operator: str) -> str:
    """Who an action is recorded as: a runbook acts inside the engine but is its own actor in the log, so "who did
    this" names the runbook; anything else is the operator."""
    return source if source.startswith("runbook:") else operator
