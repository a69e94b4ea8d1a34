"""Turning trace-writer queue items into one transaction's rows, and committing them.

Runs in the trace-writer process (engine/store/writer_process.py). Coalesces: a run or span started and ended in one
batch is one INSERT with its final values; run progress keeps only the latest totals; a span's end attributes merge
into its start attributes. Sequence numbers are assigned here, in queue order, so events.seq is gap-free and
follows emission order. JSON, redaction and truncation happen here too (engine/store/redact.py).
"""

from __future__ import annotations

import logging
import sqlite3
from itertools import chain
from typing import Any

from engine.store.redact import Redactor
from engine.store.traces_schema import RUN_ENDED, RUN_STARTED, SPAN_ENDED, SPAN_STARTED

log = logging.getLogger(__name__)

CommittedEvent = tuple[int, str, str | None, str | None, str | None, str | None, "dict[str, Any] | None"]

# Queue item tags; the rest of each tuple is the emit method's arguments in order. FLUSH never leaves the engine
# process; FRAME_END (with the frame's number) is what the writer process sees in its place.
(RUN_STARTED_ITEM, RUN_PROGRESS_ITEM, RUN_ENDED_ITEM, SPAN_STARTED_ITEM, SPAN_ENDED_ITEM, EVENT_ITEM, FLUSH,
 STATE_ITEM, FRAME_END) = range(9)
_RUN_STARTED, _RUN_PROGRESS, _RUN_ENDED, _SPAN_STARTED, _SPAN_ENDED, _EVENT, _STATE = (
    RUN_STARTED_ITEM, RUN_PROGRESS_ITEM, RUN_ENDED_ITEM, SPAN_STARTED_ITEM, SPAN_ENDED_ITEM, EVENT_ITEM, STATE_ITEM)
# Current-state tables (breakers, budgets, queues, schedules): one row per key, the latest write wins within a batch.
_STATE_UPSERTS = {
    "breakers": "INSERT OR REPLACE INTO breakers (hierarchy, key, kind, name, state, failure_rate, "
                "slow_call_rate, calls_in_window, failed_calls, slow_calls, not_permitted_calls, "
                "next_probe_at, since, updated) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
    "budgets": "INSERT OR REPLACE INTO budgets (run_id, scope, agent, data, updated) VALUES (?,?,?,?,?)",
    "queues": "INSERT OR REPLACE INTO queues (queue, tenant, hierarchy, depth, running, oldest_age_s, "
              "admitted_per_min, rejected_total, max_depth, concurrency, rate_limit, admission, updated) "
              "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
    "schedules": "INSERT OR REPLACE INTO schedules (name, hierarchy, cron, missed, next_fire, last_fire, "
                 "last_run_id, updated) VALUES (?,?,?,?,?,?,?,?)",
}

# Current-state tables whose upserts on_commit callbacks also see, as an event of this kind (never stored in `events`):
# (seq, kind, None, None, None, None, {"key": [...], "row": [...]}). The runbook watchdog's queue signals read them.
STATE_EVENTS = {"queues": "queue.state"}

_INT64_MAX = 2**63 - 1
_ERROR_SUMMARY_CHARS = 200
_NAME_CACHE_LIMIT = 10_000
_CACHE_KIB = 64 * 1024

# OR REPLACE: a resumed durable run starts again under its own id (engine/runtime/durable_runs.py).
_INSERT_RUN = ("INSERT OR REPLACE INTO runs (id, hierarchy, hierarchy_hash, engine_id, engine_version, status, "
               "tenant, seed, input, output, error, started, ended, tokens_in, tokens_out, cost_usd, model_calls, "
               "tool_calls, agents_active, attributes, last_seq) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)")
_UPDATE_RUN_END = ("UPDATE runs SET status=?, ended=?, output=?, error=?, tokens_in=?, tokens_out=?, cost_usd=?, "
                   "model_calls=?, tool_calls=?, agents_active=?, last_seq=max(last_seq, ?) WHERE id=?")
_UPDATE_RUN_END_NO_TOTALS = ("UPDATE runs SET status=?, ended=?, output=?, error=?, last_seq=max(last_seq, ?) "
                             "WHERE id=?")
_UPDATE_RUN_PROGRESS = ("UPDATE runs SET tokens_in=?, tokens_out=?, cost_usd=?, model_calls=?, tool_calls=?, "
                        "agents_active=?, last_seq=max(last_seq, ?) WHERE id=?")
_UPDATE_RUN_SEQ = "UPDATE runs SET last_seq=max(last_seq, ?) WHERE id=?"
_INSERT_SPAN = ("INSERT INTO spans (id, run_id, parent_id, kind, agent, name, status, started, ended, tokens_in, "
                "tokens_out, cost_usd, model, attributes, last_seq) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)")
_UPDATE_SPAN_END = ("UPDATE spans SET status=?, ended=?, tokens_in=?, tokens_out=?, cost_usd=?, "
                    "model=coalesce(?, model), attributes=coalesce(?, attributes), last_seq=max(last_seq, ?) "
                    "WHERE id=?")
# A span this writer never saw start (should not happen): merge its end attributes in SQL instead.
_UPDATE_SPAN_END_PATCH = ("UPDATE spans SET status=?, ended=?, tokens_in=?, tokens_out=?, cost_usd=?, "
                          "model=coalesce(?, model), "
                          "attributes=coalesce(json_patch(coalesce(attributes, '{}'), ?), attributes), "
                          "last_seq=max(last_seq, ?) WHERE id=?")
_UPDATE_SPAN_SEQ = "UPDATE spans SET last_seq=max(last_seq, ?) WHERE id=?"
_INSERT_EVENT = "INSERT INTO events (seq, ts, run_id, span_id, kind, agent, name, data) VALUES (?,?,?,?,?,?,?,?)"

_MULTI_ROW = frozenset({_INSERT_EVENT, _INSERT_SPAN, _INSERT_RUN})
# Every statement a Batch may carry, by name: the Postgres trace store (engine/store/pg/batch_sql.py) commits the
# same batches with its own SQL for each name.
STATEMENTS: dict[str, str] = {
    "insert_run": _INSERT_RUN, "update_run_end": _UPDATE_RUN_END, "update_run_end_no_totals": _UPDATE_RUN_END_NO_TOTALS,
    "update_run_progress": _UPDATE_RUN_PROGRESS, "update_run_seq": _UPDATE_RUN_SEQ, "insert_span": _INSERT_SPAN,
    "update_span_end": _UPDATE_SPAN_END, "update_span_end_patch": _UPDATE_SPAN_END_PATCH,
    "update_span_seq": _UPDATE_SPAN_SEQ, "insert_event": _INSERT_EVENT,
    **{f"state.{table}": sql for table, sql in _STATE_UPSERTS.items()}}
_CHUNKS = (128, 16, 1)


def _insert_many(conn: sqlite3.Connection, sql: str, rows: list[Any]) -> None:
    """executemany for INSERTs, as multi-row `VALUES (...), (...)` statements: less per-row overhead in the
    sqlite3 module, and one GIL release/re-acquire per 128 rows instead of per row (the writer process's frame
    reader thread wants the GIL too). A few fixed chunk sizes keep the statement cache small."""
    head, _, values = sql.partition(" VALUES ")
    index, total = 0, len(rows)
    for size in _CHUNKS:
        if total - index < size:
            continue
        statement = head + " VALUES " + ",".join([values] * size)
        while total - index >= size:
            conn.execute(statement, list(chain.from_iterable(rows[index:index + size])))
            index += size


# Run row / span row column positions used while coalescing.
_R_STATUS, _R_OUTPUT, _R_ERROR, _R_ENDED, _R_TOTALS, _R_SEQ = 5, 9, 10, 12, 13, 20
_S_PARENT = 2
_S_STATUS, _S_ENDED, _S_TOKENS_IN, _S_TOKENS_OUT, _S_COST, _S_MODEL, _S_ATTRS, _S_SEQ = 6, 8, 9, 10, 11, 12, 13, 14


class Batch:
    """One transaction's worth of rows, built from a drained slice of the queue."""

    __slots__ = ("events", "first_seq", "frames", "item_count", "last_seq", "statements")

    def __init__(self) -> None:
        self.statements: list[tuple[str, list[Any]]] = []
        self.first_seq = 0
        self.last_seq = 0
        self.events: list[CommittedEvent] | None = None
        self.frames: list[int] = []  # FRAME_END markers drained into this batch: committed with it
        self.item_count = 0


class BatchBuilder:
    """Writer-side state that outlives one batch: run totals, open spans, cleaned names."""

    def __init__(self, redactor: Redactor) -> None:
        self._redactor = redactor
        self._run_totals: dict[str, list[Any]] = {}
        self._run_hierarchy: dict[str, str | None] = {}
        self._names: dict[str, str | None] = {}  # so run.ended events carry the name the console shows
        self._open_spans: dict[str, tuple[str, str | None, str, dict[str, Any] | None, float]] = {}

    @property
    def redaction_timeouts(self) -> int:
        """Strings stored as TIMED_OUT so far: a redaction pattern ran out of time on them."""
        return self._redactor.timeouts

    def _clean_name(self, name: str | None) -> str | None:
        """Span and event names come from a small vocabulary (agent, tool, model names): clean each once."""
        if name is None:
            return None
        cleaned = self._names.get(name)
        if cleaned is None:
            cleaned = self._redactor.clean_column(name)
            if len(self._names) < _NAME_CACHE_LIMIT:
                self._names[name] = cleaned
        return cleaned

    def build(self, items: list[tuple[Any, ...]], last_committed_seq: int, want_events: bool) -> Batch:
        """Turn queue items into rows. Coalesces: a run or span started and ended in this batch is one INSERT with
        its final values; run progress keeps only the latest totals; a span's end attributes merge into its start
        attributes. Sequence numbers are assigned here, in queue order."""
        dumps = self._redactor.dumps  # caller payloads: redacted and cut
        text = self._clean_name
        run_totals = self._run_totals
        open_spans = self._open_spans
        batch = Batch()
        batch.item_count = len(items)
        events: list[list[Any]] = []  # data stays an object until the end of the batch
        committed: list[CommittedEvent] | None = [] if want_events else None
        new_runs: dict[str, list[Any]] = {}
        new_spans: dict[str, list[Any]] = {}
        run_ends: dict[str, tuple[Any, ...]] = {}
        span_ends: dict[str, list[Any]] = {}
        run_seq: dict[str, int] = {}
        span_seq: dict[str, int] = {}
        progressed: set[str] = set()
        states: dict[str, dict[tuple[Any, ...], tuple[Any, ...]]] = {}
        seq = last_committed_seq
        batch.first_seq = seq + 1
        # Spans that also end in this batch get one event (span.ended, carrying the duration), not two: most model
        # and tool calls start and end within one flush interval, and rows are the writer's main cost.
        ended_here = {item[1] for item in items if item[0] == _SPAN_ENDED}

        for item in items:
            op = item[0]
            if op == _EVENT:
                _, run_id, span_id, kind, agent, name, data, ts = item
                seq += 1
                events.append([seq, ts, run_id, span_id, kind, agent, text(name), data])
                if run_id is not None:
                    run_seq[run_id] = seq
                if span_id is not None:
                    span_seq[span_id] = seq
                if committed is not None:
                    committed.append((seq, kind, run_id, span_id, agent, name, data))
            elif op == _SPAN_STARTED:
                _, span_id, run_id, parent_id, kind, agent, name, started, attrs = item
                open_spans[span_id] = (kind, agent, name, attrs, started)
                stored_name = text(name)
                # attributes stay a dict until the end of the batch: an end in this batch merges into it.
                new_spans[span_id] = [span_id, run_id, parent_id, kind, agent, stored_name, "running", started,
                                      None, 0, 0, 0.0, None, attrs, seq + 1]
                if span_id in ended_here:
                    continue
                seq += 1
                data = {"kind": kind, "name": stored_name, "parent_id": parent_id}
                events.append([seq, started, run_id, span_id, SPAN_STARTED, agent, stored_name, data])
                run_seq[run_id] = seq
                span_seq[span_id] = seq
                if committed is not None:
                    committed.append((seq, SPAN_STARTED, run_id, span_id, agent, name, data))
            elif op == _SPAN_ENDED:
                _, span_id, run_id, status, ended, tokens_in, tokens_out, cost, model, attrs = item
                seq += 1
                known = open_spans.pop(span_id, None)
                kind, agent, name, start_attrs, started = known if known is not None else (None, None, None, None,
                                                                                            None)
                model = text(model)
                if attrs and start_attrs:
                    attrs = {**start_attrs, **attrs}
                elif not attrs:
                    attrs = None
                row = new_spans.get(span_id)
                if row is not None:
                    row[_S_STATUS], row[_S_ENDED], row[_S_TOKENS_IN], row[_S_TOKENS_OUT] = (status, ended,
                                                                                           tokens_in, tokens_out)
                    row[_S_COST], row[_S_MODEL] = cost, model
                    if attrs is not None:
                        row[_S_ATTRS] = attrs
                else:
                    span_ends[span_id] = [status, ended, tokens_in, tokens_out, cost, model, attrs, known, span_id]
                stored_name = text(name)
                data = {"kind": kind, "name": stored_name, "status": status, "tokens_in": tokens_in,
                        "tokens_out": tokens_out, "cost_usd": cost, "model": model,
                        "duration_s": None if started is None else round(ended - started, 6)}
                if row is not None:  # no span.started event was written for it: say where it hangs in the tree
                    data["parent_id"] = row[_S_PARENT]
                events.append([seq, ended, run_id, span_id, SPAN_ENDED, agent, stored_name, data])
                run_seq[run_id] = seq
                span_seq[span_id] = seq
                if committed is not None:
                    committed.append((seq, SPAN_ENDED, run_id, span_id, agent, name, data))
            elif op == _RUN_PROGRESS:
                run_id = item[1]
                totals = list(item[2:8])
                run_totals[run_id] = totals
                row = new_runs.get(run_id)
                if row is not None:
                    row[_R_TOTALS:_R_TOTALS + 6] = totals
                else:
                    progressed.add(run_id)
            elif op == _RUN_STARTED:
                (_, run_id, hierarchy, hierarchy_hash, engine_id, engine_version, run_input, seed, tenant,
                 started, attrs) = item
                seq += 1
                hierarchy = text(hierarchy)
                if isinstance(seed, int) and not -_INT64_MAX - 1 <= seed <= _INT64_MAX:
                    # SQLite integers are 64-bit (a bigger one would silently become a float): keep the exact
                    # value in the attributes instead.
                    attrs = {**(attrs or {}), "seed": str(seed)}
                    seed = None
                run_totals[run_id] = [0, 0, 0.0, 0, 0, 0]
                self._run_hierarchy[run_id] = hierarchy
                new_runs[run_id] = [run_id, hierarchy, hierarchy_hash, engine_id, engine_version, "running", tenant,
                                    seed, dumps(run_input), None, None, started, None, 0, 0, 0.0, 0, 0, 0,
                                    dumps(attrs), seq]
                data = {"hierarchy": hierarchy, "tenant": tenant}
                events.append([seq, started, run_id, None, RUN_STARTED, None, hierarchy, data])
                run_seq[run_id] = seq
                if committed is not None:
                    committed.append((seq, RUN_STARTED, run_id, None, None, hierarchy, data))
            elif op == _RUN_ENDED:
                _, run_id, status, ended, output, error = item
                seq += 1
                ended_totals = run_totals.pop(run_id, None)
                hierarchy = self._run_hierarchy.pop(run_id, None)
                output_json, error_text = dumps(output), self._redactor.clean_column(error)
                row = new_runs.get(run_id)
                if row is not None:
                    row[_R_STATUS], row[_R_ENDED], row[_R_OUTPUT], row[_R_ERROR] = (status, ended, output_json,
                                                                                   error_text)
                else:
                    run_ends[run_id] = (status, ended, output_json, error_text, ended_totals)
                    progressed.discard(run_id)
                data = {"status": status}
                if ended_totals is not None:
                    data.update(tokens_in=ended_totals[0], tokens_out=ended_totals[1], cost_usd=ended_totals[2],
                                model_calls=ended_totals[3], tool_calls=ended_totals[4])
                if error_text:
                    data["error"] = error_text[:_ERROR_SUMMARY_CHARS]
                events.append([seq, ended, run_id, None, RUN_ENDED, None, hierarchy, data])
                run_seq[run_id] = seq
                if committed is not None:
                    committed.append((seq, RUN_ENDED, run_id, None, None, hierarchy, data))
            elif op == FRAME_END:
                batch.frames.append(item[1])
            elif op == _STATE:
                states.setdefault(item[1], {})[item[2]] = item[3]
                if committed is not None and item[1] in STATE_EVENTS:
                    committed.append((seq, STATE_EVENTS[item[1]], None, None, None, None,
                                      {"key": list(item[2]), "row": list(item[3])}))

        statements = batch.statements
        if new_runs:
            rows = list(new_runs.values())
            for row in rows:
                row[_R_SEQ] = run_seq.get(row[0], row[_R_SEQ])
            statements.append((_INSERT_RUN, rows))
        if new_spans:
            rows = list(new_spans.values())
            for row, attrs_json in zip(rows, self._redactor.dumps_many([row[_S_ATTRS] for row in rows])):
                row[_S_ATTRS] = attrs_json
                row[_S_SEQ] = span_seq[row[0]]
            statements.append((_INSERT_SPAN, rows))
        if events:
            # Event payloads are serialised together: one redaction pre-check for the whole batch.
            for row, data_json in zip(events, self._redactor.dumps_many([row[7] for row in events])):
                row[7] = data_json
            statements.append((_INSERT_EVENT, events))
        if span_ends:
            merged_rows: list[list[Any]] = []
            patch_rows: list[list[Any]] = []
            for span_id, (status, ended, tokens_in, tokens_out, cost, model, attrs, known, _) in span_ends.items():
                target = merged_rows if known is not None else patch_rows
                target.append([status, ended, tokens_in, tokens_out, cost, model, dumps(attrs), span_seq[span_id],
                               span_id])
            if merged_rows:
                statements.append((_UPDATE_SPAN_END, merged_rows))
            if patch_rows:
                log.warning("trace writer: %d spans ended that this writer never saw start", len(patch_rows))
                statements.append((_UPDATE_SPAN_END_PATCH, patch_rows))
        touched_spans = [(last, span_id) for span_id, last in span_seq.items()
                         if span_id not in new_spans and span_id not in span_ends]
        if touched_spans:
            statements.append((_UPDATE_SPAN_SEQ, touched_spans))
        if run_ends:
            with_totals = []
            without_totals = []
            for run_id, (status, ended, output_json, error_text, totals) in run_ends.items():
                last = run_seq[run_id]
                if totals is not None:
                    with_totals.append([status, ended, output_json, error_text, *totals, last, run_id])
                else:
                    without_totals.append([status, ended, output_json, error_text, last, run_id])
            if with_totals:
                statements.append((_UPDATE_RUN_END, with_totals))
            if without_totals:
                statements.append((_UPDATE_RUN_END_NO_TOTALS, without_totals))
        if progressed:
            statements.append((_UPDATE_RUN_PROGRESS,
                               [[*run_totals[run_id], run_seq.get(run_id, 0), run_id] for run_id in progressed
                                if run_id in run_totals]))
        touched_runs = [(last, run_id) for run_id, last in run_seq.items()
                        if run_id not in new_runs and run_id not in run_ends and run_id not in progressed]
        if touched_runs:
            statements.append((_UPDATE_RUN_SEQ, touched_runs))

        for table, rows_by_key in states.items():
            statements.append((_STATE_UPSERTS[table], list(rows_by_key.values())))

        batch.last_seq = seq if seq > last_committed_seq else 0
        batch.events = committed
        return batch


# -- committing ----------------------------------------------------------------------------------------------------

def commit(conn: sqlite3.Connection, batch: Batch) -> None:
    """The batch in one BEGIN IMMEDIATE transaction: all of it or, on any error, none of it."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        for sql, rows in batch.statements:
            if sql in _MULTI_ROW:
                _insert_many(conn, sql, rows)
            else:
                conn.executemany(sql, rows)
        conn.execute("COMMIT")
    except BaseException:
        rollback(conn)
        raise


def rollback(conn: sqlite3.Connection) -> None:
    try:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
    except sqlite3.Error:
        log.exception("trace writer could not roll back")


def salvage(conn: sqlite3.Connection, batch: Batch) -> list[str]:
    """Row by row in one transaction, skipping rows that fail: one bad row must not lose its neighbours. Returns a
    description of each skipped row; raises (after rolling back) if the transaction itself fails."""
    failures: list[str] = []
    try:
        conn.execute("BEGIN IMMEDIATE")
        for sql, rows in batch.statements:
            for row in rows:
                try:
                    conn.execute(sql, row)
                except (sqlite3.IntegrityError, sqlite3.DataError, sqlite3.InterfaceError,
                        sqlite3.ProgrammingError, OverflowError, ValueError) as exc:
                    failures.append(f"{sql.split('(')[0].strip()} {row[0]!r}: {exc}")
        conn.execute("COMMIT")
    except BaseException:
        rollback(conn)
        raise
    return failures
