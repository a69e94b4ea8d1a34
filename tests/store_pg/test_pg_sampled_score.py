"""Issue 18 on Postgres: two engines of a fleet score runs of one hierarchy into one window row of the database, and
each engine's `sampled_score` signal is that row's mean over the whole fleet's scored runs (the totals each
`eval.scored` carries), so `min_samples` counts the fleet's runs, not one engine's. A real PostgreSQL on 127.0.0.1."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest

from engine.runtime.engine import Engine, RunRequest
from engine.store import open_engine_store, open_trace_reads
from tests.engine.test_runbooks_shipped import SHIPPED
from tests.engine.test_sampled_score_window import GRADED
from tests.engine_helpers import write_hierarchy
from tests.fakes.receiver import Receiver, receiver  # noqa: F401 (receiver is a fixture)
from tests.store_pg.test_pg_runbooks_engine import ROUTING_KEY, config_file, pg, rows


@pytest.mark.anyio
async def test_two_engines_on_postgres_share_one_window_for_the_signal(
        pg_url: str, tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FD_TEST_ROUTING_KEY", ROUTING_KEY)
    hierarchy = write_hierarchy(tmp_path, GRADED)
    watched = open_engine_store(pg(pg_url), flush_interval=0.01, config_file=config_file(tmp_path, receiver))
    other = open_engine_store(pg(pg_url), flush_interval=0.01)
    try:
        async with Engine(watched, latency_scale=0.0, runbooks=[SHIPPED["quality-dropping"]]) as engine, \
                Engine(other, latency_scale=0.0, runbooks=False) as peer:
            # The other engine of the fleet scores six poor answers, then this one five: eleven in the window,
            # five of them this engine's (under min_samples on its own).
            await peer.run_many(hierarchy, [RunRequest(input=f"bad peer {n}") for n in range(6)], concurrency=2)
            assert await peer.sampler.drain(10.0)
            await engine.run_many(hierarchy, [RunRequest(input=f"bad {n}") for n in range(5)], concurrency=2)
            assert await engine.sampler.drain(10.0)
            await anyio.to_thread.run_sync(engine.writer.flush)
            assert await anyio.to_thread.run_sync(engine.runbooks.settle, 10.0)
            assert engine.runbooks.errors == []
    finally:
        watched.close()
        other.close()
    (incident,) = rows(pg_url, "SELECT runbook, scope, signals FROM incidents")
    assert (incident["runbook"], incident["scope"]) == ("quality-dropping", "hierarchy:helpdesk")
    (signal, *_) = json.loads(incident["signals"])
    assert signal["signal"] == "sampled_score" and signal["value"] == 0.0 and 10 <= signal["samples"] <= 11
    (window,) = rows(pg_url, "SELECT id, cases, score FROM evals WHERE source = 'sample'")
    assert (window["cases"], window["score"]) == (11, 0.0)
    reader = open_trace_reads(pg(pg_url))
    try:
        scored = reader.events_after(0, limit=1000, kinds=["eval.scored"])
    finally:
        reader.close()
    last = max(scored, key=lambda e: e.seq)
    assert last.data is not None and (last.data["eval"], last.data["window_scored"]) == (window["id"], 11)
