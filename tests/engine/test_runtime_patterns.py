"""Each pattern the runtime must run (worker, orchestrator, three-level hierarchy, pipeline, router), on a real
store, asserting on what the engine recorded."""

from __future__ import annotations

import hashlib
from pathlib import Path

import engine
from tests.engine_helpers import Approver, events, fixture, get_run, overlap, run_sync, spans, write_hierarchy


def _by_kind(rows: list[dict], kind: str) -> list[dict]:
    return [r for r in rows if r.kind == kind]


def test_worker_calls_its_tools_and_answers(store_dir: Path) -> None:
    hierarchy = fixture("worker")
    (result,) = run_sync(store_dir, hierarchy, {"a": 2, "b": 3, "text": "hi"})
    assert result.status == "completed", result.error
    recorded = spans(store_dir, result.run_id)
    tools = _by_kind(recorded, "tool")
    assert tools and all(t.status == "ok" for t in tools)
    assert result.model_calls == len(_by_kind(recorded, "llm"))
    assert result.tokens_in > 0 and result.cost_usd > 0
    run = get_run(store_dir, result.run_id)
    assert run.status == "completed"
    assert run.engine_version == engine.__version__
    assert run.hierarchy_hash == hashlib.sha256(hierarchy.path.read_bytes()).hexdigest()


ORCHESTRATOR_WITH_LATENCY = (Path(__file__).parent.parent / "fixtures" / "hierarchies" / "orchestrator.yaml").read_text()


def test_orchestrator_runs_delegations_of_one_turn_concurrently(tmp_path: Path, store_dir: Path) -> None:
    # Give the workers' model real (simulated) latency so that sequential execution could not overlap.
    text = ORCHESTRATOR_WITH_LATENCY.replace("latency: 0\n", "latency: 0.2\n")
    hierarchy = write_hierarchy(tmp_path, text)
    (result,) = run_sync(store_dir, hierarchy, {"sku": "pear"}, latency_scale=1.0)
    assert result.status == "completed", result.error
    delegations = _by_kind(spans(store_dir, result.run_id), "delegation")
    assert {d.name for d in delegations} == {"lead -> stock_worker", "lead -> status_worker"}
    assert overlap(delegations[0], delegations[1]), delegations
    assert result.output == {"answer": "Stock and service status checked for pear."}


def test_three_level_hierarchy_records_every_level(store_dir: Path) -> None:
    hierarchy = fixture("three_levels")
    (result,) = run_sync(store_dir, hierarchy, "plan the quarter")
    assert result.status == "completed", result.error
    recorded = {s.id: s for s in spans(store_dir, result.run_id)}

    def depth(span: dict) -> int:
        level = 0
        while span.parent_id:
            span = recorded[span.parent_id]
            level += span.kind == "agent"
        return level

    agent_depths = {s.name: depth(s) for s in recorded.values() if s.kind == "agent"}
    assert max(agent_depths.values()) >= 2, agent_depths  # root agent 0, sub-orchestrator 1, worker 2
    leaf_tools = [s for s in recorded.values() if s.kind == "tool"]
    assert leaf_tools and min(depth(s) for s in leaf_tools) >= 3


def test_pipeline_feeds_outputs_forward_and_runs_independent_stages_in_parallel(tmp_path: Path,
                                                                                  store_dir: Path) -> None:
    text = (Path(__file__).parent.parent / "fixtures" / "hierarchies" / "pipeline.yaml").read_text()
    hierarchy = write_hierarchy(tmp_path, text.replace("latency: 0\n", "latency: 0.2\n"))
    (result,) = run_sync(store_dir, hierarchy, {"sku": "pear"}, latency_scale=1.0)
    assert result.status == "completed", result.error
    stages = {s.name: s for s in spans(store_dir, result.run_id) if s.kind == "stage"}
    assert set(stages) == {"fetch", "normalize", "price", "stock", "summarize"}
    assert stages["fetch"].ended <= stages["normalize"].started
    assert overlap(stages["price"], stages["stock"])
    assert stages["summarize"].started >= max(stages["price"].ended, stages["stock"].ended)
    # The join stage received both parallel outputs as its input.
    assert "price" in result.output and "stock" in result.output


def test_router_records_the_rule_that_matched(store_dir: Path) -> None:
    hierarchy = fixture("router")
    results = run_sync(store_dir, hierarchy, {"kind": "math", "a": 1}, "what is the health of the api?",
                       "tell me a joke")
    assert [r.status for r in results] == ["completed"] * 3
    decisions = [e.data for e in events(store_dir, kinds=["route.decided"])]
    by_rule = {d["rule"]: d for d in decisions}
    assert by_rule["math"]["to"] == "mather" and by_rule["math"]["matched"] == {"field": "kind", "value": "math"}
    assert by_rule["status"]["to"] == "statuser" and by_rule["status"]["matched"] == {"keyword": "health"}
    assert by_rule["default"]["to"] == "generalist" and by_rule["default"]["matched"] is None
    route_spans = [s for r in results for s in spans(store_dir, r.run_id) if s.kind == "route"]
    assert {s.attributes["rule"] for s in route_spans} == {"math", "status", "default"}


def test_bundled_deal_desk_runs_three_levels_with_tokens_and_cost(store_dir: Path) -> None:
    from engine.hierarchy.bundled import sample_inputs
    from engine.hierarchy.loader import load_hierarchy

    hierarchy = load_hierarchy("deal-desk")
    deals = sample_inputs("deal-desk")[:3]
    with Approver(store_dir) as approver:  # two of these deals ask for discounts that need a person's approval
        results = run_sync(store_dir, hierarchy, *deals, concurrency=3)
    assert {row.tool for row in approver.decided} >= {"apply_discount"}
    assert all(r.status == "completed" for r in results), [(r.status, r.error) for r in results]
    recorded = spans(store_dir, results[0].run_id)
    agents = {s.name for s in recorded if s.kind == "agent"}
    assert {"supervisor", "sales", "finance", "legal", "pricing", "account_researcher"} <= agents
    assert all(s.tokens_in > 0 and s.cost_usd > 0 for s in recorded if s.kind == "llm")


def test_support_triage_routes_into_the_pipeline(store_dir: Path) -> None:
    from engine.hierarchy.bundled import sample_inputs
    from engine.hierarchy.loader import load_hierarchy

    hierarchy = load_hierarchy("support-triage")
    inbox = sample_inputs("support-triage")
    with Approver(store_dir):  # large refunds wait for a person
        results = run_sync(store_dir, hierarchy, *inbox, concurrency=4)
    assert all(r.status == "completed" for r in results), [(r.status, r.error) for r in results]
    routed_to = {e.data["to"] for e in events(store_dir, kinds=["route.decided"])}
    assert routed_to == {"billing_specialist", "technical_pipeline", "general_specialist"}
