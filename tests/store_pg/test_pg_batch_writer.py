"""PgBatchWriter: the same rows as traces.db for the same items, one transaction per batch, and one gap-free event
sequence across writers that readers can tail without missing a late commit."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest

from engine.errors import StoreError, StoreTooNew
from engine.store.pg.batch_writer import PgBatchWriter
from engine.store.pg.reader import PgTraceReader
from tests.store_support import T0, emit_model_call
from tests.trace_backends import TraceBackend


def record(writer: Any) -> None:
    writer.run_started("r1", "deal-desk", "h", "eng", "0.1", {"q": 1}, 3, "acme", T0, {"resumed": 2,
                                                                                     "replayed_steps": 5})
    writer.span_started("root", "r1", None, "run", None, "deal-desk", T0, None)
    for i in range(5):
        emit_model_call(writer, "r1", "root", i, T0 + i)
    writer.flush()
    writer.span_started("late", "r1", "root", "agent", "pricer", "pricer", T0 + 10, {"a": 1})
    writer.event("r1", "late", "guardrail.warn", "pricer", "budget", {"fraction": 0.8}, T0 + 10.5)
    writer.flush()
    writer.span_ended("late", "r1", "ok", T0 + 11, 5, 6, 0.25, "gpt", {"b": 2})
    writer.span_ended("root", "r1", "ok", T0 + 12)
    writer.run_ended("r1", "completed", T0 + 12, {"answer": 42}, None)
    writer.close()


def test_the_same_items_make_the_same_rows_as_traces_db(tmp_path: Path, pg_url: str) -> None:
    sqlite, postgres = TraceBackend("sqlite", tmp_path), TraceBackend("postgres", tmp_path, pg_url)
    record(sqlite.writer())
    record(postgres.writer())
    with sqlite.reader() as expected, postgres.reader() as got:
        assert got.get_run("r1") == expected.get_run("r1")
        assert got.spans("r1") == expected.spans("r1")
        assert got.events_after(0, limit=10_000) == expected.events_after(0, limit=10_000)
        run = got.get_run("r1")
        assert run is not None and (run.resumed, run.replayed_steps) == (2, 5)  # generated columns on SQLite
        late = next(span for span in got.spans("r1") if span.id == "late")
        assert late.attributes == {"a": 1, "b": 2} and late.last_seq == got.last_seq() - 2


def test_event_numbers_are_one_sequence_across_writers(pg_url: str, tmp_path: Path) -> None:
    backend = TraceBackend("postgres", tmp_path, pg_url)
    first, second = backend.writer(), backend.writer()
    try:
        for i in range(3):
            emit_model_call(first, "ra", "root", i, T0 + i)
        a = first.flush()
        emit_model_call(second, "rb", "root", 0, T0)
        b = second.flush()
        assert (a.first_seq, a.last_seq) == (1, 21) and (b.first_seq, b.last_seq) == (22, 28)
        first.run_progress("ra", 1, 1, 0.1, 1, 1, 1)  # no events: no numbers taken
        assert first.flush().last_seq == 0 and second.last_seq() == 28
    finally:
        first.close()
        second.close()


def test_concurrent_writers_commit_in_number_order_so_a_tail_never_skips(pg_url: str, tmp_path: Path) -> None:
    backend = TraceBackend("postgres", tmp_path, pg_url)
    writers = [backend.writer() for _ in range(3)]
    batches, per_batch = 25, 3 * 7
    done = threading.Event()
    errors: list[BaseException] = []

    def write(index: int, writer: PgBatchWriter) -> None:
        try:
            for b in range(batches):
                for c in range(3):
                    emit_model_call(writer, f"run-{index}", "root", b * 3 + c, T0 + b)
                writer.flush()
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i, w)) for i, w in enumerate(writers)]
    for thread in threads:
        thread.start()
    seen: list[int] = []
    with backend.reader() as reader:
        finisher = threading.Thread(target=lambda: ([t.join() for t in threads], done.set()))
        finisher.start()
        total = len(writers) * batches * per_batch
        while len(seen) < total:
            # Read before the page: "every writer had committed, and still nothing new" ends the tail. Read after,
            # an empty page fetched just before the last commit would end it early (a flaky failure).
            finished = done.is_set()
            # A tail that trusts `seq > last seen`: with numbers that commit out of order it would skip some.
            finished = done.is_set()  # before the read: a page read empty before the last commit is not the end
            page = reader.events_after(seen[-1] if seen else 0, limit=500)
            seen += [event.seq for event in page]
            if finished and not page and len(seen) < total:
                break
        finisher.join()
    for writer in writers:
        writer.close()
    assert not errors, errors
    assert seen == list(range(1, total + 1))


def test_a_failed_batch_writes_nothing_and_gives_its_numbers_back(pg_url: str, tmp_path: Path) -> None:
    backend = TraceBackend("postgres", tmp_path, pg_url)
    with backend.writer() as writer:
        emit_model_call(writer, "r1", "root", 0, T0)
        assert writer.flush().last_seq == 7
        writer.run_started("r2", "h", None, None, None, None, None, None, T0, None)
        writer.span_started("r1-llm-0", "r1", None, "llm", "w", "chat", T0, None)  # that span id exists: COPY fails
        with pytest.raises(StoreError, match="committing a trace batch failed"):
            writer.flush()
        assert writer.last_seq() == 7
        writer.run_started("r3", "h", None, None, None, None, None, None, T0, None)
        assert (writer.flush().first_seq, writer.last_seq()) == (8, 8)
    with backend.reader() as reader:
        assert reader.get_run("r2") is None and reader.get_run("r3") is not None
        assert [event.seq for event in reader.events_after(0)] == list(range(1, 9))


def test_a_store_from_a_newer_flightdeck_is_refused(pg_url: str, tmp_path: Path) -> None:
    backend = TraceBackend("postgres", tmp_path, pg_url)
    backend.writer().close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE flightdeck_schema SET version = 99")
    with pytest.raises(StoreTooNew, match="trace schema version 99"):
        PgTraceReader.connect(backend.location)
    with pytest.raises(StoreTooNew, match="trace schema version 99"):
        PgBatchWriter(backend.location)
