"""Serve mode's engine side: `open_fleet` opens one durable Engine on a store with a DBOS queue per hierarchy of the
fleet, and FleetEngine (the contracts.FleetService the HTTP layer calls) admits submissions onto them, holds the
runs a paused queue dequeues, reports runs and queues, cancels and resumes, drains. What DBOS owns and what is
counted here: docs/architecture.md "Serve mode: queues and admission"."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

import engine as engine_package
from engine.durable import queues as durable_queues
from engine.durable.keys import PATH_FORMAT, run_id_for_key
from engine.runtime.durable_carry_on import NotStarted
from engine.runtime.engine import Engine
from engine.serve import admission
from engine.serve.contracts import Admitted, Health, Refused, RunView, Submission
from engine.serve.fleet import FleetFile, WebhookSpec
from engine.serve.fleet_depth import FleetDepth, FleetFull
from engine.serve.members import Member, check_input, load_members
from engine.serve.queue_state import FleetCounts, QueueCounts
from engine.serve.shared_queues import Tracked
from engine.serve.views import queue_rows, state_tuple
from engine.store import open_engine_store
from engine.store.location import PostgresLocation

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

    from engine.serve.schedules import Scheduler
    from engine.store.trace_rows import QueueRow, ScheduleRow

log = logging.getLogger(__name__)
PUBLISH_EVERY_S = 1.0


@dataclass(frozen=True, slots=True)
class DrainReport:
    """What a drain left: how many runs finished during it, and the runs still queued or running when its grace
    ran out (handed back: DBOS keeps them, the next engine on the store starts or resumes them)."""

    finished: int
    handed_back: list[str] = field(default_factory=list)


class FleetEngine:
    """The FleetService of one `flightdeck serve`. Every method is called on the engine's event loop."""

    def __init__(self, engine: Engine, members: dict[str, Member], fleet: FleetFile) -> None:
        self.engine = engine
        self.members = members
        self.fleet = fleet
        self.counts = FleetCounts({name: m.hierarchy.name for name, m in members.items()})
        self.stopping = False
        self.scheduler: Scheduler | None = None
        self._stopping_reason: str | None = None
        self._halted: str | None = None  # a drain's grace ran out: held runs never start here
        self.cancelled: dict[str, str] = {}  # queued runs an operator cancelled (a held one wakes and ends)
        self._wake = anyio.Event()
        self._tenants_shown: dict[str, set[str]] = {name: set() for name in members}
        self._handed_back: list[str] = []
        self._finished = 0
        self.tasks: TaskGroup | None = None
        self._gated: set[str] | None = set()  # runs at the gate before start() counted DBOS's queues
        # On a Postgres store other serve engines dequeue from the same queues (engine/serve/shared_queues.py).
        self.shared: Tracked | None = Tracked() if engine.traces_on_postgres else None
        # ... and max_depth bounds what the fleet has queued, not this engine (engine/serve/fleet_depth.py).
        self.depths: dict[str, FleetDepth] | None = None if self.shared is None else {
            name: FleetDepth(name, m.queue.max_depth) for name, m in members.items()}

    # -- lifecycle ------------------------------------------------------------------------------------------------

    async def start(self, tasks: TaskGroup) -> None:
        """Register the queues in durable.db, count what they hold, and start publishing (and the schedules)."""
        self.tasks = tasks
        for member in self.members.values():
            await durable_queues.register_queue(member.config)
        # ENQUEUED runs wait for their queue (or, resumed, for DBOS's internal one); PENDING ones are counted when
        # they reach the gate, if ever (a dead engine's run an operator killed stays PENDING and never comes).
        waiting = await durable_queues.waiting_runs(list(self.members))
        gated = self._gated if self._gated is not None else set()
        for run in waiting:
            if run.status == "ENQUEUED" and run.run_id not in gated:  # the gate counted those it saw
                self.counts.queued(run.spec["queue"], run.run_id, run.spec.get("tenant"),
                                   run.spec.get("submitted") or run.created, run.spec.get("source"))
                if self.shared is not None:
                    self.shared.add(run.run_id)
        self._gated = None
        for depth in (self.depths or {}).values():
            await depth.check()
        self.publish()
        tasks.start_soon(self._publish_loop)
        if self.fleet.spec.schedules:
            from engine.serve.schedules import Scheduler

            self.scheduler = Scheduler(self, self.fleet.spec.schedules)
            await self.scheduler.start(tasks)

    def notify(self) -> None:
        wake, self._wake = self._wake, anyio.Event()
        wake.set()

    # -- admission ------------------------------------------------------------------------------------------------

    async def submit(self, submission: Submission) -> Admitted:
        member = self.members.get(submission.hierarchy)
        if member is None:
            raise Refused(404, f"no hierarchy named {submission.hierarchy!r} in this fleet (have: "
                               f"{', '.join(sorted(self.members))})", field="hierarchy")
        counts = self.counts.queues[member.name]
        key = submission.idempotency_key
        run_id = run_id_for_key(key) if key else os.urandom(6).hex()
        if key:
            existing = await self._existing(run_id)
            if existing is not None:
                return Admitted(run_id, member.name, created=False, state=existing)
        refused = admission.refusal(self.engine.controls, counts, member.queue, submission.tenant,
                                    self._stopping_reason)
        if refused is not None:
            self._record_refusal(counts, submission, refused)
            raise refused
        check_input(self.engine.compile(member.hierarchy), submission.input)
        now = time.time()
        hierarchy = member.hierarchy
        spec = {"path": str(hierarchy.path), "scenario": None if hierarchy.scenario_path is None else
                str(hierarchy.scenario_path), "hash": hierarchy.source_hash, "input": submission.input,
                "seed": submission.seed, "tenant": submission.tenant, "budget": None, "key": key,
                "name": hierarchy.name, "queue": member.name, "source": submission.source, "submitted": now,
                "priority": submission.priority, "paths": PATH_FORMAT}
        try:
            async with self._fleet_slot(member.name):
                # Counted before the enqueue is awaited: concurrent submissions see the depth this one takes.
                self.counts.queued(member.name, run_id, submission.tenant, now, submission.source)
                counts.admit(submission.tenant, now)
                try:
                    await durable_queues.enqueue(member.config, run_id, spec, priority=submission.priority,
                                                 tenant=submission.tenant, dedup_key=key)
                except BaseException:
                    self.counts.gone(run_id)
                    raise
        except FleetFull as full:
            refused = Refused(429, f"queue {member.name} is full: at least {full.at_least} runs queued by the "
                                   f"engines on this store together, its bound is max_depth={member.queue.max_depth}",
                              retry_after_s=counts.retry_after_s(1, time.time()))
            self._record_refusal(counts, submission, refused)
            raise refused from None
        if self.shared is not None:
            self.shared.add(run_id)
        return Admitted(run_id, member.name, created=True)

    def _fleet_slot(self, queue: str) -> AbstractAsyncContextManager[None]:
        """On a Postgres store, a place under the queue's fleet-wide max_depth (FleetFull if none); else nothing."""
        return nullcontext() if self.depths is None else self.depths[queue].admitting()

    async def _existing(self, run_id: str) -> Any:
        """The state of the run this idempotency key named before, or None (a new run)."""
        if self.counts.waiting(run_id) is not None:
            return "queued"
        if self.counts.knows(run_id):
            return "running"
        durable = self.engine.durable
        assert durable is not None and durable.host is not None
        found = await durable.host.latest(run_id)
        if found is None:
            return None
        view = await self.get_run(run_id)
        return "unknown" if view is None else view.state

    def _record_refusal(self, counts: QueueCounts, submission: Submission, refused: Refused) -> None:
        """Every refusal is counted; a `queue.rejected` trace event is written for at most one per queue per
        second (QueueCounts.rejected_event_due), carrying how many refusals since the last one wrote none."""
        counts.rejected_total += 1
        tenant = submission.tenant or ""
        counts.tenant_rejected[tenant] += 1
        due, suppressed = counts.rejected_event_due(time.time())
        if due:
            self.engine.tracer.event(None, None, "queue.rejected", name=counts.name, data={
                "queue": counts.name, "tenant": submission.tenant, "reason": refused.reason,
                "status": refused.status, "retry_after_s": refused.retry_after_s, "source": submission.source,
                "suppressed": suppressed, "rejected_total": counts.rejected_total})

    # -- the gate every dequeued run passes (DurableRuns.gate) ----------------------------------------------------

    @asynccontextmanager
    async def gate(self, run_id: str, spec: dict[str, Any]) -> AsyncIterator[None]:
        queue, tenant = str(spec["queue"]), spec.get("tenant")
        if self.shared is not None:
            self.shared.taken_here(run_id)
        if self._gated is not None:
            self._gated.add(run_id)
        if not self.counts.knows(run_id):  # resumed from a dead engine, or dequeued before start() counted it
            self.counts.queued(queue, run_id, tenant, spec.get("submitted"), spec.get("source"))
        member = self.members.get(queue)
        controls = self.engine.controls
        try:
            while True:
                if run_id in self.cancelled:
                    raise NotStarted(self.cancelled.pop(run_id))
                if self._halted is not None:
                    self._handed_back.append(run_id)
                    break  # DurableRuns raises past DBOS: the run stays in flight there for the next engine
                held = None if member is None else (admission.holds_queued(controls, queue, member.hierarchy.name)
                                                    or self._at_concurrency(member, tenant))
                if held is None:
                    self.counts.started(queue, run_id, tenant)
                    break
                await self._wait_change()
            try:
                yield
            except anyio.get_cancelled_exc_class():
                if self._halted is not None:  # stopped by a drain out of time: in flight in DBOS still
                    self._handed_back.append(run_id)
                raise
            self._finished += 1
        finally:
            self.counts.gone(run_id)
            self.notify()

    def _at_concurrency(self, member: Member, tenant: str | None) -> str | None:
        """Whether the queue (or the tenant on it) has as many runs going as it may. DBOS bounds what it dequeues
        by the same numbers, but it counts this engine's runs as they register on the loop, a moment after it
        claimed them: a run it claimed one poll too early waits here, counted as queued."""
        counts, spec = self.counts.queues[member.name], member.queue
        if spec.concurrency is not None and len(counts.running) >= spec.concurrency:
            return f"queue {member.name} runs {spec.concurrency} at once"
        limit = spec.per_tenant_concurrency
        if limit is not None and counts.tenant_running.get(tenant or "", 0) >= limit:
            return f"tenant {tenant} runs {limit} at once on {member.name}"
        return None

    async def _wait_change(self) -> None:
        """Until the controls change (a flag opened the queue) or this service wakes held runs."""
        wake = self._wake
        async with anyio.create_task_group() as group:
            async def on(wait: Any) -> None:
                await wait()
                group.cancel_scope.cancel()

            group.start_soon(on, self.engine.controls.wait_changed)
            group.start_soon(on, wake.wait)

    # -- reading --------------------------------------------------------------------------------------------------

    async def get_run(self, run_id: str) -> RunView | None:
        from engine.serve.reads import get_run

        return await get_run(self, run_id)

    async def list_runs(self, *, state: str | None = None, hierarchy: str | None = None,
                        tenant: str | None = None, limit: int = 100) -> list[RunView]:
        from engine.serve.reads import list_runs

        return await list_runs(self, state=state, hierarchy=hierarchy, tenant=tenant, limit=limit)

    def hierarchies(self) -> list[str]:
        return sorted(self.members)

    def webhook(self, name: str) -> WebhookSpec | None:
        return next((hook for hook in self.fleet.spec.webhooks if hook.name == name), None)

    def queues(self) -> list[QueueRow]:
        rows: list[QueueRow] = []
        for name, member in self.members.items():
            counts = self.counts.queues[name]
            active = set(counts.tenant_queued) | set(counts.tenant_running)
            rows += queue_rows(member, counts, self.engine.controls, {t for t in active if t})
        return rows

    def schedules(self) -> list[ScheduleRow]:
        return [] if self.scheduler is None else self.scheduler.rows()

    def health(self) -> Health:
        gate_state = self.engine.gate.health.state
        # Fenced (another engine took this one's runs: runtime/durable_fence.py): stopping, and `store` says "fenced".
        stopping = (self.stopping or self.engine.controls.shutting_down is not None
                    or self.engine.gate.fenced is not None)
        status: Any = "stopping" if stopping else ("ok" if gate_state == "ok" else "degraded")
        return Health(status=status, engine_id=self.engine.store.engine_id, store=str(gate_state),
                      queued=self.counts.total_queued(), running=self.counts.total_running(),
                      version=engine_package.__version__)

    # -- publishing -----------------------------------------------------------------------------------------------

    def publish(self) -> None:
        """Write every queue's row, each active tenant's (and one last row for a tenant gone idle), and every
        schedule's to traces.db (current-state tables: the latest write per key wins)."""
        writer = self.engine.writer
        for name, member in self.members.items():
            counts = self.counts.queues[name]
            active = {t for t in set(counts.tenant_queued) | set(counts.tenant_running) if t}
            shown = self._tenants_shown[name]
            for row in queue_rows(member, counts, self.engine.controls, active | shown):
                writer.state("queues", (row.queue, row.tenant), state_tuple(row))
            self._tenants_shown[name] = active
        for schedule in self.schedules():
            writer.state("schedules", (schedule.name,), state_tuple(schedule))

    async def _publish_loop(self) -> None:
        while True:
            await anyio.sleep(PUBLISH_EVERY_S)
            try:
                if self.shared is not None and await self.shared.forget_dequeued_elsewhere(self.counts):
                    self.notify()
                for depth in (self.depths or {}).values():
                    await depth.check()
                self.publish()
            except Exception:  # publishing must never stop the service
                log.exception("publishing queue state failed")

    # -- operator actions (engine/serve/operator.py) ---------------------------------------------------------------

    async def cancel(self, run_id: str, *, reason: str, actor: str) -> RunView:
        """A queued run never starts (DBOS cancels it; audited; a traces.db row says `cancelled`, by whom and why); a
        running one is stopped by an audited kill switch on it. KeyError: no such run."""
        from engine.serve.operator import cancel_run

        return await cancel_run(self, run_id, reason=reason, actor=actor)

    async def resume(self, run_id: str, *, actor: str) -> RunView:
        """As `flightdeck resume` (audited; Refused(409) when it cannot resume). KeyError: no such run."""
        from engine.serve.operator import resume_run

        return await resume_run(self, run_id, actor=actor)

    async def drain(self, grace_s: float) -> DrainReport:
        """Refuse new submissions (503; health says stopping) and let queued and running runs finish within
        `grace_s`. When the grace runs out: held and queued runs do not start here, and running ones are stopped
        the way SIGTERM stops `flightdeck run` (each records `killed`, with the reason), but their workflows stay
        in flight in DBOS, so the next engine on the store starts or resumes every one of them."""
        self.stopping = True
        self._stopping_reason = "the engine is draining (stopping): it finishes what is queued and takes nothing new"
        finished_before = self._finished
        with anyio.move_on_after(grace_s):
            while self.counts.in_flight():
                await self._wake.wait()
        left = self.counts.in_flight()
        if left:
            reason = f"killed: the engine is shutting down (drain; the {grace_s:g}s grace period ended)"
            self._halted = reason
            durable = self.engine.durable
            assert durable is not None
            durable.handing_back = reason
            self.engine.shut_down("the engine is draining")
            self.engine.stop_all(reason)
            self.notify()
            queued = [r for r in left if self.counts.waiting(r) is not None]
            with anyio.move_on_after(30):  # runs stopping record their end first
                while set(self.counts.in_flight()) - set(queued):
                    await self._wake.wait()
        # What is still counted never left DBOS's queue; the rest were stopped or held here and left in flight.
        handed = sorted(set(self._handed_back) | set(self.counts.in_flight()))
        if self.scheduler is not None:
            self.scheduler.stop()
        self.publish()
        await anyio.to_thread.run_sync(self.engine.writer.flush)  # every end the drain saw is recorded
        return DrainReport(finished=self._finished - finished_before, handed_back=handed)


@asynccontextmanager
async def open_fleet(store: Path | PostgresLocation, fleet: FleetFile, *, resume: bool = True,
                     latency_scale: float = 1.0, config_file: str | None = None) -> AsyncIterator[FleetEngine]:
    """Load the fleet's hierarchies (InputError naming the entry that does not load), open one durable engine on
    the store (runs a dead engine left in flight resume unless `resume` is False), register the queues, and yield
    the FleetEngine. Leaving the block without a drain hands whatever is queued or running back to DBOS.

    On a Postgres store (issue 16) several serve engines share one database: DBOS's queues are in its system
    tables, so every engine serving a queue dequeues from the same queue (each bounded by the queue's
    `worker_concurrency`: a queue's `concurrency` is per engine), and a dead engine's runs are taken over
    (runtime/durable_takeover.py). `config_file`: the config of an engine with no store directory."""
    members = load_members(fleet)
    from engine.runbooks.loader import check_store_runbooks

    # The operator's runbooks (STORE/runbooks, the config's [runbooks] dir) are checked before the engine registers.
    opened = open_engine_store(store, config_file=config_file, input_checks=[check_store_runbooks])
    try:
        engine = Engine(opened, latency_scale=latency_scale, durable=True, auto_resume=resume)
        durable = engine.durable
        assert durable is not None
        service = FleetEngine(engine, members, fleet)
        durable.queues = list(members)
        durable.gate = service.gate
        async with engine, anyio.create_task_group() as tasks:
            await service.start(tasks)
            try:
                yield service
            finally:
                if service._halted is None:
                    await service.drain(0)
                # Whatever DBOS dequeues from now until it stops is handed back to the next engine too.
                service._halted = durable.handing_back = durable.handing_back or "the engine is closing"
                tasks.cancel_scope.cancel()
    finally:
        opened.close()
