"""The agent loop: call the model, run what it asked for, repeat until a final answer or a termination rule.

Nothing here is unbounded: every invocation has a step limit, repeated identical tool calls end it as a loop, and an
invalid final answer is retried a bounded number of times.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import anyio

from engine.providers.base import AssistantMessage, Message, UserMessage
from engine.runtime.contracts import ContractViolation
from engine.runtime.model_call import ModelCallFailed, call_model
from engine.runtime.results import AgentResult
from engine.runtime.tool_call import run_calls

if TYPE_CHECKING:
    from engine.runtime.compiled import CompiledAgent
    from engine.runtime.context import RunContext

MAX_VALIDATION_RETRIES = 2
SPAN_STATUS: dict[str, str] = {"killed": "cancelled"}


async def run_agent(ctx: "RunContext", name: str, task: str, context: dict[str, Any],
                    parent_span: str) -> AgentResult:
    """Invoke one agent (or router, or pipeline). Never raises for the agent's own failures: they become an
    error result its parent can work with. Cancellation (kill switches) does propagate."""
    agent = ctx.compiled.agents[name]
    kind = agent.spec.kind
    if kind != "agent":
        from engine.runtime.patterns import run_pipeline, run_router

        runner = run_router if kind == "router" else run_pipeline
        return await runner(ctx, agent, task, context, parent_span)

    tracer = ctx.tracer
    span = tracer.start(ctx.run_id, parent_span, "agent", name, name,
                        {"task": task, "context": context, "contract": agent.spec.contract})
    ctx.agents_active += 1
    usage_before = (ctx.tokens_in, ctx.tokens_out, ctx.cost_usd)
    try:
        result = await _loop(ctx, agent, span, task, context)
    except anyio.get_cancelled_exc_class():
        ctx.agents_active -= 1
        with anyio.CancelScope(shield=True):
            tracer.end(span, ctx.run_id, "cancelled")
        raise
    except Exception as exc:  # failure isolation: a bug in one agent's turn must not take down the run
        result = AgentResult(name, "error", error=f"{type(exc).__name__}: {exc}")
    ctx.agents_active -= 1
    tracer.end(span, ctx.run_id, SPAN_STATUS.get(result.status, result.status),
               tokens_in=ctx.tokens_in - usage_before[0], tokens_out=ctx.tokens_out - usage_before[1],
               cost_usd=ctx.cost_usd - usage_before[2],
               attrs={"output": result.output, "error": result.error})
    return result


def _identical_call_key(name: str, arguments: dict[str, Any]) -> str:
    return name + "\x00" + json.dumps(arguments, sort_keys=True, default=str)


async def _loop(ctx: "RunContext", agent: "CompiledAgent", span: str, task: str,
                context: dict[str, Any]) -> AgentResult:
    messages: list[Message] = [agent.system_message,
                               UserMessage(json.dumps({"task": task, "context": context}, default=str))]
    seen_calls: dict[str, int] = {}
    validation_failures = 0
    writer = ctx.engine.writer
    for step in range(agent.max_steps):
        if writer.over_capacity():
            await writer.wait_for_space()  # back-pressure: the store is behind, so slow down rather than drop
        try:
            response = await call_model(ctx, agent, span, messages, step)
        except ModelCallFailed as exc:
            return AgentResult(agent.name, "error", error=str(exc))
        messages.append(AssistantMessage(response.content, response.tool_calls))

        if not response.tool_calls:
            if agent.output_contract is None:
                return AgentResult(agent.name, "ok", output=response.content)
            try:
                return AgentResult(agent.name, "ok", output=agent.output_contract.validate_text(response.content))
            except ContractViolation as exc:
                validation_failures += 1
                ctx.tracer.event(ctx.run_id, span, "validation.failed", agent=agent.name,
                                 data={"errors": str(exc), "attempt": validation_failures})
                if validation_failures > MAX_VALIDATION_RETRIES:
                    return AgentResult(agent.name, "validation_failed",
                                       error=f"output contract violated {validation_failures} times: {exc}")
                messages.append(UserMessage(f"Your answer does not match your output contract: {exc}. "
                                            "Answer again with a JSON object that does."))
                continue

        for call in response.tool_calls:
            key = _identical_call_key(call.name, call.arguments)
            seen = seen_calls[key] = seen_calls.get(key, 0) + 1
            if seen >= agent.loop_threshold:
                detail = f"{call.name} called {seen} times with the same arguments"
                ctx.tracer.event(ctx.run_id, span, "loop.detected", agent=agent.name, name=call.name,
                                 data={"tool": call.name, "arguments": call.arguments, "count": seen,
                                       "rule": "repeated_call"})
                return AgentResult(agent.name, "loop_detected", error=f"loop detected: {detail}")
        messages.extend(await run_calls(ctx, agent, span, response.tool_calls, response.content))

    ctx.tracer.event(ctx.run_id, span, "loop.detected", agent=agent.name,
                     data={"rule": "step_limit", "max_steps": agent.max_steps})
    return AgentResult(agent.name, "loop_detected", error=f"step limit of {agent.max_steps} reached")
