"""Agents that do not call a model themselves: rule-based routers and staged pipelines."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import anyio

from engine.durable.keys import AGENT_PATH, LEGACY_PATH_FORMAT, stage_prefix
from engine.hierarchy.schema import RouteCondition
from engine.runtime.results import AgentResult, AgentStatus

if TYPE_CHECKING:
    from engine.runtime.compiled import CompiledAgent
    from engine.runtime.context import RunContext


def _field(context: dict[str, Any], path: str) -> Any:
    value: Any = context
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _matches(condition: RouteCondition, text: str, context: dict[str, Any]) -> dict[str, Any] | None:
    """What matched, or None. Keyword matching is case-insensitive over the task and the context."""
    if condition.field is not None:
        value = _field(context, condition.field)
        if condition.equals is not None and value == condition.equals:
            return {"field": condition.field, "value": value}
        if condition.one_of is not None and value in condition.one_of:
            return {"field": condition.field, "value": value}
        return None
    for keyword in condition.keywords or ():
        if keyword.lower() in text:
            return {"keyword": keyword}
    return None


async def run_router(ctx: RunContext, agent: CompiledAgent, task: str, context: dict[str, Any],
                     parent_span: str) -> AgentResult:
    from engine.runtime.agent import SPAN_STATUS, run_agent

    spec = agent.spec
    text = (task + " " + json.dumps(context, default=str)).lower()
    target, rule, matched = spec.default_route, "default", None
    for index, route in enumerate(spec.routes):
        found = _matches(route.when, text, context)
        if found is not None:
            target, rule, matched = route.to, route.name or f"routes[{index}]", found
            break
    decision = {"rule": rule, "to": target, "matched": matched}
    span = ctx.tracer.start(ctx.run_id, parent_span, "route", agent.name, agent.name, decision)
    ctx.tracer.event(ctx.run_id, span, "route.decided", agent=agent.name, name=rule, data=decision)
    if target is None:
        message = "no route matched and the router has no default_route"
        ctx.tracer.end(span, ctx.run_id, "error", attrs={"error": message})
        return AgentResult(agent.name, "error", error=message)
    refusal = _input_contract_refusal(ctx, target, context)
    if refusal is not None:
        ctx.tracer.end(span, ctx.run_id, "validation_failed", attrs={"error": refusal})
        return AgentResult(agent.name, "error", error=refusal)
    try:
        result = await run_agent(ctx, target, task, context, span)
    except BaseException:
        ctx.tracer.end(span, ctx.run_id, "cancelled")
        raise
    ctx.tracer.end(span, ctx.run_id, SPAN_STATUS.get(result.status, result.status))
    return AgentResult(agent.name, result.status, result.output, result.error)


def _input_contract_refusal(ctx: RunContext, target: str, context: dict[str, Any]) -> str | None:
    """Routers and pipelines hand over like delegations do: the target's input contract applies."""
    contract = ctx.compiled.agents[target].input_contract
    if contract is None:
        return None
    from engine.runtime.contracts import ContractViolation

    try:
        contract.validate(context)
    except ContractViolation as exc:
        return f"handoff to {target} does not match its input contract: {exc}"
    return None


def stage_dependencies(agent: CompiledAgent) -> dict[str, list[str]]:
    """`after` omitted means the previous stage; an empty list means the pipeline's own input."""
    deps: dict[str, list[str]] = {}
    previous: str | None = None
    for stage in agent.spec.stages:
        deps[stage.name] = list(stage.after) if stage.after is not None else ([previous] if previous else [])
        previous = stage.name
    return deps


async def run_pipeline(ctx: RunContext, agent: CompiledAgent, task: str, context: dict[str, Any],
                       parent_span: str) -> AgentResult:
    """Run stages as a DAG: each waits for the stages it reads, so independent stages run in parallel."""
    from engine.runtime.agent import SPAN_STATUS, run_agent

    tracer = ctx.tracer
    deps = stage_dependencies(agent)
    span = tracer.start(ctx.run_id, parent_span, "agent", agent.name, agent.name,
                        {"pipeline": deps, "task": task, "context": context, "contract": agent.spec.contract})
    done = {name: anyio.Event() for name in deps}
    results: dict[str, AgentResult] = {}
    prefix = AGENT_PATH.get()
    stage_frames = ctx.path_format > LEGACY_PATH_FORMAT  # a run recorded before stage frames keeps its paths

    async def run_stage(stage_name: str, stage_agent: str) -> None:
        try:
            for dep in deps[stage_name]:
                await done[dep].wait()
            failed = [d for d in deps[stage_name] if d not in results or results[d].status != "ok"]
            stage_span = tracer.start(ctx.run_id, span, "stage", stage_agent, stage_name,
                                      {"after": deps[stage_name]})
            if failed:
                results[stage_name] = AgentResult(stage_agent, "error", error=f"skipped: {', '.join(failed)} failed")
                tracer.end(stage_span, ctx.run_id, "skipped", attrs={"error": results[stage_name].error})
                return
            if not deps[stage_name]:
                stage_context = context
            elif len(deps[stage_name]) == 1:
                output = results[deps[stage_name][0]].output
                stage_context = output if isinstance(output, dict) else {"input": output}
            else:
                stage_context = {d: results[d].output for d in deps[stage_name]}
            refusal = _input_contract_refusal(ctx, stage_agent, stage_context)
            if refusal is not None:
                results[stage_name] = AgentResult(stage_agent, "error", error=refusal)
                tracer.end(stage_span, ctx.run_id, "validation_failed", attrs={"error": refusal})
                return
            # Each stage's agent gets a path prefix of its own (engine/durable/keys.py): two stages running the
            # same agent must not share side-effect keys or replayed results. Set in this stage's own task, whose
            # context anyio copied from the pipeline's: no reset needed, nothing else sees it.
            if stage_frames:
                AGENT_PATH.set(stage_prefix(prefix, agent.name, stage_name))
            try:
                result = await run_agent(ctx, stage_agent, task, stage_context, stage_span)
            except BaseException:
                tracer.end(stage_span, ctx.run_id, "cancelled")
                raise
            results[stage_name] = result
            tracer.end(stage_span, ctx.run_id, SPAN_STATUS.get(result.status, result.status))
        finally:
            done[stage_name].set()

    try:
        async with anyio.create_task_group() as group:
            for stage in agent.spec.stages:
                group.start_soon(run_stage, stage.name, stage.agent)
    except BaseException:
        tracer.end(span, ctx.run_id, "cancelled")
        raise

    consumed = {d for ds in deps.values() for d in ds}
    sinks = [name for name in deps if name not in consumed]
    failures = [f"{name}: {results[name].error}" for name in deps if results[name].status != "ok"]
    if len(sinks) == 1:
        output: Any = results[sinks[0]].output
    else:
        output = {name: results[name].output for name in sinks}
    status: AgentStatus = "ok" if not failures else "error"
    tracer.end(span, ctx.run_id, status, attrs={"output": output, "error": "; ".join(failures) or None})
    return AgentResult(agent.name, status, output=output, error="; ".join(failures) or None)
