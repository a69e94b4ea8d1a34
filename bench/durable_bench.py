"""Durable runs: the cost of a side-effecting call's DBOS record (p50/p99), and a durable engine's run against a
plain one on the same hierarchy (ms per run and per model call). See docs/benchmarks.md."""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio


async def _effects(store_dir: Path, n: int) -> list[float]:
    from engine.durable.host import DurableHost

    async def body(run_id: str, spec: dict[str, Any]) -> None:
        return None

    host = DurableHost(store_dir, os.urandom(4).hex(), body)
    host.launch()

    async def call() -> tuple[str, int]:
        return "ok", 1

    times = []
    try:
        for i in range(n):
            started = time.perf_counter()
            await host.perform(f"bench:{i}", call)
            times.append((time.perf_counter() - started) * 1000)
    finally:
        host.destroy()
    return times


async def _runs(store_dir: Path, durable: bool, runs: int) -> tuple[float, int]:
    from engine.hierarchy.loader import load_hierarchy
    from engine.runtime.engine import Engine, RunRequest
    from engine.store import open_engine_store

    hierarchy = load_hierarchy("support-triage")
    samples = json.loads((hierarchy.path.parent / "inbox.json").read_text())
    store = open_engine_store(store_dir)
    try:
        async with Engine(store, latency_scale=0.0, durable=durable, runbooks=False) as engine:
            await engine.run(hierarchy, RunRequest(input=samples[0]))
            started = time.perf_counter()
            calls = 0
            for i in range(runs):
                result = await engine.run(hierarchy, RunRequest(input=samples[i % len(samples)], seed=i))
                calls += result.model_calls
            return (time.perf_counter() - started) * 1000, calls
    finally:
        store.close()


def measure(effects: int = 300, runs: int = 100) -> list[tuple[str, str, str]]:
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "e").mkdir()
        times = anyio.run(_effects, Path(tmp) / "e", effects)
        plain_ms, plain_calls = anyio.run(_runs, Path(tmp) / "plain", False, runs)
        durable_ms, durable_calls = anyio.run(_runs, Path(tmp) / "durable", True, runs)
    times.sort()
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
    per_call = (durable_ms - plain_ms) / max(1, durable_calls) if durable_calls else None
    return [
        ("side-effect record p50", f"{statistics.median(times):.2f} ms", "(DBOS workflow start + result, SQLite)"),
        ("side-effect record p99", f"{p99:.2f} ms", "target <= 5 ms"),
        ("plain run (support-triage)", f"{plain_ms / runs:.2f} ms", f"{plain_calls / runs:.0f} model calls/run"),
        ("durable run", f"{durable_ms / runs:.2f} ms", "run workflow start + end, side effects recorded"),
        ("durable overhead / model call", "-" if per_call is None else f"{per_call * 1000:.0f} us",
         "target +300 us"),
    ]
