"""Serve mode's operator actions on runs: cancel (a queued run never starts; a running one is killed) and resume (as
`flightdeck resume`). Each is audited in control.db under the actor the HTTP layer names: a queued run's cancel is an
audit row of its own (action `cancel`, target `run:<id>`: a decision made once, like a reconcile decision), a running
run's is the kill switch on it, a resume is `record_resume`'s row."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import anyio

import engine as engine_package
from engine.durable import queues as durable_queues
from engine.runtime.control_link import control_location
from engine.serve.contracts import Refused, RunView

if TYPE_CHECKING:
    from engine.serve.service import FleetEngine

log = logging.getLogger(__name__)

async def cancel_run(service: FleetEngine, run_id: str, *, reason: str, actor: str) -> RunView:
    """A queued run never starts: DBOS cancels its workflow, an audit row (action `cancel`) records who and why,
    and a traces.db row shows it `cancelled`. A running run is stopped by a kill switch on it (audited like
    every switch). KeyError: no such run."""
    waiting = service.counts.waiting(run_id)
    if waiting is not None:
        member = service.members[waiting.queue]
        why = f"cancelled by {actor}: {reason}"
        # Marked before the first await: the gate (same loop) cannot start it in between; one held wakes and ends.
        service.cancelled[run_id] = why
        service.counts.gone(run_id)
        service.notify()
        await durable_queues.cancel(run_id)
        entry = await anyio.to_thread.run_sync(_audit_cancel, service, run_id, reason, actor)
        hierarchy, now = member.hierarchy, time.time()
        engine = service.engine
        engine.writer.run_started(run_id, hierarchy.name, hierarchy.source_hash, engine.store.engine_id,
                                  engine_package.__version__, None, None, waiting.tenant or None, waiting.submitted,
                                  {"queue": waiting.queue, "source": waiting.source, "cancelled_by": actor,
                                   "audit_id": entry})
        engine.tracer.event(run_id, None, "run.cancelled", name=hierarchy.name,
                            data={"by": actor, "reason": reason, "queue": waiting.queue, "audit_id": entry})
        service.engine.writer.run_ended(run_id, "cancelled", now, None, why)
        return RunView(run_id=run_id, hierarchy=hierarchy.name, state="cancelled", queue=waiting.queue,
                       tenant=waiting.tenant or None, source=waiting.source, submitted=waiting.submitted,
                       ended=now, error=why)
    view = await service.get_run(run_id)
    if view is None:
        raise KeyError(run_id)
    if view.state == "running" or service.counts.knows(run_id):  # started here (its row may not be written yet)
        await anyio.to_thread.run_sync(_kill_run, service, run_id, reason, actor)
    return view


def _audit_cancel(service: FleetEngine, run_id: str, reason: str, actor: str) -> int:
    from engine.controls.api import ControlAPI

    with ControlAPI(control_location(service.engine.store), actor) as api:
        return api.record_action("cancel", f"run:{run_id}", before={"state": "queued"},
                                 after={"state": "cancelled"}, reason=reason).id


def _kill_run(service: FleetEngine, run_id: str, reason: str, actor: str) -> None:
    from engine.controls.api import ControlAPI

    with ControlAPI(control_location(service.engine.store), actor) as api:
        api.set_kill("run", run_id, "kill", reason)


async def resume_run(service: FleetEngine, run_id: str, *, actor: str) -> RunView:
    """As `flightdeck resume`: refused (409) unless the run ended in a state it can carry on from; audited (and
    the kill switch on it released), then started again here as a new execution. KeyError: no such run."""
    from engine.controls.api import ControlAPI
    from engine.controls.resume_preview import preview_resume
    from engine.controls.run_requests import record_and_take
    from engine.errors import InputError
    from engine.runtime.call_paths import carry_on_refusal

    durable = service.engine.durable
    assert durable is not None and service.tasks is not None

    def record() -> str | None:
        with ControlAPI(control_location(service.engine.store), actor) as api:
            try:
                preview = preview_resume(api, run_id)
            except InputError:
                raise KeyError(run_id) from None
            refusal = preview.refusal or carry_on_refusal(preview.run)
            if refusal is not None:
                return refusal
            if durable.busy(preview.run.id):
                return f"run {preview.run.id} is being carried on by this engine already"
            # Recorded and taken by this engine in one transaction: its own control poll does not take it again.
            _entry, _released, taken = record_and_take(api, preview.run.id, preview.run.status, preview.run.ended,
                                                       limits=None, reason=f"resumed by {actor}",
                                                       engine_id=service.engine.store.engine_id,
                                                       attributes=preview.run.attributes)
            if taken is None:
                return f"run {preview.run.id} was taken by another resume request already"
            durable.mark_busy(preview.run.id)
            return None

    refusal = await anyio.to_thread.run_sync(record)
    if refusal is not None:
        raise Refused(409, refusal)
    controls = service.engine.controls
    with anyio.move_on_after(10):  # the engine sees the released switch before the run starts again
        while any(s.scope == "run" and s.target == run_id for s in controls.switches):
            await controls.wait_changed()

    async def again() -> None:
        try:
            await durable.resume_run(run_id)
        except Exception:  # recorded on the run; the service goes on
            durable.not_resumed(run_id, "the resume could not start")
            log.exception("resuming run %s failed", run_id)

    service.tasks.start_soon(again)
    view = await service.get_run(run_id)
    assert view is not None
    return view

