"""One detector per detect condition: it turns committed events into samples for its signal, keyed by the
condition's scope, and evaluates the signal's value per key. The shared types and bases are `detector_base.py`.
"""

from __future__ import annotations

from collections.abc import Mapping

from engine.runbooks.detector_base import (
    Detector,
    Dims,
    Event,
    Facts,
    KeyContext,
    PendingApproval,
    Reading,
    SumDetector,
    event_dims,
)
from engine.runbooks.model import Condition
from engine.runbooks.windows import WindowedSamples

TOOL_FAILURE_STATUSES = frozenset({"error", "timeout", "outcome_unknown"})
TOOL_COUNTED_STATUSES = TOOL_FAILURE_STATUSES | {"ok"}


class CountDetector(SumDetector):
    """Counts events of some kinds (loop.detected, validation.failed, budget.soft_threshold, ...)."""

    def samples_of(self, event: Event, facts: Facts,
                   durations: Mapping[str, float]) -> list[tuple[Dims, tuple[float, ...]]]:
        if event[1] not in self.kinds:
            return []
        data = event[6] or {}
        tool = data.get("tool") if isinstance(data.get("tool"), str) else None
        return [(event_dims(event, facts, tool), (1.0,))]


class LoopDetector(CountDetector):
    kinds = frozenset({"loop.detected"})


class ValidationDetector(CountDetector):
    kinds = frozenset({"validation.failed"})


class SoftThresholdDetector(CountDetector):
    kinds = frozenset({"budget.soft_threshold"})


class TamperedDetector(CountDetector):
    kinds = frozenset({"control.tampered"})


class BlockedToolDetector(CountDetector):
    def __init__(self, condition: Condition) -> None:
        super().__init__(condition)
        self.kinds = frozenset({"tool.blocked", "tool.withheld"} if self.params["include_withheld"]
                               else {"tool.blocked"})

    def samples_of(self, event: Event, facts: Facts,
                   durations: Mapping[str, float]) -> list[tuple[Dims, tuple[float, ...]]]:
        if event[1] not in self.kinds:
            return []
        data = event[6] or {}
        tool = data.get("tool") or event[5]
        return [(event_dims(event, facts, tool if isinstance(tool, str) else None), (1.0,))]


class AbandonedRunsDetector(CountDetector):
    kinds = frozenset({"run.ended"})

    def samples_of(self, event: Event, facts: Facts,
                   durations: Mapping[str, float]) -> list[tuple[Dims, tuple[float, ...]]]:
        _, kind, run_id, _, _, name, data = event
        if kind != "run.ended" or (data or {}).get("status") != "abandoned":
            return []
        return [(Dims(hierarchy=name or facts.hierarchy_of(run_id), run=run_id), (1.0,))]


class BreakerOpenedDetector(CountDetector):
    kinds = frozenset({"breaker.transition"})

    def samples_of(self, event: Event, facts: Facts,
                   durations: Mapping[str, float]) -> list[tuple[Dims, tuple[float, ...]]]:
        _, kind, _, _, _, name, data = event
        if kind != "breaker.transition" or not data or data.get("to") != "open":
            return []
        key = str(data.get("key") or name or "")
        breaker_kind, _, breaker_name = key.partition(":")
        wanted = "tool" if self.scope == "tool" else self.params["kind"]
        if wanted != "any" and breaker_kind != wanted:
            return []
        dims = Dims(hierarchy=data.get("hierarchy"), tool=breaker_name if breaker_kind == "tool" else None)
        return [(dims, (1.0,))]


class SpendRateDetector(SumDetector):
    kinds = frozenset({"span.ended"})

    def samples_of(self, event: Event, facts: Facts,
                   durations: Mapping[str, float]) -> list[tuple[Dims, tuple[float, ...]]]:
        data = event[6]
        if event[1] != "span.ended" or not data or data.get("kind") != "llm":
            return []
        cost = data.get("cost_usd") or 0.0
        if not cost:
            return []
        return [(event_dims(event, facts), (float(cost),))]

    def read(self, key: str, now: float, facts: Facts) -> Reading:
        totals = self.window.totals.get(key)
        value = (totals[0] if totals else 0.0) / (self.condition.window / 60.0)
        return Reading(value, self.holds(value), self.window.counts.get(key, 0))


class ToolFailureRateDetector(SumDetector):
    kinds = frozenset({"span.ended"})
    width = 2  # (failed, total)

    def samples_of(self, event: Event, facts: Facts,
                   durations: Mapping[str, float]) -> list[tuple[Dims, tuple[float, ...]]]:
        data = event[6]
        if event[1] != "span.ended" or not data or data.get("kind") != "tool":
            return []
        status = data.get("status")
        if status not in TOOL_COUNTED_STATUSES:
            return []
        tool = data.get("name") or event[5]
        return [(event_dims(event, facts, tool), (1.0 if status in TOOL_FAILURE_STATUSES else 0.0, 1.0))]

    def read(self, key: str, now: float, facts: Facts) -> Reading:
        totals = self.window.totals.get(key)
        if not totals or totals[1] < self.params["min_calls"]:
            return Reading(None, False, int(totals[1]) if totals else 0)
        value = 100.0 * totals[0] / totals[1]
        return Reading(value, self.holds(value), int(totals[1]))


class LatencyDetector(Detector):
    kinds = frozenset({"span.ended"})

    def __init__(self, condition: Condition) -> None:
        super().__init__(condition)
        self.span_kind = "tool" if condition.scope == "tool" or self.params["kind"] == "tool" else "llm"
        self.window = WindowedSamples(condition.window)

    def samples_of(self, event: Event, facts: Facts,
                   durations: Mapping[str, float]) -> list[tuple[Dims, tuple[float, ...]]]:
        data = event[6]
        if event[1] != "span.ended" or not data or data.get("kind") != self.span_kind:
            return []
        if data.get("status") in ("cancelled", "denied"):
            return []  # never ran, or cut short by an operator: not a latency
        duration = data.get("duration_s")  # the writer's (ended - started); older writers did not send it
        if duration is None:
            duration = durations.get(event[3] or "")
        if duration is None:
            return []
        tool = (data.get("name") or event[5]) if self.span_kind == "tool" else None
        return [(event_dims(event, facts, tool), (duration,))]

    def add(self, t: float, key: str, values: tuple[float, ...]) -> None:
        self.window.add(t, key, values[0])

    def keys(self) -> set[str]:
        return set(self.window.samples)

    def expire(self, now: float, facts: Facts) -> None:
        self.window.expire(now)
        for key in [k for k in self.contexts if k not in self.window.samples]:
            del self.contexts[key]

    def read(self, key: str, now: float, facts: Facts) -> Reading:
        result = self.window.percentile(key, 95)
        if result is None or result[1] < self.params["min_samples"]:
            return Reading(None, False, result[1] if result else 0)
        return Reading(result[0], self.holds(result[0]), result[1])


class ApprovalBacklogDetector(Detector):
    """A gauge over Facts.pending_approvals; events only matter through Facts."""

    def __init__(self, condition: Condition) -> None:
        super().__init__(condition)
        self._last_groups: dict[str, list[PendingApproval]] = {}

    def samples_of(self, event: Event, facts: Facts,
                   durations: Mapping[str, float]) -> list[tuple[Dims, tuple[float, ...]]]:
        return []

    def add(self, t: float, key: str, values: tuple[float, ...]) -> None:
        return None

    def _groups(self, facts: Facts) -> dict[str, list[PendingApproval]]:
        groups: dict[str, list[PendingApproval]] = {}
        for row in facts.pending_approvals.values():
            dims = Dims(hierarchy=row.hierarchy, agent=row.agent, tool=row.tool, run=row.run)
            key = dims.key(self.scope)
            if key is None or (self.condition.target is not None and key != self.condition.target):
                continue
            groups.setdefault(key, []).append(row)
        return groups

    def keys(self) -> set[str]:
        return set(self._last_groups)

    def expire(self, now: float, facts: Facts) -> None:
        self._last_groups = self._groups(facts)
        self.contexts = {}
        for key, rows in self._last_groups.items():
            context = self.contexts[key] = KeyContext()
            for row in sorted(rows, key=lambda r: r.requested):
                context.note(Dims(hierarchy=row.hierarchy, agent=row.agent, tool=row.tool, run=row.run))

    def read(self, key: str, now: float, facts: Facts) -> Reading:
        rows = self._last_groups.get(key, [])
        if self.params["measure"] == "count":
            value = float(len(rows))
        else:
            value = max((now - r.requested for r in rows), default=0.0)
        return Reading(value, self.holds(value), len(rows))


_DETECTORS: dict[str, type[Detector]] = {
    "loop_detected": LoopDetector,
    "tool_failure_rate": ToolFailureRateDetector,
    "breaker_opened": BreakerOpenedDetector,
    "spend_rate_per_min": SpendRateDetector,
    "budget_soft_threshold": SoftThresholdDetector,
    "latency_p95": LatencyDetector,
    "validation_failures": ValidationDetector,
    "approval_backlog": ApprovalBacklogDetector,
    "blocked_tool_attempts": BlockedToolDetector,
    "runs_abandoned": AbandonedRunsDetector,
    "control_tampered": TamperedDetector,
}


def make_detector(condition: Condition) -> Detector:
    if condition.signal == "queue_backlog":  # serve mode's queues: engine/runbooks/queue_detectors.py
        from engine.runbooks.queue_detectors import QueueBacklogDetector

        return QueueBacklogDetector(condition)
    if condition.signal == "sampled_score":  # online sampling's scores: engine/runbooks/eval_detectors.py
        from engine.runbooks.eval_detectors import SampledScoreDetector

        return SampledScoreDetector(condition)
    return _DETECTORS[condition.signal](condition)


def needs_durations(condition: Condition) -> bool:
    return condition.signal == "latency_p95"
