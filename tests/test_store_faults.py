"""Issue 11, section 1: the engine stops when its record fails. Real engine processes (`flightdeck run`), real
SQLite files, real signals: the trace writer killed under it, traces.db full, SIGTERM/SIGHUP from a supervisor."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from engine.errors import StoreError
from engine.store import open_engine_store, open_reader
from tests.store_fault_tools import read_journal
from tests.test_store_support import rows, store_lock_free, wait_until

ROOT = Path(__file__).resolve().parent.parent


def clerk_hierarchy(steps: int, pause: float) -> str:
    """One agent that alternates a slow read-only step and a side effect (`record`), `steps` times."""
    script = "".join(f"    - tool: {{name: pause, args: {{seconds: {pause}, step: {i}}}}}\n"
                     f"    - tool: {{name: record, args: {{note: step-{i}}}}}\n" for i in range(steps))
    return f"""
name: clerk
entry: clerk
models:
  m: {{model: m, tier: standard, price_in: 0.5, price_out: 1.5, latency: 0, latency_per_token: 0}}
tools:
  record: {{function: "tests.store_fault_tools:record", side_effects: true}}
  pause: {{function: "tests.store_fault_tools:pause"}}
agents:
  clerk: {{contract: Records things., model: m, tools: [record, pause], max_steps: {2 * steps + 5}}}
scripts:
  clerk:
{script}    - final: done
"""


def start_engine(tmp_path: Path, *args: str, steps: int = 200, pause: float = 0.01,
                 env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], Path, Path]:
    store = tmp_path / "store"
    hierarchy = tmp_path / "clerk.yaml"
    hierarchy.write_text(clerk_hierarchy(steps, pause))
    journal = tmp_path / "journal.txt"
    engine = subprocess.Popen([sys.executable, "-m", "console.cli", "run", str(hierarchy), "--store", str(store),
                               *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT), "FLIGHTDECK_TEST_JOURNAL": str(journal),
                                   **(env or {})})
    return engine, store, journal


def committed(store: Path, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
    try:
        with open_reader(store) as reader:
            return reader.query(sql, params)
    except StoreError:  # not created yet
        return []


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            found += [int(p) for p in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
        except OSError:
            pass
    return found


def finish(engine: subprocess.Popen[str], timeout: float) -> tuple[str, str]:
    try:
        return engine.communicate(timeout=timeout)
    finally:
        if engine.poll() is None:
            engine.kill()
            engine.communicate()


def test_killing_the_trace_writer_stops_the_engine_with_exit_3(tmp_path: Path) -> None:
    engine, store, journal = start_engine(tmp_path, "--repeat", "8", "--concurrency", "4")
    try:
        wait_until(lambda: len(committed(store, "SELECT id FROM spans WHERE name = 'record'")) >= 20, timeout=60,
                   what="side effects under way")
        [writer] = children(engine.pid)
        os.kill(writer, signal.SIGKILL)
        killed_at = time.time()
    finally:
        out, err = finish(engine, timeout=30)
    exited_at = time.time()
    assert engine.returncode == 3, err
    assert "Traceback" not in err
    # Besides the start line and the progress lines ([n/N] run ... killed): one line naming the cause.
    problems = [line for line in err.splitlines() if not line.startswith(("[", "running clerk"))]
    assert len(problems) == 1, err
    assert "trace writer process" in problems[0] and "killed by signal 9" in problems[0], problems
    assert exited_at - killed_at < 10
    # Write-ahead: every side effect that ran had its start committed first (the store knows each one).
    side_effects = read_journal(str(journal))
    starts = committed(store, "SELECT id FROM spans WHERE name = 'record'")
    assert 0 < len(side_effects) <= len(starts)
    # Nothing started after the writer's death was noticed (within 1 s).
    assert max(ts for ts, _ in side_effects) < killed_at + 1.0
    # The lock is free and the next engine starts normally, marking the runs left running abandoned.
    assert store_lock_free(store)
    with open_engine_store(store) as next_engine:
        assert next_engine.abandoned_runs
    statuses = {row["status"] for row in committed(store, "SELECT status FROM runs")}
    assert "running" not in statuses and "abandoned" in statuses
