"""The steps of one model-call attempt, one concern each, called in sequence by call_model (model_call.py):

    reserve (budget) -> [deadline + provider, inline in call_model] -> settle_answer / settle_failure -> back_off

Plain functions over the run's context, not wrappers around each other: they run on every model call, and the
engine's cost per call (~120-180 us with every span stored) has no room for a layer of async wrappers. The provider
call stays inline in call_model: as a coroutine of its own it cost a measurable extra frame per call. `back_off`
awaits only when it decides to wait.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import anyio

from engine.guardrails.budget import Actual, Breach, BudgetLedger, Demand, Reservation
from engine.hierarchy.schema import ModelSpec, RetryPolicy
from engine.providers.base import ModelResponse, ProviderError, Usage
from engine.runtime.guards import BudgetExceeded, breach_data, plan_retry_wait

if TYPE_CHECKING:
    from engine.guardrails.breaker import CircuitBreaker, Permit
    from engine.runtime.compiled import CompiledAgent
    from engine.runtime.context import RunContext

__all__ = ["back_off", "bill", "model_key", "reserve", "settle_answer", "settle_failure"]


def model_key(model: ModelSpec) -> str:
    return f"{model.provider}/{model.model}"


def reserve(ledger: BudgetLedger, agent_span: str, model: ModelSpec, estimated_input: int, permit: Permit
            ) -> tuple[Reservation, int, float]:
    """Hold the call's worst case in the budget: (reservation, max output tokens, reserved USD). max_tokens is
    lowered to what the budget still allows; with nothing left the reservation breaches: the permit is handed back
    and BudgetExceeded raised."""
    max_output = model.max_output_tokens
    cap = ledger.step_output_cap(agent_span, input_tokens=estimated_input)
    if cap is not None:
        max_output = max(1, min(max_output, cap))
    reserved_usd = model.cost_usd(estimated_input, max_output)
    reservation = ledger.reserve(agent_span, Demand(
        input_tokens=estimated_input, output_tokens=max_output, cost_usd=reserved_usd, model_calls=1,
        context_tokens=estimated_input))
    if isinstance(reservation, Breach):
        permit.release()
        raise BudgetExceeded(reservation)
    return reservation, max_output, reserved_usd


def bill(ctx: RunContext, model: ModelSpec, reservation: Reservation, usage: Usage, *, free: bool = False) -> float:
    """Settle a call's reservation with what it used and add it to the run's totals; returns its cost (nothing for
    an answer from the response cache)."""
    cost = 0.0 if free else model.cost_usd(usage.input_tokens, usage.output_tokens)
    ledger = ctx.engine.guards.ledger
    ledger.settle(reservation, Actual(
        input_tokens=usage.input_tokens, output_tokens=usage.output_tokens, cost_usd=cost,
        model_calls=1), {"model": model.model} if ledger.track_attribution or ledger.call_events else None)
    ctx.tokens_in += usage.input_tokens
    ctx.tokens_out += usage.output_tokens
    ctx.cost_usd += cost
    return cost


def _response_attrs(response: ModelResponse) -> dict[str, object]:
    return {
        "content": response.content,
        # `raw`: the arguments' text as the model sent it, which a replay (engine/runtime/replay.py) hands back
        # so the conversation a provider sees after it is the one it saw the first time.
        "tool_calls": [{"id": c.id, "name": c.name, "arguments": c.arguments, "raw": c.raw_arguments,
                        **({"parse_error": c.parse_error} if c.parse_error else {})}
                       for c in response.tool_calls],
        "finish_reason": response.finish_reason,
        "latency_ms": response.latency_s * 1000,
        "cached": response.cached,
    }


def settle_answer(ctx: RunContext, model: ModelSpec, reservation: Reservation, permit: Permit, span: str,
                  response: ModelResponse, started: float) -> None:
    """A successful attempt: the breaker hears of it, the budget is settled, the llm span ends "ok"."""
    permit.on_success(time.monotonic() - started)
    usage = response.usage
    cost = bill(ctx, model, reservation, usage, free=response.cached)
    attrs = _response_attrs(response)
    if response.model and response.model != model.model:
        # The server's own name for what answered (a dated snapshot of an alias): the model version evals record.
        attrs["response_model"] = response.model
    if usage.estimated:
        attrs["tokens_estimated"] = True  # the server sent no usage: the counts are our estimate
    ctx.tracer.end(span, ctx.run_id, "ok", tokens_in=usage.input_tokens,
                   tokens_out=usage.output_tokens, cost_usd=cost, model=model.model, attrs=attrs)
    ctx.report_progress()


def settle_failure(ctx: RunContext, model: ModelSpec, reservation: Reservation, permit: Permit, span: str,
                   error: ProviderError, started: float) -> None:
    """A failed attempt: the breaker hears of it, the reservation is released (or billed, when the server charged
    for an unusable answer), the llm span ends "error" or "timeout"."""
    permit.on_error(time.monotonic() - started, error.kind)
    ledger = ctx.engine.guards.ledger
    billed = error.usage
    failed_attrs: dict[str, object] = {"error": str(error), "error_kind": error.kind, "status": error.status,
                                       "retryable": error.retryable}
    if billed is None:
        ledger.release(reservation)
        ctx.tracer.end(span, ctx.run_id, "timeout" if error.kind == "timeout" else "error",
                       model=model.model, attrs=failed_attrs)
    else:
        # The server charged for an unusable answer (a malformed 200 with `usage`): bill what it reported.
        cost = bill(ctx, model, reservation, billed)
        ctx.tracer.end(span, ctx.run_id, "timeout" if error.kind == "timeout" else "error",
                       tokens_in=billed.input_tokens, tokens_out=billed.output_tokens, cost_usd=cost,
                       model=model.model, attrs=failed_attrs)
    ctx.report_progress()


async def back_off(ctx: RunContext, agent: CompiledAgent, agent_span: str, model: ModelSpec,
                   policy: RetryPolicy, breaker: CircuitBreaker, error: ProviderError, attempt: int) -> str | None:
    """After a failed attempt: wait and return None to retry the same model, or return why not (appended to the
    error; "" when the error is not retryable or the attempts are used up) so the fallback chain moves on.

    In this order: the breaker first (a failure that tripped it makes any backoff end in "circuit open"), then the
    wait (engine.retry: skipped when Retry-After exceeds max_retry_after or the wait outlasts the run's wall time),
    then one unit of the run's retry budget, then the wait itself.
    """
    if not error.retryable or attempt >= policy.max_attempts:
        return ""
    if not breaker.available():
        return f" (not retried: circuit {model_key(model)} is open)"
    engine = ctx.engine
    guards = engine.guards
    wait = plan_retry_wait(policy, attempt, error.retry_after, guards.rng,
                           max_retry_after=model.max_retry_after,
                           time_left=guards.ledger.wall_time_left(agent_span),
                           scale=engine.latency_scale if model.provider == "scripted" else 1.0)
    if wait.give_up is not None:
        ctx.tracer.event(ctx.run_id, agent_span, "model.retry_skipped", agent=agent.name, name=model.model,
                         data={"attempt": attempt, "error_kind": error.kind, "error": str(error),
                               "retry_after": error.retry_after, "max_retry_after": model.max_retry_after,
                               "reason": wait.give_up})
        return f" (not retried: {wait.give_up})"
    retry = guards.ledger.reserve(agent_span, Demand(retries=1))
    if isinstance(retry, Breach):
        ctx.tracer.event(ctx.run_id, agent_span, "budget.breach", agent=agent.name, name="retries",
                         data=breach_data(retry))
        return " (retry budget exhausted)"
    guards.ledger.settle(retry, Actual(retries=1))
    ctx.retries += 1
    delay = wait.delay_s
    ctx.tracer.event(ctx.run_id, agent_span, "model.retry", agent=agent.name, name=model.model,
                     data={"attempt": attempt, "delay_s": round(delay, 3), "error_kind": error.kind,
                           "error": str(error), "retry_after": error.retry_after})
    await anyio.sleep(delay)
    return None
