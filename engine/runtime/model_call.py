"""One model call as the runtime makes it, with every guardrail in order:

    fallback chain (strong -> standard -> economy) -> model breaker -> budget reservation -> timeout -> provider
    -> settle usage (or release) -> retry with backoff on retryable errors, honouring Retry-After

call_model is the fallback and attempt loops; each step of an attempt is a plain function in model_steps.py, but
for the deadline and provider call, which stay inline (see there). Each
attempt is its own `llm` span; retries, fallbacks and breaches are events. Nothing here retries forever: a maximum
per call, a retry budget per run, and a fixed chain of models.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import anyio

from engine.providers.base import Message, ModelRequest, ModelResponse, ProviderError, ProviderTimeout
from engine.runtime.deadline import Deadline
from engine.runtime.model_steps import back_off, model_key, reserve, settle_answer, settle_failure
from engine.runtime.replay import replay_model

if TYPE_CHECKING:
    from engine.runtime.compiled import CompiledAgent
    from engine.runtime.context import RunContext

__all__ = ["ModelCallFailed", "call_model", "model_key"]


class ModelCallFailed(Exception):
    """Every model in the chain failed or was unavailable; the agent ends with an error result."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


async def call_model(ctx: RunContext, agent: CompiledAgent, agent_span: str, messages: list[Message],
                     step: int, context_chars: int, path: str) -> ModelResponse:
    """Get one completion for the agent, or raise ModelCallFailed / BudgetExceeded. `path`: the call's structural
    path (engine/durable/keys.py); a resumed or retried run replays the answer recorded under it, if any."""
    replay = ctx.replay
    if replay is not None:
        recorded = replay.model(path, agent)
        if recorded is not None:
            await ctx.before_call(agent.name, None)  # kill switches and pause hold for a replayed step too
            return replay_model(ctx, agent, agent_span, recorded, step, path, len(messages))
    engine = ctx.engine
    guards = engine.guards
    ledger = guards.ledger
    breakers = guards.breakers(ctx.compiled)
    policy = agent.spec.retry or ctx.compiled.spec.defaults.retry
    chain = ctx.models_for(agent)
    # Deliberately pessimistic (3 characters a token, where English averages ~4): the reservation must cover the
    # real count or concurrent calls could overshoot a cap; settling releases whatever was not used.
    estimated_input = (context_chars + agent.tool_definition_chars) // 3 + 8 * len(messages) + 16
    last_error = "no model available"
    last_kind = "unavailable"
    for index, model in enumerate(chain):  # the fallback step
        if index > 0:
            ctx.tracer.event(ctx.run_id, agent_span, "model.fallback", agent=agent.name, name=model.model,
                             data={"from": chain[index - 1].model, "to": model.model, "reason": last_error})
        breaker = breakers.get("model", model_key(model))
        provider = engine.provider_for(ctx.compiled, model, agent)
        attempt = 0
        while True:
            attempt += 1
            permit = breaker.try_acquire()  # the breaker step
            if permit is None:
                last_error, last_kind = f"{model_key(model)} unavailable: circuit open", "circuit_open"
                break
            await ctx.before_call(agent.name, None)
            reservation, max_output, reserved_usd = reserve(ledger, agent_span, model, estimated_input, permit)
            tools, withheld_note = ctx.tool_definitions(agent)
            # The input a model sees is the previous tool result or the handoff, already on their own spans: the
            # llm span records counts and the reservation, not another copy of the text.
            request = ModelRequest(model=model.model, messages=messages if withheld_note is None else
                                   [*messages, withheld_note], tools=tools,
                                   max_output_tokens=max_output, agent=agent.name, run_seed=ctx.seed,
                                   timeout_s=model.timeout)
            span = ctx.tracer.start(ctx.run_id, agent_span, "llm", agent.name, model.model,
                                    {"step": step, "attempt": attempt, "messages": len(messages), "tier": model.tier,
                                     "path": path, "reserved_usd": reserved_usd, "max_output_tokens": max_output,
                                     "provider": model.provider})
            ctx.model_calls += 1
            started = time.monotonic()
            error: ProviderError
            # The deadline and provider steps, inline rather than a function: a coroutine frame more per model call
            # is measurable in `python -m bench guardrails`.
            try:
                async with Deadline(model.timeout):
                    response = await provider.complete(request)
            except TimeoutError:
                error = ProviderTimeout(f"{model.model} did not answer within {model.timeout:g}s")
            except ProviderError as exc:
                error = exc
            except anyio.get_cancelled_exc_class():
                permit.release()
                ledger.release(reservation)
                ctx.tracer.end(span, ctx.run_id, "cancelled", model=model.model)
                raise
            else:
                settle_answer(ctx, model, reservation, permit, span, response, started)
                return response
            settle_failure(ctx, model, reservation, permit, span, error, started)
            last_error, last_kind = f"{model.model}: {error}", error.kind
            not_retried = await back_off(ctx, agent, agent_span, model, policy, breaker, error, attempt)
            if not_retried is not None:
                last_error += not_retried
                break
    raise ModelCallFailed(last_error, last_kind)
