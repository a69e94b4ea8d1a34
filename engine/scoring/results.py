"""An eval's results as typed values: one CaseResult per case, the EvalRecord around them, and the aggregates a
report and a baseline comparison read (per agent, per route, per task type).

A case's score is attributed to every agent and every route its run went through (from its spans): an agent's
score is the mean score of the cases that reached it, so a regression shows where the runs went, not only that the
total moved. `to_json` is the `--json` output's `eval` object and what `--baseline FILE` reads back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .scorers import Score

__all__ = ["CaseResult", "EvalRecord", "GroupStat", "group_stats"]

RESULTS_FORMAT = 1  # bumped when the JSON shape changes incompatibly; a results file of another format is refused


@dataclass(frozen=True, slots=True)
class CaseResult:
    case_id: str
    task_type: str
    run_id: str
    status: str  # the run's status
    score: float  # mean of the checks' scores; 0 when the run ended in an unexpected status
    passed: bool  # every check passed and the run ended in the expected status
    cost_usd: float
    latency_s: float
    agents: tuple[str, ...]  # agents the run went through, in order of first appearance
    routes: tuple[str, ...]  # `router:rule` of every route taken
    scores: tuple[Score, ...] = ()
    error: str | None = None  # the run's error, or why the case could not be scored

    def to_json(self) -> dict[str, Any]:
        return {"id": self.case_id, "type": self.task_type, "run_id": self.run_id, "status": self.status,
                "score": round(self.score, 4), "passed": self.passed, "cost_usd": round(self.cost_usd, 6),
                "latency_s": round(self.latency_s, 3), "agents": list(self.agents), "routes": list(self.routes),
                "checks": [s.to_json() for s in self.scores], "error": self.error}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CaseResult:
        return cls(case_id=str(data["id"]), task_type=str(data["type"]), run_id=str(data.get("run_id") or ""),
                   status=str(data["status"]), score=float(data["score"]), passed=bool(data["passed"]),
                   cost_usd=float(data["cost_usd"]), latency_s=float(data["latency_s"]),
                   agents=tuple(data.get("agents") or ()), routes=tuple(data.get("routes") or ()),
                   scores=tuple(Score(str(s["scorer"]), float(s["score"]), bool(s["passed"]), str(s["reason"]),
                                      bool(s.get("error", False))) for s in data.get("checks") or ()),
                   error=data.get("error"))


@dataclass(frozen=True, slots=True)
class GroupStat:
    """The cases of one agent, route or task type: how many, how many passed, mean score, cost and latency."""

    key: str
    cases: int
    passed: int
    score: float
    cost_usd: float  # mean per case
    latency_s: float  # mean per case

    def to_json(self, *, spend: bool = True) -> dict[str, Any]:
        """`spend`: with mean cost and latency (a task type's, the whole eval's; an agent's or a route's would be
        the whole runs' that reached it, which says nothing about that agent, so they are left out)."""
        out: dict[str, Any] = {"cases": self.cases, "passed": self.passed, "score": round(self.score, 4)}
        if spend:
            out.update(cost_usd=round(self.cost_usd, 6), latency_s=round(self.latency_s, 3))
        return out


def group_stats(cases: Iterable[CaseResult], keys: Callable[[CaseResult], Iterable[str]]) -> dict[str, GroupStat]:
    members: dict[str, list[CaseResult]] = {}
    for case in cases:
        for key in dict.fromkeys(keys(case)):
            members.setdefault(key, []).append(case)
    out: dict[str, GroupStat] = {}
    for key in sorted(members):
        group = members[key]
        n = len(group)
        out[key] = GroupStat(key, n, sum(c.passed for c in group), sum(c.score for c in group) / n,
                             sum(c.cost_usd for c in group) / n, sum(c.latency_s for c in group) / n)
    return out


@dataclass(slots=True)
class EvalRecord:
    """One eval: which hierarchy (name and file hash), which dataset (name and content hash), which models, when,
    and every case. `source`: `dataset` for `flightdeck eval`; a later online sampler writes `sample`."""

    id: str
    hierarchy: str
    hierarchy_hash: str
    dataset: str
    dataset_sha256: str
    started: float
    ended: float
    models: dict[str, dict[str, Any]]  # hierarchy model name -> {provider, model, calls}
    cases: list[CaseResult] = field(default_factory=list)
    source: str = "dataset"

    @property
    def passed(self) -> int:
        return sum(c.passed for c in self.cases)

    @property
    def score(self) -> float:
        return sum(c.score for c in self.cases) / len(self.cases) if self.cases else 0.0

    @property
    def cost_usd(self) -> float:
        return sum(c.cost_usd for c in self.cases)

    def overall(self) -> GroupStat:
        return group_stats(self.cases, lambda c: ["all"]).get("all") or GroupStat("all", 0, 0, 0.0, 0.0, 0.0)

    def by_agent(self) -> dict[str, GroupStat]:
        return group_stats(self.cases, lambda c: c.agents)

    def by_route(self) -> dict[str, GroupStat]:
        return group_stats(self.cases, lambda c: c.routes)

    def by_type(self) -> dict[str, GroupStat]:
        return group_stats(self.cases, lambda c: [c.task_type])

    def to_json(self) -> dict[str, Any]:
        return {"format": RESULTS_FORMAT, "id": self.id, "hierarchy": self.hierarchy,
                "hierarchy_hash": self.hierarchy_hash, "dataset": self.dataset,
                "dataset_sha256": self.dataset_sha256, "source": self.source, "started": self.started,
                "ended": self.ended, "models": self.models, "summary": self.overall().to_json(),
                "by_agent": {k: v.to_json(spend=False) for k, v in self.by_agent().items()},
                "by_route": {k: v.to_json(spend=False) for k, v in self.by_route().items()},
                "by_type": {k: v.to_json() for k, v in self.by_type().items()},
                "cases": [c.to_json() for c in self.cases]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EvalRecord:
        """KeyError / TypeError / ValueError on a malformed object: the caller names the file."""
        if data.get("format") != RESULTS_FORMAT:
            raise ValueError(f"results format {data.get('format')!r}, expected {RESULTS_FORMAT}")
        return cls(id=str(data["id"]), hierarchy=str(data["hierarchy"]), hierarchy_hash=str(data["hierarchy_hash"]),
                   dataset=str(data["dataset"]), dataset_sha256=str(data["dataset_sha256"]),
                   started=float(data["started"]), ended=float(data["ended"]), models=dict(data["models"]),
                   cases=[CaseResult.from_json(c) for c in data["cases"]], source=str(data.get("source", "dataset")))
