"""`flightdeck engines` says whether the engine holding the store is durable and takes operators' resume and
reconcile requests (the DURABLE column, JSON `durable`), from what the engine publishes in engine.lock once DBOS is
open (runtime/durable_runs.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest

from engine.runtime.engine import Engine
from engine.store import open_engine_store
from tests.durable_support import flightdeck

pytestmark = pytest.mark.slow


def _listed_while_open(store: Path, **options: Any) -> tuple[dict[str, Any], str]:
    """`flightdeck engines --json` and the table, run while an engine with `options` holds the store."""
    async def go() -> tuple[dict[str, Any], str]:
        with open_engine_store(store) as engine_store:
            async with Engine(engine_store, latency_scale=0.0, runbooks=False, **options):
                as_json = await anyio.to_thread.run_sync(lambda: flightdeck("engines", "--json", "--store",
                                                                            str(store)))
                plain = await anyio.to_thread.run_sync(lambda: flightdeck("engines", "--store", str(store)))
        assert as_json.returncode == 0 and plain.returncode == 0, as_json.stderr + plain.stderr
        (holder,) = [e for e in json.loads(as_json.stdout) if e["holds_lock"]]
        return holder, plain.stdout

    return anyio.run(go)


def test_engines_shows_a_durable_engine_taking_requests(tmp_path: Path) -> None:
    holder, plain = _listed_while_open(tmp_path / "store", durable=True)
    assert holder["durable"] == {"durable": True, "pickup": True, "auto_resume": True}
    assert "DURABLE" in plain and "yes, takes resume+reconcile" in plain


def test_engines_shows_a_durable_engine_with_auto_resume_off(tmp_path: Path) -> None:
    holder, plain = _listed_while_open(tmp_path / "store", durable=True, auto_resume=False)
    assert holder["durable"] == {"durable": True, "pickup": True, "auto_resume": False}
    assert "yes, takes resume" in plain and "resume+reconcile" not in plain


def test_engines_shows_an_engine_that_is_not_durable(tmp_path: Path) -> None:
    holder, plain = _listed_while_open(tmp_path / "store")
    assert holder["durable"] == {"durable": False, "pickup": False, "auto_resume": False}
    assert plain.splitlines()[1].rstrip().endswith("no")
