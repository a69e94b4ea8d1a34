"""The agent loop: call the model, run what it asked for, repeat until a final answer or a termination rule.

Nothing here is unbounded: every invocation has a step limit, repeated identical tool calls end it as a loop, and an
invalid final answer is retried a bounded number of times.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import anyio

from engine.durable.keys import AGENT_PATH, STEP_PATH, step_path
from engine.providers.base import AssistantMessage, Message, UserMessage
from engine.runtime.conflicts import ConflictWatch, conflict_notice, delegated_output
from engine.runtime.contracts import ContractViolation
from engine.runtime.controls import OperatorStop
from engine.runtime.guards import BudgetExceeded, breach_data
from engine.runtime.model_call import ModelCallFailed, call_model
from engine.runtime.results import AgentResult
from engine.runtime.tool_call import run_calls

if TYPE_CHECKING:
    from engine.runtime.compiled import CompiledAgent
    from engine.runtime.context import RunContext

SPAN_STATUS: dict[str, str] = {"killed": "cancelled"}


async def run_agent(ctx: RunContext, name: str, task: str, context: dict[str, Any],
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
                        {"task": task, "context": context, "contract": agent.spec.contract,
                         "path": AGENT_PATH.get() + name})
    ctx.agents_active += 1
    usage_before = (ctx.tokens_in, ctx.tokens_out, ctx.cost_usd)
    ledger = ctx.engine.guards.ledger
    # The invocation's budget scope is keyed by its span id: unique, and it labels events with where they happened.
    ledger.open_scope(span, "agent", ctx.engine.guards.agent_limits(ctx.compiled, name), parent=ctx.budget_scope,
                      labels={"run": ctx.run_id, "agent": name, "span": span, "tenant": ctx.tenant or ""})
    agents = ctx.active.agents
    result: AgentResult | None = None
    try:
        # An operator's agent kill switch cancels this scope: the agent and everything under it stop, and the
        # parent gets a `killed` result it can still work with.
        with anyio.CancelScope() as scope:
            agents[span] = (name, scope)
            try:
                result = await _loop(ctx, agent, span, task, context)
            except OperatorStop as exc:
                result = AgentResult(name, "killed", output=None, error=str(exc))
            except Exception as exc:  # failure isolation: a bug in one agent's turn must not take down the run
                result = AgentResult(name, "error", error=f"{type(exc).__name__}: {exc}")
    finally:
        agents.pop(span, None)
        ctx.agents_active -= 1
        ledger.close_scope(span, report=False)
        if result is None and not scope.cancelled_caught:  # cancelled from outside: the whole run is stopping
            # Shielded so that tracer.end stays uncancellable should it ever await.
            with anyio.CancelScope(shield=True):  # noqa: ASYNC100
                tracer.end(span, ctx.run_id, "cancelled")
    if result is None:
        result = AgentResult(name, "killed", error=ctx.active.stopped_agents.pop(span, "killed by an operator"))
    tracer.end(span, ctx.run_id, SPAN_STATUS.get(result.status, result.status),
               tokens_in=ctx.tokens_in - usage_before[0], tokens_out=ctx.tokens_out - usage_before[1],
               cost_usd=ctx.cost_usd - usage_before[2],
               attrs={"output": result.output, "error": result.error})
    return result


def _identical_call_key(name: str, arguments: dict[str, Any]) -> Any:
    """Equal for calls with equal arguments, whatever their key order. Hashing (frozen) items is ~10x cheaper than
    canonical JSON; arguments holding anything but JSON-like values fall back to it."""
    try:
        return name, frozenset(arguments.items())
    except TypeError:
        pass
    try:
        return name, _frozen(arguments)
    except TypeError:
        return name, json.dumps(arguments, sort_keys=True, default=str)


def _frozen(value: Any) -> Any:
    """A hashable stand-in for nested JSON-like data (dicts by their items, lists by their elements)."""
    kind = type(value)
    if kind is dict:
        return frozenset((key, _frozen(item)) for key, item in value.items())
    if kind is list:
        return ("list", tuple(_frozen(item) for item in value))
    hash(value)  # TypeError for anything else unhashable
    return value


# The handoff an agent receives, as text: json.dumps(..., default=str) builds a new encoder per call.
_encode_handoff = json.JSONEncoder(default=str).encode


async def _loop(ctx: RunContext, agent: CompiledAgent, span: str, task: str,
                context: dict[str, Any]) -> AgentResult:
    handoff = UserMessage(_encode_handoff({"task": task, "context": context}))
    messages: list[Message] = [agent.system_message, handoff]
    context_chars = len(agent.system_message.content) + len(handoff.content)
    seen_calls: dict[Any, int] = {}
    validation_failures = 0
    max_validation_retries = ctx.compiled.spec.defaults.max_validation_retries
    writer = ctx.engine.writer
    ledger = ctx.engine.guards.ledger
    prefix = AGENT_PATH.get()
    # Only agents with an `agree:` setting watch their delegates' results for conflicts (engine/runtime/conflicts.py).
    watch = ConflictWatch(agent.spec.agree) if agent.spec.agree else None
    for step in range(agent.max_steps):
        if writer.over_capacity():
            await writer.wait_for_space()  # back-pressure: the store is behind, so slow down rather than drop
        try:
            breach = ledger.check(span)  # wall-clock time runs out between calls, too
            if breach is not None:
                raise BudgetExceeded(breach)
            path = step_path(prefix, agent.name, step)
            response = await call_model(ctx, agent, span, messages, step, context_chars, path)
            messages.append(AssistantMessage(response.content, response.tool_calls))
            context_chars += len(response.content or "") + sum(len(c.raw_arguments or "") + 16
                                                               for c in response.tool_calls)
            if response.tool_calls:
                loop = _detect_loop(ctx, agent, span, response.tool_calls, seen_calls)
                if loop is not None:
                    return loop
                token = STEP_PATH.set(path)  # names this step's calls
                try:
                    results = await run_calls(ctx, agent, span, response.tool_calls, response.content)
                finally:
                    STEP_PATH.reset(token)
                messages.extend(results)
                context_chars += sum(len(r.content) for r in results)
                if watch is not None:
                    notice = _watch_conflicts(ctx, agent, span, watch, response.tool_calls, results)
                    if notice is not None:
                        messages.append(notice)
                        context_chars += len(notice.content)
                continue
        except ModelCallFailed as exc:
            return AgentResult(agent.name, "error", error=str(exc))
        except BudgetExceeded as exc:
            ctx.tracer.event(ctx.run_id, span, "budget.exceeded", agent=agent.name,
                             name=str(exc.breach.dimension), data=breach_data(exc.breach))
            if exc.breach.scope_kind != "agent":  # the run (or the hierarchy's day) ran out, not just this agent
                ctx.attributes.setdefault("run_budget_exhausted", exc.breach.message)
            return AgentResult(agent.name, "budget_exceeded", output=_partial(messages), error=str(exc))

        # A final answer: accept it, or ask again (a bounded number of times) when it breaks the output contract
        # or stays silent about a conflict between its delegates' results.
        hidden: list[Any] = []
        try:
            output: Any = response.content
            if agent.output_contract is not None:
                output = agent.output_contract.validate_text(response.content)
            hidden = watch.unreported(response.content) if watch is not None else []
            if hidden:
                raise ContractViolation("the answer does not report the conflict between the delegates' results ("
                                        + "; ".join(f"{c.label}: {c.describe()}" for c in hidden) + ")")
            return AgentResult(agent.name, "ok", output=output)
        except ContractViolation as exc:
            validation_failures += 1
            data: dict[str, Any] = {"errors": str(exc), "attempt": validation_failures}
            if hidden:
                data["rule"] = "unreported_conflict"
            ctx.tracer.event(ctx.run_id, span, "validation.failed", agent=agent.name, data=data)
            if validation_failures > max_validation_retries:
                return AgentResult(agent.name, "validation_failed",
                                   error=f"output contract violated {validation_failures} times: {exc}")
            retry_prompt = UserMessage(
                f"Your answer does not report the conflict between your delegates' results: {exc}. Answer again, "
                "naming each conflicting value." if hidden else
                f"Your answer does not match your output contract: {exc}. Answer again with a JSON object that does.")
            messages.append(retry_prompt)
            context_chars += len(retry_prompt.content)

    ctx.tracer.event(ctx.run_id, span, "loop.detected", agent=agent.name,
                     data={"rule": "step_limit", "max_steps": agent.max_steps})
    return AgentResult(agent.name, "loop_detected", error=f"step limit of {agent.max_steps} reached")


def _watch_conflicts(ctx: RunContext, agent: CompiledAgent, span: str, watch: ConflictWatch, calls: Any,
                     results: list[Any]) -> UserMessage | None:
    """Record this step's delegated results; a new conflict becomes an event and a message to the model."""
    for call, result in zip(calls, results, strict=False):
        child = agent.delegation_names.get(call.name)
        if child is not None and not result.is_error:
            watch.record(child, delegated_output(result.content))
    conflicts = watch.new_conflicts()
    for conflict in conflicts:
        ctx.tracer.event(ctx.run_id, span, "delegation.conflict", agent=agent.name, name=conflict.label,
                         data=conflict.event_data())
    return UserMessage(conflict_notice(conflicts)) if conflicts else None


def _detect_loop(ctx: RunContext, agent: CompiledAgent, span: str, calls: Any,
                 seen_calls: dict[Any, int]) -> AgentResult | None:
    for call in calls:
        key = _identical_call_key(call.name, call.arguments)
        seen = seen_calls[key] = seen_calls.get(key, 0) + 1
        if seen >= agent.loop_threshold:
            detail = f"{call.name} called {seen} times with the same arguments"
            ctx.tracer.event(ctx.run_id, span, "loop.detected", agent=agent.name, name=call.name,
                             data={"tool": call.name, "arguments": call.arguments, "count": seen,
                                   "rule": "repeated_call"})
            return AgentResult(agent.name, "loop_detected", error=f"loop detected: {detail}")
    return None


def _partial(messages: list[Message]) -> dict[str, Any]:
    """What an agent stopped by its budget hands back: the results it had gathered, so the parent can use them."""
    results = [m.content[:500] for m in messages if m.role == "tool"]
    return {"partial": True, "tool_results": results[-5:], "tool_results_total": len(results)}
