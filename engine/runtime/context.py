"""Per-run state shared by every agent invocation of one run: ids, counters, and the engine's services."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from engine.durable.keys import PATH_FORMAT
from engine.guardrails.breaker import STATE_VERSION
from engine.providers.base import SystemMessage, ToolDefinition

if TYPE_CHECKING:
    from engine.hierarchy.schema import ModelSpec
    from engine.runtime.compiled import CompiledAgent, CompiledHierarchy
    from engine.runtime.engine import Engine
    from engine.runtime.replay import ReplayTable
    from engine.runtime.tracer import Tracer

_NOTHING_WITHHELD: Mapping[str, str] = MappingProxyType({})


class RunContext:
    """Counters are plain ints mutated on the event loop thread only, so they need no lock."""

    __slots__ = (
        "_withheld",
        "active",
        "agents_active",
        "attributes",
        "budget_scope",
        "compiled",
        "cost_usd",
        "engine",
        "model_calls",
        "path_format",
        "replay",
        "retries",
        "root_span",
        "run_id",
        "seed",
        "tenant",
        "tokens_in",
        "tokens_out",
        "tool_calls",
        "tracer",
        "untrusted_reads",
    )

    def __init__(self, *, run_id: str, seed: int, tenant: str | None, compiled: CompiledHierarchy,
                 engine: Engine, tracer: Tracer) -> None:
        self.run_id = run_id
        self.seed = seed
        self.tenant = tenant
        self.compiled = compiled
        self.engine = engine
        self.tracer = tracer
        self.root_span = ""
        self.budget_scope = f"run:{run_id}"
        self.tokens_in = 0
        self.tokens_out = 0
        self.cost_usd = 0.0
        self.model_calls = 0
        self.tool_calls = 0
        self.agents_active = 0
        self.retries = 0
        self.attributes: dict[str, Any] = {}
        # Recorded calls this run replays instead of making (engine/runtime/replay.py): None unless it resumes
        # or retries, so a normal run pays one `is None` test per call.
        self.replay: ReplayTable | None = None
        # How this run builds call paths (engine/durable/keys.py PATH_FORMAT): a resumed run keeps its first one.
        self.path_format = PATH_FORMAT
        self.active: Any = None  # the engine's ActiveRun entry: cancel scopes and call handles for kill switches
        # agent name -> (the controls' flags, breaker state version, withheld): see withheld_tools().
        self._withheld: dict[str, tuple[object, int, Mapping[str, str]]] = {}
        # agent span -> untrusted tools whose results that invocation has read (engine/runtime/untrusted.py)
        self.untrusted_reads: dict[str, list[str]] = {}

    def report_progress(self) -> None:
        self.engine.writer.run_progress(self.run_id, self.tokens_in, self.tokens_out, self.cost_usd,
                                        self.model_calls, self.tool_calls, self.agents_active)

    def run_span_attrs(self, output: Any, error: str | None) -> dict[str, Any]:
        """What the run's span ends with: its output, error and, when tools came back empty, the missing data
        (engine/runtime/missing_data.py), so the run itself says it answered without it."""
        attrs: dict[str, Any] = {"output": output, "error": error}
        if "missing_data" in self.attributes:
            attrs["missing_data"] = self.attributes["missing_data"]
        return attrs

    def models_for(self, agent: CompiledAgent) -> list[ModelSpec]:
        """The agent's model, then its fallback chain, as operator flags allow (models.max_tier)."""
        return self.engine.controls.models_for(self, agent)

    async def before_call(self, agent: str, tool: str | None) -> None:
        """Kill switches, drain and pause are obeyed here, before any model or tool call starts."""
        await self.engine.controls.before_call(self, agent, tool)

    def withheld_tools(self, agent: CompiledAgent) -> Mapping[str, str]:
        """Tools (and delegations) the model must not be offered right now, with the reason it is told. Read-only.

        Asked before every model call and every tool call, so the answer is cached per agent of this run. It depends
        only on the operators' safe-mode flags (every control snapshot installs a new flags dict, so its identity is
        the version) and on breaker states (STATE_VERSION moves on every transition); an answer that saw a breaker
        in a state time alone can end (OPEN, HALF_OPEN) is not cached.
        """
        cached = self._withheld.get(agent.name)
        if (cached is not None and cached[0] is self.engine.controls.flags
                and cached[1] == STATE_VERSION.value):
            return cached[2]
        return self._derive_withheld(agent)

    def _derive_withheld(self, agent: CompiledAgent) -> Mapping[str, str]:
        # Versions first: a change that lands while deriving leaves the entry stale, never wrongly fresh.
        versions = (self.engine.controls.flags, STATE_VERSION.value)
        withheld = self.engine.controls.withheld_tools(self, agent)
        steady = True
        for name, breaker in self.engine.guards.agent_breakers(self.compiled, agent):
            if not breaker.available():
                withheld.setdefault(name, "unavailable: circuit open")
            steady = steady and breaker.steady
        answer: Mapping[str, str] = MappingProxyType(withheld) if withheld else _NOTHING_WITHHELD
        if steady:
            self._withheld[agent.name] = (*versions, answer)
        else:
            self._withheld.pop(agent.name, None)
        return answer

    def tool_definitions(self, agent: CompiledAgent) -> tuple[list[ToolDefinition], SystemMessage | None]:
        withheld = self.withheld_tools(agent)
        if not withheld:
            return agent.tool_definitions, None
        offered = [t for t in agent.tool_definitions if t.name not in withheld]
        note = SystemMessage("These tools are withheld right now: " + "; ".join(
            f"{name} ({reason})" for name, reason in sorted(withheld.items())) + ". Do not call them.")
        return offered, note
