"""A drill run's summary as an evals.db row (`source = 'drill'`), so the console shows the latest drill results of a
hierarchy next to its eval scores and the sampled-score trend.

Small and additive: the row is an EvalRecord like a dataset eval's, its cases the drills that ran (`case_id` the
drill's name, `task_type` `drill`, `status` `held` or `failed`, score 1 or 0, the first run's id); a skipped drill
(`--provider-url` and a scripted-only drill) is neither, so it is left out. `dataset` names the drill directories,
`dataset_sha256` hashes the drill files (a changed catalogue is a different dataset).
"""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

from engine.hierarchy.loader import Hierarchy
from engine.scoring.results import CaseResult, EvalRecord

from .runner import DrillResult
from .spec import Drill

__all__ = ["drill_record"]


def drill_record(hierarchy: Hierarchy, drills: list[Drill], directories: list[Path], results: list[DrillResult],
                 started: float, ended: float, *, runs_kept: bool = True) -> EvalRecord:
    """`runs_kept=False`: the drills' runs were in a temporary store (the summary goes to a Postgres store), so the
    cases name no run."""
    digest = hashlib.sha256()
    for drill in sorted(drills, key=lambda d: d.spec.name):
        digest.update(drill.spec.name.encode() + b"\0" + drill.path.read_bytes() + b"\0")
    cases = [CaseResult(case_id=r.scenario, task_type="drill", run_id=r.run_ids[0] if r.run_ids and runs_kept else "",
                        status="held" if r.held else "failed", score=1.0 if r.held else 0.0, passed=r.held,
                        cost_usd=r.cost_usd, latency_s=r.duration_s, agents=(), routes=(),
                        error=None if r.held else "; ".join(r.evidence)[:500] or "did not hold")
             for r in results if not r.skipped]
    models = {name: {"provider": m.provider, "model": m.model} for name, m in sorted(hierarchy.spec.models.items())}
    return EvalRecord(id="dr_" + uuid.uuid4().hex[:16], hierarchy=hierarchy.name,
                      hierarchy_hash=hierarchy.source_hash, dataset=",".join(d.name for d in directories),
                      dataset_sha256=digest.hexdigest(), started=started, ended=ended, models=models, cases=cases,
                      source="drill")
