"""The engine's durable runs: every run is a DBOS workflow (engine/durable/host.py), and on start the runs a dead
engine left in flight resume, unless told not to (`--no-resume`, the flag `runs.auto_resume=false`) or an operator
killed them. How a run goes on in its workflow body is runtime/durable_carry_on.py."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import anyio

from engine.durable.keys import run_id_for_key
from engine.runtime.durable_carry_on import RETRY_KEYS, QueueGate, carry_on, run_spec
from engine.runtime.durable_limits import replaced_budget
from engine.runtime.resume_loader import HierarchyCache

if TYPE_CHECKING:
    from engine.controls.api import ControlAPI
    from engine.controls.reconcile import Decision
    from engine.durable.host import DurableHost
    from engine.guardrails.budget import BudgetLimits
    from engine.hierarchy.loader import Hierarchy
    from engine.runtime.durable_pickup import Pickup
    from engine.runtime.durable_resume import ResumeRecords
    from engine.runtime.durable_takeover import Takeover
    from engine.runtime.engine import Engine, RunRequest
    from engine.runtime.results import RunResult
    from engine.store.location import StoreLocation

log = logging.getLogger(__name__)
T = TypeVar("T")
OUTCOME_WAIT_S = 10.0  # wait_resumed's bound on DBOS recording an ended run's outcome (it takes milliseconds)


class DurableRuns:
    def __init__(self, engine: Engine, *, auto_resume: bool = True) -> None:
        self.engine = engine
        self.auto_resume = auto_resume
        self.host: DurableHost | None = None
        self._fresh: set[str] = set()  # runs this engine started (their workflow body is not a resume)
        self._resumed_active = 0
        self._resumed_idle = anyio.Event()
        self._resumed_idle.set()
        self.resumed: list[str] = []  # runs this engine handed back to DBOS on start
        # The requests of fresh runs and the hierarchies they were submitted with, by run id, while they run.
        self._requests: dict[str, tuple[RunRequest, Hierarchy]] = {}
        self.hierarchies = HierarchyCache()  # what resumed and queued runs run (runtime/resume_loader.py)
        # Serve mode (engine/serve/service.py) sets these before the engine opens: the DBOS queues this engine
        # dequeues from, the gate each dequeued run passes, and (once a drain's grace ran out) why runs stopped now
        # are handed back: their workflow stays PENDING in DBOS, so the next engine on the store resumes them.
        self.queues: list[str] = []
        self.gate: QueueGate | None = None
        self.handing_back: str | None = None
        self.again: set[str] = set()  # runs an operator started again here (`resume_run`): they carry on
        # Runs this engine is carrying on (resumed, taken, or in their workflow body): never taken again meanwhile.
        # Written on the loop and on the control thread (set operations are atomic).
        self._busy: set[str] = set()
        # Operators' requests that a run go on, taken on start and live (runtime/durable_pickup.py); off for
        # `flightdeck resume`'s own engine, which carries on one run only.
        self.pickup = True
        self.pickups: Pickup | None = None
        self._resume_records: ResumeRecords | None = None  # what runs resumed here carry on from
        # A Postgres store: engines share DBOS's system database, and this one takes over dead engines' runs
        # (runtime/durable_takeover.py). None on a store directory (one engine: the lock says the rest are dead).
        self.takeover: Takeover | None = None
        self.stale_after: float | None = None  # set before open: seconds without a beat after which an engine is dead

        # Runs resumed on start or taken here: run id -> the workflow id of the execution carrying them on, and
        # those whose body ended with an outcome DBOS records (wait_resumed waits until it has).
        self._executions: dict[str, str] = {}
        self._settling: set[str] = set()

    @property
    def trace_location(self) -> StoreLocation:
        """Where the run's spans are read from for replay: the store directory, or the Postgres store."""
        from engine.store.location import StoreDirectory

        found = getattr(self.engine.store, "trace_location", None)  # test doubles of the store have only `dir`
        return found if found is not None else StoreDirectory(self.engine.store.dir)

    async def open(self) -> None:
        from engine.durable.host import DurableHost
        from engine.store.location import PostgresLocation

        location = self.trace_location
        shared = location if isinstance(location, PostgresLocation) else None
        executor_id: str | None = None
        earlier: list[str] = []
        if shared is not None:  # other engines' runs are theirs while they live (runtime/durable_shared.py)
            from engine.runtime import durable_shared

            self.takeover, executor_id, earlier = await durable_shared.prepare(self, shared)
        # On Postgres DBOS needs no directory (an engine wholly on Postgres has none).
        self.host = DurableHost(self.engine.store.dir if shared is None else None, self.engine.store.engine_id,
                                self._body, self.queues, database_url=None if shared is None else shared.dsn,
                                executor_id=executor_id)
        self.host.launch()
        why_not = self.why_not_resume()
        if self.takeover is not None:
            left = await durable_shared.start(self, self.takeover, earlier, why_not)
            pending: list[tuple[str, str, dict[str, Any]]] = []
        else:
            left = set()
            pending = await self.host.pending_runs()
        handed_back: list[str] = []
        in_flight = {run for _wf, run, _spec in pending} | set(self.taken_over) | left
        await self._cancel_orphaned_approvals(in_flight)
        for workflow_id, run_id, _spec in pending:
            reason = why_not or self.killed_by_operator(run_id)
            if reason is not None:
                self.engine.tracer.event(run_id, None, "run.not_resumed", data={"reason": reason})
                continue
            self._track_resumed(run_id)
            self._busy.add(run_id)
            self._executions[run_id] = workflow_id
            handed_back.append(workflow_id)
        await self.host.resume_many(handed_back)
        if self.pickup:  # runs operators reconciled or asked to resume since they stopped go on too, taken once
            from engine.runtime.durable_pickup import Pickup

            self.pickups = Pickup(self)
            await self.pickups.start(in_flight)
        publish = getattr(self.engine.store, "publish_durable", None)  # test doubles of the store may lack it
        if publish is not None:  # `flightdeck engines` shows it; resume and reconcile trust `pickup` only
            publish(pickup=self.pickup, auto_resume=self.pickup and why_not is None)
        if self.resumed:
            log.warning("resuming %d runs interrupted by a dead engine or reconciled", len(self.resumed))

    async def _cancel_orphaned_approvals(self, in_flight: set[str]) -> None:
        """Approvals a dead engine's runs left pending are cancelled unless the run can still resume (DBOS holds it
        in flight and no operator's kill switch stopped it): a resumed run waits on its request, same id and
        deadline (runtime/approvals.py), whether it resumes now or later (`--no-resume`, `flightdeck resume`)."""
        orphaned = [run_id for run_id in self.engine.store.abandoned_runs
                    if run_id not in in_flight or self.killed_by_operator(run_id) is not None]
        if orphaned:
            await self._call(lambda api: [api.cancel_approvals_for_run(run_id, "its engine died; the run is "
                                                                       "abandoned") for run_id in orphaned])

    def records(self) -> ResumeRecords:
        """What runs resumed here carry on from (opened on first use, closed with the engine)."""
        from engine.runtime.durable_resume import ResumeRecords

        self._resume_records = self._resume_records or ResumeRecords(self.trace_location)
        return self._resume_records

    @property
    def taken_over(self) -> list[str]:
        """Runs this engine took over from dead engines on a shared store (runtime/durable_takeover.py)."""
        return [] if self.takeover is None else list(self.takeover.runs)

    async def take_over(self, dead: list[str], executors: list[str], *, queues_of: list[str] | None = None) -> int:
        """Carry on here the runs these dead engines left in flight under these DBOS executor ids (their claim is
        this engine's), and those on their takeover queues (`queues_of`, default `dead`): each not killed by an
        operator, all unless auto-resume is off. Returns how many."""
        assert self.host is not None and self.takeover is not None
        why_not = self.why_not_resume()
        taken: list[str] = []
        for workflow_id, run_id in await self.host.pending_of(executors, dead if queues_of is None else queues_of):
            self.takeover.runs.append(run_id)
            reason = why_not or self.killed_by_operator(run_id)
            if reason is not None or self.busy(run_id):
                if reason is not None:
                    self.engine.tracer.event(run_id, None, "run.not_resumed", data={"reason": reason})
                continue
            self.engine.tracer.event(run_id, None, "run.taken_over", data={
                "engine_id": self.engine.store.engine_id, "from": dead})
            self._track_resumed(run_id)
            self._busy.add(run_id)
            self._executions[run_id] = workflow_id
            taken.append(workflow_id)
        try:
            await self.host.take_over(taken)
        except BaseException:
            for _ in taken:  # they will not run here
                self._untrack_resumed()
            raise
        if taken:
            log.warning("taking over %d run(s) of dead engine(s) %s", len(taken), ", ".join(dead))
        return len(taken)

    def _track_resumed(self, run_id: str) -> None:
        self.resumed.append(run_id)
        self._resumed_active += 1
        self._resumed_idle = anyio.Event()

    def _untrack_resumed(self) -> None:
        self._resumed_active -= 1
        if self._resumed_active <= 0:
            self._resumed_idle.set()

    async def _call(self, job: Callable[[ControlAPI], T]) -> T | None:
        """A control.db read on the engine's control thread (None when the engine has none: test doubles)."""
        worker = self.engine.controls.worker
        return None if worker is None else await worker.call(job)

    async def decision(self, run_id: str, key: str) -> Decision | None:
        """An operator's reconcile decision on the side-effect key `key` (engine/controls/reconcile.py), or None."""
        found = await self._call(lambda api: api.reconcile_decisions(run_id))
        return None if found is None else found.get(key)

    async def resume_run(self, run_id: str, budget: BudgetLimits | None = None) -> RunResult:
        """Run an ended (or abandoned) durable run again as a new execution (`flightdeck resume`): recorded side
        effects replay, the rest runs; `budget` replaces the run's limit overrides. InputError: not durable."""
        from engine.errors import InputError

        assert self.host is not None
        found = await self.host.latest(run_id)
        if found is None:
            raise InputError(f"run {run_id} is not a durable run (it was not started with --durable): nothing is "
                             "recorded to resume it from; run it again instead")
        spec = found[2] if budget is None else await replaced_budget(self.engine, run_id, found[2], budget)
        self.again.add(run_id)
        try:
            handle = await self.host.start_again(run_id, spec)
            result: RunResult = await handle.get_result()
        finally:
            self.again.discard(run_id)
        return result

    async def start_taken(self, run_id: str, limits: dict[str, Any] | None, data: dict[str, Any]) -> None:
        """Start again here a run this engine took (runtime/durable_pickup.py): a new DBOS execution of its
        workflow (`limits`: an operator's new run limits), which carries on like a resumed run. Returns once it
        started; close() waits for it to end like a run resumed on start."""
        assert self.host is not None
        found = await self.host.latest(run_id)
        if found is None:  # the caller gives the take back
            raise LookupError("it is not a durable run in durable.db: nothing is recorded to resume it from")
        spec = found[2]
        if limits:
            from engine.guardrails.budget import BudgetLimits

            spec = await replaced_budget(self.engine, run_id, spec, BudgetLimits(**limits))
        self.engine.tracer.event(run_id, None, "run.picked_up", data={**data, "engine_id": self.engine.store.engine_id})
        self._track_resumed(run_id)
        try:
            handle = await self.host.start_again(run_id, spec)
            self._executions[run_id] = str(handle.get_workflow_id())
        except BaseException:
            self._untrack_resumed()
            raise

    def not_resumed(self, run_id: str, reason: str) -> None:
        self._busy.discard(run_id)
        self.engine.tracer.event(run_id, None, "run.not_resumed", data={"reason": reason})

    def busy(self, run_id: str) -> bool:
        """Whether this engine is carrying the run on now (it must not be taken again)."""
        return run_id in self._busy or run_id in self.engine.controls.runs

    def mark_busy(self, run_id: str) -> None:
        self._busy.add(run_id)

    def why_not_resume(self) -> str | None:
        if not self.auto_resume:
            return "auto-resume is off (--no-resume)"
        flag = (self.engine.controls.flags.get("runs.auto_resume") or {}).get(("global", None))
        if flag == "false":
            return "auto-resume is off (flag runs.auto_resume=false)"
        return None

    def killed_by_operator(self, run_id: str) -> str | None:
        for switch in self.engine.controls.switches:
            if switch.mode == "kill" and switch.scope == "run" and switch.target == run_id:
                return "an operator's kill switch covers this run"
        return None

    async def wait_resumed(self) -> None:
        """Until every run resumed on start (or taken) has ended and DBOS has recorded its outcome: DBOS writes it
        after the body returned, and an engine closing in between (destroy()) cancelled that write, so the run's
        workflow stayed PENDING and the next engine resumed a run that had ended (a flaky test under load)."""
        await self._resumed_idle.wait()
        if self.engine.gate.fenced is not None:  # their outcomes are the taker's to record (runtime/durable_fence.py)
            self._settling.clear()
        while self._settling and self.host is not None:
            run_id = self._settling.pop()
            workflow_id = self._executions.pop(run_id, None)
            if workflow_id is not None and not await self.host.outcome_recorded(workflow_id, OUTCOME_WAIT_S):
                log.warning("DBOS did not record the outcome of run %s within %s s", run_id, OUTCOME_WAIT_S)

    async def close(self) -> None:
        if self.host is None:
            return
        if self.takeover is not None:  # no dead engine's runs from now on (it beats on: its runs are its own)
            self.takeover.claiming = False
        if self.pickups is not None:  # nothing more is taken; what was taken has started
            await self.pickups.close()
            publish = getattr(self.engine.store, "publish_durable", None)
            if publish is not None:
                publish(pickup=False, auto_resume=False)
        await self.wait_resumed()
        self.host.destroy()
        self.host = None
        if self.takeover is not None:  # stopped only now: a run handed back on a drain is then anyone's to take
            await self.takeover.close()
        if self._resume_records is not None:
            self._resume_records.close()
            self._resume_records = None

    async def submit(self, hierarchy: Hierarchy, request: RunRequest, run_id: str | None = None) -> RunResult:
        """Run `request` as a durable run; with an idempotency key the same key never starts a second run (the
        original run's result is returned). `run_id`: the new run's id, chosen by the caller (a retry, whose audit
        row names it before it starts)."""
        assert self.host is not None
        key = request.idempotency_key
        run_id = run_id_for_key(key) if key else run_id or os.urandom(6).hex()
        spec = {"path": str(hierarchy.path), "scenario": None if hierarchy.scenario_path is None else
                str(hierarchy.scenario_path), "hash": hierarchy.source_hash, "input": request.input,
                "seed": request.seed, "tenant": request.tenant, "budget": request.budget, "key": key,
                "name": hierarchy.name, "paths": request.path_format}
        # A retry (engine/runtime/retry.py): a resume of it replays its original's steps before the span again.
        spec.update({k: v for k, v in (request.attributes or {}).items() if k in RETRY_KEYS})
        if key:
            found = await self.host.latest(run_id)
            if found is not None:
                workflow_id, status, _spec = found
                if request.on_started is not None:
                    request.on_started(run_id)
                if (status in ("PENDING", "ENQUEUED") and run_id not in self._fresh and run_id not in self.resumed
                        and self.takeover is None):  # shared: a live engine runs it, or a dead one's is taken over
                    await self.host.resume(workflow_id)  # the original run's engine died: it carries on here
                return await self.host.result(workflow_id)
        self._fresh.add(run_id)
        self._requests[run_id] = (request, hierarchy)
        try:
            return await self.host.run(run_id, spec)
        finally:
            self._fresh.discard(run_id)
            self._requests.pop(run_id, None)

    async def _body(self, run_id: str, spec: dict[str, Any]) -> RunResult:
        """The workflow body: a fresh run, or a resumed one (then rebuilt from its spec). A run a serve-mode queue
        started (its spec names the queue) is fresh unless this engine resumed it and its row shows it started."""
        fresh = self._requests.get(run_id)
        if fresh is not None:
            return await run_spec(self, spec, fresh[0], run_id, None, fresh[1])
        self._busy.add(run_id)
        settled = False  # the body ends with an outcome DBOS records (cancelled: it stays PENDING, on purpose)
        try:
            result = await carry_on(self, run_id, spec)  # runtime/durable_carry_on.py
            settled = True
            return result
        except Exception:
            settled = True
            raise
        finally:
            self._busy.discard(run_id)
            if settled:
                self._settling.add(run_id)
            if run_id in self.resumed:
                self._untrack_resumed()
