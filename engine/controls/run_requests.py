"""Requests that a durable run go on, and the one engine that takes each (issue 13: live pickup).

Two operator actions ask for a durable run to go on, and both are audit rows (engine/controls/reconcile.py): a
`resume` row (`flightdeck resume`, the console's R, serve's POST /runs/ID/resume), and the `reconcile` rows that
decide every side effect a `needs_reconcile` run waits on. A durable engine takes such a request either on start or
live, from its control poll (engine/runtime/durable_pickup.py), and only after writing a `resume_taken` audit row
(actor `engine:<id>`, target `run:<id>`, `after` = {run_id, request, kind, engine_id, ended}) in the same BEGIN
IMMEDIATE transaction that checked no such row exists yet for the same ending of the run (`ended`: the run row's end
when it was taken). control.db's write lock serializes every process, so of two engines, or two polls of one engine,
exactly one takes a run's ending; the run's next ending (after it ran again) can be taken again, by a new request.

A take whose start then fails (the engine could not start the run in DBOS: a damaged or locked durable.db) is given
back: the engine writes a `resume_released` audit row naming the take (`after` = {run_id, taken, engine_id, ended,
error}), and a released take no longer holds the ending, so the next request (`flightdeck resume`), or another
engine's start scan, takes it again. The engine that failed does not retry on its own: its watcher reads request
rows only, so a run that cannot start is not retried in a loop.

A `resume` row is still a request while it is newer than the run's last end (`ts > ended`) and nothing took that
ending: a resume that ran (in an engine, or in `flightdeck resume`'s own) ends the run again later, so an old row is
never obeyed twice. Like a reconcile decision, a row whose hash no longer matches its contents is not a request.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from engine.controls import audit
from engine.controls.reconcile import RECONCILE_ACTION, RESUME_ACTION, awaiting_calls, decisions, run_target
from engine.controls.resume_preview import refusal_for
from engine.store.audit_rows import decode_row, row_hash
from engine.store.control_rows import AuditEntry, KillSwitch
from engine.store.dialect import SqlConnection
from engine.store.rows import row_dicts

TAKEN_ACTION = "resume_taken"
RELEASED_ACTION = "resume_released"  # a take given back: its engine could not start the run
REQUEST_ACTIONS = (RESUME_ACTION, RECONCILE_ACTION)


@dataclass(frozen=True, slots=True)
class ResumeRequest:
    """An operator's `resume` audit row for a run: who asked, when, why, and the new run limits (or None)."""

    run_id: str
    audit_id: int
    operator: str
    ts: float
    reason: str
    limits: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class Taken:
    """A `resume_taken` audit row: which engine took which request for the run's ending `ended`."""

    run_id: str
    audit_id: int
    engine_id: str
    request: int
    kind: str  # "resume" or "reconcile"
    ended: float | None
    ts: float


def _intact_rows(conn: SqlConnection, action: str, run_id: str, after_id: int = 0) -> list[dict[str, Any]]:
    """The audit rows of `action` on the run (id order), decoded; rows altered after they were written are left out."""
    cursor = conn.execute("SELECT id, ts, actor, action, target, before, after, reason, prev_hash, hash FROM audit "
                          "WHERE action = ? AND target = ? AND id > ? ORDER BY id",
                          (action, run_target(run_id), int(after_id)))
    return [decode_row(raw) for raw in row_dicts(cursor) if row_hash(raw["prev_hash"], raw) == raw["hash"]]


def head(conn: SqlConnection) -> int:
    """The newest audit row's id (0 for an empty log): where a poll for new requests starts."""
    return audit.newest_id(conn) or 0


def runs_asked_since(conn: SqlConnection, after_id: int) -> tuple[list[str], int]:
    """Runs named by `resume` or `reconcile` rows newer than `after_id` (each once, oldest first), and the id to
    pass next time. One range read on the primary key: cheap enough for every control.db change."""
    rows = conn.execute(f"SELECT id, target FROM audit WHERE id > ? AND action IN "
                        f"({', '.join('?' * len(REQUEST_ACTIONS))}) ORDER BY id",
                        (int(after_id), *REQUEST_ACTIONS)).fetchall()
    runs: dict[str, None] = {}
    for _id, target in rows:
        if isinstance(target, str) and target.startswith("run:"):
            runs[target[len("run:"):]] = None
    newest = conn.execute("SELECT MAX(id) FROM audit").fetchone()
    return list(runs), max(int(after_id), int(newest[0] or 0))


def released(conn: SqlConnection, run_id: str) -> dict[int, str]:
    """The run's takes that their engine gave back (`resume_released` rows): take audit id -> why."""
    given_back = {}
    for row in _intact_rows(conn, RELEASED_ACTION, run_id):
        after = row["after"] if isinstance(row["after"], Mapping) else {}
        if isinstance(after.get("taken"), int):
            given_back[int(after["taken"])] = str(after.get("error") or row["reason"] or "")
    return given_back


def takes(conn: SqlConnection, run_id: str, after_id: int = 0, *, given_back: bool = False) -> list[Taken]:
    """The `resume_taken` rows of a run newer than `after_id` that still hold (with `given_back`: those given back
    too), oldest first."""
    found = []
    gone = {} if given_back else released(conn, run_id)
    for row in _intact_rows(conn, TAKEN_ACTION, run_id, after_id):
        if int(row["id"]) in gone:
            continue
        after = row["after"] if isinstance(row["after"], Mapping) else {}
        ended = after.get("ended")
        found.append(Taken(run_id=run_id, audit_id=int(row["id"]), engine_id=str(after.get("engine_id") or ""),
                           request=int(after.get("request") or 0), kind=str(after.get("kind") or ""),
                           ended=None if ended is None else float(ended), ts=float(row["ts"])))
    return found


def taken_ending(conn: SqlConnection, run_id: str, ended: float | None) -> Taken | None:
    """Who took the run's ending `ended` already, or None."""
    for taken in takes(conn, run_id):
        if taken.ended == ended:
            return taken
    return None


def resume_request(conn: SqlConnection, run_id: str, ended: float | None) -> ResumeRequest | None:
    """The newest `resume` row for the run still asking (newer than its end `ended`, that ending not taken), or
    None."""
    rows = _intact_rows(conn, RESUME_ACTION, run_id)
    if not rows:
        return None
    row = rows[-1]
    if ended is not None and float(row["ts"]) <= ended:
        return None  # it was obeyed already: the run ran again and ended after it
    if taken_ending(conn, run_id, ended) is not None:
        return None
    after = row["after"] if isinstance(row["after"], Mapping) else {}
    limits = after.get("limits")
    return ResumeRequest(run_id=run_id, audit_id=int(row["id"]), operator=str(row["actor"]), ts=float(row["ts"]),
                         reason=str(row["reason"] or ""), limits=dict(limits) if isinstance(limits, Mapping) else None)


def take(conn: SqlConnection, run_id: str, *, request: int, kind: str, ended: float | None, engine_id: str,
         now: float) -> AuditEntry | None:
    """Take the run's ending `ended` for `engine_id` (call inside the caller's BEGIN IMMEDIATE transaction): the
    `resume_taken` row, or None when someone took it already (then the caller must not run it)."""
    if taken_ending(conn, run_id, ended) is not None:
        return None
    return audit.append(conn, ts=now, actor=f"engine:{engine_id}", action=TAKEN_ACTION, target=run_target(run_id),
                        after={"run_id": run_id, "request": request, "kind": kind, "engine_id": engine_id,
                               "ended": ended}, reason=f"{kind} request (audit row {request}) taken")


def release(conn: SqlConnection, run_id: str, *, taken: int, ended: float | None, engine_id: str, error: str,
            now: float) -> AuditEntry:
    """Give back the take `taken` (its audit id) of `engine_id`, which could not start the run: the ending it held
    can be taken again."""
    return audit.append(conn, ts=now, actor=f"engine:{engine_id}", action=RELEASED_ACTION, target=run_target(run_id),
                        after={"run_id": run_id, "taken": taken, "engine_id": engine_id, "ended": ended,
                               "error": error}, reason=f"could not start the run: {error}")


@dataclass(frozen=True, slots=True)
class Pending:
    """A run a durable engine may take now: `kind` "resume" (an operator's resume row, `request` its id, `limits`
    its new run limits) or "reconcile" (every waiting side effect decided, `request` the last decision's id)."""

    run_id: str
    kind: str
    request: int
    ended: float | None
    status: str
    limits: dict[str, Any] | None = None
    taken: int = 0  # the `resume_taken` row's id, once an engine took it


def pending(conn: SqlConnection, reader: Any, run_id: str) -> Pending | None:
    """What asks for `run_id` to go on now, or None: it may not resume (running, completed, not durable, a side
    effect still undecided: resume_preview.refusal_for), nothing asks, or its ending was taken already. `reader`:
    an open TraceReader (the run's row and spans)."""
    row = reader.get_run(run_id)
    if row is None or row.id != run_id:
        return None
    calls = awaiting_calls(reader.spans(run_id), decisions(conn, run_id)) if row.status == "needs_reconcile" else []
    if refusal_for(row, calls) is not None:
        return None
    asked = resume_request(conn, run_id, row.ended)
    if asked is not None:
        return Pending(run_id, RESUME_ACTION, asked.audit_id, row.ended, row.status, asked.limits)
    if row.status != "needs_reconcile" or not calls or taken_ending(conn, run_id, row.ended) is not None:
        return None
    last = max(call.decision.audit_id for call in calls if call.decision is not None)
    return Pending(run_id, RECONCILE_ACTION, last, row.ended, row.status)


def runs_ever_asked(conn: SqlConnection) -> list[str]:
    """Every run a `resume` row names (an engine's start looks at each once; most are long obeyed)."""
    rows = conn.execute("SELECT DISTINCT target FROM audit WHERE action = ?", (RESUME_ACTION,)).fetchall()
    return [str(target)[len("run:"):] for (target,) in rows if isinstance(target, str) and target.startswith("run:")]


def record_and_take(api: Any, run_id: str, status: str, ended: float | None, *, limits: Mapping[str, Any] | None,
                    reason: str, engine_id: str, attributes: Mapping[str, Any] | None = None
                    ) -> tuple[AuditEntry, list[KillSwitch], Taken | None]:
    """An operator's resume carried on by the engine the caller runs (`flightdeck resume` with the store free, serve's
    POST /runs/ID/resume): the `resume` row and its `resume_taken` row in one transaction, so no engine's poll takes
    it as well. Taken is None when another engine took this ending first (then the caller must not run it, unless it
    holds the store alone). `api`: a ControlAPI; `attributes`: the run row's (the audit row records the run limits
    it resumes with: reconcile.record_resume)."""
    from engine.controls.reconcile import record_resume
    from engine.controls.validate import required_text

    reason = required_text(reason, "reason")
    with api.transaction() as conn:
        entry, released = record_resume(conn, run_id, status, limits=limits, reason=reason, operator=api.operator,
                                        now=api.now(), attributes=attributes)
        row = take(conn, run_id, request=entry.id, kind=RESUME_ACTION, ended=ended, engine_id=engine_id,
                   now=api.now())
    taken = None if row is None else Taken(run_id=run_id, audit_id=row.id, engine_id=engine_id, request=entry.id,
                                           kind=RESUME_ACTION, ended=ended, ts=row.ts)
    return entry, released, taken
