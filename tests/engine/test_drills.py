"""Drills: the bundled deal-desk catalogue holds; a drill whose guardrail the hierarchy disables FAILS; bad drill
files are errors naming file, line and field; `flightdeck drill` exit codes, --json and --junit."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from console.cli import main
from engine.drills.runner import run_drills
from engine.drills.spec import load_drill, load_drills
from engine.errors import InputError
from engine.hierarchy.bundled import bundled_path
from engine.hierarchy.loader import load_hierarchy

DEAL_DESK = bundled_path("deal-desk")
CATALOGUE = DEAL_DESK.parent / "drills"


@pytest.fixture(scope="module")
def catalogue_results() -> dict[str, object]:
    results = run_drills(load_hierarchy("deal-desk"), load_drills(CATALOGUE))
    return {r.scenario: r for r in results}


@pytest.mark.parametrize("name", sorted(p.stem for p in CATALOGUE.glob("*.yaml")))
def test_each_bundled_drill_holds_on_deal_desk(catalogue_results: dict[str, object], name: str) -> None:
    result = catalogue_results[name]
    assert result.held, result.evidence  # type: ignore[attr-defined]


def _without_approval(tmp_path: Path) -> Path:
    """deal-desk with the apply_discount approval gate removed: the guardrail the approval drill checks."""
    text = DEAL_DESK.read_text()
    start = text.index("    approval:\n      required: when\n      when: \"discount_pct > 15\"")
    end = text.index("    example_args: {account: ACME-001, product: platform, seats: 250, discount_pct: 12")
    path = tmp_path / "hierarchy.yaml"
    path.write_text(text[:start] + text[end:])
    shutil.copy(DEAL_DESK.parent / "deals.json", tmp_path / "deals.json")
    return path


def test_drill_fails_when_the_hierarchy_disables_its_guardrail(tmp_path: Path) -> None:
    hierarchy = load_hierarchy(_without_approval(tmp_path))
    [result] = run_drills(hierarchy, [load_drill(CATALOGUE / "approval-unanswered.yaml")])
    assert not result.held
    assert any(line.startswith("unexpected span tool apply_discount ok") for line in result.evidence)
    assert "no event approval.requested name=apply_discount" in result.evidence


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_bad_drill_files_name_file_line_and_field(tmp_path: Path) -> None:
    _write(tmp_path, "a.yaml", "name: a\nguardrail: x\nexpect:\n  run_stats: completed\n")
    _write(tmp_path, "b.yaml", "name: b\nguardrail: x\n")
    _write(tmp_path, "c.yaml", "name: c\nguardrail: x\ntool_faults:\n  nope: {rate: 2}\nexpect: {run_status: ok}\n")
    with pytest.raises(InputError) as caught:
        load_drills(tmp_path)
    text = str(caught.value)
    assert f"{tmp_path / 'a.yaml'}:4: expect.run_stats: unknown key 'run_stats'; did you mean 'run_status'?" in text
    assert f"{tmp_path / 'b.yaml'}:1: a fault drill needs `expect`" in text
    assert f"{tmp_path / 'c.yaml'}:4: tool_faults.nope.rate: Input should be less than or equal to 1" in text


def test_drill_that_does_not_fit_the_hierarchy_is_refused_before_anything_runs(tmp_path: Path) -> None:
    path = _write(tmp_path, "d.yaml", "name: d\nguardrail: x\ntool_faults:\n  no_such_tool: {delay: 1s}\n"
                  "patch:\n  defaults: {loop_threshold: 1}\nexpect: {run_status: completed}\n")
    with pytest.raises(InputError) as caught:
        run_drills(load_hierarchy("deal-desk"), [load_drill(path)])
    assert f"{path}:6: patch.defaults.loop_threshold: Input should be greater than or equal to 2" in str(caught.value)


def test_cli_exit_codes_json_and_junit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    drills = tmp_path / "drills"
    drills.mkdir()
    shutil.copy(CATALOGUE / "looping-agent.yaml", drills)
    shutil.copy(CATALOGUE / "approval-unanswered.yaml", drills)
    junit = tmp_path / "out.xml"
    assert main(["drill", "deal-desk", "--scenarios", str(drills), "--json", "--junit", str(junit)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["held"] is True
    assert [d["result"] for d in report["drills"]] == ["HELD", "HELD"]
    suite = ET.parse(junit).getroot()
    assert suite.get("tests") == "2" and suite.get("failures") == "0"

    # The same drills on a hierarchy without the approval gate: one FAILS, exit 1, a JUnit failure.
    (tmp_path / "weak").mkdir()
    weak = _without_approval(tmp_path / "weak")
    assert main(["drill", str(weak), "--scenarios", str(drills), "--junit", str(junit)]) == 1
    out = capsys.readouterr().out
    assert "approval-unanswered" in out and "FAILED" in out and "1/2 drills held" in out
    suite = ET.parse(junit).getroot()
    assert suite.get("failures") == "1"
    assert [c.get("name") for c in suite if c.find("failure") is not None] == ["approval-unanswered"]

    bad = tmp_path / "bad"
    bad.mkdir()
    _write(bad, "x.yaml", "name: x\n")
    assert main(["drill", "deal-desk", "--scenarios", str(bad)]) == 2
    assert "x.yaml:1: guardrail: missing required key" in capsys.readouterr().err
    assert main(["drill", "deal-desk", "--scenarios", str(tmp_path / "none")]) == 2
    assert main(["drill", "no-such-hierarchy"]) == 2


def test_rate_limit_drill_fails_when_long_retry_after_is_waited_for(tmp_path: Path) -> None:
    """Without a max_retry_after below the server's 600 s, the runtime retries instead of moving on: FAILED."""
    drills = tmp_path / "drills"
    drills.mkdir()
    text = (CATALOGUE / "rate-limit-storm.yaml").read_text()
    (drills / "storm.yaml").write_text(text + "patch:\n  models:\n    standard: {max_retry_after: 1h}\n"
                                       "    economy: {max_retry_after: 1h}\n")
    [result] = run_drills(load_hierarchy("deal-desk"), load_drills(drills))
    assert not result.held
    assert "no event model.retry_skipped agent=sales" in result.evidence


def test_retry_after_only_with_a_rate_limit_or_error_fault(tmp_path: Path) -> None:
    path = _write(tmp_path, "r.yaml", "name: r\nguardrail: x\nscripts:\n  sales:\n    - final: done\n"
                  "      retry_after: 10s\nexpect: {run_status: completed}\n")
    with pytest.raises(InputError) as caught:
        load_drill(path)
    assert f"{path}:5: scripts.sales[0]: retry_after only applies to a `rate_limit` or `error` fault" in str(
        caught.value)


def test_a_drill_run_with_a_store_records_its_summary_in_evals_db(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from engine.scoring.results_db import EvalsDB

    drills = tmp_path / "drills"
    drills.mkdir()
    shutil.copy(CATALOGUE / "looping-agent.yaml", drills)
    shutil.copy(CATALOGUE / "approval-unanswered.yaml", drills)
    (tmp_path / "weak").mkdir()
    weak = _without_approval(tmp_path / "weak")
    store = tmp_path / "store"
    assert main(["drill", str(weak), "--scenarios", str(drills), "--store", str(store), "--json"]) == 1
    capsys.readouterr()
    with EvalsDB.open(store) as db:
        [summary] = db.list(source="drill")
        assert (summary.hierarchy, summary.source, summary.dataset, summary.cases, summary.passed) == \
            ("deal-desk", "drill", "drills", 2, 1)
        assert summary.hierarchy_hash == load_hierarchy(weak).source_hash
        cases = {c.case_id: c for c in db.cases(summary.id)}
        assert (cases["looping-agent"].status, cases["approval-unanswered"].status) == ("held", "failed")
        assert cases["approval-unanswered"].error and cases["looping-agent"].run_id
        assert db.latest("deal-desk", "drills") is None  # a drill summary is never an eval baseline
    assert main(["drill", "deal-desk", "--scenarios", str(drills), "--json"]) == 0  # no --store: nothing recorded
    capsys.readouterr()
    with EvalsDB.open(store) as db:
        assert len(db.list()) == 1
