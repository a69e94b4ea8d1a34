"""Running an eval: every case through the hierarchy (scripted model unless the hierarchy says otherwise, speed 0
by default), scored, then its spans read back for the agents and routes it went through.

The runs go through the drills' store session (engine/drills/session.py): one Engine on the store for the whole
dataset, runbooks off (an eval measures the hierarchy, not the automation reacting to it), cases one after
another so each run's latency is its own. Each run carries `eval` and `eval_case` in its attributes, so
`flightdeck trace RUN` and a later console view can tell eval runs from live ones.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.drills.session import run_then_read, run_then_read_postgres
from engine.hierarchy.loader import Hierarchy
from engine.runtime.engine import Engine, RunRequest
from engine.runtime.results import RunResult
from engine.scoring.results import CaseResult, EvalRecord
from engine.scoring.run_path import run_path
from engine.scoring.scorers import Score, Scorer
from engine.store import EngineStore
from engine.store.location import PostgresLocation
from engine.store.reader_protocol import TraceReads

from .dataset import Dataset, EvalCase

__all__ = ["new_eval_id", "run_eval"]


def new_eval_id() -> str:
    return "ev_" + uuid.uuid4().hex[:16]


@dataclass(frozen=True, slots=True)
class _Scored:
    case: EvalCase
    result: RunResult
    scores: tuple[Score, ...]
    problem: str | None  # why the case fails before its checks: the run ended in a status it did not expect


async def _score(case: EvalCase, result: RunResult, scorers: list[Scorer]) -> _Scored:
    if result.status != case.expect_status:
        problem = f"run {result.status}, expected {case.expect_status}" + (f": {result.error}" if result.error
                                                                             else "")
        return _Scored(case, result, (), problem)
    scores = tuple([await scorer.score(result.output, case) for scorer in scorers])
    return _Scored(case, result, scores, None)


def _case_result(reader: TraceReads, scored: _Scored) -> CaseResult:
    path = run_path(reader.spans(scored.result.run_id))
    scores = scored.scores
    if scored.problem is not None:
        score, passed = 0.0, False
    else:
        score = sum(s.score for s in scores) / len(scores) if scores else 1.0
        passed = all(s.passed for s in scores)
    errors = [s.reason for s in scores if s.error]
    result = scored.result
    return CaseResult(case_id=scored.case.id, task_type=scored.case.task_type, run_id=result.run_id,
                      status=result.status, score=score, passed=passed, cost_usd=result.cost_usd,
                      latency_s=result.duration_s, agents=path.agents, routes=path.routes, scores=scores,
                      error=scored.problem or ("; ".join(errors) if errors else None))


def _models(hierarchy: Hierarchy, reader: TraceReads, run_ids: list[str]) -> dict[str, dict[str, Any]]:
    """The hierarchy's models as configured (provider, model id, server) with the calls the eval made to each and
    the versions the servers reported (`response_model` on llm spans: e.g. gpt-4o answered by gpt-4o-2024-08-06)."""
    calls: dict[str, int] = {}
    versions: dict[str, set[str]] = {}
    for run_id in run_ids:
        for span in reader.spans(run_id):
            if span.kind == "llm" and span.model:
                calls[span.model] = calls.get(span.model, 0) + 1
                answered = span.attributes.get("response_model") if isinstance(span.attributes, dict) else None
                if isinstance(answered, str):
                    versions.setdefault(span.model, set()).add(answered)
    out: dict[str, dict[str, Any]] = {}
    for name, model in sorted(hierarchy.spec.models.items()):
        entry: dict[str, Any] = {"provider": model.provider, "model": model.model, "calls": calls.get(model.model, 0)}
        if model.base_url:
            entry["base_url"] = model.base_url
        if model.model in versions:  # what the server said answered, when it names a version the hierarchy did not
            entry["versions"] = sorted(versions[model.model])
        out[name] = entry
    return out


def run_eval(hierarchy: Hierarchy, dataset: Dataset, scorers: dict[str, list[Scorer]], *,
             store_dir: str | Path | PostgresLocation | None = None, speed: float = 0.0, seed: int = 0,
             eval_id: str | None = None, on_case: Callable[[CaseResult], None] | None = None) -> EvalRecord:
    """Run and score every case. `speed`: the scripted model's speed factor, 0 = no simulated latency. `store_dir`:
    where the runs are recorded (None: a temporary store; a PostgresLocation: an engine wholly on that store)."""
    record_id = eval_id or new_eval_id()
    latency_scale = (1.0 / speed) if speed else 0.0
    started = time.time()

    async def go(store: EngineStore) -> list[_Scored]:
        out: list[_Scored] = []
        async with Engine(store, latency_scale=latency_scale, runbooks=False, sampling=False) as engine:
            for case in dataset.cases:
                request = RunRequest(input=case.run_input, seed=seed,
                                     attributes={"eval": record_id, "eval_case": case.id})
                result = await engine.run(hierarchy, request)
                out.append(await _score(case, result, scorers.get(case.id, [])))
        return out

    def read(reader: TraceReads, all_scored: list[_Scored]) -> EvalRecord:
        cases: list[CaseResult] = []
        for scored in all_scored:
            case = _case_result(reader, scored)
            cases.append(case)
            if on_case is not None:
                on_case(case)
        models = _models(hierarchy, reader, [c.run_id for c in cases])
        return EvalRecord(id=record_id, hierarchy=hierarchy.name, hierarchy_hash=hierarchy.source_hash,
                          dataset=dataset.name, dataset_sha256=dataset.sha256, started=started, ended=time.time(),
                          models=models, cases=cases)

    if isinstance(store_dir, PostgresLocation):
        return run_then_read_postgres(store_dir, go, read)
    return run_then_read(store_dir, go, read, prefix="flightdeck-eval-")
