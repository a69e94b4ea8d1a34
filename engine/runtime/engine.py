"""The engine: runs hierarchies on a store it owns, many runs at once, each isolated from the others."""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable

import anyio

import engine as engine_package
from engine.clock import SYSTEM_CLOCK, Clock
from engine.hierarchy.schema import ModelSpec
from engine.providers.base import Provider
from engine.runtime.compiled import CompiledHierarchy, compile_hierarchy
from engine.runtime.context import RunContext
from engine.runtime.controls import RuntimeControls
from engine.runtime.guards import Guards
from engine.runtime.results import RUN_STATUS_FOR_AGENT, AgentResult, RunResult
from engine.runtime.tracer import Tracer

if TYPE_CHECKING:
    from engine.guardrails.budget import BudgetLimits
    from engine.hierarchy.loader import Hierarchy
    from engine.runtime.compiled import CompiledAgent
    from engine.store import EngineStore

SWITCH_INTERVAL_S = 0.0005


@dataclass(slots=True)
class RunRequest:
    """What to run: the input (a JSON object or text), a seed for the scripted model, a tenant label, and budget
    overrides for this run (merged over the hierarchy's `budgets.run`)."""

    input: Any
    seed: int = 0
    tenant: str | None = None
    budget: "BudgetLimits | None" = None


def split_input(value: Any) -> tuple[str, dict[str, Any]]:
    """The entry agent's handoff from a run input: text becomes the task; an object becomes the context."""
    if isinstance(value, dict):
        task = value.get("task")
        return (task if isinstance(task, str) else "Handle this request."), value
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            return value, {}
        if isinstance(parsed, dict):
            return split_input(parsed)
        return value, {}
    return json.dumps(value, default=str), {}


class Engine:
    """Use as `async with Engine(store) as engine:`; background tasks live as long as the block."""

    def __init__(self, store: "EngineStore", *, latency_scale: float = 1.0, clock: Clock = SYSTEM_CLOCK) -> None:
        self.store = store
        self.writer = store.writer
        self.tracer = Tracer(store.writer)
        self.latency_scale = latency_scale
        self.clock = clock
        self.guards = Guards(self.tracer, clock=clock)
        self.controls = RuntimeControls()
        self._compiled: dict[str, CompiledHierarchy] = {}
        self._providers: dict[tuple[str, ...], Provider] = {}
        self._task_group: anyio.abc.TaskGroup | None = None

    async def __aenter__(self) -> "Engine":
        # The writer thread competes for the GIL; with the default 5 ms switch interval the event loop can wait
        # that long for it after every poll. A shorter interval keeps model/tool calls flowing (see bench).
        if sys.getswitchinterval() > SWITCH_INTERVAL_S:
            sys.setswitchinterval(SWITCH_INTERVAL_S)
        self._task_group = anyio.create_task_group()
        await self._task_group.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        assert self._task_group is not None
        self._task_group.cancel_scope.cancel()
        await self._task_group.__aexit__(None, None, None)
        for provider in self._providers.values():
            with anyio.CancelScope(shield=True):
                await provider.aclose()
        self._providers.clear()

    def compile(self, hierarchy: "Hierarchy") -> CompiledHierarchy:
        compiled = self._compiled.get(hierarchy.source_hash)
        if compiled is None:
            compiled = self._compiled[hierarchy.source_hash] = compile_hierarchy(hierarchy)
        return compiled

    def provider_for(self, compiled: CompiledHierarchy, model: ModelSpec,
                     agent: "CompiledAgent | None" = None) -> Provider:
        cache = agent.spec.cache if agent is not None else None
        if cache is not None:
            key = ("cached", compiled.source_hash, agent.name, model.model)  # type: ignore[union-attr]
            provider = self._providers.get(key)
            if provider is None:
                from engine.providers.cache import CachingProvider, ResponseCache

                provider = self._providers[key] = CachingProvider(
                    self.provider_for(compiled, model), ResponseCache(cache.ttl, cache.max_entries))
            return provider
        if model.provider == "scripted":
            key: tuple[str, ...] = ("scripted", compiled.source_hash)
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

    async def run(self, hierarchy: "Hierarchy", request: RunRequest) -> RunResult:
        """Run once to the end. Failures become the run's status; only cancellation propagates."""
        compiled = self.compile(hierarchy)
        run_id = os.urandom(6).hex()
        ctx = RunContext(run_id=run_id, seed=request.seed, tenant=request.tenant, compiled=compiled,
                         engine=self, tracer=self.tracer)
        started = time.time()
        ledger = self.guards.ledger
        ledger.open_scope(ctx.budget_scope, "run", self.guards.run_limits(compiled, request.budget),
                          parent=self.guards.daily_scope(compiled),
                          labels={"run": run_id, "tenant": request.tenant or "", "hierarchy": compiled.name})
        self.writer.run_started(run_id, compiled.name, compiled.source_hash, self.store.engine_id,
                                engine_package.__version__, request.input, request.seed, request.tenant, started,
                                {"entry": compiled.spec.entry, "pid": os.getpid()})
        task, context = split_input(request.input)
        ctx.root_span = self.tracer.start(run_id, None, "run", None, compiled.name,
                                          {"input": request.input, "tenant": request.tenant})
        try:
            entry = compiled.agents[compiled.spec.entry]
            if entry.input_contract is not None:
                from engine.runtime.contracts import ContractViolation

                try:
                    context = entry.input_contract.validate(context)
                except ContractViolation as exc:
                    raise _BadRunInput(f"run input does not match {entry.name}'s input contract: {exc}") from None
            from engine.runtime.agent import run_agent

            result = await run_agent(ctx, compiled.spec.entry, task, context, ctx.root_span)
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                self._finish(ctx, started, AgentResult(compiled.spec.entry, "killed", error="cancelled"))
            raise
        except _BadRunInput as exc:
            result = AgentResult(compiled.spec.entry, "error", error=str(exc))
        except Exception as exc:  # one failing run must never disturb the others in this engine
            result = AgentResult(compiled.spec.entry, "error", error=f"{type(exc).__name__}: {exc}")
        finally:
            ledger.close_scope(ctx.budget_scope)
        return self._finish(ctx, started, result)

    def _finish(self, ctx: RunContext, started: float, result: AgentResult) -> RunResult:
        status = RUN_STATUS_FOR_AGENT[result.status]
        ended = time.time()
        ctx.report_progress()
        self.tracer.end(ctx.root_span, ctx.run_id, "ok" if status == "completed" else status if status in (
            "budget_exceeded", "loop_detected") else "cancelled" if status == "killed" else "error",
            tokens_in=ctx.tokens_in, tokens_out=ctx.tokens_out, cost_usd=ctx.cost_usd,
            attrs={"output": result.output, "error": result.error})
        self.writer.run_ended(ctx.run_id, status, ended, result.output, result.error)
        return RunResult(run_id=ctx.run_id, hierarchy=ctx.compiled.name, status=status, output=result.output,
                         error=result.error, tokens_in=ctx.tokens_in, tokens_out=ctx.tokens_out,
                         cost_usd=ctx.cost_usd, model_calls=ctx.model_calls, tool_calls=ctx.tool_calls,
                         started=started, ended=ended)

    async def run_many(self, hierarchy: "Hierarchy", requests: Iterable[RunRequest], *, concurrency: int,
                       on_result: Callable[[RunResult], None] | None = None) -> list[RunResult]:
        """Run requests with at most `concurrency` in flight; results in completion order."""
        results: list[RunResult] = []
        limiter = anyio.CapacityLimiter(max(1, concurrency))

        async def one(request: RunRequest) -> None:
            async with limiter:
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


