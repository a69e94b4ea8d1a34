"""Issue 16: eval results on a Postgres store. An engine wholly on Postgres has no STORE/evals.db: its online sampling
writes to the database's `evals` tables (engine/scoring/results_pg.py, EvalsDB's interface), where every engine of a
fleet adds to the same window's row; its `eval.scored` events feed the quality-dropping runbook there; `flightdeck
eval --store postgresql://...` records its results and finds its baseline there. A real PostgreSQL on 127.0.0.1."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from console.cli import main
from engine.hierarchy.bundled import bundled_path
from engine.runtime.engine import Engine, RunRequest
from engine.scoring.evals_store import open_evals_store, open_evals_store_read_only
from engine.scoring.results import CaseResult, EvalRecord
from engine.scoring.results_pg import PgEvalsDB
from engine.scoring.scorers import Score
from engine.store import open_engine_store, open_trace_reads
from tests.engine.test_runbooks_shipped import SHIPPED, sampled_hierarchy
from tests.engine_helpers import write_hierarchy
from tests.fakes.receiver import Receiver, receiver  # noqa: F401 (receiver is a fixture)
from tests.store_pg.test_pg_runbooks_engine import ROUTING_KEY, config_file, pg, rows

SAMPLED = """
name: sampled
entry: clerk
models:
  m: {model: m1, tier: economy, latency: 0, latency_per_token: 0}
agents:
  clerk: {contract: Answers customers., model: m}
scripts:
  clerk:
    - final: "Thanks, your refund is on its way"
evals:
  sample: 1.0
  window: 366d  # no test's runs straddle a window's edge (the default hour's would split them over two rows)
  checks:
"""


def graded(output: Any, case: Any) -> float:
    """A python check scoring a run by its input ("good ..." 1, anything else 0): runs of one hierarchy file with
    different scores, so a window's mean shows whether every engine's cases were counted."""
    return 1.0 if str(case.run_input).startswith("good") else 0.0


async def run_and_score(store: Any, hierarchy: Any, inputs: list[str]) -> list[str]:
    async with Engine(store, latency_scale=0.0, runbooks=False) as engine:
        results = await engine.run_many(hierarchy, [RunRequest(input=i) for i in inputs], concurrency=2)
        assert await engine.sampler.drain(10.0)
        assert (engine.sampler.scored, engine.sampler.write_failures) == (len(inputs), 0)
    return [r.run_id for r in results]


def test_an_engine_on_postgres_records_its_sampled_scores_in_the_database(pg_url: str, tmp_path: Path) -> None:
    hierarchy = write_hierarchy(tmp_path, SAMPLED + """    - {scorer: contains, value: "refund"}
    - {scorer: regex, pattern: "^Sorry", name: apology}
""")
    store = open_engine_store(pg(pg_url), flush_interval=0.01)
    try:
        run_ids = anyio.run(run_and_score, store, hierarchy, ["a", "b", "c"])
    finally:
        store.close()

    db = open_evals_store_read_only(pg(pg_url))
    assert isinstance(db, PgEvalsDB)
    with db:
        [window] = db.list("sampled")
        assert (window.source, window.dataset, window.cases, window.passed) == ("sample", "sample", 3, 0)
        assert window.score == pytest.approx(0.5) and window.hierarchy_hash == hierarchy.source_hash
        cases = db.cases(window.id)
        assert sorted(c.run_id for c in cases) == sorted(run_ids)
        assert {c.score for c in cases} == {0.5}
        assert db.latest("sampled", "sample") is None  # a sampled window never becomes a CI baseline
        assert db.find(window.id[:12]) == window
    reader = open_trace_reads(pg(pg_url))
    try:
        scored = reader.events_after(0, limit=1000, kinds=["eval.scored"])
    finally:
        reader.close()
    assert sorted(e.run_id or "" for e in scored) == sorted(run_ids)
    assert {(e.data or {})["eval"] for e in scored} == {window.id}


def test_two_engines_on_one_database_add_their_scores_to_one_window_row(pg_url: str, tmp_path: Path) -> None:
    hierarchy = write_hierarchy(tmp_path, SAMPLED + f'    - {{scorer: python, function: "{__name__}:graded"}}\n')
    first = open_engine_store(pg(pg_url), flush_interval=0.01)
    second = open_engine_store(pg(pg_url), flush_interval=0.01)

    async def both() -> None:
        async with anyio.create_task_group() as group:  # both engines write the same window's row at once
            group.start_soon(run_and_score, first, hierarchy, [f"good {n}" for n in range(6)])
            group.start_soon(run_and_score, second, hierarchy, [f"bad {n}" for n in range(4)])

    try:
        anyio.run(both)
    finally:
        first.close()
        second.close()
    # One window row (a run ends in the same hour on both engines), every case counted once, the mean exact.
    (window,) = rows(pg_url, "SELECT id, cases, passed, score FROM evals")
    assert (window["cases"], window["passed"]) == (10, 6)
    assert window["score"] == pytest.approx(0.6)
    assert len(rows(pg_url, "SELECT case_id FROM eval_cases")) == 10


def test_a_run_scored_twice_is_added_once(pg_url: str) -> None:
    record = EvalRecord(id="sm_h_00000000_1", hierarchy="h", hierarchy_hash="0" * 64, dataset="sample",
                        dataset_sha256="1" * 64, started=1.0, ended=2.0, models={}, source="sample")

    def case(run_id: str, score: float) -> CaseResult:
        return CaseResult(case_id=run_id, task_type="sample", run_id=run_id, status="completed", score=score,
                          passed=score == 1.0, cost_usd=0.5, latency_s=1.0, agents=(), routes=(),
                          scores=(Score("check", score, score == 1.0, ""),), error=None)

    with open_evals_store(pg(pg_url)) as db:
        assert db.add_sample(record, case("run-1", 1.0)) is True
        assert db.add_sample(record, case("run-2", 0.0)) is True
        assert db.add_sample(record, case("run-1", 0.0)) is False  # a resumed run that ended again
        [window] = db.list("h")
        assert (window.cases, window.passed, window.score, window.cost_usd) == (2, 1, 0.5, 1.0)
        assert [c.case_id for c in db.cases(window.id)] == ["run-1", "run-2"]  # in the order written
        assert db.load(window).cases[0].scores[0].score == 1.0


@pytest.mark.anyio
async def test_quality_dropping_fires_on_sampled_scores_of_an_engine_on_postgres(
        pg_url: str, tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FD_TEST_ROUTING_KEY", ROUTING_KEY)
    bad = sampled_hierarchy(tmp_path, "Please contact support", "bad.yaml")
    store = open_engine_store(pg(pg_url), flush_interval=0.01, config_file=config_file(tmp_path, receiver))
    try:
        async with Engine(store, latency_scale=0.0, runbooks=[SHIPPED["quality-dropping"]]) as engine:
            await engine.run_many(bad, [RunRequest(input=f"ticket {n}") for n in range(10)], concurrency=2)
            assert await engine.sampler.drain(10.0)
            await anyio.to_thread.run_sync(engine.writer.flush)
            assert await anyio.to_thread.run_sync(engine.runbooks.settle, 10.0)
            assert engine.runbooks.errors == []
    finally:
        store.close()
    (incident,) = rows(pg_url, "SELECT runbook, scope, signals FROM incidents")
    assert (incident["runbook"], incident["scope"]) == ("quality-dropping", "hierarchy:helpdesk")
    (signal, *_) = json.loads(incident["signals"])
    assert signal["signal"] == "sampled_score" and signal["value"] == 0.0
    (window,) = rows(pg_url, "SELECT cases, score FROM evals WHERE source = 'sample'")
    assert (window["cases"], window["score"]) == (10, 0.0)


def test_flightdeck_eval_on_postgres_records_results_and_compares_with_the_latest(
        pg_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLIGHTDECK_CONFIG", raising=False)
    dataset = bundled_path("support-triage").parent / "eval" / "tickets.jsonl"
    assert main(["eval", "support-triage", "--dataset", str(dataset), "--store", pg_url, "--json"]) == 0
    first = json.loads(capsys.readouterr().out)["eval"]
    assert first["summary"]["cases"] == 11 and first["summary"]["passed"] == 11

    code = main(["eval", "support-triage", "--dataset", str(dataset), "--store", pg_url, "--baseline", "latest",
                 "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["comparison"] is not None and out["comparison"]["regressions"] == []
    assert out["comparison"]["baseline"] == first["id"]
    with open_evals_store(pg(pg_url)) as db:
        assert [e.source for e in db.list("support-triage")] == ["dataset", "dataset"]
        assert db.load(db.find(first["id"])).to_json() == first
    reader = open_trace_reads(pg(pg_url))
    try:
        run = reader.get_run(first["cases"][0]["run_id"])
    finally:
        reader.close()
    assert run is not None and run.attributes["eval"] == first["id"]

    assert main(["eval", "support-triage", "--dataset", str(dataset), "--store", pg_url, "--baseline",
                 "ev_nope", "--json"]) == 2  # a baseline that is not there: exit 2, nothing run
    assert "no eval 'ev_nope' in postgresql://" in capsys.readouterr().err
    assert len(rows(pg_url, "SELECT id FROM evals")) == 2


def test_an_error_with_a_nul_byte_is_recorded_not_lost(pg_url: str) -> None:
    record = EvalRecord(id="sm_h_00000000_2", hierarchy="h", hierarchy_hash="0" * 64, dataset="sample",
                        dataset_sha256="1" * 64, started=1.0, ended=2.0, models={}, source="sample")
    case = CaseResult(case_id="run-nul", task_type="sample", run_id="run-nul", status="completed", score=0.0,
                      passed=False, cost_usd=0.0, latency_s=1.0, agents=(), routes=(),
                      scores=(Score("check", 0.0, False, "ValueError: bad\x00byte", error=True),),
                      error="ValueError: bad\x00byte")  # Postgres TEXT refuses NUL; SQLite keeps it
    with open_evals_store(pg(pg_url)) as db:
        assert db.add_sample(record, case) is True
        (stored,) = db.cases(record.id)
    assert stored.error == "ValueError: bad\\x00byte"
    assert json.loads(stored.checks)[0]["reason"] == "ValueError: bad\x00byte"  # JSON escapes it


def test_the_sampler_keeps_one_connection_and_reopens_it_after_the_database_dropped_it(pg_url: str,
                                                                                       tmp_path: Path) -> None:
    hierarchy = write_hierarchy(tmp_path, SAMPLED + '    - {scorer: contains, value: "refund"}\n')
    store = open_engine_store(pg(pg_url), flush_interval=0.01)

    def evals_sessions() -> list[int]:
        return [r["pid"] for r in rows(pg_url, "SELECT pid FROM pg_stat_activity WHERE application_name = "
                                               "'flightdeck-evals' AND datname = current_database()")]

    def until_gone(pid: int) -> None:
        """A closed or terminated session leaves pg_stat_activity when its backend exits: wait for that."""
        deadline = time.monotonic() + 10
        while pid in evals_sessions():
            assert time.monotonic() < deadline, f"evals session {pid} is still there"

    async def go() -> tuple[int, int]:
        async with Engine(store, latency_scale=0.0, runbooks=False) as engine:
            for n in range(3):
                await engine.run(hierarchy, RunRequest(input=f"first {n}"))
                assert await engine.sampler.drain(10.0)
            (pid,) = evals_sessions()  # three writes, one connection
            rows(pg_url, "SELECT pg_terminate_backend(%s)", (pid,))
            until_gone(pid)
            for n in range(2):  # the first write finds it gone (counted, reported); the next one reopens
                await engine.run(hierarchy, RunRequest(input=f"then {n}"))
                assert await engine.sampler.drain(10.0)
            (reopened,) = evals_sessions()
            sessions.append(reopened)
            return engine.sampler.write_failures, engine.sampler.scored

    sessions: list[int] = []
    try:
        assert anyio.run(go) == (1, 5)
    finally:
        store.close()
    until_gone(sessions[0])  # closed with the engine
    (window,) = rows(pg_url, "SELECT cases FROM evals")
    assert window["cases"] == 4
    reader = open_trace_reads(pg(pg_url))
    try:
        assert len(reader.events_after(0, limit=1000, kinds=["eval.sample_failed"])) == 1
    finally:
        reader.close()
