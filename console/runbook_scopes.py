"""Where a runbook is applied, shared by the runbooks commands (console/commands/runbooks/) and the runbooks view
(console/screens/runbooks.py, console/views_data/): the scope an operator types, the placeholders a runbook applied
to it fills, the runs its budget actions reach, and the runbook text with its placeholders filled."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import InputError

if TYPE_CHECKING:
    from engine.store.control_rows import Incident
    from engine.store.location import StoreLocation

__all__ = ["SCOPE_KINDS", "fill_body", "parse_scope", "running_runs", "scope_context"]

SCOPE_KINDS = ("global", "hierarchy", "agent", "tool")


def parse_scope(text: str | None, field: str = "--scope") -> tuple[str, str | None]:
    """`global`, `hierarchy:NAME`, `agent:NAME` or `tool:NAME` -> (kind, target); an InputError naming `field`."""
    text = (text or "").strip()
    if text == "global":
        return "global", None
    kind, sep, target = text.partition(":")
    if not sep or kind not in SCOPE_KINDS or kind == "global" or not target.strip():
        raise InputError(f"expected global, hierarchy:NAME, agent:NAME or tool:NAME, got {text!r}", field=field)
    return kind, target.strip()


def scope_context(incident: Incident | None, scope: str, field: str = "--scope") -> dict[str, Any]:
    """The placeholders for a runbook applied to `scope` (the incident's context, then the scope's label under
    "scope" and its target under its kind and "target")."""
    context: dict[str, Any] = dict(incident.context or {}) if incident is not None else {}
    kind, target = parse_scope(scope, field=field)
    context["scope"] = "global" if kind == "global" else f"{kind}:{target}"
    if target is not None:
        context.update({kind: target, "target": target})
    return context


def running_runs(store: Path | StoreLocation) -> Any:
    """hierarchy (None: all) -> ids of runs the store records as running (a store directory, or a Postgres store)."""
    from engine.errors import StoreError
    from engine.store import open_trace_reads
    from engine.store.files import TRACES_DB
    from engine.store.location import StoreDirectory

    location = StoreDirectory(store) if isinstance(store, Path) else store

    def running(hierarchy: str | None) -> list[str]:
        if isinstance(location, StoreDirectory) and not (location.path / TRACES_DB).is_file():
            return []  # nothing recorded yet: no runs in flight
        try:
            reader = open_trace_reads(location)
        except StoreError:
            if isinstance(location, StoreDirectory):
                raise
            return []  # a Postgres store with no trace tables yet
        try:
            return sorted(r.id for r in reader.list_runs(limit=10_000, status="running", hierarchy=hierarchy))
        finally:
            reader.close()
    return running


def fill_body(body: str, context: dict[str, Any]) -> str:
    """The runbook's text with {hierarchy}, {agent}, {tool}, {run}, {target} and {scope} filled where known."""
    import re

    def fill(match: re.Match[str]) -> str:
        value = context.get(match.group(1))
        return str(value) if isinstance(value, str) and value else match.group(0)
    return re.sub(r"\{(hierarchy|agent|tool|run|target|scope)\}", fill, body)
