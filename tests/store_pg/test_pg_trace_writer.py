"""The TraceWriter (the engine's handle, its trace-writer process) on a Postgres store: commit callbacks see the
numbers the database handed out, several writers share one gap-free sequence, a row that can never be written is
skipped alone and reported, and a store that cannot be reached is a clear StoreError that leaves nothing behind.
Real writer processes, a real PostgreSQL on 127.0.0.1."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest

from engine.errors import StoreError
from engine.store import open_engine_store
from engine.store.location import PostgresLocation, parse_store_location
from engine.store.redact import Redactor
from engine.store.writer import TraceWriter
from tests.pg_support import free_port
from tests.store_support import T0, emit_model_call, store_lock_free

SECRET = "pw-never-shown"


def pg(url: str) -> PostgresLocation:
    location = parse_store_location(url)
    assert isinstance(location, PostgresLocation)
    return location


def stored(url: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return [tuple(row) for row in conn.execute(sql).fetchall()]


def test_two_writers_share_one_sequence_and_callbacks_see_the_stored_numbers(pg_url: str) -> None:
    writers = [TraceWriter(pg(pg_url), redactor=Redactor()) for _ in range(2)]
    seen: dict[int, list[tuple[int, str, str | None]]] = {0: [], 1: []}
    lock = threading.Lock()
    try:
        for index, writer in enumerate(writers):
            def keep(events: list[Any], index: int = index) -> None:
                with lock:
                    seen[index].extend((event[0], event[1], event[3]) for event in events)
            writer.on_commit(keep)
        for index, writer in enumerate(writers):
            writer.run_started(f"run-{index}", "h", None, None, None, {}, 1, None, T0, None)
        for call in range(20):
            for index, writer in enumerate(writers):
                emit_model_call(writer, f"run-{index}", "root", call, T0 + call)
        for writer in writers:
            writer.flush()
    finally:
        for writer in writers:
            writer.close()
    rows = stored(pg_url, "SELECT seq, kind, span_id FROM events ORDER BY seq")
    assert [row[0] for row in rows] == list(range(1, len(rows) + 1))  # one gap-free sequence for both
    # Each writer's callbacks got its own events under the numbers the database gave them: not the 1, 2, 3... its
    # builder counted, which both writers would have reused.
    told = sorted(seen[0] + seen[1])
    assert told == [(seq, kind, span) for seq, kind, span in rows]
    assert {row[0] for row in seen[0]}.isdisjoint(row[0] for row in seen[1])
    assert max(w.last_committed_seq for w in writers) == len(rows)


def test_a_duplicate_span_is_skipped_alone_and_reported(pg_url: str) -> None:
    first = TraceWriter(pg(pg_url), redactor=Redactor())
    first.run_started("run-a", "h", None, None, None, {}, 1, None, T0, None)
    first.span_started("dup", "run-a", None, "run", None, "root", T0, None)
    first.flush()
    first.close()
    second = TraceWriter(pg(pg_url), redactor=Redactor())
    try:
        second.run_started("run-b", "h", None, None, None, {}, 1, None, T0, None)
        second.span_started("dup", "run-b", None, "run", None, "root", T0, None)  # the id is taken
        emit_model_call(second, "run-b", "dup", 0, T0 + 1)
        with pytest.raises(StoreError, match=r"1 trace rows could not be written to postgresql://.*insert_span 'dup'"):
            second.flush()
        second.flush()  # reported once; the writer goes on
    finally:
        second.close()
    assert stored(pg_url, "SELECT run_id FROM spans WHERE id = 'dup'") == [("run-a",)]
    # Its neighbours are in: run-b, its model call's two spans and events, all numbered without a gap.
    assert stored(pg_url, "SELECT id FROM runs ORDER BY id") == [("run-a",), ("run-b",)]
    assert stored(pg_url, "SELECT count(*) FROM spans WHERE run_id = 'run-b'") == [(2,)]
    seqs = [row[0] for row in stored(pg_url, "SELECT seq FROM events ORDER BY seq")]
    assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) > 8


def test_an_unreachable_store_is_a_clear_error_and_leaves_the_directory_free(tmp_path: Path) -> None:
    url = f"postgresql://fd:{SECRET}@127.0.0.1:{free_port()}/traces"
    with pytest.raises(StoreError) as caught:
        open_engine_store(tmp_path / "store", traces_to=pg(url))
    message = str(caught.value)
    assert message.startswith("cannot connect to the Postgres store postgresql://fd:***@127.0.0.1:"), message
    assert SECRET not in message and "\n" not in message
    assert store_lock_free(tmp_path / "store")
    assert not (tmp_path / "store" / "traces.db").exists()
