"""Online sampling (`evals: {sample, checks}` in a hierarchy): the engine scores the share of completed live runs
chosen by run id, after they end, into STORE/evals.db (`source = 'sample'`, one row per window) and emits
`eval.scored` through its trace writer; a scorer that fails never fails the run; `check` refuses bad settings with
file, line and field; evals.db written before `drill` existed keeps its rows."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from console.cli import main
from engine.scoring.results_db import MIGRATIONS, EvalsDB
from engine.scoring.sampler import sampled
from tests.engine_helpers import events, run_sync, write_hierarchy

BASE = """
name: sampled
entry: clerk
models:
  m: {model: m1, tier: economy, latency: 0, latency_per_token: 0}
agents:
  clerk: {contract: Answers customers., model: m}
scripts:
  clerk:
    - final: "Thanks, your refund is on its way"
"""


def hierarchy_text(evals: str) -> str:
    # A window that no test's runs straddle: the default hour's edge would split one test's runs over two rows.
    window = "" if "window:" in evals else "  window: 366d\n"
    return BASE + "evals:\n" + window + evals


def test_every_completed_run_is_scored_into_one_window_row_and_an_event(tmp_path: Path) -> None:
    hierarchy = write_hierarchy(tmp_path, hierarchy_text("""
  sample: 1.0
  checks:
    - {scorer: contains, value: "refund"}
    - {scorer: regex, pattern: "^Sorry", name: apology}
"""))
    store = tmp_path / "store"
    results = run_sync(store, hierarchy, "a", "b", "c")
    assert [r.status for r in results] == ["completed"] * 3
    with EvalsDB.open(store) as db:
        [window] = db.list("sampled")
        assert (window.source, window.dataset, window.cases, window.passed) == ("sample", "sample", 3, 0)
        assert window.score == pytest.approx(0.5)  # contains passes (1), the regex does not (0)
        assert window.hierarchy_hash == hierarchy.source_hash
        cases = db.cases(window.id)
        assert sorted(c.run_id for c in cases) == sorted(r.run_id for r in results)
        assert {c.score for c in cases} == {0.5} and all(c.error is None for c in cases)
        assert db.latest("sampled", "sample") is None  # a sampled window never becomes a CI baseline
    scored = events(store, kinds=["eval.scored"])
    assert sorted(e.run_id or "" for e in scored) == sorted(r.run_id for r in results)
    assert {(e.data or {})["score"] for e in scored} == {0.5}
    assert all((e.data or {})["hierarchy"] == "sampled" and (e.data or {})["eval"] == window.id for e in scored)


def test_the_share_is_chosen_by_run_id(tmp_path: Path) -> None:
    hierarchy = write_hierarchy(tmp_path, hierarchy_text("""
  sample: 0.5
  checks: [{scorer: contains, value: refund}]
"""))
    store = tmp_path / "store"
    results = run_sync(store, hierarchy, *[str(n) for n in range(12)])
    expected = {r.run_id for r in results if sampled(r.run_id, 0.5)}
    scored = {e.run_id for e in events(store, kinds=["eval.scored"])}
    assert scored == expected
    with EvalsDB.open(store) as db:
        rows = db.list("sampled")
        assert sum(w.cases for w in rows) == len(expected)
    assert not sampled("any", 0.0) and sampled("any", 1.0)


def test_no_sampling_without_the_setting_or_when_the_engine_turns_it_off(tmp_path: Path) -> None:
    store = tmp_path / "store"
    run_sync(store, write_hierarchy(tmp_path, BASE), "a")
    assert events(store, kinds=["eval.scored"]) == []
    assert not (store / "evals.db").exists()


def test_a_failing_scorer_never_fails_the_run_it_is_recorded_and_counted(tmp_path: Path) -> None:
    hierarchy = write_hierarchy(tmp_path, hierarchy_text("""
  sample: 1.0
  checks:
    - {scorer: python, function: "tests.eval_functions:broken"}
    - {scorer: contains, value: refund}
"""))
    store = tmp_path / "store"
    [result] = run_sync(store, hierarchy, "a")
    assert result.status == "completed" and result.output == "Thanks, your refund is on its way"
    with EvalsDB.open(store) as db:
        [window] = db.list("sampled")
        [case] = db.cases(window.id)
        assert case.error is not None and "RuntimeError: scorer bug" in case.error
        assert case.passed == 0
    [event] = events(store, kinds=["eval.scored"])
    assert (event.data or {})["error"] is True


def test_an_evals_db_that_cannot_be_written_is_counted_and_reported_never_the_runs_problem(tmp_path: Path) -> None:
    import anyio

    from engine.runtime.engine import Engine, RunRequest
    from engine.store import open_engine_store

    hierarchy = write_hierarchy(tmp_path, hierarchy_text("""
  sample: 1.0
  checks: [{scorer: contains, value: refund}]
"""))
    store = tmp_path / "store"
    store.mkdir(mode=0o700)
    (store / "evals.db").mkdir()  # not a file: every write fails

    async def go() -> tuple[str, int, int]:
        with open_engine_store(store) as engine_store:
            async with Engine(engine_store, latency_scale=0.0, runbooks=False) as engine:
                result = await engine.run(hierarchy, RunRequest(input="a"))
                assert await engine.sampler.drain(10.0)
                return result.status, engine.sampler.write_failures, engine.sampler.scored

    status, failures, scored = anyio.run(go)
    assert (status, failures, scored) == ("completed", 1, 1)
    [failed] = events(store, kinds=["eval.sample_failed"])
    assert (failed.data or {})["hierarchy"] == "sampled" and (failed.data or {})["reason"]
    # The run's event still says its score, but without the window's totals: the sampled_score signal counts what
    # the store holds (issue 18), and nothing was recorded.
    [scored_event] = events(store, kinds=["eval.scored"])
    assert (scored_event.data or {})["score"] == 1.0 and "window_mean" not in (scored_event.data or {})


@pytest.mark.parametrize(("evals", "field", "message"), [
    ("  sample: 0.5\n", "evals", "needs at least one check"),
    ("  sample: 2\n  checks: [{scorer: contains, value: x}]\n", "evals.sample", "less than or equal to 1"),
    ("  sample: 1\n  checks: [{scorer: regex, pattern: '(['}]\n", "evals.checks[0].pattern",
     "not a regular expression"),
    ("  sample: 1\n  checks: [{scorer: python, function: 'no_such_mod_q:f'}]\n", "evals.checks[0].function",
     "cannot import module"),
    ("  sample: 1\n  checks: [{scorer: llm_judge, criteria: polite, model: m}]\n", "evals.checks[0].base_url",
     "needs `base_url`"),
    ("  sample: 1\n  checks: [{scorer: json_schema, schema: {type: 12}}]\n", "evals.checks[0].schema",
     "not a valid JSON schema"),
    ("  sample: 1\n  checks: [{scorer: nearly, value: x}]\n", "evals.checks[0]", ""),
])
def test_check_refuses_bad_sampling_settings_with_file_line_and_field(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], evals: str, field: str, message: str) -> None:
    path = tmp_path / "h.yaml"
    path.write_text(hierarchy_text(evals))
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    line = BASE.count("\n") + 1
    assert f"{path}:" in err and f": {field}" in err and message in err, err
    assert any(f"{path}:{n}:" in err for n in range(line, line + 4)), err


def test_an_evals_db_from_before_drills_keeps_its_rows_and_accepts_drill_rows(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "evals.db")
    conn.executescript(MIGRATIONS[0] + "; PRAGMA user_version = 1;")
    conn.execute("INSERT INTO evals VALUES ('ev_1', 'h', 'hash', 'd.jsonl', 'sha', 'dataset', 1, 2, 1, 1, 1, 0, '{}')")
    conn.execute("INSERT INTO eval_cases VALUES ('ev_1', 'c1', 'default', 'r1', 'completed', 1, 1, 0, 0, '[]', "
                 "'[]', '[]', NULL)")
    conn.commit()
    conn.close()
    with EvalsDB.open(tmp_path) as db:
        assert [s.id for s in db.list()] == ["ev_1"]
        assert [c.case_id for c in db.cases("ev_1")] == ["c1"]
        db.conn.execute("INSERT INTO evals VALUES ('dr_1', 'h', 'hash', 'drills', 'sha', 'drill', 3, 4, 0, 0, 0, 0, "
                        "'{}')")
        assert db.conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1


def test_writers_opening_a_new_evals_db_at_once_migrate_it_once(tmp_path: Path) -> None:
    """The sampler's worker threads (and two `flightdeck eval`s) may open a new evals.db together: one migrates it,
    the others wait for the write lock and find it migrated (before the fix: "table evals already exists")."""
    import threading

    errors: list[BaseException] = []
    for round_no in range(6):
        directory = tmp_path / str(round_no)
        barrier = threading.Barrier(12)

        def open_it(directory: Path = directory, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            try:
                with EvalsDB.open(directory) as db:
                    db.list()
            except BaseException as exc:  # collected for the assertion below
                errors.append(exc)

        threads = [threading.Thread(target=open_it) for _ in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        with EvalsDB.open(directory) as db:
            assert db.conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert errors == []
