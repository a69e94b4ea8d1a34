"""The engine: runs hierarchies on a store it owns, many runs at once, each isolated from the others."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

from engine.clock import SYSTEM_CLOCK, Clock
from engine.durable.keys import PATH_FORMAT
from engine.hierarchy.schema import ModelSpec
from engine.providers.base import Provider
from engine.runtime.compiled import CompiledHierarchy, compile_hierarchy
from engine.runtime.controls import RuntimeControls
from engine.runtime.engine_lifecycle import close_engine, open_engine
from engine.runtime.guards import Guards
from engine.runtime.results import RunResult
from engine.runtime.run_lifecycle import refuse, run_admitted
from engine.runtime.store_gate import StoreGate, StoreHealth
from engine.runtime.tracer import Tracer

if TYPE_CHECKING:
    from engine.errors import StoreError
    from engine.guardrails.budget import BudgetLimits
    from engine.hierarchy.loader import Hierarchy
    from engine.runtime.compiled import CompiledAgent
    from engine.runtime.durable_resume import ResumeInfo
    from engine.runtime.durable_runs import DurableRuns
    from engine.runtime.replay import ReplayTable
    from engine.store import EngineStore
    from engine.store.control_rows import Approval, BreakerOverride, BudgetOverride

log = logging.getLogger(__name__)


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
                 auto_resume: bool = True, sampling: bool = True) -> None:
        """`on_store_error`: what to do when trace commits fail ("wait": hold new calls until they succeed again;
        "exit": stop every run, and `store_failure` says why). `durable`: runs are DBOS workflows in
        STORE/durable.db, or in the Postgres store the traces go to (runtime/durable_runs.py); `auto_resume`: resume
        a dead engine's runs on start (on Postgres: and take over the runs of engines that die while it runs).
        `sampling`: score the share of completed runs a hierarchy's `evals.sample` asks for (engine/scoring/
        sampler.py); evals and drills turn it off (their runs are not live traffic)."""
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
        self.providers: dict[tuple[str, ...], Provider] = {}  # closed by close_engine (runtime/engine_lifecycle.py)
        self.task_group: anyio.abc.TaskGroup | None = None  # open while the `async with` block lasts
        self.escalation_listeners: list[Callable[[Approval], None]] = []
        self.runbooks: Any = None  # the RunbookEngine watching this engine's event stream
        self.publisher: Any = None  # current breaker and budget state for the console
        self.otel: Any = None  # the LiveExporter when [otel] or OTEL_EXPORTER_OTLP_* turns export on
        self.runbooks_option = runbooks  # which runbooks open_engine loads (True: the store's; False: none)
        # Where sampled scores go: beside the control plane (STORE/evals.db, or an engine wholly on Postgres's
        # `evals` tables: engine/scoring/evals_store.py).
        self.evals_at: Any = getattr(store, "control_location", None)
        self.sampling = sampling and self.evals_at is not None
        self.sampler: Any = None  # the online Sampler, made when the first run of a sampled hierarchy ends
        self.approval_listeners: list[Callable[[Approval], None]] = []
        self.durable: DurableRuns | None = None
        from engine.store.location import PostgresLocation

        self.traces_on_postgres = isinstance(getattr(store, "trace_location", None), PostgresLocation)
        if durable:
            from engine.runtime.durable_runs import DurableRuns

            self.durable = DurableRuns(self, auto_resume=auto_resume)

    async def __aenter__(self) -> Engine:
        await open_engine(self)  # runbooks, live export, control worker, publisher, durable runs (engine_lifecycle.py)
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await close_engine(self)

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
        self.background(lambda api: api.expire_run_switches(run_id), "releasing the ended run's kill switches")

    def background(self, job: Callable[[Any], Any], what: str) -> None:
        """Run a control.db write on the control thread without waiting for it; failures are logged. Queued
        directly (not from a task): an acknowledgement must not wait one more turn of a busy event loop."""
        worker = self.controls.worker
        if worker is None:
            return
        worker.submit(job, what)

    def acknowledge(self, switch_ids: list[int], flag_ids: list[int],
                    on_failure: Callable[[list[int]], None] | None = None) -> None:
        """Acknowledge on the control thread; `on_failure(switch_ids)` when the write fails (the caller then tries
        again with a later snapshot; the failure is logged as any background write's)."""
        engine_id = self.store.engine_id
        acked_at = time.time()

        def ack(api: Any) -> None:
            try:
                if switch_ids:
                    api.ack_kill_switches(switch_ids, engine_id)
            except BaseException:
                if on_failure is not None:
                    on_failure(switch_ids)
                raise
            if flag_ids:
                api.ack_flags(flag_ids)

        self.background(ack, "acknowledging controls")
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
            if budget.id <= int(active.ctx.attributes.get("budget_seen") or 0):
                continue  # made before this execution started and not carried (controls/carried_limits.py)
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

            self.background(mark, "marking overrides applied")

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
            provider = self.providers.get(key)
            if provider is None:
                from engine.providers.cache import CachingProvider, ResponseCache

                provider = self.providers[key] = CachingProvider(
                    self.provider_for(compiled, model), ResponseCache(cache.ttl, cache.max_entries))
            return provider
        if model.provider == "scripted":
            key = ("scripted", compiled.source_hash)
            provider = self.providers.get(key)
            if provider is None:
                from engine.providers.scripted import ScriptedProvider

                provider = self.providers[key] = ScriptedProvider(compiled.spec, latency_scale=self.latency_scale)
            return provider
        key = ("openai", model.base_url or "", model.api_key_env or "")
        provider = self.providers.get(key)
        if provider is None:
            from engine.providers.openai import build_openai_provider

            provider = self.providers[key] = build_openai_provider(
                model.base_url or "https://api.openai.com/v1", model.api_key_env, model.timeout)
        return provider

    async def run(self, hierarchy: Hierarchy, request: RunRequest) -> RunResult:
        """Run once to the end. Failures become the run's status; only outside cancellation propagates."""
        if self.durable is not None:
            return await self.durable.submit(hierarchy, request)
        return await self.run_compiled(self.compile(hierarchy), request)

    async def run_compiled(self, compiled: CompiledHierarchy, request: RunRequest, *, run_id: str | None = None,
                           resume: ResumeInfo | None = None) -> RunResult:
        lease = self.controls.lease
        if lease is not None and not lease.current():  # woke from a stall: fenced or not (runtime/durable_fence.py)
            await lease.wait()  # (fenced: refused below, and nothing of it written)
        refusal = self.controls.admission_refusal(compiled.name)
        if refusal is not None:
            return refuse(self, compiled, request, refusal, run_id)
        async with self.controls.run_slots:  # safe-mode flag concurrency.max
            return await run_admitted(self, compiled, request, run_id, resume)

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


