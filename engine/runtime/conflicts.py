"""Conflicting worker outputs: an agent's `agree:` setting names fields of its delegates' results that must agree.

    finance:
      delegates: [pricing, financial_modeler]
      agree:
        discount_pct: [pricing.discount_applied_pct, financial_modeler.discount_pct]

A synthesizing agent that gets two answers which disagree must not pick one silently. The watch below collects its
delegates' results as they arrive (one per invocation of the agent); when two present values of one `agree` entry
differ, the agent loop (agent.py) records a `delegation.conflict` event naming the agents, fields and values, and
tells the model in its next request. The final answer must then report the conflict: it must mention every
conflicting value (an answer that picked one silently holds only that one), else it is treated like an output
contract violation (asked again, a bounded number of times, then the agent ends `validation_failed`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Conflict", "ConflictWatch", "conflict_notice", "delegated_output"]


@dataclass(frozen=True, slots=True)
class Conflict:
    label: str
    values: tuple[tuple[str, str, Any], ...]  # (agent, field, value) for every present value of the entry

    def describe(self) -> str:
        return "; ".join(f"{agent}.{name} = {_render(value)}" for agent, name, value in self.values)

    def event_data(self) -> dict[str, Any]:
        return {"field": self.label, "agents": sorted({agent for agent, _, _ in self.values}),
                "values": [{"agent": agent, "field": name, "value": value} for agent, name, value in self.values]}

    def distinct_texts(self) -> list[str]:
        seen: list[str] = []
        for _, _, value in self.values:
            text = _render(value)
            if text not in seen:
                seen.append(text)
        return seen


def _render(value: Any) -> str:
    """A value as an answer would write it: 18.0 is "18", strings bare, anything else as JSON."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str):
        return value
    return json.dumps(value, default=str, sort_keys=True)


def _lookup(output: Any, path: str) -> tuple[bool, Any]:
    value = output
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return False, None
        value = value[part]
    return True, value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _same(a: Any, b: Any) -> bool:
    if _is_number(a) and _is_number(b):
        return float(a) == float(b)
    if isinstance(a, str) and isinstance(b, str):
        return a.strip().casefold() == b.strip().casefold()
    return bool(a == b)


def delegated_output(content: str) -> Any:
    """The `output` of a delegation's tool result (AgentResult.for_parent as JSON), or None."""
    try:
        data = json.loads(content)
    except ValueError:
        return None
    return data.get("output") if isinstance(data, dict) else None


@dataclass(slots=True)
class ConflictWatch:
    """One agent invocation's view of its delegates' results. Not thread-safe: the agent loop alone uses it."""

    agree: dict[str, list[str]]
    outputs: dict[str, Any] = field(default_factory=dict)  # delegate -> its latest ok output
    reported: dict[str, Conflict] = field(default_factory=dict)  # label -> the conflict the agent was told of

    def record(self, agent: str, output: Any) -> None:
        self.outputs[agent] = output

    def _conflict(self, label: str, refs: list[str]) -> Conflict | None:
        present: list[tuple[str, str, Any]] = []
        for ref in refs:
            agent, path = ref.split(".", 1)
            if agent not in self.outputs:
                continue
            found, value = _lookup(self.outputs[agent], path)
            if found and value is not None:
                present.append((agent, path, value))
        if len(present) < 2 or all(_same(present[0][2], v) for _, _, v in present[1:]):
            return None
        return Conflict(label, tuple(present))

    def new_conflicts(self) -> list[Conflict]:
        """Conflicts the agent has not been told of yet (or whose values changed since)."""
        out: list[Conflict] = []
        for label, refs in self.agree.items():
            conflict = self._conflict(label, refs)
            if conflict is not None and self.reported.get(label) != conflict:
                self.reported[label] = conflict
                out.append(conflict)
        return out

    def unreported(self, answer: str | None) -> list[Conflict]:
        """The conflicts a final answer does not mention: it must contain every conflicting value."""
        text = (answer or "").casefold()
        return [c for c in self.reported.values() if not all(v.casefold() in text for v in c.distinct_texts())]


def conflict_notice(conflicts: list[Conflict]) -> str:
    lines = [f"- {c.label}: {c.describe()}" for c in conflicts]
    return ("Your delegates' results disagree:\n" + "\n".join(lines) + "\nDo not pick one silently: your final "
            "answer must report this conflict, naming each value.")
