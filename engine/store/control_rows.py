"""control.db's typed rows: what the control plane (engine.controls) returns, one frozen, slotted dataclass per table
(and per partial read). Fields are the table's columns in column order, so `as_dict()` is the JSON shape the CLI's
`--json` printed when rows were dicts. JSON columns come back parsed (`JsonRow.json_columns`); a value that does not
parse is kept as its text (written by us, so never expected, but a listing must not crash on it).

`audit_hash` (schema v4, engine.controls.binding) defaults to None: a read-only reader may open an older control.db
as it is, without that column.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from engine.store.rows import RowT, TypedRow

__all__ = [
    "BOUND_ROW_TYPES", "Approval", "ApprovalAlert", "ApprovalDeadline", "ApprovalExpiry", "AuditEntry",
    "BreakerOverride", "BudgetOverride", "ControlRow", "EngineRecord", "EngineStatus", "FlagSetting", "Incident",
    "IncidentEvent", "IncidentNote", "IncidentSummary", "JsonRow", "KillSwitch", "KillSwitchAck", "KillSwitchSet",
    "RunbookApplication",
    "parsed_json",
]


def parsed_json(value: Any) -> Any:
    """`value` parsed when it is JSON text; anything else (or text that does not parse) as it is."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


class JsonRow(TypedRow):
    """A typed row with JSON text columns, parsed as the row is built."""

    __slots__ = ()
    json_columns: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def from_row(cls: type[RowT], names: Sequence[str], values: Sequence[Any]) -> RowT:
        data = dict(zip(names, values))
        for column in getattr(cls, "json_columns", ()):
            if column in data:
                data[column] = parsed_json(data[column])
        return cls(**data)


@dataclass(frozen=True, slots=True)
class KillSwitch(TypedRow):
    id: int
    scope: str
    target: str | None
    run_id: str | None
    mode: str
    reason: str
    operator: str
    created: float
    released: float | None = None
    released_by: str | None = None
    release_reason: str | None = None
    acked: float | None = None
    acked_by: str | None = None
    audit_hash: str | None = None


@dataclass(frozen=True, slots=True)
class KillSwitchAck(TypedRow):
    """One engine applied one switch (kill_switch_acks, control.db v6): on a Postgres store, one per engine."""

    switch_id: int
    engine_id: str
    acked: float


@dataclass(frozen=True, slots=True)
class KillSwitchSet(KillSwitch):
    """ControlAPI.set_kill's answer: the switch, and whether an identical one was already active (then it is that
    one, not a new row)."""

    already_active: bool = False


@dataclass(frozen=True, slots=True)
class FlagSetting(TypedRow):
    id: int
    name: str
    value: str
    scope: str
    target: str | None
    previous_value: str | None
    source: str
    reason: str
    operator: str
    created: float
    cleared: float | None = None
    cleared_by: str | None = None
    clear_reason: str | None = None
    acked: float | None = None
    audit_hash: str | None = None


@dataclass(frozen=True, slots=True)
class Approval(JsonRow):
    """`arguments` and `edited_arguments` parsed from their JSON text."""

    json_columns: ClassVar[tuple[str, ...]] = ("arguments", "edited_arguments")

    id: str
    run_id: str
    span_id: str | None
    agent: str
    tool: str
    arguments: Any
    args_hash: str
    risk: str | None
    reason: str | None
    requested: float
    deadline: float
    window_s: float
    level: int
    on_timeout: str
    status: str
    decided: float | None = None
    decided_by: str | None = None
    decision_reason: str | None = None
    edited_arguments: Any = None
    decided_seq: int | None = None
    engine_id: str | None = None
    audit_hash: str | None = None
    call_key: str | None = None  # a durable run's call (`<run>:<call path>`): its resume finds this request


@dataclass(frozen=True, slots=True)
class ApprovalExpiry(Approval):
    """ControlAPI.expire_approval's answer: the row after the policy ran, and what happened ('timed_out',
    'approved', 'escalated' or 'unchanged')."""

    outcome: str = "unchanged"


@dataclass(frozen=True, slots=True)
class ApprovalDeadline(TypedRow):
    """A pending approval as the console header's approvals slot reads it."""

    id: str
    tool: str
    deadline: float


@dataclass(frozen=True, slots=True)
class ApprovalAlert(TypedRow):
    """A pending approval as the console's approval alerts read it."""

    id: str
    agent: str
    tool: str
    deadline: float
    risk: str | None


@dataclass(frozen=True, slots=True)
class BreakerOverride(TypedRow):
    id: int
    key: str
    action: str
    reason: str
    operator: str
    source: str
    created: float
    applied: float | None = None
    applied_by: str | None = None
    audit_hash: str | None = None


@dataclass(frozen=True, slots=True)
class BudgetOverride(JsonRow):
    """`limits` parsed from its JSON text: {dimension: number or None}."""

    json_columns: ClassVar[tuple[str, ...]] = ("limits",)

    id: int
    run_id: str
    limits: Any
    reason: str
    operator: str
    source: str
    created: float
    applied: float | None = None
    audit_hash: str | None = None


@dataclass(frozen=True, slots=True)
class AuditEntry(JsonRow):
    """One row of the hash-chained audit log, `before` and `after` parsed from their JSON text."""

    json_columns: ClassVar[tuple[str, ...]] = ("before", "after")

    id: int
    ts: float
    actor: str
    action: str
    target: str | None
    before: Any
    after: Any
    reason: str | None
    prev_hash: str
    hash: str


@dataclass(frozen=True, slots=True)
class EngineRecord(TypedRow):
    id: str
    pid: int
    host: str
    user: str
    version: str
    started: float
    heartbeat: float
    stopped: float | None = None
    # What an engine on a Postgres store publishes about itself (trace schema v5: durable, store and export health),
    # a JSON object's text; None on control.db (the lock file holds it there) and for rows from before v5.
    published: str | None = None


@dataclass(frozen=True, slots=True)
class EngineStatus(EngineRecord):
    """An engine as `ControlDB.list_engines` reports it: `alive` (running, heartbeat fresh) and `stale` (not
    stopped, but no heartbeat for more than STALE_AFTER_S: hung or killed without cleanup)."""

    alive: bool = False
    stale: bool = False


@dataclass(frozen=True, slots=True)
class Incident(JsonRow):
    json_columns: ClassVar[tuple[str, ...]] = ("signals", "last_signals", "context", "suggested", "paged_targets")

    id: str
    runbook: str
    title: str
    severity: str
    scope: str
    apply_mode: str
    status: str
    firing: int
    fired: int
    opened: float
    updated: float
    cleared: float | None
    signals: Any
    last_signals: Any
    context: Any = None
    suggested: Any = None
    acknowledged: float | None = None
    acknowledged_by: str | None = None
    resolved: float | None = None
    resolved_by: str | None = None
    resolution: str | None = None
    paged_targets: Any = None
    page_synced: str | None = None
    engine_id: str | None = None


@dataclass(frozen=True, slots=True)
class IncidentSummary(TypedRow):
    """What the console's incident header slot reads of an incident not resolved (`context` left as JSON text)."""

    id: str
    severity: str
    status: str
    firing: int
    runbook: str
    scope: str
    context: str | None
    opened: float


@dataclass(frozen=True, slots=True)
class IncidentEvent(JsonRow):
    """One time line entry, `data` parsed from its JSON text."""

    json_columns: ClassVar[tuple[str, ...]] = ("data",)

    id: int
    incident_id: str
    ts: float
    kind: str
    actor: str
    text: str
    data: Any = None


@dataclass(frozen=True, slots=True)
class IncidentNote(TypedRow):
    """A time line entry as the console's incident slot shows it."""

    ts: float
    kind: str
    actor: str
    text: str


@dataclass(frozen=True, slots=True)
class RunbookApplication(JsonRow):
    """What one application of a runbook changed; the JSON columns parsed."""

    json_columns: ClassVar[tuple[str, ...]] = ("actions", "context", "rollback", "rollback_report")

    id: int
    runbook: str
    scope: str
    incident_id: str | None
    actor: str
    reason: str
    applied: float
    actions: Any
    context: Any
    rollback: Any
    rollback_due: float | None = None
    rolled_back: float | None = None
    rolled_back_by: str | None = None
    rollback_report: Any = None


# A row of a table whose rows are bound to their audit rows (engine.controls.binding), and each such table's row.
ControlRow = KillSwitch | FlagSetting | Approval | BreakerOverride | BudgetOverride
BOUND_ROW_TYPES: dict[str, type[ControlRow]] = {
    "kill_switches": KillSwitch, "flags": FlagSetting, "approvals": Approval, "breaker_overrides": BreakerOverride,
    "budget_overrides": BudgetOverride,
}
