"""Conflicting worker outputs (`agree:`): a disagreement between delegated results is a `delegation.conflict`
event, the synthesizing agent's next request carries it, and a final answer that hides it is asked again, then
fails like an output-contract violation. The deal-desk drill holds, and FAILS with the setting removed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from engine.drills.runner import run_drills
from engine.drills.spec import load_drill
from engine.errors import InputErrors
from engine.hierarchy.bundled import bundled_path
from engine.hierarchy.loader import load_hierarchy
from engine.hierarchy.schema import HierarchySpec
from tests.engine_helpers import events, run_sync, spans, write_hierarchy
from tests.fakes.openai_server import Behaviour, FakeOpenAIServer, RecordedRequest, call, text, tool_calls

DRILL = bundled_path("deal-desk").parent / "drills" / "conflicting-workers.yaml"


def _hierarchy(tmp_path: Path, base_url: str, b_total: str = "12") -> str:
    return f"""
name: agree
entry: boss
defaults: {{max_validation_retries: 1}}
models:
  gpt: {{provider: openai, model: gpt-test, base_url: "{base_url}", timeout: 5s}}
  small: {{provider: scripted, model: small}}
agents:
  boss:
    contract: Adds up what its two counters report.
    model: gpt
    delegates: [a, b]
    agree:
      total: [a.total, b.total]
  a: {{contract: Counts., model: small, output: {{total: number}}}}
  b: {{contract: Counts., model: small, output: {{total: number}}}}
scripts:
  a: [{{final: {{total: 10}}}}]
  b: [{{final: {{total: {b_total}}}}}]
"""


def _boss(final: str) -> Callable[[RecordedRequest], Behaviour]:
    def script(request: RecordedRequest) -> Behaviour:
        if not request.has_tool_result:
            return tool_calls(call("ask_a", {"task": "count", "context": {}}),
                              call("ask_b", {"task": "count", "context": {}}))
        return text(final)
    return script


def test_conflict_is_recorded_and_sent_to_the_synthesizer(tmp_path: Path, store_dir: Path) -> None:
    with FakeOpenAIServer(responder=_boss("a counted 10 and b counted 12: they disagree")) as server:
        hierarchy = write_hierarchy(tmp_path, _hierarchy(tmp_path, server.base_url))
        (result,) = run_sync(store_dir, hierarchy, "go")
        requests = server.requests
    assert result.status == "completed", result.error
    (event,) = events(store_dir, result.run_id, kinds=["delegation.conflict"])
    assert event.agent == "boss" and event.name == "total"
    assert event.data["agents"] == ["a", "b"]
    assert event.data["values"] == [{"agent": "a", "field": "total", "value": 10},
                                    {"agent": "b", "field": "total", "value": 12}]
    # the request after the delegations carries the conflict, after the tool results
    last = requests[-1].messages[-1]
    assert last["role"] == "user" and "a.total = 10" in last["content"] and "b.total = 12" in last["content"]
    assert not events(store_dir, result.run_id, kinds=["validation.failed"])


def test_a_silent_pick_is_asked_again_then_fails(tmp_path: Path, store_dir: Path) -> None:
    with FakeOpenAIServer(responder=_boss("The total is 10.")) as server:
        hierarchy = write_hierarchy(tmp_path, _hierarchy(tmp_path, server.base_url))
        (result,) = run_sync(store_dir, hierarchy, "go")
        requests = server.requests
    assert result.status == "failed"
    assert "does not report the conflict" in (result.error or "")
    failed = events(store_dir, result.run_id, kinds=["validation.failed"])
    assert [e.data["rule"] for e in failed] == ["unreported_conflict", "unreported_conflict"]  # 1 retry allowed
    assert "naming each conflicting value" in requests[-1].messages[-1]["content"]
    boss = next(s for s in spans(store_dir, result.run_id) if s.kind == "agent" and s.name == "boss")
    assert boss.status == "validation_failed"


def test_agreeing_results_are_no_conflict(tmp_path: Path, store_dir: Path) -> None:
    with FakeOpenAIServer(responder=_boss("The total is 10.")) as server:
        hierarchy = write_hierarchy(tmp_path, _hierarchy(tmp_path, server.base_url, b_total="10.0"))
        (result,) = run_sync(store_dir, hierarchy, "go")
    assert result.status == "completed" and result.output == "The total is 10."
    assert not events(store_dir, result.run_id, kinds=["delegation.conflict"])


def test_agree_references_are_checked_with_file_line_and_field(tmp_path: Path) -> None:
    text_ = _hierarchy(tmp_path, "http://127.0.0.1:9/v1").replace("total: [a.total, b.total]",
                                                                   "total: [a.total, c.total, b.count]")
    with pytest.raises(InputErrors) as caught:
        write_hierarchy(tmp_path, text_)
    message = str(caught.value)
    path = tmp_path / "h.yaml"
    assert f"{path}:14: agents.boss.agree.total[1]: 'c' is not one of this agent's delegates" in message
    assert f"{path}:14: agents.boss.agree.total[2]: b's output contract has no field 'count'" in message


def test_agree_needs_two_references_and_delegates() -> None:
    with pytest.raises(ValueError, match="at least two"):
        HierarchySpec.model_validate({"name": "x", "entry": "a", "models": {"m": {"model": "m"}}, "agents": {
            "a": {"contract": "c", "model": "m", "delegates": ["b"], "agree": {"t": ["b.t"]}},
            "b": {"contract": "c", "model": "m"}}})


def test_conflict_drill_holds_and_fails_without_agree(tmp_path: Path) -> None:
    hierarchy = load_hierarchy("deal-desk")
    [held] = run_drills(hierarchy, [load_drill(DRILL)])
    assert held.held, held.evidence
    off = tmp_path / "conflicting-workers.yaml"
    off.write_text(DRILL.read_text().replace(
        "    finance:\n      agree:\n        discount_pct: [pricing.discount_applied_pct, "
        "financial_modeler.discount_pct]\n", ""))
    [failed] = run_drills(hierarchy, [load_drill(off)])
    assert not failed.held
    assert "no event delegation.conflict name=discount_pct agent=finance" in failed.evidence

