"""What `flightdeck resume RUN` would do, read before it does it: whether the run may resume at all, which side
effects are recorded (they replay and are NOT run again), what runs again, what the run already spent (it counts
against the run's and the day's budgets), which run limits it resumes with and where they came from (its own
`--budget` and the budget changes applied while it ran: engine/controls/carried_limits.py), and which kill switch
the resume releases."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from engine.controls import carried_limits, kill_switches
from engine.controls.carried_limits import CarriedLimits
from engine.controls.reconcile import RESUMABLE, AwaitingCall, awaiting_calls, decisions, read_run, undecided
from engine.store.control_rows import KillSwitch
from engine.store.trace_rows import RunRow, SpanRow

if TYPE_CHECKING:
    from engine.controls.api import ControlAPI


@dataclass(frozen=True, slots=True)
class ResumePreview:
    run: RunRow
    refusal: str | None  # why this run cannot resume (then nothing else matters)
    recorded: list[SpanRow] = field(default_factory=list)  # side effects that replay, never run again
    reconciled: list[AwaitingCall] = field(default_factory=list)  # unknown side effects an operator decided
    releases: list[KillSwitch] = field(default_factory=list)  # kill switches on the run that the resume releases
    limits: CarriedLimits | None = None  # the run limits it resumes with (without an operator's --budget)


def refusal_for(run: RunRow, reconcile: list[AwaitingCall]) -> str | None:
    status = run.status
    attrs = run.attributes if isinstance(run.attributes, Mapping) else {}
    if status == "completed":
        return f"run {run.id} completed: there is nothing to resume"
    if status == "running":
        return (f"run {run.id} is running (engine {run.engine_id}): there is nothing to resume; if it is stuck, "
                f"stop it first (flightdeck kill --run {run.id} --reason ...)")
    if status == "needs_reconcile":
        waiting = undecided(reconcile)
        if waiting:
            return (f"run {run.id} waits for an operator to reconcile {len(waiting)} side effect(s) whose outcome "
                    f"is unknown: decide first (flightdeck reconcile {run.id})")
    elif status not in RESUMABLE:
        return (f"run {run.id} ended {status}: only a failed, killed, abandoned or budget_exceeded run (or a "
                "reconciled needs_reconcile one) resumes")
    if not attrs.get("durable"):
        return (f"run {run.id} is not a durable run (it was not started with --durable): nothing is recorded to "
                "resume it from; run it again instead")
    return None


def preview_resume(api: ControlAPI, run_id: str) -> ResumePreview:
    run, spans = read_run(api.location, run_id)
    with api.read() as conn:
        decided = decisions(conn, run.id)
        switches = kill_switches.active_for(conn, "run", run.id, None)
        limits = carried_limits.of_run(conn, run.id, run.attributes)
    calls = awaiting_calls(spans, decided)
    refusal = refusal_for(run, calls)
    if refusal is not None:
        return ResumePreview(run, refusal)
    recorded = [span for span in spans if span.kind == "tool" and span.status == "ok" and isinstance(
        span.attributes, Mapping) and span.attributes.get("side_effects") and not span.attributes.get("replayed")]
    return ResumePreview(run, None, recorded, [call for call in calls if call.decision is not None], switches,
                         limits)
