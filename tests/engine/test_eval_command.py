"""`flightdeck eval`: the bundled support-triage dataset passes; a changed hierarchy and a changed expectation
regress against a baseline (latest, an eval id, a results file) and exit 1, unless --max-regression allows it; bad
input exits 2 with nothing run; results land in STORE/evals.db with the hierarchy hash and models, and each case's
run in traces.db."""

from __future__ import annotations

import json
import sqlite3
import xml.etree.ElementTree as ET
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from console.cli import main
from engine.hierarchy.bundled import bundled_path
from engine.scoring.results_db import EvalsDB
from engine.store import open_reader
from tests.fakes.openai_server import FakeOpenAIServer, openai_server, text  # noqa: F401

HIERARCHY = bundled_path("support-triage")
DATASET = HIERARCHY.parent / "eval" / "tickets.jsonl"


def run_eval(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, dict[str, Any]]:
    code = main(["eval", *(str(a) for a in args), "--json"])
    out = capsys.readouterr().out
    return code, (json.loads(out) if out.strip() else {})


def without_billing_words(tmp_path: Path) -> Path:
    """support-triage with its `billing-words` route removed: billing questions by email reach the generalist."""
    text = HIERARCHY.read_text()
    start = text.index("      - name: billing-words")
    end = text.index("      - name: technical")
    changed = tmp_path / "hierarchy.yaml"
    changed.write_text(text[:start] + text[end:])
    return changed


def test_the_bundled_dataset_passes_and_is_recorded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "store"
    code, out = run_eval(capsys, "support-triage", "--dataset", DATASET, "--store", store)
    assert code == 0 and out["ok"] is True and out["comparison"] is None
    record = out["eval"]
    assert record["summary"]["cases"] == 11 and record["summary"]["passed"] == 11
    assert set(record["by_type"]) == {"billing", "general", "technical"}
    assert set(record["by_route"]) == {"triage:billing-channel", "triage:billing-words", "triage:technical",
                                       "triage:default"}
    assert record["by_agent"]["answer_reviewer"]["cases"] == 4
    assert record["models"]["strong"] == {"provider": "scripted", "model": "scripted-strong", "calls": 8}
    with EvalsDB.open(store) as db:
        [summary] = db.list("support-triage")
        assert (summary.id, summary.cases, summary.passed) == (record["id"], 11, 11)
        assert summary.hierarchy_hash == record["hierarchy_hash"] and len(summary.hierarchy_hash) == 64
        assert db.load(summary).to_json() == record
    with open_reader(store) as reader:
        run = reader.get_run(record["cases"][0]["run_id"])
        assert run is not None and run.status == "completed"
        assert run.attributes["eval"] == record["id"] and run.attributes["eval_case"] == "duplicate-charge"


def test_a_changed_hierarchy_regresses_against_latest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "store"
    assert run_eval(capsys, "support-triage", "--dataset", DATASET, "--store", store)[0] == 0
    code, out = run_eval(capsys, without_billing_words(tmp_path), "--dataset", DATASET, "--store", store,
                         "--baseline", "latest")
    assert code == 1 and out["ok"] is False
    comparison = out["comparison"]
    regressed = {(d["dimension"], d["key"]) for d in comparison["regressions"]}
    assert regressed == {("overall", "all"), ("type", "billing"), ("agent", "general_specialist"),
                         ("route", "triage:default")}
    assert comparison["newly_failing"] == ["invoice-question", "refund-unused-month"]
    gone = next(d for d in comparison["deltas"] if d["key"] == "triage:billing-words")
    assert gone["current"] is None and gone["regressed"] is False
    # The cost and latency of each task type are compared too (reported, not gated).
    billing = next(d for d in comparison["deltas"] if d["dimension"] == "type" and d["key"] == "billing")
    assert {"cost_delta_usd", "latency_delta_s"} <= billing.keys()


def test_the_threshold_decides(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "store"
    _, first = run_eval(capsys, "support-triage", "--dataset", DATASET, "--store", store)
    code, out = run_eval(capsys, without_billing_words(tmp_path), "--dataset", DATASET, "--store", store,
                         "--baseline", first["eval"]["id"][:10], "--max-regression", "1")
    assert code == 0 and out["comparison"]["regressions"] == []
    assert out["comparison"]["newly_failing"] == ["invoice-question", "refund-unused-month"]


def test_a_changed_expectation_regresses_against_a_results_file(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["eval", "support-triage", "--dataset", str(DATASET), "--store", str(tmp_path / "a"), "--json"])
    baseline = tmp_path / "baseline.json"
    baseline.write_text(capsys.readouterr().out)
    assert code == 0
    changed = tmp_path / "tickets.jsonl"
    changed.write_text(DATASET.read_text().replace('"value": "Policy check passed."', '"value": "Escalated."'))
    junit = tmp_path / "eval.xml"
    code, out = run_eval(capsys, "support-triage", "--dataset", changed, "--store", tmp_path / "b",
                         "--baseline", baseline, "--junit", junit)
    assert code == 1
    regressed = {(d["dimension"], d["key"]) for d in out["comparison"]["regressions"]}
    assert ("type", "technical") in regressed and ("agent", "answer_reviewer") in regressed
    assert ("type", "billing") not in regressed
    assert any("the dataset changed" in n for n in out["comparison"]["notes"])
    suite = ET.parse(junit).getroot()
    failed = {c.get("name") for c in suite.iter("testcase") if c.find("failure") is not None}
    assert {"app-crash", "webhook-500", "export-timeout", "sync-token-error", "type:technical"} <= failed
    assert "duplicate-charge" not in failed
    assert suite.get("failures") == str(len(failed))
    crash = next(c for c in suite.iter("testcase") if c.get("name") == "app-crash")
    assert crash.get("file", "").endswith("tickets.jsonl:8")


def test_without_a_baseline_a_failing_case_fails_the_eval(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    changed = tmp_path / "tickets.jsonl"
    changed.write_text(DATASET.read_text().replace('"value": ["follow-up"]', '"value": ["refund"]'))
    code = main(["eval", "support-triage", "--dataset", str(changed), "--store", str(tmp_path / "s")])
    out = capsys.readouterr().out
    assert code == 1
    assert "feature-request FAILED: contains:reply: missing 'refund'" in out
    assert "10/11 cases passed" in out
    assert "TASK TYPE" in out and "triage:default" in out


def runs_in(store: Path) -> int:
    if not (store / "traces.db").exists():
        return 0
    with closing(sqlite3.connect(store / "traces.db")) as conn:
        return int(conn.execute("SELECT count(*) FROM runs").fetchone()[0])


@pytest.mark.parametrize("args, message", [
    (["--baseline", "ev_nope"], "--baseline: no eval 'ev_nope' in"),
    (["--baseline", "missing.json"], "missing.json: --baseline: cannot read results file"),
    (["--max-regression", "2"], "must be between 0 and 1"),
    (["--junit", "/no/such/dir/x.xml"], "/no/such/dir/x.xml: --junit: directory not found"),
])
def test_bad_options_exit_2_with_nothing_run(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             args: list[str], message: str) -> None:
    store = tmp_path / "store"
    try:
        code = main(["eval", "support-triage", "--dataset", str(DATASET), "--store", str(store), *args])
    except SystemExit as exc:  # argparse's own errors exit 2 from the parser
        code = exc.code
    assert code == 2
    assert message in capsys.readouterr().err
    assert runs_in(store) == 0


def test_a_bad_dataset_or_baseline_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "task": "t", "checks": [{"scorer": "regex", "pattern": "("}]}\n{"id": 5}\n')
    store = tmp_path / "store"
    assert main(["eval", "support-triage", "--dataset", str(bad), "--store", str(store)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:2: id: Input should be a valid string" in err
    assert not store.exists()
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"eval": {"format": 1, "id": "ev_x", "hierarchy": "deal-desk"}}))
    assert main(["eval", "support-triage", "--dataset", str(DATASET), "--store", str(store),
                 "--baseline", str(other)]) == 2
    assert "not a `flightdeck eval --json` results file (missing 'hierarchy_hash')" in capsys.readouterr().err
    other.write_text(json.dumps({"format": 1, "id": "ev_x", "hierarchy": "deal-desk", "hierarchy_hash": "h",
                                 "dataset": "d", "dataset_sha256": "s", "started": 0, "ended": 0, "models": {},
                                 "cases": []}))
    assert main(["eval", "support-triage", "--dataset", str(DATASET), "--store", str(store),
                 "--baseline", str(other)]) == 2
    assert "the baseline ev_x is an eval of 'deal-desk', not of 'support-triage'" in capsys.readouterr().err
    assert runs_in(store) == 0


def test_latest_with_no_earlier_eval_compares_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["eval", "support-triage", "--dataset", str(DATASET), "--store", str(tmp_path / "s"),
                 "--baseline", "latest"])
    captured = capsys.readouterr()
    assert code == 0
    assert "no earlier eval of support-triage on tickets.jsonl" in captured.err
    assert "11/11 cases passed" in captured.out


def test_an_llm_judge_through_the_command(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          openai_server: FakeOpenAIServer) -> None:
    """Each case's judgement is a request to the judge server; an answer that is not a score fails its case only."""
    dataset = tmp_path / "judged.jsonl"
    inbox = json.loads((HIERARCHY.parent / "inbox.json").read_text())
    dataset.write_text("\n".join(json.dumps({"id": f"c{i}", "input": inbox[i], "checks": [
        {"scorer": "llm_judge", "path": "reply", "criteria": "Polite and specific."}]}) for i in range(3)) + "\n")
    openai_server.enqueue(text('{"score": 0.9, "reason": "fine"}'), text("I think it is good"),
                          text('{"score": 0.2, "reason": "vague"}'))
    code, out = run_eval(capsys, "support-triage", "--dataset", dataset, "--store", tmp_path / "s",
                         "--judge-url", openai_server.base_url, "--judge-model", "judge-1")
    assert code == 1
    cases = {c["id"]: c for c in out["eval"]["cases"]}
    assert (cases["c0"]["passed"], cases["c0"]["score"]) == (True, 0.9)
    assert cases["c1"]["checks"][0]["error"] is True and not cases["c1"]["passed"]
    assert cases["c1"]["error"].startswith("the judge's answer is not JSON")
    assert (cases["c2"]["passed"], cases["c2"]["checks"][0]["reason"]) == (False, "vague")
    assert len(openai_server.requests) == 3
    assert all(r.json["model"] == "judge-1" for r in openai_server.requests)


def test_an_evals_db_from_a_newer_flightdeck_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "store"
    EvalsDB.open(store).close()
    with closing(sqlite3.connect(store / "evals.db")) as conn:
        conn.execute("PRAGMA user_version = 99")
    assert main(["eval", "support-triage", "--dataset", str(DATASET), "--store", str(store)]) == 3
    assert "evals.db was written by a newer Flightdeck (schema 99" in capsys.readouterr().err
    assert runs_in(store) == 0


def test_an_eval_on_an_openai_model_records_the_version_that_answered(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], openai_server: FakeOpenAIServer) -> None:
    hierarchy = tmp_path / "remote.yaml"
    hierarchy.write_text(f"""
name: remote
entry: w
models:
  main: {{provider: openai, model: gpt-alias, tier: strong, base_url: "{openai_server.base_url}", timeout: 5s}}
agents:
  w: {{contract: Answers., model: main}}
""")
    dataset = tmp_path / "cases.jsonl"
    dataset.write_text(json.dumps({"id": "hi", "task": "say hi", "expected": "hello"}) + "\n")
    openai_server.enqueue(text("hello", model="gpt-alias-2026-05-01"))
    code, out = run_eval(capsys, hierarchy, "--dataset", dataset, "--store", tmp_path / "s")
    assert code == 0 and out["eval"]["summary"]["passed"] == 1
    assert out["eval"]["models"] == {"main": {"provider": "openai", "model": "gpt-alias", "calls": 1,
                                              "base_url": openai_server.base_url,
                                              "versions": ["gpt-alias-2026-05-01"]}}


def test_a_case_fails_when_its_run_ends_in_another_status(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inbox = json.loads((HIERARCHY.parent / "inbox.json").read_text())
    dataset = tmp_path / "status.jsonl"
    dataset.write_text(json.dumps({"id": "should-refuse", "input": inbox[0], "status": "refused",
                                   "checks": [{"scorer": "exact", "path": "category", "value": "billing"}]}) + "\n")
    code, out = run_eval(capsys, "support-triage", "--dataset", dataset, "--store", tmp_path / "s")
    [case] = out["eval"]["cases"]
    assert code == 1
    assert (case["passed"], case["score"], case["error"]) == (False, 0.0, "run completed, expected refused")
