"""Spend attribution read from the store: per tool, per tenant and per run (the reader's `usage` covers agents and
models). The store is the durable record of who spent what, so these are plain grouped queries over spans/runs, in
the SQL both backends speak (SQLite's traces.db and the Postgres store: TraceReads.query_rows)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine.store.trace_queries import run_filters
from engine.store.trace_rows import TenantUsage, ToolUsage, TopRun

if TYPE_CHECKING:
    from engine.store.reader_protocol import TraceReads as TraceReader


def usage_by_tool(reader: TraceReader, *, run_id: str | None = None, tenant: str | None = None,
                  since: float | None = None) -> list[ToolUsage]:
    where, params = run_filters(run_id=run_id, tenant=tenant, since=since)
    return reader.query_rows(
        ToolUsage, "SELECT s.name AS tool, count(*) AS calls, "
        "sum(CASE WHEN s.status != 'ok' THEN 1 ELSE 0 END) AS failed FROM spans s "
        f"JOIN runs r ON r.id = s.run_id WHERE s.kind = 'tool' AND {where} GROUP BY s.name ORDER BY calls DESC",
        params)


def usage_by_tenant(reader: TraceReader, *, run_id: str | None = None, tenant: str | None = None,
                    since: float | None = None) -> list[TenantUsage]:
    where, params = run_filters(run_id=run_id, tenant=tenant, since=since)
    return reader.query_rows(
        TenantUsage, "SELECT coalesce(r.tenant, '-') AS tenant, count(*) AS runs, sum(r.tokens_in) AS tokens_in, "
        "sum(r.tokens_out) AS tokens_out, sum(r.cost_usd) AS cost_usd FROM runs r "
        f"WHERE {where} GROUP BY r.tenant ORDER BY cost_usd DESC", params)


def top_runs(reader: TraceReader, *, run_id: str | None = None, tenant: str | None = None,
             since: float | None = None, limit: int = 10) -> list[TopRun]:
    where, params = run_filters(run_id=run_id, tenant=tenant, since=since)
    return reader.query_rows(
        TopRun, "SELECT r.id AS id, r.hierarchy AS hierarchy, r.status AS status, coalesce(r.tenant, '-') AS tenant, "
        "r.tokens_in AS tokens_in, r.tokens_out AS tokens_out, r.cost_usd AS cost_usd FROM runs r "
        f"WHERE {where} ORDER BY r.cost_usd DESC LIMIT ?", [*params, limit])
