"""Operator decisions on durable runs: reconcile a side effect whose outcome is unknown, resume an ended run.

A side effect a durable engine died during (started, outcome never recorded; engine/runtime/side_effects.py) of a
tool not declared idempotent ends its run `needs_reconcile`. The tool span that stopped the run has status
`outcome_unknown` and names the call: `needs_reconcile`, `idempotency_key` (the durable key of the attempt whose
outcome is unknown, `<run>:<call path>[#n]`) and `call` (the path). An operator decides, once per key:

- `done`: it happened. The recorded outcome becomes "confirmed done by <operator>: <note>"; it never runs again.
- `again`: run it again under the same `ctx.idempotency_key` (the operator accepts the risk of a second effect).
- `fail`: the run ends `failed`, with the note as its error.

A decision is written once and never changes state, which is exactly what an audit row is: the decision IS its
audit row (action `reconcile`, target `run:<id>`, `after` = {run_id, key, call, decision, note}); there is no
control table (so no binding column to keep in step). The engine obeys only a row whose own hash still matches its
contents (`decisions()` skips altered rows), and `audit verify` checks the chain as for every action. `resume`
(`flightdeck resume`) is an audit row too (action `resume`), written with the release of the run's kill switch, if
an operator's switch stopped it, in one transaction.

Functions take the caller's connection (writes: inside its BEGIN IMMEDIATE transaction), like the other concept
modules; what awaits a decision is read from traces.db (`awaiting_calls`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.controls import audit, kill_switches
from engine.controls.errors import ControlError
from engine.controls.validate import required_text
from engine.errors import InputError
from engine.store.audit_rows import decode_row, row_hash
from engine.store.control_rows import AuditEntry, KillSwitch
from engine.store.dialect import SqlConnection
from engine.store.location import StoreDirectory, StoreLocation
from engine.store.rows import row_dicts
from engine.store.trace_rows import RunRow, SpanRow

RECONCILE_ACTION = "reconcile"
RETRY_ACTION = "retry"
RESUME_ACTION = "resume"
DECISIONS = ("done", "again", "fail")
RESUMABLE = ("failed", "killed", "abandoned", "budget_exceeded")  # and needs_reconcile once every call is decided


def run_target(run_id: str) -> str:
    return f"run:{run_id}"


@dataclass(frozen=True, slots=True)
class Decision:
    """An operator's decision on one side-effect key (its audit row: `audit_id`)."""

    run_id: str
    key: str
    call: str
    decision: str
    note: str
    operator: str
    ts: float
    audit_id: int


@dataclass(frozen=True, slots=True)
class AwaitingCall:
    """A side effect with an unknown outcome: the tool span that stopped its run, and its durable key."""

    run_id: str
    key: str
    call: str
    span_id: str
    agent: str | None
    tool: str
    args: Any
    error: str | None
    decision: Decision | None = None  # set when an operator already decided it


def decisions(conn: SqlConnection, run_id: str) -> dict[str, Decision]:
    """The decisions recorded for `run_id`, by key (the first one per key; an audit row whose hash no longer matches
    its contents is not a decision)."""
    cursor = conn.execute("SELECT id, ts, actor, action, target, before, after, reason, prev_hash, hash FROM audit "
                          "WHERE action = ? AND target = ? ORDER BY id", (RECONCILE_ACTION, run_target(run_id)))
    found: dict[str, Decision] = {}
    for raw in row_dicts(cursor):
        if row_hash(raw["prev_hash"], raw) != raw["hash"]:
            continue  # altered after it was written: not obeyed (audit verify reports it)
        after = decode_row(raw)["after"]
        if not isinstance(after, Mapping) or after.get("decision") not in DECISIONS:
            continue
        key = str(after.get("key"))
        found.setdefault(key, Decision(run_id=run_id, key=key, call=str(after.get("call") or ""),
                                       decision=str(after["decision"]), note=str(after.get("note") or ""),
                                       operator=str(raw["actor"]), ts=float(raw["ts"]), audit_id=int(raw["id"])))
    return found


def record(conn: SqlConnection, call: AwaitingCall, decision: str, note: str, *, operator: str,
           now: float) -> Decision:
    """Write the decision (its audit row). A key already decided is refused (ControlError): one decision per key."""
    if decision not in DECISIONS:
        raise ControlError(f"unknown decision {decision!r}: use one of {', '.join(DECISIONS)}")
    earlier = decisions(conn, call.run_id).get(call.key)
    if earlier is not None:
        raise ControlError(f"side effect {call.key} was already reconciled ({earlier.decision}, by "
                           f"{earlier.operator}, audit row {earlier.audit_id})")
    entry = audit.append(conn, ts=now, actor=operator, action=RECONCILE_ACTION, target=run_target(call.run_id),
                         after={"run_id": call.run_id, "key": call.key, "call": call.call, "tool": call.tool,
                                "decision": decision, "note": note}, reason=note)
    return Decision(run_id=call.run_id, key=call.key, call=call.call, decision=decision, note=note,
                    operator=operator, ts=now, audit_id=entry.id)


def record_resume(conn: SqlConnection, run_id: str, status: str, *, limits: Mapping[str, Any] | None,
                  reason: str, operator: str, now: float, attributes: Mapping[str, Any] | None = None
                  ) -> tuple[AuditEntry, list[KillSwitch]]:
    """Audit an operator's resume of `run_id` (which ended `status`), releasing every active kill switch on the
    run itself (what stopped it; a run killed by an operator resumes only this way). Returns the audit row and the
    released switches. `attributes`: the run row's (its `budget`, `budget_through`): with them (or `limits`) the
    row's `budget` says which run limits the resumed run starts with and where they came from
    (engine/controls/carried_limits.py)."""
    from engine.controls import carried_limits

    released = [kill_switches.release(conn, row, actor=operator, reason=f"resumed: {reason}", now=now)
                for row in kill_switches.active_for(conn, "run", run_id, None)]
    carried = carried_limits.replaced(conn, run_id, limits) if limits else (
        None if attributes is None else carried_limits.of_run(conn, run_id, attributes))
    entry = audit.append(conn, ts=now, actor=operator, action=RESUME_ACTION, target=run_target(run_id),
                         after={"run_id": run_id, "status": status, "limits": dict(limits) if limits else None,
                                "budget": None if carried is None else carried.sources(),
                                "released_switches": [row.id for row in released]}, reason=reason)
    return entry, released


def record_retry(conn: SqlConnection, run_id: str, *, span: str, path: str, new_run_id: str, replays: int,
                 side_effects_again: list[str], reason: str, operator: str, now: float,
                 budget: Mapping[str, Any] | None = None, budget_source: str = "original",
                 budget_changes: list[dict[str, Any]] | None = None) -> AuditEntry:
    """Audit an operator's retry of `run_id` from `span` (engine/runtime/retry.py): written before the new run
    `new_run_id` starts. The original run is not changed. `budget`: the run budget overrides the retry starts with
    (None: the hierarchy's limits); `budget_source`: "original" (the original's), "operator" (given on the retry)
    or "unknown" (the original's row predates recording them); `budget_changes`: the original's budget changes
    (`flightdeck budget` while it ran) folded into `budget` (engine/controls/carried_limits.py)."""
    return audit.append(conn, ts=now, actor=operator, action=RETRY_ACTION, target=run_target(run_id),
                        after={"run_id": run_id, "span": span, "path": path, "new_run_id": new_run_id,
                               "replays": replays, "side_effects_again": side_effects_again,
                               "budget": None if budget is None else dict(budget), "budget_source": budget_source,
                               "budget_changes": list(budget_changes or [])},
                        reason=reason)


def awaiting_calls(spans: list[Any], decided: Mapping[str, Decision]) -> list[AwaitingCall]:
    """The side effects of one run that stopped it `needs_reconcile` (from its tool spans, oldest first), each with
    its decision if there is one. A key appears once (a later generation may stop on the same key again)."""
    found: dict[str, AwaitingCall] = {}
    for span in spans:
        attrs = span.attributes if isinstance(span.attributes, Mapping) else {}
        if span.kind != "tool" or span.status != "outcome_unknown" or not attrs.get("needs_reconcile"):
            continue
        key = attrs.get("idempotency_key")
        if not isinstance(key, str) or key in found:
            continue
        found[key] = AwaitingCall(run_id=span.run_id, key=key, call=str(attrs.get("call") or ""), span_id=span.id,
                                  agent=span.agent, tool=span.name, args=attrs.get("args"),
                                  error=attrs.get("error"), decision=decided.get(key))
    return list(found.values())


def undecided(calls: list[AwaitingCall]) -> list[AwaitingCall]:
    return [call for call in calls if call.decision is None]


def pick(calls: list[AwaitingCall], wanted: str | None, run_id: str) -> AwaitingCall:
    """The undecided call `wanted` names (span id, durable key, or call path; a unique prefix of a span id or key),
    or the only one when `wanted` is None. ControlError naming what there is otherwise."""
    open_calls = undecided(calls)
    listing = "; ".join(f"{c.span_id} {c.tool} ({c.key})" for c in open_calls) or "none"
    if wanted is None:
        if len(open_calls) == 1:
            return open_calls[0]
        if not open_calls:
            decided = ", ".join(f"{c.key} ({c.decision.decision} by {c.decision.operator})" for c in calls
                                if c.decision is not None)
            raise ControlError(f"run {run_id} has no side effect awaiting reconcile" + (
                f": already reconciled: {decided}" if decided else ""))
        raise ControlError(f"run {run_id} has {len(open_calls)} side effects awaiting reconcile: pass --call "
                           f"with one of: {listing}")
    matches = [c for c in calls if wanted in (c.span_id, c.key, c.call)] or [
        c for c in calls if c.span_id.startswith(wanted) or c.key.startswith(wanted)]
    if len(matches) > 1:
        raise ControlError(f"--call {wanted!r} matches several side effects: {listing}")
    if matches:
        match = matches[0]
        if match.decision is not None:
            raise ControlError(f"side effect {match.key} was already reconciled ({match.decision.decision}, by "
                               f"{match.decision.operator}, audit row {match.decision.audit_id})")
        return match
    raise ControlError(f"--call {wanted!r} is not a side effect of run {run_id} whose outcome is unknown "
                       f"(awaiting reconcile: {listing})")


def read_run(store: Path | StoreLocation, run_id: str) -> tuple[RunRow, list[SpanRow]]:
    """A run (a unique id prefix is enough) and its spans, from the trace store (traces.db, or a Postgres store's
    trace tables); InputError when there is no such run."""
    from engine.store import open_trace_reads

    run_id = required_text(run_id, "run_id")
    location = StoreDirectory(store) if isinstance(store, Path) else store
    reader = open_trace_reads(location)
    try:
        row = reader.get_run(run_id)
        if row is None:
            raise InputError(f"no run {run_id!r} in store {location}")
        return row, reader.spans(row.id)
    finally:
        reader.close()


def runs_waiting(store: Path | StoreLocation) -> list[RunRow]:
    """Every run that ended needs_reconcile (newest first); none on a store no engine has written traces to."""
    from engine.store import open_reader
    from engine.store.files import TRACES_DB
    from engine.store.location import PostgresLocation

    if isinstance(store, PostgresLocation):
        from engine.store.pg.reader import PgTraceReader

        found = PgTraceReader.connect_if_present(store)
        if found is None:
            return []
        try:
            return found.list_runs(limit=10_000, status="needs_reconcile")
        finally:
            found.close()
    store_dir = store.path if isinstance(store, StoreDirectory) else store
    if not (store_dir / TRACES_DB).is_file():
        return []
    with open_reader(store_dir) as reader:
        return reader.list_runs(limit=10_000, status="needs_reconcile")
