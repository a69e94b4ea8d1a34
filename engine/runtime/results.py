"""What agents hand back to their parents and what a run ends with."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

AgentStatus = Literal["ok", "error", "budget_exceeded", "loop_detected", "killed", "validation_failed",
                      "cancelled"]
RunStatus = Literal["completed", "failed", "budget_exceeded", "killed", "loop_detected", "refused", "needs_reconcile"]

# How an entry agent's outcome becomes the run's status. A child's trouble does not fail the run: its parent gets
# the error result and may still finish.
RUN_STATUS_FOR_AGENT: dict[str, RunStatus] = {
    "ok": "completed",
    "error": "failed",
    "validation_failed": "failed",
    "cancelled": "killed",
    "killed": "killed",
    "budget_exceeded": "budget_exceeded",
    "loop_detected": "loop_detected",
}

# Exit codes of `flightdeck run`, documented in the README.
EXIT_CODES: dict[str, int] = {
    "completed": 0, "failed": 1, "budget_exceeded": 4, "loop_detected": 5, "killed": 6, "refused": 7,
    "needs_reconcile": 8,
}


@dataclass(slots=True)
class AgentResult:
    agent: str
    status: AgentStatus
    output: Any = None
    error: str | None = None

    def for_parent(self) -> dict[str, Any]:
        """The result as the parent model sees it (a tool result)."""
        out: dict[str, Any] = {"agent": self.agent, "status": self.status}
        if self.output is not None:
            out["output"] = self.output
        if self.error:
            out["error"] = self.error
        return out


@dataclass(slots=True)
class RunResult:
    run_id: str
    hierarchy: str
    status: RunStatus
    output: Any
    error: str | None
    tokens_in: int
    tokens_out: int
    cost_usd: float
    model_calls: int
    tool_calls: int
    started: float
    ended: float

    @property
    def duration_s(self) -> float:
        return self.ended - self.started

    def to_json(self) -> dict[str, Any]:
        return {"id": self.run_id, "hierarchy": self.hierarchy, "status": self.status, "output": self.output,
                "error": self.error, "tokens_in": self.tokens_in, "tokens_out": self.tokens_out,
                "cost_usd": round(self.cost_usd, 6), "model_calls": self.model_calls,
                "tool_calls": self.tool_calls, "started": self.started, "ended": self.ended,
                "duration_s": round(self.duration_s, 3)}


def split_input(value: Any) -> tuple[str, dict[str, Any]]:
    """The entry agent's handoff from a run input: text becomes the task; an object becomes the context."""
    if isinstance(value, dict):
        task = value.get("task")
        return (task if isinstance(task, str) else "Handle this request."), value
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            return value, {}
        if isinstance(parsed, dict):
            return split_input(parsed)
        return value, {}
    return json.dumps(value, default=str), {}
