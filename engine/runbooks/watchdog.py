"""The watchdog: every runbook's detections, evaluated over the committed event stream.

It is step-driven and owns no thread: `feed(events, now)` takes a batch of committed events, `evaluate(now)` returns
the fire / clear transitions since the last evaluation. RunbookEngine calls both from its own thread with its clock;
tests call them with a FakeClock and see exactly when a detection fires and clears.

A runbook fires for a scope (global, hierarchy:NAME, agent:NAME, tool:NAME) when ANY of its conditions fires for it,
and clears when all of them have cleared; each condition has its own hysteresis (see windows.Hysteresis).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from engine.runbooks.detector_base import Detector, Event, Facts, PendingApproval, Reading
from engine.runbooks.detectors import make_detector, needs_durations
from engine.runbooks.model import Runbook
from engine.runbooks.queue_detectors import queue_row
from engine.runbooks.windows import OK, Hysteresis

if TYPE_CHECKING:
    from engine.store.control_rows import Approval

DurationSource = Callable[[list[str]], Mapping[str, float]]
_IGNORED_PREFIXES = ("runbook.", "incident.")  # our own events: watching them would feed back into detections


def scope_label(scope: str, key: str) -> str:
    return "global" if scope == "global" else f"{scope}:{key}"


def parse_scope_label(label: str) -> tuple[str, str | None]:
    if label == "global":
        return "global", None
    scope, _, target = label.partition(":")
    return scope, target


@dataclass(frozen=True)
class Transition:
    """A runbook's detection changed state for one scope: "fire" (it started), "update" (another condition fired
    while it was already firing) or "clear" (every condition has been quiet for its quiet period)."""

    kind: str
    runbook: Runbook
    scope: str
    at: float
    readings: list[dict[str, Any]]
    context: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        parts = []
        for reading in self.readings:
            if reading.get("fired"):
                value = reading.get("value")
                shown = "n/a" if value is None else f"{value:.4g}"
                parts.append(f"{reading['signal']}={shown} ({reading['condition']})")
        return "; ".join(parts) or self.runbook.spec.title


@dataclass(slots=True)
class _Slot:
    runbook: Runbook
    index: int
    detector: Detector


class Watchdog:
    def __init__(self, runbooks: Iterable[Runbook], *, durations: DurationSource | None = None) -> None:
        self.runbooks = list(runbooks)
        self.facts = Facts()
        self._slots = [_Slot(rb, i, make_detector(c)) for rb in self.runbooks for i, c in enumerate(rb.spec.detect)]
        # Span kinds whose durations some latency detection needs (llm, tool): only those are looked up.
        self._duration_kinds = {s.detector.span_kind for s in self._slots
                                if needs_durations(s.detector.condition)}
        self._durations = durations
        # Event kind -> the detectors that read it: most committed events (span starts, progress) concern none.
        self._by_kind: dict[str, list[Detector]] = {}
        for slot in self._slots:
            for kind in slot.detector.kinds:
                self._by_kind.setdefault(kind, []).append(slot.detector)
        self._hysteresis: dict[tuple[str, int, str], Hysteresis] = {}
        self._readings: dict[tuple[str, int, str], Reading] = {}
        self._firing: dict[tuple[str, str], set[int]] = {}
        self._contexts: dict[tuple[str, str], dict[str, Any]] = {}

    # -- input --------------------------------------------------------------------------------------------------

    def seed_pending_approvals(self, rows: Iterable[Approval], now: float) -> None:
        """Approvals already pending when the watchdog starts (read once from control.db). Their age counts from
        their request time, clamped to `now` (clocks of other processes may be ahead)."""
        for row in rows:
            self.facts.pending_approvals[row.id] = PendingApproval(
                id=row.id, requested=min(float(row.requested or now), now), run=row.run_id,
                agent=row.agent, tool=row.tool, hierarchy=None)

    def feed(self, events: Iterable[Event], now: float) -> None:
        batch = [e for e in events if not e[1].startswith(_IGNORED_PREFIXES)]
        if not batch:
            return
        facts = self.facts
        ended_runs: list[str] = []
        ended_spans: list[str] = []
        for event in batch:
            _, kind, run_id, span_id, agent, name, data = event
            if kind == "run.started" and run_id:
                facts.run_hierarchy[run_id] = (data or {}).get("hierarchy") or name or ""
            elif kind == "run.ended" and run_id:
                ended_runs.append(run_id)
            elif kind == "span.ended" and span_id and data and data.get("kind") in self._duration_kinds \
                    and data.get("duration_s") is None:
                ended_spans.append(span_id)  # no duration in the event: look it up
            elif kind == "approval.requested" and data and data.get("id"):
                facts.pending_approvals[str(data["id"])] = PendingApproval(
                    id=str(data["id"]), requested=now, run=run_id, agent=agent, tool=data.get("tool") or name,
                    hierarchy=facts.hierarchy_of(run_id))
            elif kind == "approval.decided" and data and data.get("id"):
                facts.pending_approvals.pop(str(data["id"]), None)
            elif kind == "queue.state" and (row := queue_row(data)) is not None:
                facts.queues[(row.queue, row.tenant)] = row
        durations = self._durations(ended_spans) if ended_spans and self._durations is not None else {}
        by_kind = self._by_kind
        for event in batch:
            for detector in by_kind.get(event[1], ()):
                detector.feed(now, event, facts, durations)
        for run_id in ended_runs:
            facts.run_hierarchy.pop(run_id, None)
            # A run that ended (killed, say) takes its waiting approvals with it, decided or not.
            for approval_id in [k for k, v in facts.pending_approvals.items() if v.run == run_id]:
                del facts.pending_approvals[approval_id]

    # -- evaluation ---------------------------------------------------------------------------------------------

    def evaluate(self, now: float) -> list[Transition]:
        transitions: list[Transition] = []
        facts = self.facts
        for slot in self._slots:
            detector = slot.detector
            condition = detector.condition
            rb_id = slot.runbook.id
            detector.expire(now, facts)
            keys = detector.keys() | {k for (r, i, k) in self._hysteresis if r == rb_id and i == slot.index}
            for key in keys:
                reading = detector.read(key, now, facts)
                hkey = (rb_id, slot.index, key)
                state = self._hysteresis.get(hkey)
                if state is None:
                    if not reading.holds:
                        continue
                    state = self._hysteresis[hkey] = Hysteresis(condition.hold_s, condition.quiet_s)
                result = state.update(now, reading.holds, reading.value)
                self._readings[hkey] = reading
                label = scope_label(condition.scope, key)
                group = (rb_id, label)
                if reading.holds:
                    self._contexts[group] = self._context(detector, condition.scope, key, label)
                if result == "fire":
                    firing = self._firing.setdefault(group, set())
                    kind = "update" if firing else "fire"
                    firing.add(slot.index)
                    transitions.append(self._transition(kind, slot.runbook, label, now, {slot.index}))
                elif result == "clear":
                    firing = self._firing.get(group, set())
                    firing.discard(slot.index)
                    if not firing:
                        self._firing.pop(group, None)
                        transitions.append(self._transition("clear", slot.runbook, label, now, set(), state.peak))
                        self._contexts.pop(group, None)
                if state.state == OK:
                    del self._hysteresis[hkey]
                    self._readings.pop(hkey, None)
        return transitions

    def _context(self, detector: Detector, scope: str, key: str, label: str) -> dict[str, Any]:
        context = detector.context(key)
        if scope != "global":
            context[scope] = key
            context["target"] = key
        context["scope"] = label
        return context

    def _transition(self, kind: str, runbook: Runbook, label: str, now: float, fired: set[int],
                    peak: float | None = None) -> Transition:
        readings = []
        for index, condition in enumerate(runbook.spec.detect):
            key = label if condition.scope == "global" else label.partition(":")[2]
            if scope_label(condition.scope, key) != label:
                continue
            reading = self._readings.get((runbook.id, index, key))
            entry: dict[str, Any] = {"signal": condition.signal, "condition": condition.describe(),
                                     "op": condition.op, "threshold": condition.threshold,
                                     "window_s": condition.window, "fired": index in fired,
                                     "value": reading.value if reading else None,
                                     "samples": reading.samples if reading else None}
            if kind == "clear" and peak is not None:
                entry["peak"] = peak
            readings.append(entry)
        return Transition(kind, runbook, label, now, readings, dict(self._contexts.get((runbook.id, label), {})))

    # -- state ----------------------------------------------------------------------------------------------------

    def is_firing(self, runbook_id: str, label: str) -> bool:
        """The detection is on (firing, or within its quiet period): a rollback that requires quiet waits."""
        return bool(self._firing.get((runbook_id, label)))

    def firing(self) -> list[tuple[str, str]]:
        return sorted(self._firing)
