"""TraceQueries: the trace store's reads, written once for both backends.

TraceReader (traces.db) and PgTraceReader (Postgres) subclass it and supply the plumbing: `_rows` (dicts),
`query_rows` (typed rows), `_scalar`, `_has_table`, plus the few reads whose SQL differs (count_runs,
degraded_calls). The SQL here is the dialect both speak, with qmark (`?`) parameters: the Postgres reader turns them
into its driver's `%s`.
"""

from __future__ import annotations

from typing import Any, TypeVar

from engine.errors import InputError
from engine.store.rows import TypedRow, column_list
from engine.store.trace_rows import (
    AgentUsage,
    BreakerFleetRow,
    BreakerRow,
    BudgetRow,
    DegradedCall,
    EngineLoadRow,
    EngineQueueRow,
    EngineRow,
    EventRow,
    ModelUsage,
    QueueRow,
    RunRow,
    ScheduleRow,
    SpanNode,
    SpanRow,
    UsageReport,
    UsageTotals,
)

RowT = TypeVar("RowT", bound=TypedRow)

RUN_COLUMNS = column_list(RunRow)
# list_runs leaves out the potentially large payload columns (NULL in their place); get_run has everything.
RUN_SUMMARY_COLUMNS = RUN_COLUMNS.replace("input, output", "NULL AS input, NULL AS output")
SPAN_COLUMNS = column_list(SpanRow)
_EVENT_COLUMNS = column_list(EventRow)
_AMBIGUOUS_SHOWN = 5


def run_filters(*, run_id: str | None = None, tenant: str | None = None, since: float | None = None,
                run_column: str = "r.id") -> tuple[str, list[Any]]:
    """The WHERE clause (and its parameters) for "one run / one tenant / runs started since", over a query that
    joins `runs r` (or, for run_id alone, names the run column). Shared by every usage query."""
    where: list[str] = []
    params: list[Any] = []
    if run_id is not None:
        where.append(f"{run_column} = ?")
        params.append(run_id)
    if tenant is not None:
        where.append("r.tenant = ?")
        params.append(tenant)
    if since is not None:
        where.append("r.started >= ?")
        params.append(since)
    return (" AND ".join(where) or "TRUE"), params



class TraceQueries:
    """The reads; subclasses supply the plumbing (see the module docstring)."""

    def _rows(self, sql: str, params: tuple[Any, ...] | list[Any] = ()) -> list[dict[str, Any]]:
        raise NotImplementedError

    def query_rows(self, row_type: type[RowT], sql: str,
                   params: tuple[Any, ...] | list[Any] = ()) -> list[RowT]:
        raise NotImplementedError

    def _scalar(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        raise NotImplementedError

    def _has_table(self, name: str) -> bool:
        raise NotImplementedError

    def count_runs(self, since: float) -> dict[str, int]:
        raise NotImplementedError

    def degraded_calls(self, run_ids: list[str]) -> list[DegradedCall]:
        raise NotImplementedError

    def last_seq(self) -> int:
        return int(self._scalar("SELECT max(seq) FROM events") or 0)

    # -- runs --------------------------------------------------------------------------------------------------

    def list_runs(self, limit: int = 100, before_started: float | None = None, status: str | None = None,
                  hierarchy: str | None = None, tenant: str | None = None,
                  before_id: str | None = None) -> list[RunRow]:
        """Newest first. Page with before_started (and before_id, the last row's id, so runs that started in
        the same instant are not skipped). Payload columns (input, output) are left out: see get_run."""
        where: list[str] = []
        params: list[Any] = []
        for column, value in (("status", status), ("hierarchy", hierarchy), ("tenant", tenant)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if before_started is not None:
            if before_id is not None:
                where.append("(started, id) < (?, ?)")
                params += [before_started, before_id]
            else:
                where.append("started < ?")
                params.append(before_started)
        sql = f"SELECT {RUN_SUMMARY_COLUMNS} FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY started DESC, id DESC LIMIT ?"
        params.append(int(limit))
        return self.query_rows(RunRow, sql, params)

    def get_run(self, run_id: str) -> RunRow | None:
        """The run with this id, or the one run whose id starts with it. An ambiguous prefix is an InputError
        listing some of the candidates."""
        if not run_id:
            raise InputError("a run id (or a unique prefix of one) is required", field="run_id")
        rows = self.query_rows(RunRow, f"SELECT {RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,))
        if rows:
            return rows[0]
        upper = run_id[:-1] + chr(ord(run_id[-1]) + 1)
        ids = [row["id"] for row in self._rows("SELECT id FROM runs WHERE id >= ? AND id < ? ORDER BY id LIMIT ?",
                                               (run_id, upper, _AMBIGUOUS_SHOWN + 1))]
        if not ids:
            return None
        if len(ids) > 1:
            shown = ", ".join(ids[:_AMBIGUOUS_SHOWN]) + (", ..." if len(ids) > _AMBIGUOUS_SHOWN else "")
            raise InputError(f"run id prefix {run_id!r} is ambiguous: it matches {shown}", field="run_id")
        return self.query_rows(RunRow, f"SELECT {RUN_COLUMNS} FROM runs WHERE id = ?", (ids[0],))[0]

    def engines(self) -> list[EngineRow]:
        """Engines that have written to this store, newest first (liveness is in control.db, see ControlDB)."""
        return self.query_rows(EngineRow, f"SELECT {column_list(EngineRow)} FROM engines ORDER BY started DESC "
                                          "LIMIT 100")

    # -- spans -------------------------------------------------------------------------------------------------

    def spans(self, run_id: str) -> list[SpanRow]:
        return self.query_rows(SpanRow, f"SELECT {SPAN_COLUMNS} FROM spans WHERE run_id = ? ORDER BY started, id",
                               (run_id,))

    def span_tree(self, run_id: str) -> SpanNode | None:
        """The run's root span with nested children (each list ordered by start). Spans whose parent is missing
        hang off the root; several roots get a synthetic root (`span` None). None: no spans."""
        spans = self.spans(run_id)
        if not spans:
            return None
        nodes = {span.id: SpanNode(span, run_id, span.started) for span in spans}
        roots: list[SpanNode] = []
        orphans: list[SpanNode] = []
        for span in spans:
            node = nodes[span.id]
            parent_id = span.parent_id
            if parent_id is None:
                roots.append(node)
            elif parent_id in nodes and parent_id != span.id:
                nodes[parent_id].children.append(node)
            else:
                orphans.append(node)
        if len(roots) == 1:
            root = roots[0]
            root.children = sorted(root.children + orphans, key=_node_order)
            return root
        return SpanNode(None, run_id, spans[0].started, roots + orphans)

    def breakers(self, hierarchy: str | None = None) -> list[BreakerRow]:
        """Current breaker states as the engine last published them (one row per hierarchy and breaker key)."""
        if not self._has_table("breakers"):
            return []
        columns = column_list(BreakerRow)
        if hierarchy is None:
            return self.query_rows(BreakerRow, f"SELECT {columns} FROM breakers "
                                               "ORDER BY state != 'closed' DESC, hierarchy, key")
        return self.query_rows(BreakerRow, f"SELECT {columns} FROM breakers WHERE hierarchy = ? ORDER BY key",
                               (hierarchy,))

    def breaker_fleet(self) -> list[BreakerFleetRow]:
        """Per breaker, how many engines publish it and how many see it open. A store directory has one engine at a
        time, whose rows are the whole story: none here (the Postgres reader says it for a fleet)."""
        return []

    def engine_loads(self) -> list[EngineLoadRow]:
        """Runs running now, per engine (the engines view's LOAD)."""
        return self.query_rows(EngineLoadRow, "SELECT engine_id, count(*) AS active FROM runs WHERE status = "
                                              "'running' GROUP BY engine_id")

    def engine_queues(self) -> list[EngineQueueRow]:
        """The serve-mode queues each engine publishes. On a store directory the rows carry no engine (one engine
        serves it at a time): none here."""
        return []

    def queues(self) -> list[QueueRow]:
        """Serve-mode queues as last published: per queue (tenant "") and per tenant, deepest first."""
        if not self._has_table("queues"):
            return []
        return self.query_rows(QueueRow, f"SELECT {column_list(QueueRow)} FROM queues "
                                         "ORDER BY queue, tenant != '', depth DESC, tenant")

    def schedules(self) -> list[ScheduleRow]:
        """Serve-mode schedules as last published, the next to fire first."""
        if not self._has_table("schedules"):
            return []
        return self.query_rows(ScheduleRow, f"SELECT {column_list(ScheduleRow)} FROM schedules "
                                            "ORDER BY next_fire IS NULL, next_fire, name")

    def budgets(self, run_id: str) -> list[BudgetRow]:
        """A run's budget gauges: one row per scope (`run`, `agent:SPAN`), `data` = dimension -> used, reserved,
        limit, fraction, burn_rate_per_min, time_to_exhaustion_s."""
        if not self._has_table("budgets"):
            return []
        return self.query_rows(BudgetRow, f"SELECT {column_list(BudgetRow)} FROM budgets WHERE run_id = ? "
                                          "ORDER BY scope != 'run', scope", (run_id,))

    def running_spans(self, run_id: str | None = None) -> list[SpanRow]:
        if run_id is None:
            return self.query_rows(SpanRow, f"SELECT {SPAN_COLUMNS} FROM spans WHERE status = 'running' "
                                            "ORDER BY started")
        return self.query_rows(SpanRow, f"SELECT {SPAN_COLUMNS} FROM spans WHERE status = 'running' AND run_id = ? "
                                        "ORDER BY started", (run_id,))

    # -- events ------------------------------------------------------------------------------------------------

    def events_after(self, seq: int, limit: int = 1000, run_id: str | None = None,
                     kinds: list[str] | tuple[str, ...] | None = None) -> list[EventRow]:
        """Events with seq > `seq`, oldest first: tail the feed by passing the last seq you saw."""
        where = ["seq > ?"]
        params: list[Any] = [int(seq)]
        if run_id is not None:
            where.append("run_id = ?")
            params.append(run_id)
        if kinds:
            where.append(f"kind IN ({', '.join('?' * len(kinds))})")
            params.extend(kinds)
        params.append(int(limit))
        return self.query_rows(EventRow, f"SELECT {_EVENT_COLUMNS} FROM events WHERE {' AND '.join(where)} "
                                         "ORDER BY seq LIMIT ?", params)

    # -- usage -------------------------------------------------------------------------------------------------

    def usage(self, run_id: str | None = None, tenant: str | None = None,
              since: float | None = None) -> UsageReport:
        """Tokens, cost and call counts per agent and per model, summed over llm and tool spans (the leaves:
        agent/delegation spans may carry roll-ups that would double count). Filters: one run, a tenant, runs
        started since a time. With no filter at all this reads every span."""
        run_where, params = run_filters(run_id=run_id, tenant=tenant, since=since, run_column="s.run_id")
        where = ["s.kind IN ('llm', 'tool')", run_where]
        join = " JOIN runs r ON r.id = s.run_id" if tenant is not None or since is not None else ""
        rows = self._rows(
            "SELECT s.kind AS kind, s.agent AS agent, s.model AS model, count(*) AS n, "
            "coalesce(sum(s.tokens_in), 0) AS tokens_in, coalesce(sum(s.tokens_out), 0) AS tokens_out, "
            f"coalesce(sum(s.cost_usd), 0.0) AS cost_usd FROM spans s{join} WHERE {' AND '.join(where)} "
            "GROUP BY s.kind, s.agent, s.model", params)
        # [tokens_in, tokens_out, cost_usd, model_calls, tool_calls] per agent, per model and in total
        agents: dict[Any, list[Any]] = {}
        models: dict[Any, list[Any]] = {}
        total: list[Any] = [0, 0, 0.0, 0, 0]
        for row in rows:
            is_llm = row["kind"] == "llm"
            targets = [agents.setdefault(row["agent"], [0, 0, 0.0, 0, 0]), total]
            if is_llm:
                targets.append(models.setdefault(row["model"], [0, 0, 0.0, 0, 0]))
            for target in targets:
                target[0] += row["tokens_in"]
                target[1] += row["tokens_out"]
                target[2] += row["cost_usd"]
                target[3 if is_llm else 4] += row["n"]
        by_agent = [AgentUsage(agent, *sums) for agent, sums in agents.items()]
        by_model = [ModelUsage(model, *sums[:4]) for model, sums in models.items()]
        by_agent.sort(key=lambda entry: (-entry.cost_usd, str(entry.agent or "")))
        by_model.sort(key=lambda entry: (-entry.cost_usd, str(entry.model or "")))
        return UsageReport(agents=by_agent, models=by_model, total=UsageTotals(*total))


def _node_order(node: SpanNode) -> tuple[float, str]:
    span = node.span
    return (node.started, "" if span is None else span.id)
