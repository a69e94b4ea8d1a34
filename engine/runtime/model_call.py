"""One model call as the runtime makes it, with every guardrail in order:

    fallback chain (strong -> standard -> economy) -> model breaker -> budget reservation -> timeout -> provider
    -> settle usage (or release) -> retry with backoff on retryable errors, honouring Retry-After

Each attempt is its own `llm` span; retries, fallbacks and breaches are events. Nothing here retries forever: a
maximum per call, a retry budget per run, and a fixed chain of models.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import anyio

from engine.guardrails.budget import Actual, Demand
from engine.hierarchy.schema import ModelSpec
from engine.providers.base import Message, ModelRequest, ModelResponse, ProviderError, ProviderTimeout, Usage
from engine.runtime.deadline import Deadline
from engine.runtime.guards import BudgetExceeded, breach_data, plan_retry_wait

if TYPE_CHECKING:
    from engine.runtime.compiled import CompiledAgent
    from engine.runtime.context import RunContext


class ModelCallFailed(Exception):
    """Every model in the chain failed or was unavailable; the agent ends with an error result."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


def _response_attrs(response: ModelResponse) -> dict[str, object]:
    return {
        "content": response.content,
        "tool_calls": [{"id": c.id, "name": c.name, "arguments": c.arguments,
                        **({"parse_error": c.parse_error, "raw": c.raw_arguments} if c.parse_error else {})}
                       for c in response.tool_calls],
        "finish_reason": response.finish_reason,
        "latency_ms": response.latency_s * 1000,
        "cached": response.cached,
    }


def model_key(model: ModelSpec) -> str:
    return f"{model.provider}/{model.model}"


def _bill(ctx: "RunContext", model: ModelSpec, reservation: object, usage: Usage, *, free: bool = False) -> float:
    """Settle a call's reservation with what it used and add it to the run's totals; returns its cost (nothing for
    an answer from the response cache)."""
    cost = 0.0 if free else model.cost_usd(usage.input_tokens, usage.output_tokens)
    ledger = ctx.engine.guards.ledger
    ledger.settle(reservation, Actual(  # type: ignore[arg-type]
        input_tokens=usage.input_tokens, output_tokens=usage.output_tokens, cost_usd=cost,
        model_calls=1), {"model": model.model} if ledger.track_attribution or ledger.call_events else None)
    ctx.tokens_in += usage.input_tokens
    ctx.tokens_out += usage.output_tokens
    ctx.cost_usd += cost
    return cost


async def call_model(ctx: "RunContext", agent: "CompiledAgent", agent_span: str, messages: list[Message],
                     step: int, context_chars: int) -> ModelResponse:
    """Get one completion for the agent, or raise ModelCallFailed / BudgetExceeded."""
    engine = ctx.engine
    guards = engine.guards
    breakers = guards.breakers(ctx.compiled)
    policy = agent.spec.retry or ctx.compiled.spec.defaults.retry
    chain = ctx.models_for(agent)
    # Deliberately pessimistic (3 characters a token, where English averages ~4): the reservation must cover the
    # real count or concurrent calls could overshoot a cap; settling releases whatever was not used.
    estimated_input = (context_chars + agent.tool_definition_chars) // 3 + 8 * len(messages) + 16
    last_error = "no model available"
    last_kind = "unavailable"
    for index, model in enumerate(chain):
        if index > 0:
            ctx.tracer.event(ctx.run_id, agent_span, "model.fallback", agent=agent.name, name=model.model,
                             data={"from": chain[index - 1].model, "to": model.model, "reason": last_error})
        breaker = breakers.get("model", model_key(model))
        provider = engine.provider_for(ctx.compiled, model, agent)
        attempt = 0
        while True:
            attempt += 1
            permit = breaker.try_acquire()
            if permit is None:
                last_error, last_kind = f"{model_key(model)} unavailable: circuit open", "circuit_open"
                break
            await ctx.before_call(agent.name, None)
            max_output = model.max_output_tokens
            cap = guards.ledger.step_output_cap(agent_span, input_tokens=estimated_input)
            if cap is not None:
                # Lower max_tokens to what the budget still allows; with nothing left the reservation breaches.
                max_output = max(1, min(max_output, cap))
            # The input a model sees is the previous tool result or the handoff, already on their own spans: the
            # llm span records counts and the reservation, not another copy of the text.
            reserved_usd = model.cost_usd(estimated_input, max_output)
            reservation = guards.ledger.reserve(agent_span, Demand(
                input_tokens=estimated_input, output_tokens=max_output, cost_usd=reserved_usd, model_calls=1,
                context_tokens=estimated_input))
            if not reservation.ok:
                permit.release()
                raise BudgetExceeded(reservation)  # type: ignore[arg-type]
            tools, withheld_note = ctx.tool_definitions(agent)
            request = ModelRequest(model=model.model, messages=messages if withheld_note is None else
                                   [*messages, withheld_note], tools=tools,
                                   max_output_tokens=max_output, agent=agent.name, run_seed=ctx.seed,
                                   timeout_s=model.timeout)
            span = ctx.tracer.start(ctx.run_id, agent_span, "llm", agent.name, model.model,
                                    {"step": step, "attempt": attempt, "messages": len(messages), "tier": model.tier,
                                     "reserved_usd": reserved_usd, "max_output_tokens": max_output})
            ctx.model_calls += 1
            started = time.monotonic()
            error: ProviderError
            try:
                async with Deadline(model.timeout):
                    response = await provider.complete(request)
            except TimeoutError:
                error = ProviderTimeout(f"{model.model} did not answer within {model.timeout:g}s")
            except ProviderError as exc:
                error = exc
            except anyio.get_cancelled_exc_class():
                permit.release()
                guards.ledger.release(reservation)  # type: ignore[arg-type]
                ctx.tracer.end(span, ctx.run_id, "cancelled", model=model.model)
                raise
            else:
                duration = time.monotonic() - started
                permit.on_success(duration)
                usage = response.usage
                cost = _bill(ctx, model, reservation, usage, free=response.cached)
                attrs = _response_attrs(response)
                if usage.estimated:
                    attrs["tokens_estimated"] = True  # the server sent no usage: the counts are our estimate
                ctx.tracer.end(span, ctx.run_id, "ok", tokens_in=usage.input_tokens,
                               tokens_out=usage.output_tokens, cost_usd=cost, model=model.model, attrs=attrs)
                ctx.report_progress()
                return response

            duration = time.monotonic() - started
            permit.on_error(duration, error.kind)
            billed = error.usage
            failed_attrs: dict[str, object] = {"error": str(error), "error_kind": error.kind, "status": error.status,
                                               "retryable": error.retryable}
            if billed is None:
                guards.ledger.release(reservation)  # type: ignore[arg-type]
                ctx.tracer.end(span, ctx.run_id, "timeout" if error.kind == "timeout" else "error",
                               model=model.model, attrs=failed_attrs)
            else:
                # The server charged for an unusable answer (a malformed 200 with `usage`): bill what it reported.
                cost = _bill(ctx, model, reservation, billed)
                ctx.tracer.end(span, ctx.run_id, "timeout" if error.kind == "timeout" else "error",
                               tokens_in=billed.input_tokens, tokens_out=billed.output_tokens, cost_usd=cost,
                               model=model.model, attrs=failed_attrs)
            ctx.report_progress()
            last_error, last_kind = f"{model.model}: {error}", error.kind
            if not error.retryable or attempt >= policy.max_attempts:
                break
            if not breaker.available():
                # This failure tripped the breaker: a backoff would only end in "circuit open", so move on now.
                last_error = f"{last_error} (not retried: circuit {model_key(model)} is open)"
                break
            wait = plan_retry_wait(policy, attempt, error.retry_after, guards.rng,
                                   max_retry_after=model.max_retry_after,
                                   time_left=guards.ledger.wall_time_left(agent_span),
                                   scale=engine.latency_scale if model.provider == "scripted" else 1.0)
            if wait.give_up is not None:
                ctx.tracer.event(ctx.run_id, agent_span, "model.retry_skipped", agent=agent.name, name=model.model,
                                 data={"attempt": attempt, "error_kind": error.kind, "error": str(error),
                                       "retry_after": error.retry_after, "max_retry_after": model.max_retry_after,
                                       "reason": wait.give_up})
                last_error = f"{last_error} (not retried: {wait.give_up})"
                break
            retry = guards.ledger.reserve(agent_span, Demand(retries=1))
            if not retry.ok:
                ctx.tracer.event(ctx.run_id, agent_span, "budget.breach", agent=agent.name, name="retries",
                                 data=breach_data(retry))  # type: ignore[arg-type]
                last_error = f"{last_error} (retry budget exhausted)"
                break
            guards.ledger.settle(retry, Actual(retries=1))  # type: ignore[arg-type]
            ctx.retries += 1
            delay = wait.delay_s
            ctx.tracer.event(ctx.run_id, agent_span, "model.retry", agent=agent.name, name=model.model,
                             data={"attempt": attempt, "delay_s": round(delay, 3), "error_kind": error.kind,
                                   "error": str(error), "retry_after": error.retry_after})
            await anyio.sleep(delay)
    raise ModelCallFailed(last_error, last_kind)
