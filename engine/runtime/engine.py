"""The engine: runs hierarchies on a store it owns, many runs at once, each isolated from the others."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio

import engine as engine_package
from engine.clock import SYSTEM_CLOCK, Clock
from engine.durable.keys import PATH_FORMAT
from engine.hierarchy.schema import ModelSpec
from engine.providers.base import Provider
from engine.runtime.compiled import CompiledHierarchy, compile_hierarchy
from engine.runtime.context import RunContext
from engine.runtime.controls import RuntimeControls
from engine.runtime.guards import Guards
from engine.runtime.results import RUN_STATUS_FOR_AGENT, AgentResult, RunResult, split_input
from engine.runtime.store_gate import StoreGate, StoreHealth
from engine.runtime.tracer import Tracer

if TYPE_CHECKING:
    from engine.errors import StoreError
    from engine.guardrails.budget import BudgetLimits
    from engine.hierarchy.loader import Hierarchy
    from engine.runtime.compiled import CompiledAgent
    from engine.runtime.durable_runs import DurableRuns, ResumeInfo
    from engine.runtime.replay import ReplayTable
    from engine.store import EngineStore
    from engine.store.control_rows import Approval, BreakerOverride, BudgetOverride

log = logging.getLogger(__name__)
SWITCH_INTERVAL_S = 0.0005


@dataclass(slots=True)
class RunRequest:
    """What to run: the input (a JSON object or text), a seed for the scripted model, a tenant label, and budget
    overrides for this run (merged over the hierarchy's `budgets.run`)."""

    input: Any
    seed: int = 0
    tenant: str | None = None
    budget: BudgetLimits | None = None
    on_started: Callable[[str], None] | None = None  # told the run id as soon as the run is recorded
    idempotency_key: str | None = None  # durable engines: the same key never starts a second run
    attributes: dict[str, Any] | None = None  # extra run-row attributes (serve mode: queue, source, submitted)
    replay: ReplayTable | None = None  # a retry's calls recorded in its original (engine/runtime/retry.py)
    # How the run builds call paths (engine/durable/keys.py): a resumed run and a retry keep the one its record has.
    path_format: int = PATH_FORMAT


class Engine:
    """Use as `async with Engine(store) as engine:`; background tasks live as long as the block."""

    def __init__(self, store: EngineStore, *, latency_scale: float = 1.0, clock: Clock = SYSTEM_CLOCK,
                 runbooks: bool | list[Any] = True, on_store_error: str = "wait", durable: bool = False,
                 auto_resume: bool = True) -> None:
        """`on_store_error`: what to do when trace commits fail ("wait": hold new calls until they succeed again;
        "exit": stop every run, and `store_failure` says why). `durable`: runs are DBOS workflows in
        STORE/durable.db (runtime/durable_runs.py); `auto_resume`: resume a dead engine's runs on start."""
        self.store = store
        self.writer = store.writer
        self.tracer = Tracer(store.writer)
        self.latency_scale = latency_scale
        self.clock = clock
        self.guards = Guards(self.tracer, clock=clock)
        self.controls = RuntimeControls(self)
        self.gate = StoreGate(on_error=on_store_error, stop_all=self.controls.stop_all,
                              event=lambda kind, data: self.tracer.event(None, None, kind, data=data),
                              publish=self._publish_store_health)
        self.controls.store_gate = self.gate
        self._compiled: dict[str, CompiledHierarchy] = {}
        self._providers: dict[tuple[str, ...], Provider] = {}
        self._task_group: anyio.abc.TaskGroup | None = None
        self.escalation_listeners: list[Callable[[Approval], None]] = []
        self.runbooks: Any = None  # the RunbookEngine watching this engine's event stream
        self.publisher: Any = None  # current breaker and budget state for the console
        self.otel: Any = None  # the LiveExporter when [otel] or OTEL_EXPORTER_OTLP_* turns export on
        self._runbooks_option = runbooks
        self.approval_listeners: list[Callable[[Approval], None]] = []
        self.durable: DurableRuns | None = None
        from engine.store.location import PostgresLocation

        self.traces_on_postgres = isinstance(getattr(store, "trace_location", None), PostgresLocation)
        if durable and self.traces_on_postgres:  # DBOS and resumption read traces.db (issue 16: not on Postgres yet)
            raise ValueError("durable runs need the traces in the store directory; they cannot go to Postgres yet")
        if durable:
            from engine.runtime.durable_runs import DurableRuns

            self.durable = DurableRuns(self, auto_resume=auto_resume)

    async def __aenter__(self) -> Engine:
        # The engine's helper threads (the control watcher, the trace shipper) need the GIL briefly and often; with
        # the default 5 ms switch interval each would wait up to that long for a busy event loop to let go, which
        # shows up directly in kill-switch latency. 0.5 ms keeps them prompt at no measurable cost to the loop.
        if sys.getswitchinterval() > SWITCH_INTERVAL_S:
            sys.setswitchinterval(SWITCH_INTERVAL_S)
        if self._runbooks_option is not False:
            # Loaded first: an invalid runbook in STORE/runbooks is an InputError before anything starts.
            from engine.runbooks.runtime import RunbookEngine

            chosen = None if self._runbooks_option is True else self._runbooks_option
            self.runbooks = RunbookEngine.for_store(self.store, tracer_event=self.tracer.event, clock=self.clock,
                                                    runbooks=chosen)
        from engine.export.live import prepare_live_export  # bad [otel] settings: an InputError before anything starts

        self.otel = prepare_live_export(self.store, self.tracer.event)
        if self.otel is not None and self.traces_on_postgres:  # the exporter reads what it sends from traces.db
            from engine.errors import InputError

            raise InputError("OpenTelemetry export reads traces.db: it cannot follow traces on Postgres yet "
                             "(issue 16)", field="[otel]")
        self._task_group = anyio.create_task_group()
        await self._task_group.__aenter__()
        self.gate.attach()
        self.writer.on_health(self.gate.on_writer_health)
        from engine.controls.api import ControlAPI
        from engine.controls.verifier import ControlVerifier
        from engine.runtime.control_worker import ControlWorker

        store = self.store
        verifier = ControlVerifier(store.engine_id, emit=lambda kind, data: self.tracer.event(None, None, kind,
                                                                                               data=data))
        worker = ControlWorker(lambda: ControlAPI(store.dir, f"engine:{store.engine_id}"), self.controls.apply,
                               on_read=partial(self.controls.stage, from_watcher=True), verifier=verifier)
        self.controls.attach(worker)
        if self.durable is None:  # a dead engine's runs end here for good: switches limited to them are spent
            for run_id in self.store.abandoned_runs:
                self.controls.run_ended(run_id)
        worker.start()
        await self._replay_durable_controls(worker)
        from engine.runtime.publisher import StatePublisher

        self.publisher = StatePublisher(self)
        self._task_group.start_soon(self.publisher.run)
        # Obey what is already in force (a global halt survives restarts) before the first run starts.
        assert self.controls.first_applied is not None
        with anyio.fail_after(30):
            await self.controls.first_applied.wait()
        if self.runbooks is not None:
            self.runbooks.start(self.store.abandoned_runs)
            self.writer.on_commit(self.runbooks.on_commit)
            self.escalation_listeners.append(self.runbooks.page_escalation)
        if self.otel is not None:
            from engine.export.live import start_live_export

            start_live_export(self.otel, self.writer)
        if self.durable is not None:
            await self.durable.open()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        assert self._task_group is not None
        if self.durable is not None:
            await self.durable.close()  # runs resumed on start end first (stop_all() kills them on a shutdown)
        self._task_group.cancel_scope.cancel()
        await self._task_group.__aexit__(None, None, None)
        if self.otel is not None:
            from engine.export.live import stop_live_export

            await anyio.to_thread.run_sync(stop_live_export, self.otel, self.writer)
        if self.runbooks is not None:
            await anyio.to_thread.run_sync(self.runbooks.stop)
        if self.controls.worker is not None:
            await anyio.to_thread.run_sync(self.controls.worker.stop)
        for provider in self._providers.values():
            with anyio.CancelScope(shield=True):
                await provider.aclose()
        self._providers.clear()

    async def _replay_durable_controls(self, worker: Any) -> None:
        """What snapshots show only while new, re-applied after a restart: operator breaker overrides (oldest first,
        so the latest per key wins), and approvals left pending by runs of a dead engine (cancelled: nobody is
        waiting for them any more, so they must not be approvable; a durable engine cancels only those of runs that
        cannot resume, runtime/durable_runs.py: a resumed run waits on its request)."""
        overrides = await worker.call(lambda api: api.breaker_overrides(limit=10_000))
        if worker.verifier is not None:  # replayed overrides are obeyed too: only those the audit log records
            overrides = await worker.call(lambda api: worker.verifier.keep_bound(api, "breaker_overrides", overrides))
        for row in reversed(overrides):
            if row.applied is not None:
                self.guards.apply_operator_override(row.key, row.action)
        abandoned = list(self.store.abandoned_runs)
        if abandoned and self.durable is None:  # a durable engine keeps those of runs that resume (DurableRuns.open)
            await worker.call(lambda api: [api.cancel_approvals_for_run(run_id, "its engine died; the run is abandoned")
                                           for run_id in abandoned])

    def _daily_spend(self, hierarchy: str) -> list[tuple[float, float]]:
        """This hierarchy's spend over the last 24 hours, from the store: the daily cap holds across restarts."""
        from engine.errors import StoreError
        from engine.store import open_trace_reads
        from engine.store.location import StoreDirectory
        from engine.store.trace_rows import RunSpend

        try:  # traces.db, or the Postgres store the traces go to (test doubles of the store have only `dir`)
            reader = open_trace_reads(getattr(self.store, "trace_location", None) or StoreDirectory(self.store.dir))
        except StoreError:
            return []
        try:
            rows = reader.query_rows(RunSpend, "SELECT started, cost_usd FROM runs WHERE hierarchy = ? "
                                               "AND started >= ? AND cost_usd > 0", (hierarchy, time.time() - 86_400))
        finally:
            reader.close()
        return [(row.started, row.cost_usd) for row in rows]

    def _publish_store_health(self, health: StoreHealth) -> None:
        publish = getattr(self.store, "publish_store_health", None)  # test doubles of the store may not have it
        if publish is not None:
            publish(health.state, health.error, health.since)

    @property
    def store_failure(self) -> StoreError | None:
        """Why this engine had to stop because of its trace store (a StoreError: exit code 3), or None."""
        return self.gate.failure

    def shut_down(self, reason: str) -> None:
        """Admit no new run from now on (`reason` says why); runs in flight carry on until stop_all()."""
        if self.controls.shutting_down is None:
            self.controls.shutting_down = reason

    def stop_all(self, reason: str) -> int:
        """Cancel every active run now; each ends `killed` with `reason`, recorded. Returns how many."""
        return self.controls.stop_all(reason)

    def release_spent_switches(self, run_id: str) -> None:
        """Release (audited, actor `flightdeck`) the kill switches limited to a run that has ended for good."""
        self._background(lambda api: api.expire_run_switches(run_id), "releasing the ended run's kill switches")

    def _background(self, job: Callable[[Any], Any], what: str) -> None:
        """Run a control.db write on the control thread without waiting for it; failures are logged. Queued
        directly (not from a task): an acknowledgement must not wait one more turn of a busy event loop."""
        worker = self.controls.worker
        if worker is None:
            return
        worker.submit(job, what)

    def acknowledge(self, switch_ids: list[int], flag_ids: list[int]) -> None:
        engine_id = self.store.engine_id
        acked_at = time.time()

        def ack(api: Any) -> None:
            if switch_ids:
                api.ack_kill_switches(switch_ids, engine_id)
            if flag_ids:
                api.ack_flags(flag_ids)

        self._background(ack, "acknowledging controls")
        for switch_id in switch_ids:
            self.tracer.event(None, None, "control.applied", name=f"kill_switch:{switch_id}",
                              data={"switch_id": switch_id, "applied_at": acked_at})

    def apply_overrides(self, breaker_overrides: Sequence[BreakerOverride],
                        budget_overrides: Sequence[BudgetOverride]) -> None:
        applied_breakers = []
        for row in breaker_overrides:
            self.guards.apply_operator_override(row.key, row.action)
            applied_breakers.append(row.id)
        applied_budgets = []
        for budget in budget_overrides:
            active = self.controls.runs.get(budget.run_id)
            if active is None:
                continue  # not a run of this engine (or already over)
            from engine.guardrails.budget import BudgetLimits as Limits
            from engine.guardrails.budget import merge_limits

            ctx = active.ctx
            base = self.guards.run_limits(ctx.compiled, ctx.attributes.get("budget_override"))
            limits = budget.limits if isinstance(budget.limits, dict) else json.loads(budget.limits)
            override = Limits(**{k: v for k, v in limits.items() if v is not None})
            merged = merge_limits(base, override) if base is not None else override
            self.guards.ledger.set_limits(ctx.budget_scope, merged)
            ctx.attributes["budget_override"] = merged
            self.tracer.event(ctx.run_id, None, "budget.changed", data={"limits": limits, "by": budget.operator,
                                                                        "reason": budget.reason})
            applied_budgets.append(budget.id)
        if applied_breakers or applied_budgets:
            engine_id = self.store.engine_id

            def mark(api: Any) -> None:
                if applied_breakers:
                    api.mark_breaker_overrides_applied(applied_breakers, engine_id)
                if applied_budgets:
                    api.mark_budget_overrides_applied(applied_budgets)

            self._background(mark, "marking overrides applied")

    def on_approval_escalated(self, approval: Approval) -> None:
        """Hook for paging on escalation (the runbook engine's notifier subscribes)."""
        for listener in self.escalation_listeners:
            listener(approval)

    def on_approval_requested(self, approval: Approval) -> None:
        """Hook for whoever shows pending approvals to a person (the CLI's progress line, the demo)."""
        for listener in self.approval_listeners:
            listener(approval)

    def compile(self, hierarchy: Hierarchy) -> CompiledHierarchy:
        compiled = self._compiled.get(hierarchy.source_hash)
        if compiled is None:
            compiled = self._compiled[hierarchy.source_hash] = compile_hierarchy(hierarchy)
        return compiled

    def provider_for(self, compiled: CompiledHierarchy, model: ModelSpec,
                     agent: CompiledAgent | None = None) -> Provider:
        cache = agent.spec.cache if agent is not None else None
        if cache is not None:
            key: tuple[str, ...] = ("cached", compiled.source_hash, agent.name,  # type: ignore[union-attr]
                   model.provider, model.base_url or "", model.model)
            provider = self._providers.get(key)
            if provider is None:
                from engine.providers.cache import CachingProvider, ResponseCache

                provider = self._providers[key] = CachingProvider(
                    self.provider_for(compiled, model), ResponseCache(cache.ttl, cache.max_entries))
            return provider
        if model.provider == "scripted":
            key = ("scripted", compiled.source_hash)
            provider = self._providers.get(key)
            if provider is None:
                from engine.providers.scripted import ScriptedProvider

                provider = self._providers[key] = ScriptedProvider(compiled.spec, latency_scale=self.latency_scale)
            return provider
        key = ("openai", model.base_url or "", model.api_key_env or "")
        provider = self._providers.get(key)
        if provider is None:
            from engine.providers.openai import build_openai_provider

            provider = self._providers[key] = build_openai_provider(
                model.base_url or "https://api.openai.com/v1", model.api_key_env, model.timeout)
        return provider

    async def run(self, hierarchy: Hierarchy, request: RunRequest) -> RunResult:
        """Run once to the end. Failures become the run's status; only outside cancellation propagates."""
        if self.durable is not None:
            return await self.durable.submit(hierarchy, request)
        return await self.run_compiled(self.compile(hierarchy), request)

    async def run_compiled(self, compiled: CompiledHierarchy, request: RunRequest, *, run_id: str | None = None,
                           resume: ResumeInfo | None = None) -> RunResult:
        refusal = self.controls.admission_refusal(compiled.name)
        if refusal is not None:
            return self._refuse(compiled, request, refusal, run_id)
        async with self.controls.run_slots:  # safe-mode flag concurrency.max
            return await self._run_admitted(compiled, request, run_id, resume)

    def _new_context(self, compiled: CompiledHierarchy, request: RunRequest, run_id: str | None = None,
                     resume: ResumeInfo | None = None) -> RunContext:
        ctx = RunContext(run_id=run_id or os.urandom(6).hex(), seed=request.seed, tenant=request.tenant,
                         compiled=compiled, engine=self, tracer=self.tracer)
        hierarchy = compiled.hierarchy
        # The file it ran (and its scenario): what `flightdeck retry` loads to run it again.
        attrs: dict[str, Any] = {**(request.attributes or {}), "entry": compiled.spec.entry, "pid": os.getpid(),
                                 "durable": self.durable is not None, "hierarchy_path": str(hierarchy.path),
                                 "paths": request.path_format}
        if request.budget is not None:  # the limits it started with: what a retry of it starts with too
            from engine.guardrails.budget import limits_attribute

            attrs["budget"] = limits_attribute(request.budget)
        if hierarchy.scenario_path is not None:
            attrs["scenario"] = str(hierarchy.scenario_path)
        ctx.replay = request.replay
        ctx.path_format = request.path_format
        if resume is not None:  # the same run again: its row is rewritten with its first start and totals so far
            from engine.runtime.resume_seed import seed_resumed

            attrs.update(seed_resumed(ctx, resume))
        self.writer.run_started(ctx.run_id, compiled.name, compiled.source_hash, self.store.engine_id,
                                engine_package.__version__, request.input, request.seed, request.tenant,
                                resume.started if resume is not None and resume.started else time.time(), attrs)
        if request.on_started is not None:
            request.on_started(ctx.run_id)
        return ctx

    def _refuse(self, compiled: CompiledHierarchy, request: RunRequest, reason: str,
                run_id: str | None = None) -> RunResult:
        ctx = self._new_context(compiled, request, run_id)
        now = time.time()
        self.tracer.event(ctx.run_id, None, "run.refused", name=compiled.name, data={"reason": reason})
        self.writer.run_ended(ctx.run_id, "refused", now, None, reason)
        return RunResult(run_id=ctx.run_id, hierarchy=compiled.name, status="refused", output=None, error=reason,
                         tokens_in=0, tokens_out=0, cost_usd=0.0, model_calls=0, tool_calls=0, started=now,
                         ended=now)

    async def _run_admitted(self, compiled: CompiledHierarchy, request: RunRequest, run_id: str | None,
                            resume: ResumeInfo | None) -> RunResult:
        ctx = self._new_context(compiled, request, run_id, resume)
        started = time.time()
        ledger = self.guards.ledger
        ctx.attributes["budget_override"] = request.budget
        ledger.open_scope(ctx.budget_scope, "run", self.guards.run_limits(compiled, request.budget),
                          parent=self.guards.daily_scope(compiled, self._daily_spend),
                          labels={"run": ctx.run_id, "tenant": request.tenant or "", "hierarchy": compiled.name})
        if resume is not None:
            from engine.runtime.resume_seed import seed_budget

            seed_budget(ctx)
        task, context = split_input(request.input)
        ctx.root_span = self.tracer.start(ctx.run_id, None, "run", None, compiled.name,
                                          {"input": request.input, "tenant": request.tenant})
        entry = compiled.spec.entry
        result: AgentResult | None = None
        scope = anyio.CancelScope()
        ctx.active = self.controls.register_run(ctx, scope)
        try:
            with scope:  # a kill switch covering this run cancels it here
                try:
                    context = self._validated_entry_input(compiled, context)
                    from engine.runtime.agent import run_agent

                    result = await run_agent(ctx, entry, task, context, ctx.root_span)
                except _BadRunInput as exc:
                    result = AgentResult(entry, "error", error=str(exc))
                except Exception as exc:  # one failing run must never disturb the others in this engine
                    result = AgentResult(entry, "error", error=f"{type(exc).__name__}: {exc}")
        finally:
            active = self.controls.unregister_run(ctx.run_id)
            if active is not None and self.publisher is not None:
                self.publisher.publish_final(active)  # final gauges: what the run used, nothing still reserved
            ledger.close_scope(ctx.budget_scope, report=False)
            if result is None:  # cancelled: by an operator's kill switch, or the engine is shutting down
                reason = ctx.active.stop_reason or "cancelled: the engine stopped"
                result = AgentResult(entry, "killed", error=reason)
                self._background(lambda api: api.cancel_approvals_for_run(ctx.run_id, reason),
                                 "cancelling approvals of a killed run")
                if not scope.cancelled_caught:
                    self._finish(ctx, started, result)
        return self._finish(ctx, started, result)

    @staticmethod
    def _validated_entry_input(compiled: CompiledHierarchy, context: dict[str, Any]) -> dict[str, Any]:
        entry = compiled.agents[compiled.spec.entry]
        if entry.input_contract is None:
            return context
        from engine.runtime.contracts import ContractViolation

        try:
            return entry.input_contract.validate(context)
        except ContractViolation as exc:
            raise _BadRunInput(f"run input does not match {entry.name}'s input contract: {exc}") from None

    def _finish(self, ctx: RunContext, started: float, result: AgentResult) -> RunResult:
        status = RUN_STATUS_FOR_AGENT[result.status]
        if status == "killed":  # stopped for a side effect: needs_reconcile or failed (runtime/side_effects.py)
            status = ctx.attributes.get("stop_status", status)
        exhausted = ctx.attributes.get("run_budget_exhausted")
        if exhausted and status == "completed":
            # The parent finished with what it had, but the run's budget ran out: that is what the run's status
            # says; its (partial) output is kept.
            status = "budget_exceeded"
            result = AgentResult(result.agent, "budget_exceeded", result.output, exhausted)
        ended = time.time()
        ctx.report_progress()
        self.tracer.end(ctx.root_span, ctx.run_id, "ok" if status == "completed" else status if status in (
            "budget_exceeded", "loop_detected") else "cancelled" if status == "killed" else "error",
            tokens_in=ctx.tokens_in, tokens_out=ctx.tokens_out, cost_usd=ctx.cost_usd,
            attrs={"output": result.output, "error": result.error})
        self.writer.run_ended(ctx.run_id, status, ended, result.output, result.error)
        # A switch on this run alone is spent: released (audited) so nothing shows it as in force. Not for a durable
        # run that can still go on (resume, reconcile): there the switch is the operator's word until `resume`.
        if (self.durable is None or status == "completed") and self.controls.run_ended(ctx.run_id):
            self.release_spent_switches(ctx.run_id)
        return RunResult(run_id=ctx.run_id, hierarchy=ctx.compiled.name, status=status, output=result.output,
                         error=result.error, tokens_in=ctx.tokens_in, tokens_out=ctx.tokens_out,
                         cost_usd=ctx.cost_usd, model_calls=ctx.model_calls, tool_calls=ctx.tool_calls,
                         started=started, ended=ended)

    async def run_many(self, hierarchy: Hierarchy, requests: Iterable[RunRequest], *, concurrency: int,
                       on_result: Callable[[RunResult], None] | None = None) -> list[RunResult]:
        """Run requests with at most `concurrency` in flight; results in completion order."""
        results: list[RunResult] = []
        limiter = anyio.CapacityLimiter(max(1, concurrency))

        async def one(request: RunRequest) -> None:
            async with limiter:
                if self.controls.shutting_down is not None or self.gate.failure is not None:
                    return  # the engine is stopping: runs not yet started are not started at all
                result = await self.run(hierarchy, request)
            results.append(result)
            if on_result is not None:
                on_result(result)

        async with anyio.create_task_group() as group:
            for request in requests:
                group.start_soon(one, request)
        return results


class _BadRunInput(Exception):
    pass


