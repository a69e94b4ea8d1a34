"""The engine: runs hierarchies on a store it owns, many runs at once, each isolated from the others."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable

import anyio

import engine as engine_package
from engine.hierarchy.schema import ModelSpec
from engine.providers.base import Provider
from engine.runtime.compiled import CompiledHierarchy, compile_hierarchy
from engine.runtime.context import RunContext
from engine.runtime.results import RUN_STATUS_FOR_AGENT, AgentResult, RunResult
from engine.runtime.tracer import Tracer

if TYPE_CHECKING:
    from engine.hierarchy.loader import Hierarchy
    from engine.store import EngineStore

HEARTBEAT_INTERVAL_S = 1.0


@dataclass(slots=True)
class RunRequest:
    """What to run: the input (a JSON object or text), a seed for the scripted model, a tenant label."""

    input: Any
    seed: int = 0
    tenant: str | None = None


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
    """Use as `async with Engine(store) as engine:`; background tasks (heartbeat) live as long as the block."""

    def __init__(self, store: "EngineStore", *, latency_scale: float = 1.0) -> None:
        self.store = store
        self.writer = store.writer
        self.tracer = Tracer(store.writer)
        self.latency_scale = latency_scale
        self._compiled: dict[str, CompiledHierarchy] = {}
        self._providers: dict[tuple[str, ...], Provider] = {}
        self._task_group: anyio.abc.TaskGroup | None = None

    async def __aenter__(self) -> "Engine":
        self._task_group = anyio.create_task_group()
        await self._task_group.__aenter__()
        self._task_group.start_soon(self._heartbeat)
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        assert self._task_group is not None
        self._task_group.cancel_scope.cancel()
        await self._task_group.__aexit__(None, None, None)
        for provider in self._providers.values():
            with anyio.CancelScope(shield=True):
                await provider.aclose()
        self._providers.clear()

    async def _heartbeat(self) -> None:
        while True:
            await anyio.to_thread.run_sync(self.store.control.heartbeat, self.store.engine_id)
            await anyio.sleep(HEARTBEAT_INTERVAL_S)

    def compile(self, hierarchy: "Hierarchy") -> CompiledHierarchy:
        compiled = self._compiled.get(hierarchy.source_hash)
        if compiled is None:
            compiled = self._compiled[hierarchy.source_hash] = compile_hierarchy(hierarchy)
        return compiled

    def provider_for(self, compiled: CompiledHierarchy, model: ModelSpec) -> Provider:
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


