"""Shared helpers for the trace store tests (no tests here). Real files, real SQLite, bounded waits on conditions."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.store.engine_store import open_traces_db
from engine.store.redact import Redactor
from engine.store.writer import TraceWriter

REPO_ROOT = Path(__file__).resolve().parent.parent
T0 = 1_800_000_000.0


def wait_until(condition: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll `condition` until it returns something truthy; fail after `timeout` seconds. Returns that value."""
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.02)


def read_until(proc: subprocess.Popen[str], text: str, timeout: float = 30) -> str:
    """Read `proc`'s stderr until it contains `text` (bounded); returns what was read. Reads the pipe itself: select()
    on the buffered text stream would miss a line already pulled into its buffer together with an earlier one."""
    import select

    assert proc.stderr is not None
    fd = proc.stderr.fileno()
    seen = ""
    deadline = time.monotonic() + timeout
    while text not in seen:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        assert ready, f"timed out waiting for {text!r} on stderr (got {seen[-500:]!r})"
        chunk = os.read(fd, 65536)
        assert chunk, f"stderr closed before {text!r} (got {seen[-500:]!r})"
        seen += chunk.decode("utf-8", "replace")
    return seen


def new_writer(tmp_path: Path, **kwargs: Any) -> TraceWriter:
    """A TraceWriter on a fresh, migrated traces.db in tmp_path (no lock, no control.db: writer-only tests)."""
    path = tmp_path / "traces.db"
    open_traces_db(path).close()
    kwargs.setdefault("redactor", Redactor())
    return TraceWriter(path, **kwargs)


def store_lock_free(store_dir: Path) -> bool:
    """True once nothing holds the store's engine lock: the engine AND its trace-writer process (which inherits the
    lock and, after the engine dies, still commits what it had received) are gone."""
    import fcntl

    fd = os.open(store_dir / "engine.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # closing the descriptor releases a lock taken through it
    return True


def raw_conn(path: Path) -> sqlite3.Connection:
    """A plain autocommit read-write connection for assertions and for simulating other processes' locks."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=5)
    conn.row_factory = sqlite3.Row
    return conn


def rows(path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
    conn = raw_conn(path)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def run_python(code: str, *args: str, timeout: float = 60, env: dict[str, str] | None = None
               ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=REPO_ROOT, env={**os.environ, **(env or {})})


def start_python(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=REPO_ROOT)


def emit_model_call(writer: TraceWriter, run_id: str, parent_id: str, index: int, ts: float) -> None:
    """What the engine emits for one model call with one tool call: 2 spans, 5 events, 1 progress update."""
    llm, tool = f"{run_id}-llm-{index}", f"{run_id}-tool-{index}"
    writer.span_started(llm, run_id, parent_id, "llm", "worker", "chat", ts, {"attempt": 1})
    writer.event(run_id, llm, "llm.request", "worker", "chat", {"messages": 3, "tools": 2}, ts)
    writer.event(run_id, llm, "llm.response", "worker", "chat", {"finish": "tool_calls", "tokens": 123}, ts)
    writer.span_ended(llm, run_id, "ok", ts + 0.001, 100, 20, 0.0001, "gpt-test", {"finish": "tool_calls"})
    writer.span_started(tool, run_id, llm, "tool", "worker", "search", ts + 0.002, {"args": {"q": "x"}})
    writer.event(run_id, tool, "tool.call", "worker", "search", {"q": "x"}, ts + 0.002)
    writer.event(run_id, tool, "tool.result", "worker", "search", {"ok": True}, ts + 0.003)
    writer.span_ended(tool, run_id, "ok", ts + 0.003, 0, 0, 0.0, None, {"bytes": 10})
    writer.event(run_id, None, "route", "worker", "router", {"to": "b"}, ts + 0.004)
    writer.run_progress(run_id, 100 * (index + 1), 20 * (index + 1), 0.0001 * (index + 1), index + 1, index + 1, 2)
