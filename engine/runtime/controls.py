"""The engine's side of operator controls: what the runtime asks before each call. Until a store's control state
says otherwise, everything is allowed and every agent uses its own model chain."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.hierarchy.schema import ModelSpec
    from engine.runtime.compiled import CompiledAgent
    from engine.runtime.context import RunContext


class RuntimeControls:
    def models_for(self, ctx: "RunContext", agent: "CompiledAgent") -> list["ModelSpec"]:
        assert agent.model is not None
        return [agent.model, *agent.fallback]

    async def before_call(self, ctx: "RunContext", agent: str, tool: str | None) -> None:
        return None

    def withheld_tools(self, ctx: "RunContext", agent: "CompiledAgent") -> dict[str, str]:
        return {}
