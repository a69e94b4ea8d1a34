"""How a resumed run's counters and budget carry on from what its row recorded (engine/runtime/durable_runs.py
resumes it; engine/runtime/engine.py seeds its context with these)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.runtime.durable_runs import ResumeInfo


def seed_resumed(ctx: Any, info: ResumeInfo) -> dict[str, Any]:
    """A resumed run's counters carry on from what its row recorded; returns the row attributes saying so."""
    ctx.tokens_in, ctx.tokens_out, ctx.cost_usd = info.tokens_in, info.tokens_out, info.cost_usd
    ctx.model_calls, ctx.tool_calls = info.model_calls, info.tool_calls
    ctx.attributes["resume"] = info
    ctx.replay = info.replay
    return {"resumed": info.resumed, "replayed_steps": info.replayed_steps}


def seed_budget(ctx: Any) -> None:
    """Spend a resumed run already recorded counts against its run budget (and through it the day's)."""
    info = ctx.attributes.get("resume")
    if info is None or not (info.cost_usd or info.model_calls or info.tool_calls):
        return
    from engine.guardrails.budget import Actual, Demand

    ledger = ctx.engine.guards.ledger
    spent = dict(input_tokens=info.tokens_in, output_tokens=info.tokens_out, cost_usd=info.cost_usd,
                 model_calls=info.model_calls, tool_calls=info.tool_calls)
    reservation = ledger.reserve(ctx.budget_scope, Demand(**spent))
    if not reservation.ok:
        ctx.attributes["run_budget_exhausted"] = reservation.message
        return
    ledger.settle(reservation, Actual(**spent))
