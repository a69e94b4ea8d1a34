"""Durable runs in one process: an idempotency key never starts a second run, and side effects carry their key. On
both trace backends (a Postgres store holds DBOS's tables too: no durable.db)."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest

from engine.examples.deal_desk.tools import clear_ledger
from engine.hierarchy.loader import load_hierarchy
from engine.runtime.engine import Engine, RunRequest
from engine.store import open_engine_store
from tests.engine_helpers import Approver
from tests.trace_backends import TraceBackend


@pytest.mark.slow
def test_the_same_idempotency_key_returns_the_original_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           trace_backend: TraceBackend) -> None:
    ledger = tmp_path / "ledger.jsonl"
    monkeypatch.setenv("FLIGHTDECK_EXAMPLE_LEDGER", str(ledger))
    clear_ledger()  # the in-process ledger remembers keys: the other backend's run had this run id and these keys
    store_dir = tmp_path / "store"
    hierarchy = load_hierarchy("deal-desk")
    deal = json.loads((hierarchy.path.parent / "deals.json").read_text())[0]

    async def go() -> list[object]:
        store = open_engine_store(store_dir, traces_to=None if trace_backend.pg_url is None else
                                  trace_backend.location)
        try:
            async with Engine(store, latency_scale=0.0, durable=True) as engine:
                first = await engine.run(hierarchy, RunRequest(input=deal, idempotency_key="deal-42"))
                second = await engine.run(hierarchy, RunRequest(input=deal, seed=7, idempotency_key="deal-42"))
                return [first, second]
        finally:
            store.close()

    with Approver(store_dir):
        first, second = anyio.run(go)
    assert first.run_id == second.run_id  # type: ignore[attr-defined]
    assert first.status == "completed"  # type: ignore[attr-defined]
    executed = [json.loads(line) for line in ledger.read_text().splitlines()]
    assert all("idempotency_key" in line for line in executed), executed
    assert executed and all(line["idempotency_key"].startswith(first.run_id + ":")  # type: ignore[attr-defined]
                            for line in executed)
    assert len({line["idempotency_key"] for line in executed}) == len(executed)
    if trace_backend.pg_url is None:
        assert (store_dir / "durable.db").stat().st_mode & 0o777 == 0o600
    else:
        assert not (store_dir / "durable.db").exists()
