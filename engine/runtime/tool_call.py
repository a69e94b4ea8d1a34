"""Running the calls a model asked for: tools (least privilege, validated arguments, timeouts) and delegations."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import anyio

from engine.durable.keys import AGENT_PATH, STEP_PATH, call_path, delegate_prefix
from engine.guardrails.budget import Actual, Demand
from engine.providers.base import ToolCall, ToolResultMessage
from engine.runtime.approvals import await_approval, needs_approval
from engine.runtime.controls import OperatorStop
from engine.runtime.guards import BudgetExceeded
from engine.runtime.missing_data import empty_parts, note_missing
from engine.runtime.replay import count_replayed
from engine.runtime.side_effects import (
    NeedsReconcile,
    ReconcileFailed,
    RecordedFailure,
    durable_side_effect,
    invoke,
    recorded_outcome,
    unwrap,
)
from engine.runtime.untrusted import gate, note_read

if TYPE_CHECKING:
    from engine.runtime.compiled import CompiledAgent
    from engine.runtime.context import RunContext

MAX_RESULT_CHARS = 16_000  # what the model is shown; the trace keeps its own (redacted, truncated) copy
# One tool call, as the budget ledger counts it (built once: these run on every call).
ONE_TOOL_CALL = Demand(tool_calls=1)
ONE_TOOL_CALL_USED = Actual(tool_calls=1)


# json.dumps(..., default=str) builds a new encoder per call; these run on every tool result and delegation.
_encode = json.JSONEncoder(default=str).encode


def _result_text(value: Any) -> str:
    kind = type(value)
    if kind is str:
        text = value
    elif kind is int:
        text = int.__repr__(value)  # what JSON says for an int, without the encoder
    else:
        text = _encode(value)
    if len(text) > MAX_RESULT_CHARS:
        text = text[:MAX_RESULT_CHARS] + f"…[truncated {len(text) - MAX_RESULT_CHARS} chars]"
    return text


def _error(call: ToolCall, message: str) -> ToolResultMessage:
    return ToolResultMessage(call.id, call.name, json.dumps({"error": message}), is_error=True)


async def run_calls(ctx: RunContext, agent: CompiledAgent, agent_span: str, calls: tuple[ToolCall, ...],
                    reason: str | None) -> list[ToolResultMessage]:
    """Run every call of one model turn; several run concurrently. Results keep the calls' order."""
    if len(calls) == 1:
        return [await run_call(ctx, agent, agent_span, calls[0], reason, 0)]
    results: list[ToolResultMessage | None] = [None] * len(calls)
    stopped: list[BaseException] = []

    async def one(index: int, call: ToolCall, group: anyio.abc.TaskGroup) -> None:
        try:
            results[index] = await run_call(ctx, agent, agent_span, call, reason, index)
        except (BudgetExceeded, OperatorStop) as exc:
            # The whole agent stops: cancel its sibling calls, and re-raise this one (not an ExceptionGroup) so
            # the agent ends budget_exceeded / killed like it would with a single call.
            stopped.append(exc)
            group.cancel_scope.cancel()

    async with anyio.create_task_group() as group:
        for index, call in enumerate(calls):
            group.start_soon(one, index, call, group)
    if stopped:
        raise stopped[0]
    return [r for r in results if r is not None]


async def run_call(ctx: RunContext, agent: CompiledAgent, agent_span: str, call: ToolCall,
                   reason: str | None, index: int = 0) -> ToolResultMessage:
    """`index`: the call's position in its model step, part of its structural path (engine/durable/keys.py)."""
    child = agent.delegation_names.get(call.name)
    if child is not None:
        token = AGENT_PATH.set(delegate_prefix(call_path(STEP_PATH.get(), index)))
        try:
            return await delegate(ctx, agent, agent_span, call, child)
        finally:
            AGENT_PATH.reset(token)
    tool = agent.tools.get(call.name)
    tracer = ctx.tracer
    path = call_path(STEP_PATH.get(), index)
    if tool is None:
        # Least privilege: the model asked for something this agent was not given. Often a sign of prompt
        # injection, so it is an event runbooks watch, not just an error result.
        span = tracer.start(ctx.run_id, agent_span, "tool", agent.name, call.name,
                            {"args": call.arguments, "reason": reason, "path": path})
        message = f"tool {call.name!r} is not available to agent {agent.name}"
        tracer.end(span, ctx.run_id, "denied", attrs={"error": message})
        tracer.event(ctx.run_id, span, "tool.blocked", agent=agent.name, name=call.name,
                     data={"reason": "not_allowed", "tool": call.name})
        return _error(call, message)

    # call_id: the write-ahead record names the call (see write_ahead below), and OTLP export's gen_ai.tool.call.id.
    attrs = {"args": call.arguments, "reason": reason, "risk": tool.spec.risk, "side_effects": tool.spec.side_effects,
             "call_id": call.id, "path": path}
    if not tool.spec.trusted:
        attrs["untrusted"] = True  # its result is outside text: engine/runtime/untrusted.py
    # Before its span and any approval request: an engine that woke from a stall may no longer own this run.
    await ctx.engine.controls.hold_for_lease()
    span = tracer.start(ctx.run_id, agent_span, "tool", agent.name, call.name, attrs)
    withheld = ctx.withheld_tools(agent).get(call.name)
    if withheld is not None:
        # Withheld tools are not offered to the model; a direct call anyway fails fast without running.
        message = f"{call.name} is {withheld}"
        tracer.end(span, ctx.run_id, "denied", attrs={"error": message, "error_kind": "withheld"})
        tracer.event(ctx.run_id, span, "tool.withheld", agent=agent.name, name=call.name,
                     data={"tool": call.name, "reason": withheld})
        return _error(call, message)
    if call.parse_error:
        message = f"arguments for {call.name} are not valid JSON ({call.parse_error}): {call.raw_arguments!r}"
        tracer.end(span, ctx.run_id, "error", attrs={"error": message, "error_kind": "malformed_arguments"})
        return _error(call, message)
    try:
        args = tool.validate_args(call.arguments)
    except Exception as exc:  # ToolArgsError: bad arguments go back to the model, never crash the run
        message = f"invalid arguments for {call.name}: {exc}"
        tracer.end(span, ctx.run_id, "error", attrs={"error": message, "error_kind": "invalid_arguments"})
        return _error(call, message)

    replay_from = ctx.replay
    if replay_from is not None:  # a resumed or retried run: a recorded outcome replays (engine/runtime/replay.py)
        recorded_call = replay_from.tool(path, call.name, tool.spec.side_effects)
        if recorded_call is not None:
            return replay(ctx, span, call, ("ok" if recorded_call.ok else "raised", recorded_call.value),
                          source=(replay_from.source, recorded_call.span_id))
    attempt = 0
    if durable_side_effect(ctx, tool):  # recorded before a resume: replayed, never run again
        try:
            state, recorded, attempt = await recorded_outcome(ctx, tool, path)
        except NeedsReconcile as exc:
            tracer.end(span, ctx.run_id, "outcome_unknown", attrs={"error": str(exc), "needs_reconcile": True,
                                                                  "idempotency_key": exc.key, "call": exc.call})
            await stop_for_reconcile(ctx, str(exc), "needs_reconcile")
            raise AssertionError("unreachable: the run was cancelled") from None
        except ReconcileFailed as exc:
            tracer.end(span, ctx.run_id, "error", attrs={"error": str(exc), "reconciled": "fail"})
            await stop_for_reconcile(ctx, str(exc), "failed")
            raise AssertionError("unreachable: the run was cancelled") from None
        if state != "new":
            return replay(ctx, span, call, recorded, reconciled=state == "confirmed")

    approval: dict[str, Any] | None = None
    held = gate(ctx, agent_span, tool)
    if held is not None and held[0] == "refuse":
        return _untrusted_refusal(ctx, agent.name, span, call, held[1], None)
    try:
        if held is not None or needs_approval(ctx, tool, args):
            outcome = await await_approval(ctx, agent.name, span, tool, args, reason, path)
            approval = outcome.record
            if not outcome.approved:
                if held is not None:
                    return _untrusted_refusal(ctx, agent.name, span, call, held[1], outcome)
                tracer.end(span, ctx.run_id, "denied", attrs={"error": outcome.message, "approval": approval,
                                                              "error_kind": "approval_" + approval["status"]})
                return _error(call, outcome.message)
            args = outcome.arguments
        await ctx.before_call(agent.name, call.name)
    except OperatorStop as exc:
        if not exc.tool_only:
            tracer.end(span, ctx.run_id, "cancelled", attrs={"error": str(exc), "approval": approval})
            raise
        tracer.end(span, ctx.run_id, "denied", attrs={"error": str(exc), "error_kind": "kill_switch"})
        return _error(call, str(exc))
    permit = ctx.engine.guards.breakers(ctx.compiled).get("tool", call.name).try_acquire()
    if permit is None:
        message = f"{call.name} is unavailable: circuit open"
        tracer.end(span, ctx.run_id, "denied", attrs={"error": message, "error_kind": "circuit_open"})
        tracer.event(ctx.run_id, span, "tool.withheld", agent=agent.name, name=call.name,
                     data={"tool": call.name, "reason": "unavailable: circuit open"})
        return _error(call, message)
    ledger = ctx.engine.guards.ledger
    reservation = ledger.reserve(agent_span, ONE_TOOL_CALL)
    if not reservation.ok:
        permit.release()
        message = reservation.message  # type: ignore[union-attr]
        tracer.end(span, ctx.run_id, "budget_exceeded", attrs={"error": message})
        raise BudgetExceeded(reservation)  # type: ignore[arg-type]

    if tool.spec.side_effects:
        try:
            await write_ahead(ctx, span, approval, args)
        except BaseException as exc:  # the store cannot record it (or the run is stopping): it never runs
            permit.release()
            ledger.release(reservation)  # type: ignore[arg-type]
            tracer.end(span, ctx.run_id, "cancelled", attrs={"error": str(exc) or "cancelled before it started"})
            raise

    ctx.tool_calls += 1
    # Only built when the ledger may look at them (see BudgetLedger.labels_used).
    labels = {"tool": call.name} if ledger.track_attribution or ledger.call_events else None
    timeout = tool.spec.timeout
    started = time.monotonic()
    calls = ctx.active.calls
    try:
        value = await invoke(ctx, agent.name, call.name, tool, args, span, path, attempt)
    except OperatorStop as exc:
        calls.pop(span, None)
        permit.release()
        ledger.settle(reservation, ONE_TOOL_CALL_USED, labels)  # type: ignore[arg-type]
        # A thread cannot be interrupted: the call may still complete, so it is never reported as done.
        tracer.end(span, ctx.run_id, "cancelled" if tool.is_async else "outcome_unknown",
                   attrs={"error": str(exc), "approval": approval})
        return _error(call, str(exc))
    except TimeoutError:
        # A thread cannot be interrupted: its side effect may still happen, so never call it done.
        status = "timeout" if tool.is_async else "outcome_unknown"
        permit.on_error(time.monotonic() - started, "timeout")
        ledger.settle(reservation, ONE_TOOL_CALL_USED, labels)  # type: ignore[arg-type]
        message = f"{call.name} did not finish within {timeout:g}s"
        tracer.end(span, ctx.run_id, status, attrs={"error": message})
        return _error(call, message)
    except anyio.get_cancelled_exc_class():
        permit.release()
        ledger.settle(reservation, ONE_TOOL_CALL_USED, labels)  # type: ignore[arg-type]
        tracer.end(span, ctx.run_id, "cancelled" if tool.is_async else "outcome_unknown")
        raise
    except Exception as exc:
        note_read(ctx, agent_span, tool)  # an error message can quote outside text too
        permit.on_error(time.monotonic() - started, "tool_error")
        ledger.settle(reservation, ONE_TOOL_CALL_USED, labels)  # type: ignore[arg-type]
        message = str(exc) if isinstance(exc, RecordedFailure) else f"{type(exc).__name__}: {exc}"
        tracer.end(span, ctx.run_id, "error", attrs={"error": message, "error_kind": "tool_error"})
        return _error(call, message)
    finally:
        calls.pop(span, None)
    permit.on_success(time.monotonic() - started)
    ledger.settle(reservation, ONE_TOOL_CALL_USED, labels)  # type: ignore[arg-type]
    # Run progress is reported after each model call (and at the end), not per tool call: one progress row per
    # step is enough for the console, and the writer's per-item cost is the engine's main overhead.
    note_read(ctx, agent_span, tool)
    text = _result_text(value)
    end_attrs: dict[str, Any] = ({"result": value} if approval is None else
                                 {"result": value, "approval": approval, "args": args})
    empty = empty_parts(value, tool.spec.missing_when_empty) if tool.spec.missing_when_empty else None
    if empty is not None:
        end_attrs["empty"] = empty
        text = note_missing(ctx, agent.name, span, call.name, empty, text)
    tracer.end(span, ctx.run_id, "ok", attrs=end_attrs)
    return ToolResultMessage(call.id, call.name, text)


def _untrusted_refusal(ctx: RunContext, agent: str, span: str, call: ToolCall, reads: list[str],
                       outcome: Any) -> ToolResultMessage:
    """A high-risk call after untrusted content, refused (or not approved): denied, and a `tool.blocked` event."""
    message = (f"{call.name} refused: this agent has read untrusted content ({', '.join(reads)}) and "
               f"{call.name} is high-risk or has side effects")
    if outcome is not None:
        message += f"; {outcome.message}"
    ctx.tracer.end(span, ctx.run_id, "denied", attrs={"error": message, "error_kind": "untrusted_context",
                                                      "after_untrusted": reads,
                                                      "approval": None if outcome is None else outcome.record})
    ctx.tracer.event(ctx.run_id, span, "tool.blocked", agent=agent, name=call.name,
                     data={"reason": "untrusted_context", "tool": call.name, "after_untrusted": reads})
    return _error(call, message)


def replay(ctx: RunContext, span: str, call: ToolCall, recorded: Any, *, reconciled: bool = False,
           source: tuple[str, str] | None = None) -> ToolResultMessage:
    """A call a resumed (or retried) run already made: its recorded outcome, not a second call. `source`: the run
    and span of a record from traces.db (a side effect's own record is DBOS's)."""
    count_replayed(ctx)
    extra: dict[str, Any] = {"replayed": True}
    if reconciled:
        extra["reconciled"] = "done"
    if source is not None:
        extra["replayed_from"] = {"run": source[0], "span": source[1]}
    try:
        value = unwrap(recorded)
    except RecordedFailure as exc:
        ctx.tracer.end(span, ctx.run_id, "error", attrs={"error": str(exc), "error_kind": "tool_error", **extra})
        return _error(call, str(exc))
    ctx.tracer.end(span, ctx.run_id, "ok", attrs={"result": value, **extra})
    return ToolResultMessage(call.id, call.name, _result_text(value))


async def stop_for_reconcile(ctx: RunContext, reason: str, status: str) -> None:
    """End the whole run `status` (needs_reconcile, or failed on an operator's `fail`; see
    engine/runtime/side_effects.py), `reason` its error: cancel it here and now."""
    ctx.attributes["stop_status"] = status
    ctx.active.stop_reason = reason
    ctx.active.scope.cancel()
    from anyio.lowlevel import checkpoint

    await checkpoint()


async def write_ahead(ctx: RunContext, span: str, approval: dict[str, Any] | None, args: dict[str, Any]) -> None:
    """A side effect runs only once its start is committed to traces.db: the tool span's start (tool name,
    arguments, call id) and everything emitted before it. Waits without blocking the event loop; raises
    StoreUnavailable if the store cannot record it (the writer is gone), and is cancelled with the run."""
    from engine.errors import StoreError
    from engine.runtime.store_gate import StoreUnavailable

    if approval is not None and approval.get("edited"):
        # The operator changed the arguments: record what will actually run, before it runs.
        ctx.tracer.event(ctx.run_id, span, "tool.args_edited", data={"args": args})
    try:
        await ctx.engine.writer.commit_now(timeout=None)
    except StoreError as exc:
        raise StoreUnavailable(f"stopped: the trace store cannot record this side effect: {exc}") from None


async def delegate(ctx: RunContext, agent: CompiledAgent, agent_span: str, call: ToolCall,
                   child: str) -> ToolResultMessage:
    """Hand a child agent a structured task (not the parent's history) and return its result to the parent."""
    from engine.runtime.agent import SPAN_STATUS, run_agent
    from engine.runtime.contracts import ContractViolation

    tracer = ctx.tracer
    task = call.arguments.get("task")
    context = call.arguments.get("context") or {}
    span = tracer.start(ctx.run_id, agent_span, "delegation", agent.name, f"{agent.name} -> {child}",
                        {"to": child, "task": task, "context": context, "tool": call.name, "call_id": call.id,
                         "path": AGENT_PATH.get()[:-1]})  # the delegate's prefix is this call's path + `>`
    if call.parse_error or not isinstance(task, str) or not isinstance(context, dict):
        message = (f"delegation to {child} needs a `task` string and a `context` object"
                   + (f" ({call.parse_error})" if call.parse_error else ""))
        tracer.end(span, ctx.run_id, "error", attrs={"error": message})
        return _error(call, message)
    contract = ctx.compiled.agents[child].input_contract
    if contract is not None:
        try:
            context = contract.validate(context)
        except ContractViolation as exc:
            message = f"handoff to {child} does not match its input contract: {exc}"
            tracer.end(span, ctx.run_id, "validation_failed", attrs={"error": message})
            return _error(call, message)
    withheld = ctx.withheld_tools(agent).get(call.name)
    permit = None if withheld else ctx.engine.guards.breakers(ctx.compiled).get("delegation", child).try_acquire()
    if permit is None:
        message = f"delegation to {child} is {withheld or 'unavailable: circuit open'}"
        tracer.end(span, ctx.run_id, "denied", attrs={"error": message})
        return _error(call, message)
    started = time.monotonic()
    try:
        result = await run_agent(ctx, child, task, context, span)
    except BaseException:
        permit.release()
        tracer.end(span, ctx.run_id, "cancelled")
        raise
    if result.status == "ok":
        permit.on_success(time.monotonic() - started)
    else:
        permit.on_error(time.monotonic() - started, result.status)
    tracer.end(span, ctx.run_id, SPAN_STATUS.get(result.status, result.status),
               attrs={"status": result.status, "error": result.error})
    return ToolResultMessage(call.id, call.name, _encode(result.for_parent()), is_error=result.status != "ok")
