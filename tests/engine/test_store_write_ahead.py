"""Write-ahead for side effects, back-pressure bounds in bytes and age, and a heartbeat that survives anything:
in-process engines and writers on real SQLite files."""

from __future__ import annotations

import os
import time
from pathlib import Path

import anyio
import pytest

from engine.errors import StoreError
from engine.hierarchy.loader import load_hierarchy
from engine.runtime.engine import Engine, RunRequest
from engine.store import open_engine_store, open_reader
from engine.store.writer import TraceWriter
from tests.store_support import wait_until

WITNESS = """
name: witnessed
entry: clerk
models:
  m: {model: m, tier: standard, price_in: 0.5, price_out: 1.5, latency: 0, latency_per_token: 0}
tools:
  witness: {function: "tests.store_fault_tools:witness", side_effects: true}
agents:
  clerk: {contract: Does things that matter., model: m, tools: [witness], max_steps: 50}
scripts:
  clerk:
""" + "".join(f"    - tool: {{name: witness, args: {{note: 'run{{input.run}}-{i}'}}}}\n" for i in range(20)) + \
    "    - final: done\n"


def test_a_side_effect_runs_only_after_its_start_is_committed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    store_dir = tmp_path / "store"
    monkeypatch.setenv("FLIGHTDECK_TEST_STORE", str(store_dir))
    path = tmp_path / "witnessed.yaml"
    path.write_text(WITNESS)
    hierarchy = load_hierarchy(str(path))

    async def main() -> list[str]:
        # A slow commit cadence: without the write-ahead, a start would wait up to 200 ms to be committed.
        with open_engine_store(store_dir, flush_interval=0.2) as store:
            async with Engine(store, runbooks=False) as engine:
                results = await engine.run_many(hierarchy, [RunRequest(input={"run": i}, seed=i) for i in range(5)],
                                                concurrency=5)
        return [r.status for r in results]

    assert anyio.run(main) == ["completed"] * 5
    with open_reader(store_dir) as reader:
        spans = reader.query("SELECT status, attributes FROM spans WHERE name = 'witness'")
    assert len(spans) == 100 and {row["status"] for row in spans} == {"ok"}, [
        row for row in spans if row["status"] != "ok"][:1]


def _big_writer(tmp_path: Path, **bounds: float) -> TraceWriter:
    from engine.store.engine_store import open_traces_db

    db = tmp_path / "traces.db"
    open_traces_db(db).close()
    return TraceWriter(db, retry_initial=0.01, retry_max=0.05, **bounds)  # type: ignore[arg-type]


def test_uncommitted_traces_are_bounded_in_bytes(tmp_path: Path) -> None:
    writer = _big_writer(tmp_path, max_bytes=256 * 1024)
    try:
        writer.set_page_limit(1)  # every commit fails: what is emitted stays uncommitted
        blob = "x" * 4096
        for i in range(100):  # 100 items, far below the 100,000-item bound, but 400 KiB
            writer.event(None, None, "blob", data={"i": i, "blob": f"{i}{blob}"})  # distinct: pickle shares equal objects
        wait_until(writer.over_capacity, what="the byte bound to be reached")
        backlog = writer.backlog
        assert backlog.items == 100 and backlog.bytes >= 256 * 1024
        writer.set_page_limit(None)  # space returns: it drains, and the bound clears
        writer.flush(timeout=30)
        assert not writer.over_capacity()
    finally:
        writer.close()


def test_uncommitted_traces_are_bounded_in_age(tmp_path: Path) -> None:
    writer = _big_writer(tmp_path, max_age=0.3)
    try:
        writer.set_page_limit(1)
        writer.event(None, None, "one", data={"blob": "y" * 100_000})  # more than the free space in the file
        started = time.monotonic()
        wait_until(writer.over_capacity, what="the age bound to be reached")
        assert time.monotonic() - started >= 0.3 and writer.backlog.age_s >= 0.3
        assert writer.error is not None and "full" in str(writer.error)
        writer.set_page_limit(None)
        writer.flush(timeout=30)
        assert not writer.over_capacity() and writer.backlog.items == 0
    finally:
        writer.close()


def test_the_heartbeat_survives_any_exception(tmp_path: Path) -> None:
    store = open_engine_store(tmp_path / "store", heartbeat_interval=0.01)
    try:
        real = store.control.heartbeat
        failures = []

        def flaky(engine_id: str) -> None:
            if len(failures) < 3:
                failures.append(1)
                raise RuntimeError("disk I/O error (simulated: not a StoreError)")
            real(engine_id)

        store.control.heartbeat = flaky  # type: ignore[method-assign]
        before = time.time()
        wait_until(lambda: [e for e in store.control.list_engines() if e.heartbeat > before and len(failures) == 3],
                   what="a heartbeat after three failing ones")
    finally:
        store.close()


def test_commit_now_raises_once_the_writer_is_gone(tmp_path: Path) -> None:
    writer = _big_writer(tmp_path)
    writer.event(None, None, "one", data={})

    async def main() -> None:
        await writer.commit_now()
        os.kill(writer.pid, 9)
        with pytest.raises(StoreError, match="killed by signal 9"):
            with anyio.fail_after(5):
                while True:
                    writer.event(None, None, "more", data={})
                    await writer.commit_now()

    anyio.run(main)
    with pytest.raises(StoreError):
        writer.close()


def test_the_console_header_and_engines_show_a_degraded_store(tmp_path: Path) -> None:
    from console.widgets import header

    store_dir = tmp_path / "store"
    store = open_engine_store(store_dir)
    try:
        reader = open_reader(store_dir)
        try:
            healthy = header.collect(reader, store.control, time.time(), store_dir).values["engines"]
            assert healthy.level == "ok" and "store" not in healthy.text
            store.publish_store_health("degraded", "cannot commit: database or disk is full", time.time())
            slot = header.collect(reader, store.control, time.time(), store_dir).values["engines"]
        finally:
            reader.close()
        assert slot.level == "crit" and slot.text == "1 alive · store DEGRADED"
        assert slot.alarm is not None and "database or disk is full" in slot.alarm
    finally:
        store.close()
