"""The trace store's health for the header's engines slot: what the engine reports when its commits fail.

On a store directory the engine holding the lock writes it in engine.lock (`store`); on a Postgres store every
engine writes its own in its registry row (`engines.published`, trace schema v5), so the console shows the first
live engine whose writer is in trouble, named, since one engine's database trouble is not necessarily the fleet's."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from engine.store.control_rows import EngineStatus, parsed_json

TROUBLE = ("degraded", "failed", "fenced")  # fenced: it stalled, another engine took its runs (it stops)


def store_trouble(store_dir: Path | None, alive: Sequence[EngineStatus]) -> tuple[str, str] | None:
    """(state, error) when a live engine's trace store is degraded or failed, or the engine was fenced, else None."""
    if store_dir is not None:
        from engine.controls.terminate import read_lock_holder

        return _trouble((read_lock_holder(store_dir) or {}).get("store"))
    for engine in alive:
        published = parsed_json(engine.published) if engine.published else None
        found = _trouble(published.get("store") if isinstance(published, dict) else None)
        if found is not None:
            state, error = found
            return state, f"engine {str(engine.id)[:12]} on {engine.host}: {error}"
    return None


def _trouble(store: Any) -> tuple[str, str] | None:
    if isinstance(store, dict) and store.get("state") in TROUBLE:
        return str(store["state"]), str(store.get("error") or "")
    return None
