"""Comparing an eval with a baseline: score deltas per agent, per route and per task type (and overall), cost and
latency per task type, and which of them regressed beyond the threshold.

A group regresses when its mean score fell by more than `max_regression` (absolute, scores are 0..1) from the
baseline's. Groups only one side has are reported (a route no longer taken, a new task type) but are not
regressions by themselves: the cases that moved show up in the groups they reach now. Cost and latency are
reported, not gated.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import InputError
from engine.scoring.results import EvalRecord, GroupStat

__all__ = ["Comparison", "Delta", "compare", "read_results_file"]

DIMENSIONS = ("overall", "type", "agent", "route")


@dataclass(frozen=True, slots=True)
class Delta:
    dimension: str  # overall | type | agent | route
    key: str
    baseline: GroupStat | None
    current: GroupStat | None
    regressed: bool

    @property
    def score_delta(self) -> float | None:
        if self.baseline is None or self.current is None:
            return None
        return self.current.score - self.baseline.score

    def to_json(self) -> dict[str, Any]:
        spend = self.dimension in ("overall", "type")
        delta = self.score_delta
        out: dict[str, Any] = {
            "dimension": self.dimension, "key": self.key,
            "baseline": self.baseline.to_json(spend=spend) if self.baseline else None,
            "current": self.current.to_json(spend=spend) if self.current else None,
            "score_delta": None if delta is None else round(delta, 4), "regressed": self.regressed}
        if spend and self.baseline and self.current:
            out["cost_delta_usd"] = round(self.current.cost_usd - self.baseline.cost_usd, 6)
            out["latency_delta_s"] = round(self.current.latency_s - self.baseline.latency_s, 3)
        return out


@dataclass(slots=True)
class Comparison:
    baseline_id: str
    max_regression: float
    deltas: list[Delta] = field(default_factory=list)
    newly_failing: list[str] = field(default_factory=list)  # cases that passed in the baseline and fail now
    newly_passing: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def regressions(self) -> list[Delta]:
        return [d for d in self.deltas if d.regressed]

    def by_dimension(self, dimension: str) -> list[Delta]:
        return [d for d in self.deltas if d.dimension == dimension]

    def to_json(self) -> dict[str, Any]:
        return {"baseline": self.baseline_id, "max_regression": self.max_regression,
                "regressed": bool(self.regressions), "regressions": [d.to_json() for d in self.regressions],
                "deltas": [d.to_json() for d in self.deltas], "newly_failing": self.newly_failing,
                "newly_passing": self.newly_passing, "notes": self.notes}


def _groups(record: EvalRecord, dimension: str) -> dict[str, GroupStat]:
    if dimension == "overall":
        return {"all": record.overall()}
    if dimension == "type":
        return record.by_type()
    if dimension == "agent":
        return record.by_agent()
    return record.by_route()


def compare(current: EvalRecord, baseline: EvalRecord, max_regression: float) -> Comparison:
    if baseline.hierarchy != current.hierarchy:
        raise InputError(f"the baseline {baseline.id} is an eval of {baseline.hierarchy!r}, not of "
                         f"{current.hierarchy!r}", field="--baseline")
    out = Comparison(baseline.id, max_regression)
    if baseline.hierarchy_hash == current.hierarchy_hash:
        out.notes.append("the hierarchy file is unchanged since the baseline")
    if baseline.dataset_sha256 != current.dataset_sha256:
        out.notes.append(f"the dataset changed since the baseline ({baseline.dataset} -> {current.dataset})")
    for dimension in DIMENSIONS:
        before, now = _groups(baseline, dimension), _groups(current, dimension)
        for key in sorted(before.keys() | now.keys()):
            old, new = before.get(key), now.get(key)
            # A small epsilon: the mean of equal scores in another order must not read as a regression.
            regressed = old is not None and new is not None and old.score - new.score > max_regression + 1e-9
            out.deltas.append(Delta(dimension, key, old, new, regressed))
    was = {c.case_id: c.passed for c in baseline.cases}
    for case in current.cases:
        if was.get(case.case_id) is True and not case.passed:
            out.newly_failing.append(case.case_id)
        elif was.get(case.case_id) is False and case.passed:
            out.newly_passing.append(case.case_id)
    return out


def read_results_file(path: Path) -> EvalRecord:
    """A previous `flightdeck eval --json` output (or its `eval` object) as the baseline."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"cannot read results file: {exc.strerror or exc}", file=str(path),
                         field="--baseline") from None
    except ValueError as exc:
        raise InputError(f"not JSON: {exc}", file=str(path), field="--baseline") from None
    if isinstance(data, dict) and isinstance(data.get("eval"), dict):
        data = data["eval"]
    try:
        if not isinstance(data, dict):
            raise TypeError("not an object")
        return EvalRecord.from_json(data)
    except (KeyError, TypeError, ValueError) as exc:
        what = f"missing {exc}" if isinstance(exc, KeyError) else str(exc)
        raise InputError(f"not a `flightdeck eval --json` results file ({what})", file=str(path),
                         field="--baseline") from None
