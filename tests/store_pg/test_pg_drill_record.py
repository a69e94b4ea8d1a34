"""`flightdeck drill --store postgresql://...`: the drills run in a temporary directory (a drill reads its own engine
store's files), and their summary row (`source = 'drill'`) goes to the database's evals tables, where the fleet's
console reads it. A database that cannot be reached is refused before any drill runs. A real PostgreSQL on
127.0.0.1."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from console.cli import main
from engine.hierarchy.bundled import bundled_path
from engine.hierarchy.loader import load_hierarchy
from engine.scoring.evals_store import open_evals_store
from tests.store_pg.test_pg_runbooks_engine import pg

CATALOGUE = bundled_path("deal-desk").parent / "drills"


def test_a_drill_on_postgres_records_its_summary_in_the_database(
        pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # a directory named after the URL would appear here
    drills = tmp_path / "drills"
    drills.mkdir()
    shutil.copy(CATALOGUE / "looping-agent.yaml", drills)
    assert main(["drill", "deal-desk", "--scenarios", str(drills), "--store", pg_url, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [d["scenario"] for d in out["drills"]] == ["looping-agent"]
    with open_evals_store(pg(pg_url)) as db:
        [summary] = db.list(source="drill")
        assert (summary.hierarchy, summary.dataset, summary.cases, summary.passed) == ("deal-desk", "drills", 1, 1)
        assert summary.hierarchy_hash == load_hierarchy("deal-desk").source_hash
        [case] = db.cases(summary.id)
        assert (case.case_id, case.status, case.run_id) == ("looping-agent", "held", "")  # its run was not kept
        assert db.latest("deal-desk", "drills") is None  # never an eval baseline
    assert sorted(p.name for p in tmp_path.iterdir()) == ["drills"]


def test_a_drill_on_a_database_that_cannot_be_reached_runs_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    drills = tmp_path / "drills"
    drills.mkdir()
    shutil.copy(CATALOGUE / "looping-agent.yaml", drills)
    code = main(["drill", "deal-desk", "--scenarios", str(drills), "--store",
                 "postgresql://nobody:secret@127.0.0.1:1/none"])
    captured = capsys.readouterr()
    assert code == 3 and captured.out == "" and "drilling" not in captured.err
    assert "secret" not in captured.err and "127.0.0.1" in captured.err
