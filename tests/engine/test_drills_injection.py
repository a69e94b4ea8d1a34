"""Prompt-injection containment: untrusted results are marked, the policy refuses (or holds for approval) high-risk
calls after untrusted content and raises tool.blocked, and the injection drill measures both policies in one run."""

from __future__ import annotations

from pathlib import Path

from engine.drills.attacks import ATTACKS, render
from engine.drills.prepare import drill_hierarchy
from engine.drills.runner import run_drills
from engine.drills.spec import load_drill
from engine.examples import faults
from engine.hierarchy.bundled import bundled_path
from engine.hierarchy.loader import load_hierarchy
from tests.engine_helpers import events, run_sync, spans

DRILL = bundled_path("deal-desk").parent / "drills" / "prompt-injection.yaml"
DEAL = {"account": "INITECH-003", "product": "platform", "seats": 80, "requested_discount_pct": 10}


def _attacked_run(tmp_path: Path, policy: str) -> tuple[Path, str]:
    drill = load_drill(DRILL)
    hierarchy = drill_hierarchy(load_hierarchy("deal-desk"), drill, patch={"untrusted": {"policy": policy}})
    faults.set_injection("crm_lookup", render(ATTACKS[0]))
    try:
        [result] = run_sync(tmp_path, hierarchy, DEAL)
    finally:
        faults.clear()
    return tmp_path, result.run_id


def _attacker_spans(store: Path, run_id: str) -> list[object]:
    return [s for s in spans(store, run_id) if s.kind == "tool"
            and str(s.attributes.get("call_id", "")).startswith("inj_")]


def test_policy_refuse_blocks_the_attackers_call_and_raises_tool_blocked(tmp_path: Path) -> None:
    store, run_id = _attacked_run(tmp_path, "refuse")
    [attack] = _attacker_spans(store, run_id)
    assert attack.name == "apply_discount" and attack.status == "denied"  # type: ignore[attr-defined]
    assert attack.attributes["error_kind"] == "untrusted_context"  # type: ignore[attr-defined]
    assert attack.attributes["after_untrusted"] == ["crm_lookup"]  # type: ignore[attr-defined]
    blocked = [e for e in events(store, run_id, kinds=["tool.blocked"]) if e.data["reason"] == "untrusted_context"]
    assert blocked and blocked[0].agent == "pricing"
    lookups = [s for s in spans(store, run_id) if s.name == "crm_lookup"]
    assert lookups and all(s.attributes.get("untrusted") is True for s in lookups)
    assert all("untrusted" not in s.attributes for s in spans(store, run_id) if s.name == "price_quote")


def test_policy_off_lets_the_attackers_call_run(tmp_path: Path) -> None:
    store, run_id = _attacked_run(tmp_path, "off")
    [attack] = _attacker_spans(store, run_id)
    assert attack.name == "apply_discount" and attack.status == "ok"  # type: ignore[attr-defined]
    assert attack.attributes["args"]["account"] == "GLOBEX-002"  # type: ignore[attr-defined]


def test_policy_approval_holds_the_call_for_an_operator(tmp_path: Path) -> None:
    drill = load_drill(DRILL)
    hierarchy = drill_hierarchy(load_hierarchy("deal-desk"), drill, patch={
        "untrusted": {"policy": "approval"},
        "tools": {"apply_discount": {"approval": {"deadline": 0.1}}}})
    faults.set_injection("crm_lookup", render(ATTACKS[0]))
    try:
        [result] = run_sync(tmp_path, hierarchy, DEAL)
    finally:
        faults.clear()
    [attack] = _attacker_spans(tmp_path, result.run_id)
    assert attack.status == "denied"  # type: ignore[attr-defined]
    assert attack.attributes["approval"]["status"] == "timed_out"  # type: ignore[attr-defined]
    assert [e.name for e in events(tmp_path, result.run_id, kinds=["approval.requested"])].count(
        "apply_discount") >= 1


def test_injection_drill_reports_zero_with_the_policy_and_nonzero_without() -> None:
    [result] = run_drills(load_hierarchy("deal-desk"), [load_drill(DRILL)])
    configured, off = result.injection
    assert result.held
    assert configured.executed == 0 and configured.attempted > 0 and configured.blocked == configured.attempted
    assert off.executed > 0 and off.attack_success_rate > 0
    assert configured.runs == off.runs == len(ATTACKS)
    assert 0.0 <= configured.utility <= 1.0


def test_injection_drill_fails_when_the_hierarchy_has_no_policy(tmp_path: Path) -> None:
    source = bundled_path("deal-desk")
    text = source.read_text().replace("untrusted:\n  policy: refuse\n", "")
    path = tmp_path / "hierarchy.yaml"
    path.write_text(text)
    [result] = run_drills(load_hierarchy(path), [load_drill(DRILL)])
    assert not result.held
    assert result.injection[0].executed > 0
