"""Per-run state shared by every agent invocation of one run: ids, counters, and the engine's services."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.runtime.compiled import CompiledHierarchy
    from engine.runtime.engine import Engine
    from engine.runtime.tracer import Tracer


class RunContext:
    """Counters are plain ints mutated on the event loop thread only, so they need no lock."""

    __slots__ = ("run_id", "seed", "tenant", "compiled", "engine", "tracer", "root_span", "tokens_in", "tokens_out",
                 "cost_usd", "model_calls", "tool_calls", "agents_active", "retries", "attributes")

    def __init__(self, *, run_id: str, seed: int, tenant: str | None, compiled: "CompiledHierarchy",
                 engine: "Engine", tracer: "Tracer") -> None:
        self.run_id = run_id
        self.seed = seed
        self.tenant = tenant
        self.compiled = compiled
        self.engine = engine
        self.tracer = tracer
        self.root_span = ""
        self.tokens_in = 0
        self.tokens_out = 0
        self.cost_usd = 0.0
        self.model_calls = 0
        self.tool_calls = 0
        self.agents_active = 0
        self.retries = 0
        self.attributes: dict[str, Any] = {}

    def report_progress(self) -> None:
        self.engine.writer.run_progress(self.run_id, self.tokens_in, self.tokens_out, self.cost_usd,
                                        self.model_calls, self.tool_calls, self.agents_active)
