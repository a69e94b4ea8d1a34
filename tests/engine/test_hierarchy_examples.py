"""The bundled example hierarchies: they load, their tools do real work over the sample data, and their scripts
hang together (a dry run follows every script through delegations and real tool calls for every sample input)."""

from __future__ import annotations

import functools
import json
import re
from typing import Any

import anyio
import pytest

from engine.examples import faults
from engine.examples.deal_desk import tools as deal_tools
from engine.examples.support_triage import tools as support_tools
from engine.hierarchy.bundled import bundled_names, get_bundled, list_bundled, sample_inputs
from engine.hierarchy.loader import Hierarchy, load_hierarchy
from engine.hierarchy.schema import TIER_RANK, AgentSpec, ContractField


@pytest.fixture(autouse=True)
def clean_side_effects() -> Any:
    deal_tools.clear_ledger()
    support_tools.clear_ledger()
    faults.clear()
    yield
    deal_tools.clear_ledger()
    support_tools.clear_ledger()
    faults.clear()


@functools.cache
def bundled(name: str) -> Hierarchy:
    return load_hierarchy(name)


def call(hierarchy: Hierarchy, tool_name: str, args: dict[str, Any]) -> Any:
    tool = hierarchy.tools[tool_name]
    validated = tool.validate_args(args)
    if tool.is_async:
        return anyio.run(functools.partial(tool.func, **validated))
    return tool.func(**validated)


# --------------------------------------------------------------------------------------------------- loading

def test_bundled_list() -> None:
    assert bundled_names() == ["deal-desk", "support-triage"]
    for item in list_bundled():
        assert item.path.is_file() and item.inputs_path.is_file()
        assert item.summary
        assert (item.path.parent / "README.md").is_file()


@pytest.mark.parametrize("name", ["deal-desk", "support-triage"])
def test_every_tool_has_example_args_that_run_the_real_tool(name: str) -> None:
    hierarchy = bundled(name)
    assert hierarchy.spec.name == name
    for tool_name, tool in hierarchy.tools.items():
        assert tool.spec.example_args, f"{tool_name} has no example_args"
        result = call(hierarchy, tool_name, tool.spec.example_args)
        assert isinstance(result, dict) and result, tool_name
        assert tool.spec.function.startswith(f"engine.examples.{name.replace('-', '_')}.tools:")


@pytest.mark.parametrize("name", ["deal-desk", "support-triage"])
def test_every_model_calling_agent_has_a_script_and_a_contract(name: str) -> None:
    spec = bundled(name).spec
    for agent_name, agent in spec.agents.items():
        if agent.kind == "agent":
            assert spec.scripts.get(agent_name), f"{agent_name} has no script"
        assert agent.contract.strip()


@pytest.mark.parametrize("name", ["deal-desk", "support-triage"])
def test_fallback_chains_go_down_the_tiers(name: str) -> None:
    spec = bundled(name).spec
    for agent in spec.agents.values():
        if agent.model is None:
            continue
        ranks = [TIER_RANK[spec.models[m].tier] for m in [agent.model, *agent.fallback]]
        assert ranks == sorted(ranks, reverse=True) and len(set(ranks)) == len(ranks)


def test_models_are_priced_like_their_tiers() -> None:
    models = bundled("deal-desk").spec.models
    assert {m.tier: (m.price_in, m.price_out) for m in models.values()} == {
        "strong": (3.0, 15.0), "standard": (0.5, 1.5), "economy": (0.15, 0.6)}
    assert all(m.provider == "scripted" for m in models.values())


def test_deal_desk_shape() -> None:
    spec = bundled("deal-desk").spec
    agents = spec.agents
    assert spec.entry == "supervisor"
    assert spec.models[agents["supervisor"].model or ""].tier == "strong"
    assert set(agents["supervisor"].delegates) >= {"sales", "finance", "legal"}
    for desk in ("sales", "finance", "legal"):
        assert spec.models[agents[desk].model or ""].tier == "standard"
        assert 2 <= len(agents[desk].delegates) <= 3
        for worker in agents[desk].delegates:
            assert agents[worker].tools and not agents[worker].delegates
            assert spec.models[agents[worker].model or ""].tier in ("economy", "standard")
    assert agents["pricing"].tools == ["price_quote", "apply_discount"]
    assert agents["contract_reviewer"].tools == ["contract_lookup", "clause_check"]
    assert set(agents["supervisor"].input or {}) == {"account", "product", "seats", "requested_discount_pct"}


def test_deal_desk_risky_tools_are_gated() -> None:
    tools = bundled("deal-desk").tools
    for name in ("apply_discount", "send_proposal"):
        spec = tools[name].spec
        assert spec.risk == "high" and spec.side_effects
        assert spec.approval is not None and spec.approval.required == "when"
        assert tools[name].approval_condition is not None
    discount = tools["apply_discount"].approval_condition
    proposal = tools["send_proposal"].approval_condition
    assert discount is not None and proposal is not None
    assert discount.evaluate({"discount_pct": 18}) and not discount.evaluate({"discount_pct": 15})
    assert proposal.evaluate({"discount_pct": 10, "seats": 1200})
    assert proposal.evaluate({"discount_pct": 25, "seats": 100})
    assert not proposal.evaluate({"discount_pct": 20, "seats": 999})
    # the sample deals exercise both sides of each gate
    deals = sample_inputs("deal-desk")
    needs = [discount.evaluate({"discount_pct": d["requested_discount_pct"]}) for d in deals]
    assert 0 < sum(needs) < len(deals)


def test_support_triage_shape() -> None:
    spec = bundled("support-triage").spec
    triage = spec.agents[spec.entry]
    assert spec.entry == "triage" and triage.kind == "router"
    assert any(r.when.field == "channel" and r.when.equals == "billing" for r in triage.routes)
    assert any(r.when.keywords and "refund" in r.when.keywords for r in triage.routes)
    assert triage.default_route == "general_specialist"
    pipeline = spec.agents["technical_pipeline"]
    assert pipeline.kind == "pipeline"
    assert [(s.name, s.after) for s in pipeline.stages] == [
        ("retrieve_kb", []), ("retrieve_tickets", []), ("draft", ["retrieve_kb", "retrieve_tickets"]),
        ("review", ["draft"])]


# --------------------------------------------------------------------------------------------------- dry run

_PLACEHOLDER = re.compile(r"\{(task|input(?:\.[A-Za-z0-9_]+)?)\}")
_TYPES = {"string": str, "number": (int, float), "integer": int, "boolean": bool, "list": list, "object": dict}


def fill(value: Any, task: str, context: dict[str, Any]) -> Any:
    """The placeholder rules the scripted provider follows; a missing field fails the test, since it means a
    script reads something its agent is never handed."""
    if isinstance(value, dict):
        return {k: fill(v, task, context) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, task, context) for v in value]
    if not isinstance(value, str):
        return value

    def resolve(name: str) -> Any:
        if name == "task":
            return task
        if name == "input":
            return context
        field = name.split(".", 1)[1]
        assert field in context, f"placeholder {{{name}}} but the handoff context has {sorted(context)}"
        return context[field]

    whole = _PLACEHOLDER.fullmatch(value)
    if whole:
        return resolve(whole.group(1))
    return _PLACEHOLDER.sub(lambda m: (lambda v: v if isinstance(v, str) else json.dumps(v))(resolve(m.group(1))),
                            value)


def check_contract(contract: dict[str, ContractField] | None, value: Any, where: str) -> None:
    if contract is None:
        return
    assert isinstance(value, dict), f"{where}: expected an object, got {value!r}"
    for field, spec in contract.items():
        if field not in value:
            assert not spec.required, f"{where}: missing {field}"
            continue
        if spec.type != "any":
            expected = _TYPES[spec.type]
            assert isinstance(value[field], expected) and not (
                spec.type in ("number", "integer") and isinstance(value[field], bool)), \
                f"{where}: {field}={value[field]!r} is not {spec.type}"


def route(agent: AgentSpec, context: dict[str, Any], whole_words: bool) -> str:
    text = json.dumps(context).lower()
    words = set(re.findall(r"[a-z0-9]+", text))
    for rule in agent.routes:
        when = rule.when
        if when.field is not None:
            value = context.get(when.field)
            if (when.equals is not None and value == when.equals) or (when.one_of and value in when.one_of):
                return rule.to
        if when.keywords:
            for keyword in when.keywords:
                keyword = keyword.lower()
                hit = (all(w in words for w in keyword.split()) and keyword in text) if whole_words \
                    else keyword in text
                if hit:
                    return rule.to
    assert agent.default_route is not None
    return agent.default_route


def dry_run(hierarchy: Hierarchy, agent_name: str, task: str, context: dict[str, Any],
            trail: list[str]) -> Any:
    spec = hierarchy.spec
    agent = spec.agents[agent_name]
    trail.append(agent_name)
    check_contract(agent.input, context, f"{agent_name} input")
    if agent.kind == "router":
        return dry_run(hierarchy, route(agent, context, whole_words=False), task, context, trail)
    if agent.kind == "pipeline":
        outputs: dict[str, Any] = {}
        for stage in agent.stages:
            stage_input = context if not stage.after else {name: outputs[name] for name in stage.after}
            outputs[stage.name] = dry_run(hierarchy, stage.agent, task, stage_input, trail)
        return outputs[agent.stages[-1].name]
    final: Any = None
    for turn in spec.scripts[agent_name]:
        calls = ([turn.tool] if turn.tool else []) + list(turn.tools or [])
        for tool_call in calls:
            assert tool_call.name in agent.tools
            result = call(hierarchy, tool_call.name, fill(tool_call.args, task, context))
            assert isinstance(result, dict)
        delegations = turn.delegate or []
        for delegation in delegations:
            assert delegation.agent in agent.delegates
            dry_run(hierarchy, delegation.agent, fill(delegation.task, task, context),
                    fill(delegation.context, task, context), trail)
        if turn.final is not None:
            final = fill(turn.final, task, context)
    check_contract(agent.output, final, f"{agent_name} output")
    return final


def test_deal_desk_scripts_run_end_to_end_for_every_sample_deal() -> None:
    hierarchy = bundled("deal-desk")
    deals = sample_inputs("deal-desk")
    assert len(deals) >= 10
    for deal in deals:
        trail: list[str] = []
        final = dry_run(hierarchy, "supervisor", "Review this deal.", deal, trail)
        assert final["approved_discount_pct"] == deal["requested_discount_pct"]
        assert set(trail) == set(hierarchy.spec.agents)  # every agent takes part in every deal
    entries = deal_tools.ledger()
    assert [e["kind"] for e in entries].count("discount") == len(deals)
    assert [e["kind"] for e in entries].count("proposal") == len(deals)
    assert len({e["id"] for e in entries}) == len(entries)


def test_deal_desk_concurrent_delegation_turns() -> None:
    scripts = bundled("deal-desk").spec.scripts
    first = scripts["supervisor"][0].delegate or []
    assert [d.agent for d in first] == ["sales", "finance", "legal"]
    for desk in ("sales", "finance", "legal"):
        assert len(scripts[desk][0].delegate or []) >= 2


def test_support_triage_scripts_run_for_every_sample_ticket_and_cover_every_route() -> None:
    hierarchy = bundled("support-triage")
    triage = hierarchy.spec.agents["triage"]
    tickets = sample_inputs("support-triage")
    targets = []
    for ticket in tickets:
        # the keyword lists carry inflections so word and substring matching agree
        assert route(triage, ticket, whole_words=True) == route(triage, ticket, whole_words=False), ticket
        trail: list[str] = []
        final = dry_run(hierarchy, "triage", ticket["subject"], ticket, trail)
        assert isinstance(final, dict)
        targets.append(trail[1])
    assert set(targets) == {"billing_specialist", "technical_pipeline", "general_specialist"}
    by_id = dict(zip((t["ticket_id"] for t in tickets), targets))
    assert by_id["T-2001"] == "billing_specialist"  # by the channel field
    assert by_id["T-2009"] == "billing_specialist"  # by the word "refund"
    assert by_id["T-2002"] == "technical_pipeline"
    assert by_id["T-2003"] == "general_specialist"


def test_sample_inputs_fit_the_entry_contracts() -> None:
    for name in bundled_names():
        hierarchy = bundled(name)
        entry = hierarchy.spec.agents[hierarchy.spec.entry]
        for item in sample_inputs(name):
            check_contract(entry.input, item, f"{name} sample")
    accounts = {a["id"] for a in deal_tools._data("accounts")}
    assert {d["account"] for d in sample_inputs("deal-desk")} == accounts
    assert get_bundled("deal-desk").inputs_path.name == "deals.json"


# --------------------------------------------------------------------------------------------------- deal tools

def test_crm_lookup_and_unknown_account() -> None:
    record = deal_tools.crm_lookup("acme-001")
    assert record["id"] == "ACME-001" and record["competitors"] == ["Vertex", "Orbital"]
    assert len(deal_tools._data("accounts")) == 12
    with pytest.raises(ValueError, match="unknown account 'NOPE-999'; account ids look like 'ACME-001'"):
        deal_tools.crm_lookup("NOPE-999")


def test_price_quote_uses_the_volume_band() -> None:
    assert deal_tools.price_quote("platform", 99)["list_price_per_seat_month"] == 60
    quote = deal_tools.price_quote("platform", 250, 12)
    assert quote["list_price_per_seat_month"] == 52 and quote["list_total_usd"] == 250 * 52 * 12
    assert deal_tools.price_quote("analytics", 500)["list_price_per_seat_month"] == 27
    with pytest.raises(ValueError, match="unknown product 'rocket'"):
        deal_tools.price_quote("rocket", 10)
    with pytest.raises(ValueError, match="at least 10"):
        deal_tools.price_quote("platform", 3)


def test_financial_model_figures() -> None:
    model = deal_tools.financial_model("platform", 250, 18, 36, 10)
    monthly_revenue = 250 * 52 * 0.82
    monthly_margin = monthly_revenue - 250 * 14
    assert model["revenue_usd"] == pytest.approx(monthly_revenue * 36)
    assert model["gross_margin_pct"] == pytest.approx(100 * monthly_margin / monthly_revenue, abs=0.05)
    rate = 0.10 / 12
    npv = -15000 + sum(monthly_margin / (1 + rate) ** m for m in range(1, 37))
    assert model["npv_usd"] == pytest.approx(npv, abs=0.01)
    assert model["payback_month"] == 3  # 15000 onboarding / 7160 a month
    assert model["verdict"] == "healthy"
    assert deal_tools.financial_model("analytics", 600, 30)["verdict"] == "below floor"
    with pytest.raises(ValueError, match="between 0 and 35"):
        deal_tools.financial_model("platform", 100, 50)


def test_apply_discount_and_send_proposal_record_side_effects() -> None:
    entry = deal_tools.apply_discount("ACME-001", "platform", 250, 18, "competitive")
    assert entry["id"].startswith("DSC-") and entry["net_total_usd"] == pytest.approx(250 * 52 * 12 * 0.82)
    proposal = deal_tools.send_proposal("ACME-001", "platform", 250, 18)
    assert proposal["id"].startswith("PRP-") and proposal["recipient"] == "procurement@acme.example"
    assert [e["id"] for e in deal_tools.ledger()] == [entry["id"], proposal["id"]]
    with pytest.raises(ValueError, match="unknown account"):
        deal_tools.send_proposal("NOPE", "platform", 250, 5)
    assert len(deal_tools.ledger()) == 2  # a failed call records nothing
    deal_tools.ledger()[0]["discount_pct"] = 99  # callers get copies
    assert deal_tools.ledger()[0]["discount_pct"] == 18


def test_contract_tools_flag_risky_terms() -> None:
    stark = deal_tools.clause_check("STARK-005")
    assert {f["term"] for f in stark["flagged"]} == {"most favored", "source code escrow"}
    assert stark["overall_risk"] == "medium"
    assert deal_tools.clause_check("OSCORP-012")["overall_risk"] == "high"
    prospect = deal_tools.contract_lookup("GLOBEX-002")
    assert prospect["on_file"] is False and prospect["template"] == "MSA-2025"
    assert deal_tools.clause_check("GLOBEX-002")["flagged"] == []
    assert deal_tools.clause_check("GLOBEX-002", ["30 days"])["flagged"][0]["term"] == "30 days"


def test_compliance_screen() -> None:
    assert deal_tools.compliance_screen("UMBRELLA-004", "analytics")["status"] == "blocked"
    assert deal_tools.compliance_screen("UMBRELLA-004", "platform")["status"] == "clear"
    assert deal_tools.compliance_screen("CYBERDYNE-010", "platform")["status"] == "blocked"
    assert deal_tools.compliance_screen("TYRELL-009", "analytics")["findings"][0]["check"] == "data residency"


def test_competitor_research_fails_only_when_told() -> None:
    for _ in range(20):
        assert deal_tools.competitor_research("HOOLI-007", "analytics")["price_pressure"] == "high"
    faults.set_fault_rate("competitor_research", 1.0)
    with pytest.raises(faults.InjectedFault, match="competitor_research"):
        deal_tools.competitor_research("HOOLI-007", "analytics")
    faults.clear()
    assert deal_tools.competitor_research("SOYLENT-008", "platform")["competitors"] == []


def test_fault_injection_is_reproducible_with_a_seed() -> None:
    def outcomes() -> list[bool]:
        faults.set_fault_rate("competitor_research", 0.5, seed=7)
        results = []
        for _ in range(40):
            try:
                deal_tools.competitor_research("ACME-001", "platform")
                results.append(True)
            except faults.InjectedFault:
                results.append(False)
        return results

    first, second = outcomes(), outcomes()
    assert first == second
    assert 5 < first.count(False) < 35
    assert faults.fault_rate("competitor_research") == 0.5
    faults.set_fault_rate("competitor_research", 0)
    assert faults.fault_rate("competitor_research") == 0.0
    with pytest.raises(ValueError):
        faults.set_fault_rate("competitor_research", 1.5)


# --------------------------------------------------------------------------------------------------- support tools

def test_searches_rank_the_relevant_items_first() -> None:
    assert support_tools.search_kb("desktop app crashes after update")["articles"][0]["id"] == "KB-103"
    assert support_tools.search_tickets("charged twice refund")["tickets"][0]["id"] == "T-9004"
    assert len(support_tools.search_kb("error", limit=2)["articles"]) == 2
    with pytest.raises(ValueError, match="no searchable words"):
        support_tools.search_kb("the of and")


def test_issue_refund_rules() -> None:
    entry = support_tools.issue_refund("CUS-003", "INV-1006", 49.0, "duplicate")
    assert entry["id"].startswith("RFD-") and support_tools.ledger() == [entry]
    with pytest.raises(ValueError, match="does not belong to CUS-003"):
        support_tools.issue_refund("CUS-003", "INV-1001", 10, "x")
    with pytest.raises(ValueError, match="is overdue"):
        support_tools.issue_refund("CUS-002", "INV-1004", 10, "x")
    with pytest.raises(ValueError, match="at most the invoice amount"):
        support_tools.issue_refund("CUS-003", "INV-1005", 50, "x")
    assert len(support_tools.ledger()) == 1


def test_check_reply_policy() -> None:
    assert support_tools.check_reply("Please restart the app and reply if it persists.")["ok"]
    verdict = support_tools.check_reply("We guarantee it is fixed, see JIRA-1234.")
    problems = {issue["problem"] for issue in verdict["issues"]}
    assert not verdict["ok"]
    assert "mentions an internal issue tracker reference" in problems
    assert "gives the customer no next step" in problems


def test_create_ticket_validates_priority() -> None:
    hierarchy = bundled("support-triage")
    assert hierarchy.tools["create_ticket"].parameters_schema["properties"]["priority"]["enum"] == [
        "low", "normal", "high"]
    with pytest.raises(ValueError, match="priority"):
        support_tools.create_ticket("CUS-001", "x", "urgent")  # type: ignore[arg-type]
