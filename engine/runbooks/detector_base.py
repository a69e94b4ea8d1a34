"""What every detector shares: the event tuple, the scope dimensions of an event, the watchdog's `Facts`, each
key's `KeyContext`, a `Reading`, and the `Detector` / `SumDetector` bases the concrete detectors
(`detectors.py`, `queue_detectors.py`, `eval_detectors.py`) build on.

Events are the writer's committed tuples `(seq, kind, run_id, span_id, agent, name, data)`. Scope values the event
itself does not carry come from `Facts`, the watchdog's small bookkeeping of the event stream (which hierarchy a
run belongs to; which approvals are pending).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.runbooks.model import Condition
from engine.runbooks.signals import compare, signal_spec
from engine.runbooks.windows import WindowedSums

Event = tuple[int, str, "str | None", "str | None", "str | None", "str | None", "dict[str, Any] | None"]

_RECENT_RUNS = 20


@dataclass(slots=True)
class Dims:
    """What an event is about, as far as scopes go."""

    hierarchy: str | None = None
    agent: str | None = None
    tool: str | None = None
    run: str | None = None

    def key(self, scope: str) -> str | None:
        if scope == "global":
            return "global"
        return getattr(self, scope)


@dataclass(slots=True)
class PendingApproval:
    id: str
    requested: float
    run: str | None
    agent: str | None
    tool: str | None
    hierarchy: str | None


@dataclass
class Facts:
    """Bookkeeping shared by all detectors, updated from the stream before detectors see a batch."""

    run_hierarchy: dict[str, str] = field(default_factory=dict)
    pending_approvals: dict[str, PendingApproval] = field(default_factory=dict)
    queues: dict[tuple[str, str], Any] = field(default_factory=dict)  # (queue, tenant) -> the latest QueueRow

    def hierarchy_of(self, run_id: str | None) -> str | None:
        return self.run_hierarchy.get(run_id) if run_id else None


@dataclass(slots=True)
class KeyContext:
    """What a key's events said last: fills action placeholders ({hierarchy}, {agent}, ...), and the runs involved."""

    hierarchy: str | None = None
    agent: str | None = None
    tool: str | None = None
    runs: OrderedDict[str, None] = field(default_factory=OrderedDict)

    def note(self, dims: Dims) -> None:
        self.hierarchy = dims.hierarchy or self.hierarchy
        self.agent = dims.agent or self.agent
        self.tool = dims.tool or self.tool
        if dims.run:
            self.runs[dims.run] = None
            self.runs.move_to_end(dims.run)
            while len(self.runs) > _RECENT_RUNS:
                self.runs.popitem(last=False)

    def as_dict(self) -> dict[str, Any]:
        runs = list(self.runs)
        return {"hierarchy": self.hierarchy, "agent": self.agent, "tool": self.tool, "run": runs[-1] if runs else None,
                "runs": runs}


@dataclass(frozen=True, slots=True)
class Reading:
    """A condition's value for one key at one moment, and whether the condition holds."""

    value: float | None
    holds: bool
    samples: int | None = None


class Detector:
    """Evaluates one Condition. Subclasses say which event kinds they read (`kinds`: the watchdog only hands them
    those), which of those events make samples (`samples_of`) and what the value is."""

    kinds: frozenset[str] = frozenset()
    # The span kind (llm, tool) whose durations a latency detector reads; set by those detectors only.
    span_kind: str

    def __init__(self, condition: Condition) -> None:
        self.condition = condition
        spec = signal_spec(condition.signal)
        assert spec is not None
        self.params: dict[str, Any] = {**spec.defaults(), **condition.params}
        self.scope = condition.scope
        self.contexts: dict[str, KeyContext] = {}

    # -- feeding ------------------------------------------------------------------------------------------------

    def feed(self, t: float, event: Event, facts: Facts, durations: Mapping[str, float]) -> None:
        for dims, values in self.samples_of(event, facts, durations):
            key = dims.key(self.scope)
            if key is None or (self.condition.target is not None and key != self.condition.target):
                continue
            context = self.contexts.get(key)
            if context is None:
                context = self.contexts[key] = KeyContext()
            context.note(dims)
            self.add(t, key, values)

    def samples_of(self, event: Event, facts: Facts,
                   durations: Mapping[str, float]) -> list[tuple[Dims, tuple[float, ...]]]:
        raise NotImplementedError

    def add(self, t: float, key: str, values: tuple[float, ...]) -> None:
        raise NotImplementedError

    # -- evaluating ---------------------------------------------------------------------------------------------

    def keys(self) -> set[str]:
        raise NotImplementedError

    def read(self, key: str, now: float, facts: Facts) -> Reading:
        raise NotImplementedError

    def expire(self, now: float, facts: Facts) -> None:
        raise NotImplementedError

    def holds(self, value: float | None) -> bool:
        return value is not None and compare(value, self.condition.op, self.condition.threshold)

    def context(self, key: str) -> dict[str, Any]:
        context = self.contexts.get(key)
        return context.as_dict() if context is not None else {}


class SumDetector(Detector):
    """Window signals that are sums (counts, money) or a ratio of two sums."""

    width = 1

    def __init__(self, condition: Condition) -> None:
        super().__init__(condition)
        self.window = WindowedSums(condition.window, self.width)

    def add(self, t: float, key: str, values: tuple[float, ...]) -> None:
        self.window.add(t, key, values)

    def keys(self) -> set[str]:
        return set(self.window.totals)

    def expire(self, now: float, facts: Facts) -> None:
        self.window.expire(now)
        for key in [k for k in self.contexts if k not in self.window.totals]:
            del self.contexts[key]

    def read(self, key: str, now: float, facts: Facts) -> Reading:
        totals = self.window.totals.get(key)
        value = totals[0] if totals else 0.0
        return Reading(value, self.holds(value), self.window.counts.get(key, 0))


def event_dims(event: Event, facts: Facts, tool: str | None = None) -> Dims:
    """The dimensions an event carries itself (its run and agent), its run's hierarchy from `facts`."""
    _, _, run_id, _, agent, _, _ = event
    return Dims(hierarchy=facts.hierarchy_of(run_id), agent=agent, tool=tool, run=run_id)
