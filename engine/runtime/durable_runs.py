"""The engine's durable runs: every run is a DBOS workflow (engine/durable/host.py), and on start the runs a dead
engine left in flight resume, unless told not to (`--no-resume`, the flag `runs.auto_resume=false`) or an operator
killed them."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import anyio

from engine.durable.keys import LEGACY_PATH_FORMAT, PATH_FORMAT, run_id_for_key
from engine.runtime.call_paths import legacy_paths_refusal
from engine.runtime.durable_limits import carried_budget, replaced_budget
from engine.runtime.resume_loader import HierarchyCache

if TYPE_CHECKING:
    from engine.controls.api import ControlAPI
    from engine.controls.reconcile import Decision
    from engine.durable.host import DurableHost
    from engine.guardrails.budget import BudgetLimits
    from engine.hierarchy.loader import Hierarchy
    from engine.runtime.durable_pickup import Pickup
    from engine.runtime.engine import Engine, RunRequest
    from engine.runtime.replay import ReplayTable
    from engine.runtime.results import RunResult
    from engine.store.reader import TraceReader

log = logging.getLogger(__name__)
T = TypeVar("T")
OUTCOME_WAIT_S = 10.0  # wait_resumed's bound on DBOS recording an ended run's outcome (it takes milliseconds)
RETRY_KEYS = ("retry_of", "retry_from", "retry_from_path")  # a retry's run attributes, kept in its spec


@dataclass(frozen=True, slots=True)
class ResumeInfo:
    """How a resumed run starts again: its earlier row's start and totals, how many times it resumed before, and
    how many of its side effects are recorded (they replay instead of running)."""

    started: float
    resumed: int
    replayed_steps: int
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    model_calls: int = 0
    tool_calls: int = 0
    replay: ReplayTable | None = None  # the calls it recorded, which replay instead of running again


class NotStarted(Exception):
    """Raised by a serve-mode gate: a queued run that must not start (cancelled while it waited)."""


# Serve mode's hold on a dequeued run (engine/serve/): `async with gate(run_id, spec):` returns when the run may
# start (raises NotStarted when it never may) and counts it running until the block ends.
QueueGate = Callable[[str, dict[str, Any]], AbstractAsyncContextManager[None]]


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
        self._again: set[str] = set()  # runs an operator started again here (`resume_run`): they carry on
        # Runs this engine is carrying on (resumed, taken, or in their workflow body): never taken again meanwhile.
        # Written on the loop and on the control thread (set operations are atomic).
        self._busy: set[str] = set()
        # Operators' requests that a run go on, taken on start and live (runtime/durable_pickup.py); off for
        # `flightdeck resume`'s own engine, which carries on one run only.
        self.pickup = True
        self.pickups: Pickup | None = None
        self._reader: TraceReader | None = None  # traces.db rows of the runs resumed here (_resume_info)
        # Runs resumed on start or taken here: run id -> the workflow id of the execution carrying them on, and
        # those whose body ended with an outcome DBOS records (wait_resumed waits until it has).
        self._executions: dict[str, str] = {}
        self._settling: set[str] = set()

    async def open(self) -> None:
        from engine.durable.host import DurableHost

        self.host = DurableHost(self.engine.store.dir, self.engine.store.engine_id, self._body, self.queues)
        self.host.launch()
        pending = await self.host.pending_runs()
        why_not = self.why_not_resume()
        handed_back: list[str] = []
        in_flight = {run for _wf, run, _spec in pending}
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
        self._again.add(run_id)
        try:
            handle = await self.host.start_again(run_id, spec)
            result: RunResult = await handle.get_result()
        finally:
            self._again.discard(run_id)
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
        while self._settling and self.host is not None:
            run_id = self._settling.pop()
            workflow_id = self._executions.pop(run_id, None)
            if workflow_id is not None and not await self.host.outcome_recorded(workflow_id, OUTCOME_WAIT_S):
                log.warning("DBOS did not record the outcome of run %s within %s s", run_id, OUTCOME_WAIT_S)

    async def close(self) -> None:
        if self.host is None:
            return
        if self.pickups is not None:  # nothing more is taken; what was taken has started
            await self.pickups.close()
            publish = getattr(self.engine.store, "publish_durable", None)
            if publish is not None:
                publish(pickup=False, auto_resume=False)
        await self.wait_resumed()
        self.host.destroy()
        self.host = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None

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
                if status in ("PENDING", "ENQUEUED") and run_id not in self._fresh and run_id not in self.resumed:
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
            return await self._run(spec, fresh[0], run_id, None, fresh[1])
        self._busy.add(run_id)
        settled = False  # the body ends with an outcome DBOS records (cancelled: it stays PENDING, on purpose)
        try:
            result = await self._carry_on(run_id, spec)
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

    async def _carry_on(self, run_id: str, spec: dict[str, Any]) -> RunResult:
        """A run resumed, taken or dequeued here: rebuilt from its spec."""
        queued = spec.get("queue") is not None
        carries_on = not queued or run_id in self.resumed or run_id in self._again
        info = await self._resume_info(run_id, spec) if carries_on else None
        if queued and info is not None and not info.started:
            info = None  # dequeued (or held) but never recorded as started: nothing to carry on from
        if info is not None:
            spec = await carried_budget(self.engine, run_id, spec)
        from engine.runtime.engine import RunRequest

        # A run carrying on from a record keeps the call-path format it was recorded with (a spec written
        # before formats were recorded: 1); one that never started takes today's.
        paths = PATH_FORMAT if info is None else int(spec.get("paths") or LEGACY_PATH_FORMAT)
        request = RunRequest(input=spec.get("input"), seed=spec.get("seed") or 0, tenant=spec.get("tenant"),
                             budget=spec.get("budget"), idempotency_key=spec.get("key"), path_format=paths)
        if queued and self.gate is not None:
            return await self._run_queued(spec, request, run_id, info, self.gate)
        return await self._run(spec, request, run_id, info)

    async def _run_queued(self, spec: dict[str, Any], request: RunRequest, run_id: str, info: ResumeInfo | None,
                          gate: QueueGate) -> RunResult:
        from engine.runtime.results import RunResult

        try:
            async with gate(run_id, spec):
                if self.handing_back is not None:
                    raise asyncio.CancelledError(self.handing_back)  # not started: left PENDING for the next engine
                result = await self._run(spec, request, run_id, info)
                if self.handing_back is not None and result.status == "killed":
                    # Stopped by a drain whose grace ran out: raised past DBOS (which records only Exceptions),
                    # the workflow stays PENDING and the next engine on the store resumes the run; its row says
                    # killed until then.
                    raise asyncio.CancelledError(self.handing_back)
        except NotStarted as exc:
            now = time.time()
            # Its traces.db row (written by whoever cancelled it) says `cancelled`; this is the workflow's outcome.
            return RunResult(run_id=run_id, hierarchy=str(spec.get("name")), status="killed", output=None,
                             error=str(exc), tokens_in=0, tokens_out=0, cost_usd=0.0, model_calls=0, tool_calls=0,
                             started=now, ended=now)
        return result

    async def _resume_info(self, run_id: str, spec: dict[str, Any]) -> ResumeInfo:
        """What a resumed run carries on from: its row's totals, and (read once, here) the calls it recorded,
        which replay instead of running again (engine/runtime/replay.py). A retry's resume also replays what its
        original recorded before the retried step, as the retry's first execution did."""
        from engine.errors import StoreError
        from engine.runtime.replay import load_table
        from engine.store import open_reader

        assert self.host is not None
        replayed = await self.host.recorded_effects(run_id)
        store_dir = self.engine.store.dir
        table = load_table(store_dir, run_id)
        if spec.get("retry_of") and spec.get("retry_from_path"):
            table = table.merged_over(load_table(store_dir, spec["retry_of"], before=spec["retry_from_path"],
                                                 side_effects="all"))
        # Side effects recorded by DBOS are `replayed` already; those a retry replayed from its original are not.
        replayed += len(table.models) + sum(1 for call in table.tools.values() if not call.side_effects)
        if self._reader is None:  # one for every run this engine resumes: opening one costs ~2 ms
            try:
                self._reader = open_reader(store_dir)
            except StoreError:
                return ResumeInfo(started=0.0, resumed=1, replayed_steps=replayed, replay=table)
        row = self._reader.get_run(run_id)
        if row is None or row.id != run_id:
            return ResumeInfo(started=0.0, resumed=1, replayed_steps=replayed, replay=table)
        return ResumeInfo(started=row.started, resumed=row.resumed + 1, replayed_steps=replayed,
                          tokens_in=row.tokens_in, tokens_out=row.tokens_out, cost_usd=row.cost_usd,
                          model_calls=row.model_calls, tool_calls=row.tool_calls, replay=table)

    async def _run(self, spec: dict[str, Any], request: RunRequest, run_id: str, info: ResumeInfo | None,
                   submitted: Hierarchy | None = None) -> RunResult:
        hierarchy, why = (submitted, None) if submitted is not None else self.hierarchies.load(spec)
        if hierarchy is None:
            return self._fail_unloadable(run_id, spec, request, why or "cannot resume")
        refusal = None if info is None else legacy_paths_refusal(hierarchy, request.path_format, run_id)
        if refusal is not None:  # its record's keys are ambiguous: carrying on could skip or replay the wrong call
            return self._fail_unloadable(run_id, spec, request, refusal)
        served = {key: spec[key] for key in ("queue", "source", "submitted", "budget_through", *RETRY_KEYS)
                  if spec.get(key) is not None}
        if served:  # a serve-mode run: its row says where it came from (GET /runs/ID once it started)
            from dataclasses import replace

            request = replace(request, attributes={**(request.attributes or {}), **served})
        return await self.engine.run_compiled(self.engine.compile(hierarchy), request, run_id=run_id, resume=info)

    def _fail_unloadable(self, run_id: str, spec: dict[str, Any], request: RunRequest, why: str) -> RunResult:
        from engine.runtime.results import RunResult

        now = time.time()
        self.engine.tracer.event(run_id, None, "run.not_resumed", data={"reason": why})
        self.engine.writer.run_ended(run_id, "failed", now, None, why)
        return RunResult(run_id=run_id, hierarchy=str(spec.get("name") or spec["path"]), status="failed",
                         output=None, error=why, tokens_in=0, tokens_out=0, cost_usd=0.0, model_calls=0,
                         tool_calls=0, started=now, ended=now)
