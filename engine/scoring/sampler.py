"""Online sampling: the engine scores a share of a hierarchy's completed live runs (`evals: {sample, checks}`).

Off the hot path: the Engine hands a run to `Sampler.after_run` once the run has ended (its row written, its result
returned to the caller); scoring runs as a task of the engine's task group, and the evals store's write on a worker
thread (STORE/evals.db; on an engine wholly on Postgres, the database's `evals` tables: evals_store.py). Which
runs: those that ended `completed` whose run id falls in the share (`sampled`, a hash of the id, so the choice is
the same on every engine and in tests). Each scored run:

- becomes a case of its window's `evals` row in the evals store (`source = 'sample'`, one row per hierarchy, file
  hash and `window`; `add_sample` of engine/scoring/results_db.py, or results_pg.py on Postgres, where every
  engine of a fleet adds to the same window's row), with the agents and routes the run went through, read from its
  spans once the trace writer committed them (run_path.py), as `flightdeck eval` records them: so a window breaks
  down per agent and per route and two windows compare like two evals;
- emits `eval.scored` through the engine's trace writer (hierarchy, score, passed, error, eval id, and the window's
  totals in the store after the write: `window_started`, `window_cases`, `window_scored`, `window_mean`), which
  the runbooks' `sampled_score` signal reads (the shipped `quality-dropping` runbook): the window's mean over every
  engine's and every earlier process's scored runs, not this process's own.

A scorer that fails never fails the run, which has already ended: a check that raises or cannot score (a judge that
is down) is recorded as an error on the case, the event says `error: true` (the signal leaves such scores out: a
judge outage is not a quality drop), and `errors` counts it; an evals.db that cannot be written is counted in
`write_failures` and reported by an `eval.sample_failed` event.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from engine.hierarchy.eval_checks import EvalsSpec
from engine.hierarchy.schema import HierarchySpec
from engine.store.location import PostgresLocation

from .evals_store import EvalsStore, open_evals_store
from .results import CaseResult, EvalRecord
from .run_path import RunPath, RunPathReader
from .scorers import JudgeDefaults, Score, Scorer, build_one
from .window_seed import window_fields

if TYPE_CHECKING:
    from engine.store.location import StoreLocation

    from .results_db import WindowTotals

__all__ = ["SampledRun", "Sampler", "sampled", "window_eval_id"]

log = logging.getLogger(__name__)
SAMPLE_DATASET = "sample"  # the `dataset` column of a sampled window's row
DRAIN_TIMEOUT_S = 30.0  # how long an engine that stops waits for the scoring still under way


def sampled(run_id: str, rate: float) -> bool:
    """Whether a run is in the sampled share: the first 8 bytes of sha256(run id) as a fraction below `rate`."""
    if rate <= 0:
        return False
    if rate >= 1:
        return True
    fraction = int.from_bytes(hashlib.sha256(run_id.encode()).digest()[:8], "big") / 2 ** 64
    return fraction < rate


def window_eval_id(hierarchy: str, source_hash: str, window_s: float, ended: float) -> tuple[str, float]:
    """The id of the `evals` row a run ending at `ended` goes to, and when its window started."""
    bucket = int(ended // window_s)
    return f"sm_{hierarchy}_{source_hash[:8]}_{bucket}", bucket * window_s


@dataclass(frozen=True, slots=True)
class SampledRun:
    """What a scorer sees of a live run (the ScoreCase a dataset's EvalCase also is): a python check's `case`."""

    id: str  # the run id
    task_type: str
    run_input: Any


@dataclass(frozen=True, slots=True)
class _Ended:
    hierarchy: str
    source_hash: str
    spec: HierarchySpec
    run_id: str
    run_input: Any
    output: Any
    cost_usd: float
    latency_s: float
    ended: float


class Sampler:
    """One per Engine. `store`: where the scores go (a store directory, or a Postgres store: evals_store.py);
    `emit(run_id, kind, name, data)` is the engine's tracer event; `spawn` starts a task in the engine's task
    group; `paths` reads the agents and routes of an ended run (None: recorded without them)."""

    def __init__(self, store: StoreLocation | Path, emit: Callable[[str | None, str, str | None, dict[str, Any]], None],
                 spawn: Callable[[Callable[[], Any]], object], paths: RunPathReader | None = None) -> None:
        self.store = store
        self.emit = emit
        self.spawn = spawn
        self.paths = paths
        self.path_failures = 0  # scored runs recorded without their agents and routes
        self.scored = 0
        self.errors = 0  # runs with a check that could not score
        self.write_failures = 0
        self._scorers: dict[str, list[Scorer] | str] = {}  # per hierarchy hash: the scorers, or why none
        self._pending = 0
        self._idle = anyio.Event()
        self._idle.set()
        # On a Postgres store the evals store is opened on the first write and kept (a connection costs ~50 ms to
        # open, a write ~4 ms, measured on the dev VM); writes take turns on it (worker threads), and one that fails
        # drops it so the next one reopens. evals.db is opened per write: a SQLite file opens in well under a
        # millisecond, and its connection belongs to the thread that opened it.
        self._keep = isinstance(store, PostgresLocation)
        self._db: EvalsStore | None = None
        self._db_lock = threading.Lock()

    def after_run(self, hierarchy: str, source_hash: str, spec: HierarchySpec, run_id: str, status: str,
                  run_input: Any, output: Any, cost_usd: float, latency_s: float, ended: float) -> bool:
        """Called by the engine as a run ends; True when the run will be scored (in the background)."""
        settings: EvalsSpec = spec.evals
        if status != "completed" or not sampled(run_id, settings.sample):
            return False
        ended_run = _Ended(hierarchy, source_hash, spec, run_id, run_input, output, cost_usd, latency_s, ended)
        self._pending += 1
        self._idle = anyio.Event() if self._idle.is_set() else self._idle
        self.spawn(lambda: self._score(ended_run))
        return True

    async def drain(self, timeout: float = DRAIN_TIMEOUT_S) -> bool:
        """Wait for the scoring under way (the engine stops after it); False if it did not end in time."""
        with anyio.move_on_after(timeout):
            await self._idle.wait()
        return self._pending == 0

    def _scorers_for(self, run: _Ended) -> list[Scorer] | str:
        known = self._scorers.get(run.source_hash)
        if known is None:
            try:
                known = [build_one(check, JudgeDefaults()) for check in run.spec.evals.checks]
            except ValueError as exc:  # `check` refuses these first; a file changed under a running engine
                known = f"a check cannot be built: {exc}"
            self._scorers[run.source_hash] = known
        return known

    async def _score(self, run: _Ended) -> None:
        try:
            scores = await self._run_checks(run)
            path = await self._path(run)
            await self._record(run, scores, path)
        finally:
            self._pending -= 1
            if self._pending == 0:
                self._idle.set()

    async def _run_checks(self, run: _Ended) -> tuple[Score, ...]:
        scorers = self._scorers_for(run)
        if isinstance(scorers, str):
            return (Score("evals", 0.0, False, scorers, error=True),)
        case = SampledRun(run.run_id, SAMPLE_DATASET, run.run_input)
        out: list[Score] = []
        for scorer in scorers:
            try:
                out.append(await scorer.score(run.output, case))
            except Exception as exc:  # a scorer's bug must not reach the engine's task group
                out.append(Score(scorer.label, 0.0, False, f"{type(exc).__name__}: {exc}"[:300], error=True))
        return tuple(out)

    async def _path(self, run: _Ended) -> RunPath:
        if self.paths is None:
            return RunPath((), ())
        try:
            path = await self.paths(run.run_id)
        except Exception as exc:  # the breakdown is a nicety: its failure must not lose the score
            path = RunPath.unknown(f"{type(exc).__name__}: {exc}"[:300])
        if path.problem is not None:
            self.path_failures += 1
            if self.path_failures % 100 == 1:  # a failing store fails every read: say it, not once a run
                log.warning("sampled run %s recorded without its agents and routes (%d so far): %s", run.run_id,
                            self.path_failures, path.problem)
        return path

    async def _record(self, run: _Ended, scores: tuple[Score, ...], path: RunPath) -> None:
        error = any(s.error for s in scores)
        score = sum(s.score for s in scores) / len(scores) if scores else 1.0
        passed = all(s.passed for s in scores)
        reasons = [s.reason for s in scores if s.error]
        case = CaseResult(case_id=run.run_id, task_type=SAMPLE_DATASET, run_id=run.run_id, status="completed",
                          score=score, passed=passed, cost_usd=run.cost_usd, latency_s=run.latency_s,
                          agents=path.agents, routes=path.routes, scores=scores,
                          error="; ".join(reasons) if reasons else None)
        eval_id, started = window_eval_id(run.hierarchy, run.source_hash, run.spec.evals.window, run.ended)
        checks_sha = hashlib.sha256(json.dumps([c.model_dump(mode="json", by_alias=True)
                                                for c in run.spec.evals.checks], sort_keys=True).encode())
        models = {name: {"provider": m.provider, "model": m.model} for name, m in sorted(run.spec.models.items())}
        record = EvalRecord(id=eval_id, hierarchy=run.hierarchy, hierarchy_hash=run.source_hash,
                            dataset=SAMPLE_DATASET, dataset_sha256=checks_sha.hexdigest(), started=started,
                            ended=time.time(), models=models, source="sample")
        self.scored += 1
        if error:
            self.errors += 1
        totals: WindowTotals | None = None
        try:
            totals = await anyio.to_thread.run_sync(self._write, record, case)
        except Exception as exc:  # a StoreError, a full disk, a file that is not a database: never the engine's
            self.write_failures += 1
            log.warning("sampled run %s not recorded in the evals store: %s", run.run_id, exc)
            self.emit(run.run_id, "eval.sample_failed", run.hierarchy, {"hierarchy": run.hierarchy, "eval": eval_id,
                                                                       "reason": str(exc)[:300]})
        data: dict[str, Any] = {
            "hierarchy": run.hierarchy, "eval": eval_id, "score": round(score, 4), "passed": passed, "error": error,
            "checks": [s.to_json() for s in scores]}
        if totals is not None:
            # The window's totals in the store after this write: every engine's and every earlier process's scored
            # runs of the window. The `sampled_score` signal reads these, not the scores this process saw.
            data.update(window_fields(started, totals))
        self.emit(run.run_id, "eval.scored", run.hierarchy, data)

    def _write(self, record: EvalRecord, case: CaseResult) -> WindowTotals:
        """Adds the case, then reads the window's totals as committed (a read after the write, on the same
        connection: one more indexed query per sampled run, off the run's path)."""
        if not self._keep:
            with open_evals_store(self.store) as db:
                db.add_sample(record, case)
                return db.window_totals(record.id)
        with self._db_lock:
            if self._db is None:
                self._db = open_evals_store(self.store)
            try:
                self._db.add_sample(record, case)
                return self._db.window_totals(record.id)
            except BaseException:
                db, self._db = self._db, None  # a dropped connection, a damaged file: the next write reopens
                try:
                    db.close()
                except Exception:
                    pass
                raise

    def close(self) -> None:
        """The trace reader the paths were read with and the evals store's connection (the engine calls this once
        it stopped scoring: after `drain` and its task group)."""
        if self.paths is not None:
            self.paths.close()
        with self._db_lock:
            db, self._db = self._db, None
        if db is not None:
            db.close()
