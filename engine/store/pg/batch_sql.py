"""The Postgres SQL of each statement a trace batch carries (engine/store/batch.py: STATEMENTS), and where its rows
hold event sequence numbers.

The batch builder numbers events from 1 within the batch (the Postgres writer learns the global numbers only
inside the transaction, from `event_seq`); SEQ_AT says which parameter of each statement's rows is such a number,
so the writer can add the batch's offset. A 0 there means "no event in this batch" and stays 0.
"""

from __future__ import annotations

from dataclasses import dataclass

# The statements whose rows the Postgres writer ends with its engine's id (the current-state tables).
ENGINE_STATE = frozenset({"state.breakers", "state.budgets", "state.queues", "state.schedules"})

_RUN_COLUMNS = ("id, hierarchy, hierarchy_hash, engine_id, engine_version, status, tenant, seed, input, output, "
                "error, started, ended, tokens_in, tokens_out, cost_usd, model_calls, tool_calls, agents_active, "
                "attributes, last_seq, resumed, replayed_steps")


def _upsert(table: str, columns: str, key: str) -> str:
    names = [name.strip() for name in columns.split(",")]
    keys = {k.strip() for k in key.split(",")}
    updates = ", ".join(f"{name} = EXCLUDED.{name}" for name in names if name not in keys)
    marks = ", ".join(["%s"] * len(names))
    return f"INSERT INTO {table} ({columns}) VALUES ({marks}) ON CONFLICT ({key}) DO UPDATE SET {updates}"


@dataclass(frozen=True, slots=True)
class PgStatement:
    """One statement: its SQL with %s placeholders; `seq_at`: the row positions holding event sequence numbers;
    `copy`: rows are appended by COPY into `copy` (table (columns)) instead (plain inserts, no conflict possible)."""

    sql: str
    seq_at: tuple[int, ...] = ()
    copy: str | None = None


# The run insert is an upsert: a resumed durable run starts again under its own id (as INSERT OR REPLACE on SQLite).
# Its rows get two more values from the writer: resumed and replayed_steps (read from the attributes).
PG_STATEMENTS: dict[str, PgStatement] = {
    "insert_run": PgStatement(_upsert("runs", _RUN_COLUMNS, "id"), seq_at=(20,)),
    "update_run_end": PgStatement(
        "UPDATE runs SET status=%s, ended=%s, output=%s, error=%s, tokens_in=%s, tokens_out=%s, cost_usd=%s, "
        "model_calls=%s, tool_calls=%s, agents_active=%s, last_seq=GREATEST(last_seq, %s) WHERE id=%s", (10,)),
    "update_run_end_no_totals": PgStatement(
        "UPDATE runs SET status=%s, ended=%s, output=%s, error=%s, last_seq=GREATEST(last_seq, %s) WHERE id=%s",
        (4,)),
    "update_run_progress": PgStatement(
        "UPDATE runs SET tokens_in=%s, tokens_out=%s, cost_usd=%s, model_calls=%s, tool_calls=%s, "
        "agents_active=%s, last_seq=GREATEST(last_seq, %s) WHERE id=%s", (6,)),
    "update_run_seq": PgStatement("UPDATE runs SET last_seq=GREATEST(last_seq, %s) WHERE id=%s", (0,)),
    "insert_span": PgStatement(
        "INSERT INTO spans (id, run_id, parent_id, kind, agent, name, status, started, ended, tokens_in, "
        "tokens_out, cost_usd, model, attributes, last_seq) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, "
        "%s, %s, %s, %s)", (14,),
        copy="spans (id, run_id, parent_id, kind, agent, name, status, started, ended, tokens_in, tokens_out, "
             "cost_usd, model, attributes, last_seq)"),
    "update_span_end": PgStatement(
        "UPDATE spans SET status=%s, ended=%s, tokens_in=%s, tokens_out=%s, cost_usd=%s, model=coalesce(%s, model), "
        "attributes=coalesce(%s, attributes), last_seq=GREATEST(last_seq, %s) WHERE id=%s", (7,)),
    # A span this writer never saw start: merge its end attributes into the stored ones.
    "update_span_end_patch": PgStatement(
        "UPDATE spans SET status=%s, ended=%s, tokens_in=%s, tokens_out=%s, cost_usd=%s, model=coalesce(%s, model), "
        "attributes=coalesce((coalesce(attributes, '{}')::jsonb || %s::jsonb)::text, attributes), "
        "last_seq=GREATEST(last_seq, %s) WHERE id=%s", (7,)),
    "update_span_seq": PgStatement("UPDATE spans SET last_seq=GREATEST(last_seq, %s) WHERE id=%s", (0,)),
    "insert_event": PgStatement(
        "INSERT INTO events (seq, ts, run_id, span_id, kind, agent, name, data) VALUES (%s, %s, %s, %s, %s, %s, %s, "
        "%s)", (0,), copy="events (seq, ts, run_id, span_id, kind, agent, name, data)"),
    # Current-state rows end with the engine id the writer adds (PgBatchWriter: ENGINE_STATE): part of the key where
    # engines publish under the same names (schema v4).
    "state.breakers": PgStatement(_upsert(
        "breakers", "hierarchy, key, kind, name, state, failure_rate, slow_call_rate, calls_in_window, failed_calls, "
        "slow_calls, not_permitted_calls, next_probe_at, since, updated, engine_id", "engine_id, hierarchy, key")),
    "state.budgets": PgStatement(_upsert("budgets", "run_id, scope, agent, data, updated, engine_id",
                                         "run_id, scope")),
    "state.queues": PgStatement(_upsert(
        "queues", "queue, tenant, hierarchy, depth, running, oldest_age_s, admitted_per_min, rejected_total, "
        "max_depth, concurrency, rate_limit, admission, updated, engine_id", "engine_id, queue, tenant")),
    "state.schedules": PgStatement(_upsert(
        "schedules", "name, hierarchy, cron, missed, next_fire, last_fire, last_run_id, updated, engine_id",
        "engine_id, name")),
}
