"""One model call as the runtime makes it: request building, timeout, tracing and usage accounting."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio

from engine.providers.base import (
    Message,
    ModelRequest,
    ModelResponse,
    ProviderError,
    ProviderTimeout,
)

if TYPE_CHECKING:
    from engine.runtime.compiled import CompiledAgent
    from engine.runtime.context import RunContext


class ModelCallFailed(Exception):
    """Every attempt at a model call failed; the agent ends with an error result."""

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
        "latency_ms": round(response.latency_s * 1000, 2),
        "cached": response.cached,
    }


async def call_model(ctx: "RunContext", agent: "CompiledAgent", agent_span: str,
                     messages: list[Message], step: int) -> ModelResponse:
    """Call the agent's model once, traced as an `llm` span. Raises ModelCallFailed."""
    model = agent.model
    assert model is not None  # routers and pipelines never call models
    provider = ctx.engine.provider_for(ctx.compiled, model)
    request = ModelRequest(model=model.model, messages=messages, tools=agent.tool_definitions,
                           max_output_tokens=model.max_output_tokens, agent=agent.name,
                           run_seed=ctx.seed, timeout_s=model.timeout)
    last = messages[-1]
    span = ctx.tracer.start(ctx.run_id, agent_span, "llm", agent.name, model.model,
                            {"step": step, "messages": len(messages), "tier": model.tier,
                             "input_tail": getattr(last, "content", None)})
    ctx.model_calls += 1
    try:
        with anyio.fail_after(model.timeout):
            response = await provider.complete(request)
    except TimeoutError:
        error: ProviderError = ProviderTimeout(f"{model.model} did not answer within {model.timeout:g}s")
        ctx.tracer.end(span, ctx.run_id, "timeout", model=model.model, attrs={"error": str(error)})
        raise ModelCallFailed(str(error), error.kind) from None
    except ProviderError as exc:
        ctx.tracer.end(span, ctx.run_id, "error", model=model.model,
                       attrs={"error": str(exc), "error_kind": exc.kind, "status": exc.status})
        raise ModelCallFailed(f"{model.model}: {exc}", exc.kind) from None
    except anyio.get_cancelled_exc_class():
        ctx.tracer.end(span, ctx.run_id, "cancelled", model=model.model)
        raise
    usage = response.usage
    cost = 0.0 if response.cached else model.cost_usd(usage.input_tokens, usage.output_tokens)
    ctx.tokens_in += usage.input_tokens
    ctx.tokens_out += usage.output_tokens
    ctx.cost_usd += cost
    ctx.tracer.end(span, ctx.run_id, "ok", tokens_in=usage.input_tokens, tokens_out=usage.output_tokens,
                   cost_usd=cost, model=model.model, attrs=_response_attrs(response))
    ctx.report_progress()
    return response
