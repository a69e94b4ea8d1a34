"""TraceReads: what the CLI's trace reads (`runs`, `trace`, `usage`) and the console's polls need from a trace store,
on either backend.

TraceReader (traces.db) and PgTraceReader (Postgres, engine/store/pg/reader.py) both satisfy it, with the same typed
rows (trace_rows.py). `query_rows` takes qmark (`?`) SQL on both, so the shared report queries (usage_queries.py)
are written once in the SQL both databases speak.
"""

from __future__ import annotations

from typing import Any, Protocol, TypeVar

from engine.store.rows import TypedRow
from engine.store.trace_rows import (
    BreakerFleetRow,
    BreakerRow,
    BudgetRow,
    DegradedCall,
    EngineLoadRow,
    EngineQueueRow,
    EngineRow,
    EventRow,
    QueueRow,
    RunRow,
    ScheduleRow,
    SpanNode,
    SpanRow,
    UsageReport,
)

RowT = TypeVar("RowT", bound=TypedRow)


class TraceReads(Protocol):
    def list_runs(self, limit: int = 100, before_started: float | None = None, status: str | None = None,
                  hierarchy: str | None = None, tenant: str | None = None,
                  before_id: str | None = None) -> list[RunRow]: ...

    def count_runs(self, since: float) -> dict[str, int]: ...

    def get_run(self, run_id: str) -> RunRow | None: ...

    def spans(self, run_id: str) -> list[SpanRow]: ...

    def span_tree(self, run_id: str) -> SpanNode | None: ...

    def degraded_calls(self, run_ids: list[str]) -> list[DegradedCall]: ...

    def running_spans(self, run_id: str | None = None) -> list[SpanRow]: ...

    def last_seq(self) -> int: ...

    def events_after(self, seq: int, limit: int = 1000, run_id: str | None = None,
                     kinds: list[str] | tuple[str, ...] | None = None) -> list[EventRow]: ...

    def usage(self, run_id: str | None = None, tenant: str | None = None,
              since: float | None = None) -> UsageReport: ...

    # What the console reads besides (both backends; TraceQueries has them all).
    def data_version(self) -> int: ...

    def engines(self) -> list[EngineRow]: ...

    def breakers(self, hierarchy: str | None = None) -> list[BreakerRow]: ...

    def breaker_fleet(self) -> list[BreakerFleetRow]: ...

    def engine_loads(self) -> list[EngineLoadRow]: ...

    def engine_queues(self) -> list[EngineQueueRow]: ...

    def budgets(self, run_id: str) -> list[BudgetRow]: ...

    def queues(self) -> list[QueueRow]: ...

    def schedules(self) -> list[ScheduleRow]: ...

    def query(self, sql: str, params: tuple[Any, ...] | list[Any] = ()) -> list[dict[str, Any]]: ...

    def query_rows(self, row_type: type[RowT], sql: str,
                   params: tuple[Any, ...] | list[Any] = ()) -> list[RowT]: ...

    def close(self) -> None: ...
