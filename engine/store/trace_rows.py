"""Typed rows of traces.db as TraceReader (and the store's other trace readers) return them.

Each class's fields are its table's columns in table order; JSON columns (input, output, attributes, data) hold the
parsed value. The reader selects exactly `column_list(RowType)` and builds rows positionally (rows.row_builder), so a
column added by a later migration appears here only when a field is added for it. `as_dict()` gives the old dict
shape (the CLI's `--json` edges use it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.store.rows import TypedRow

__all__ = [
    "AgentUsage",
    "BreakerRow",
    "BudgetRow",
    "DegradedCall",
    "EngineRow",
    "EventRow",
    "ModelUsage",
    "RunRow",
    "RunSpend",
    "SpanNode",
    "SpanRow",
    "TenantUsage",
    "ToolUsage",
    "TopRun",
    "UsageReport",
    "UsageTotals",
]


@dataclass(frozen=True, slots=True)
class RunRow(TypedRow):
    """A row of `runs`. From `list_runs`, `input` and `output` are None (not read: see TraceReader.get_run)."""

    id: str
    hierarchy: str
    hierarchy_hash: str | None
    engine_id: str | None
    engine_version: str | None
    status: str
    tenant: str | None
    seed: int | None
    input: Any
    output: Any
    error: str | None
    started: float
    ended: float | None
    tokens_in: int
    tokens_out: int
    cost_usd: float
    model_calls: int
    tool_calls: int
    agents_active: int
    attributes: Any
    last_seq: int
    resumed: int  # times this durable run resumed after its engine died (schema v4, from attributes)
    replayed_steps: int  # recorded steps (model calls, tool calls) it replayed instead of running again


@dataclass(frozen=True, slots=True)
class DegradedCall(TypedRow):
    """A tool call a run tried and the engine withheld or an operator denied (TraceReader.degraded_calls): a
    completed run with one is `completed (degraded)`. `kind` is the span's error_kind (withheld, circuit_open,
    kill_switch, approval_denied, approval_expired, ...); `reason` the message the model got."""

    run_id: str
    tool: str
    kind: str
    reason: str


@dataclass(frozen=True, slots=True)
class RunSpend(TypedRow):
    """When a run started and what it cost (the engine's daily-spend window)."""

    started: float
    cost_usd: float


@dataclass(frozen=True, slots=True)
class SpanRow(TypedRow):
    """A row of `spans`."""

    id: str
    run_id: str
    parent_id: str | None
    kind: str
    agent: str | None
    name: str
    status: str
    started: float
    ended: float | None
    tokens_in: int
    tokens_out: int
    cost_usd: float
    model: str | None
    attributes: Any
    last_seq: int


@dataclass(slots=True)
class SpanNode:
    """One node of a run's span tree (TraceReader.span_tree): a span and its children, ordered by start. The
    synthetic root that joins several roots has `span` None and takes its run id and start from its first span."""

    span: SpanRow | None
    run_id: str
    started: float
    children: list[SpanNode] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class EventRow(TypedRow):
    """A row of `events`; `data` parsed."""

    seq: int
    ts: float
    run_id: str | None
    span_id: str | None
    kind: str
    agent: str | None
    name: str | None
    data: Any


@dataclass(frozen=True, slots=True)
class EngineRow(TypedRow):
    """A row of `engines` (every engine that wrote to the store)."""

    id: str
    pid: int
    host: str
    user: str
    version: str
    started: float
    stopped: float | None


@dataclass(frozen=True, slots=True)
class BreakerRow(TypedRow):
    """A row of `breakers`: one breaker's state as the engine last published it."""

    hierarchy: str
    key: str
    kind: str
    name: str
    state: str
    failure_rate: float | None
    slow_call_rate: float | None
    calls_in_window: int | None
    failed_calls: int | None
    slow_calls: int | None
    not_permitted_calls: int | None
    next_probe_at: float | None
    since: float | None
    updated: float


@dataclass(frozen=True, slots=True)
class BreakerFleetRow(TypedRow):
    """One breaker across a fleet (a Postgres store, where each engine publishes its own view of it): how many
    engines publish it (not stopped) and how many of them see it open (open or forced open)."""

    hierarchy: str
    key: str
    engines: int
    open: int


@dataclass(frozen=True, slots=True)
class EngineLoadRow(TypedRow):
    """How many runs an engine is running now (runs.engine_id; None: runs recorded without one)."""

    engine_id: str | None
    active: int


@dataclass(frozen=True, slots=True)
class EngineQueueRow(TypedRow):
    """A serve-mode queue an engine publishes (a Postgres store: queues carry the engine id)."""

    engine_id: str
    queue: str


@dataclass(frozen=True, slots=True)
class BudgetRow(TypedRow):
    """A row of `budgets`: one budget scope of a run (`run`, `agent:SPAN`); `data` = dimension -> used, reserved,
    limit, fraction, burn_rate_per_min, time_to_exhaustion_s."""

    run_id: str
    scope: str
    agent: str | None
    data: Any
    updated: float


# -- usage reports ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AgentUsage(TypedRow):
    agent: str | None
    tokens_in: int
    tokens_out: int
    cost_usd: float
    model_calls: int
    tool_calls: int


@dataclass(frozen=True, slots=True)
class ModelUsage(TypedRow):
    model: str | None
    tokens_in: int
    tokens_out: int
    cost_usd: float
    model_calls: int


@dataclass(frozen=True, slots=True)
class UsageTotals(TypedRow):
    tokens_in: int
    tokens_out: int
    cost_usd: float
    model_calls: int
    tool_calls: int


@dataclass(frozen=True, slots=True)
class UsageReport:
    """TraceReader.usage: per agent and per model, most expensive first, and the total."""

    agents: list[AgentUsage]
    models: list[ModelUsage]
    total: UsageTotals


@dataclass(frozen=True, slots=True)
class ToolUsage(TypedRow):
    tool: str
    calls: int
    failed: int


@dataclass(frozen=True, slots=True)
class TenantUsage(TypedRow):
    tenant: str
    runs: int
    tokens_in: int | None
    tokens_out: int | None
    cost_usd: float | None


@dataclass(frozen=True, slots=True)
class TopRun(TypedRow):
    id: str
    hierarchy: str
    status: str
    tenant: str
    tokens_in: int
    tokens_out: int
    cost_usd: float


@dataclass(frozen=True, slots=True)
class QueueRow(TypedRow):
    """A row of `queues`: one serve-mode queue (tenant "") or one tenant of it, as the engine last published it
    (engine/serve/). `admission`: open, paused or draining. As a state tuple for writer.state("queues", (queue,
    tenant), row): the fields in this order."""

    queue: str
    tenant: str
    hierarchy: str
    depth: int
    running: int
    oldest_age_s: float | None
    admitted_per_min: float
    rejected_total: int
    max_depth: int | None
    concurrency: int | None
    rate_limit: str | None
    admission: str
    updated: float


@dataclass(frozen=True, slots=True)
class ScheduleRow(TypedRow):
    """A row of `schedules`: a fleet.yaml schedule's next and last fire time, as the engine last published it."""

    name: str
    hierarchy: str
    cron: str
    missed: str
    next_fire: float | None
    last_fire: float | None
    last_run_id: str | None
    updated: float
