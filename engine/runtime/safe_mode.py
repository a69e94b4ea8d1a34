"""What safe-mode flags and kill switches say, as pure functions over the state RuntimeControls holds
(engine/runtime/controls.py applies snapshots and runs the gate; this module only reads).

- Flags are `{name: {(scope, target): value}}`; the narrowest scope wins: run, then hierarchy, then global.
- A kill switch covers a run by scope (global, run, hierarchy, agent (optionally within one run), tool); one
  `limited_to` a run is spent once that run ended.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from engine.hierarchy.schema import TIER_RANK

if TYPE_CHECKING:
    from engine.hierarchy.schema import ModelSpec
    from engine.runtime.compiled import CompiledAgent
    from engine.runtime.context import RunContext
    from engine.store.control_rows import KillSwitch

__all__ = ["Flags", "covers", "describe_switch", "flag_value", "limited_to", "models_within_cap", "tools_withheld"]

Flags = dict[str, dict[tuple[str, str | None], str]]


def flag_value(flags: Flags, name: str, run_id: str | None, hierarchy: str) -> str | None:
    values = flags.get(name)
    if not values:
        return None
    if run_id is not None and ("run", run_id) in values:
        return values[("run", run_id)]
    if ("hierarchy", hierarchy) in values:
        return values[("hierarchy", hierarchy)]
    return values.get(("global", None))


def models_within_cap(ctx: RunContext, agent: CompiledAgent, cap: str | None) -> list[ModelSpec]:
    """The agent's model chain under `models.max_tier` (None: no cap)."""
    assert agent.model is not None
    chain = [agent.model, *agent.fallback]
    if cap is None:
        return chain
    allowed = [m for m in chain if TIER_RANK[m.tier] <= TIER_RANK[cap]]
    if allowed:
        return allowed
    # Nothing in the agent's own chain is at or below the cap: the strongest model of the hierarchy that is.
    # If the hierarchy has none, the cheapest it has (an answer beats none; the trace shows the tier used).
    models = sorted(ctx.compiled.spec.models.values(), key=lambda m: (-TIER_RANK[m.tier], m.price_out))
    within = [m for m in models if TIER_RANK[m.tier] <= TIER_RANK[cap]]
    return within[:1] or sorted(models, key=lambda m: (TIER_RANK[m.tier], m.price_out))[:1]


def tools_withheld(agent: CompiledAgent, flag: Callable[[str], str | None]) -> dict[str, str]:
    """Tools (and delegations) safe mode takes from the agent, with why; `flag(name)` reads a flag for its run."""
    withheld: dict[str, str] = {}
    side_effects_off = flag("tools.side_effects") == "off"
    for name, tool in agent.tools.items():
        if side_effects_off and tool.spec.side_effects:
            withheld[name] = "withheld: side effects are off (safe mode)"
        elif flag(f"tool.{name}") == "disabled":
            withheld[name] = f"disabled by safe mode (tool.{name}=disabled)"
    for tool_name, child in agent.delegation_names.items():
        if flag(f"agent.{child}") == "disabled":
            withheld[tool_name] = f"agent {child} is disabled (safe mode)"
    return withheld


def covers(switch: KillSwitch, ctx: RunContext, agent: str, tool: str | None) -> bool:
    scope, target = switch.scope, switch.target
    return (scope == "global" or (scope == "run" and target == ctx.run_id)
            or (scope == "hierarchy" and target == ctx.compiled.name)
            or (scope == "agent" and target == agent and switch.run_id in (None, ctx.run_id))
            or (scope == "tool" and tool is not None and target == tool))


def limited_to(switch: KillSwitch) -> str | None:
    """The run a switch covers alone (scope `run`, or an agent switch limited to one run), else None."""
    if switch.scope == "run":
        return switch.target
    return switch.run_id


def describe_switch(switch: KillSwitch) -> str:
    scope = switch.scope
    what = "everything" if scope == "global" else f"{scope} {switch.target}"
    if switch.run_id and scope == "agent":
        what += f" in run {switch.run_id}"
    return f"{switch.mode} switch #{switch.id} on {what} by {switch.operator}: {switch.reason}"
