"""The demo's hierarchy variants, derived in code from the bundled deal-desk so they never drift from it:

- `base`: deal-desk with demo-speed approval deadlines (escalate once, then deny) and a quick breaker on the
  competitor-research tool (small window, short wait), so a three-minute scenario shows a full breaker cycle;
- `looping`: the pricing worker repeats the same quote forever (caught by loop detection);
- `spike`: every desk writes very long reports on the strongest model (a spend spike for the cost runbook).

Each variant gets its own source hash, so a run records exactly which variant it ran.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

from engine.guardrails.breaker import BreakerConfig
from engine.hierarchy.loader import Hierarchy, load_hierarchy
from engine.hierarchy.schema import ApprovalSpec, BreakersSpec, ModelSpec, ScriptToolCall, ScriptTurn

APPROVAL_WINDOW_S = 30.0
BREAKER_WAIT_S = 20.0
SPIKE_OUTPUT_TOKENS = 12_000


def _rehash(hierarchy: Hierarchy, variant: str, **changes: Any) -> Hierarchy:
    digest = hashlib.sha256((hierarchy.source_hash + ":demo:" + variant).encode()).hexdigest()
    return dataclasses.replace(hierarchy, spec=hierarchy.spec.model_copy(update=changes), source_hash=digest)


def base(speed: float) -> Hierarchy:
    hierarchy = load_hierarchy("deal-desk")
    tools = dict(hierarchy.tools)
    discount = tools["apply_discount"]
    approval = (discount.spec.approval or ApprovalSpec(required="always")).model_copy(update={
        "deadline": APPROVAL_WINDOW_S / speed, "on_timeout": "escalate", "max_escalations": 1})
    spec = discount.spec.model_copy(update={"approval": approval})
    tools["apply_discount"] = dataclasses.replace(discount, spec=spec)
    breakers = BreakersSpec(defaults=hierarchy.spec.breakers.defaults, overrides={
        **hierarchy.spec.breakers.overrides,
        "tool:competitor_research": BreakerConfig(sliding_window_size=4, minimum_calls=4, failure_rate_threshold=50,
                                                  wait_in_open=BREAKER_WAIT_S / speed, permitted_calls_in_half_open=1,
                                                  ignore_errors=("bad_request", "invalid_arguments",
                                                                 "malformed_arguments"))})
    spec_tools = {**hierarchy.spec.tools, "apply_discount": tools["apply_discount"].spec}
    variant = _rehash(hierarchy, f"base:{speed}", tools=spec_tools, breakers=breakers)
    return dataclasses.replace(variant, tools=tools)


def looping(base_hierarchy: Hierarchy) -> Hierarchy:
    loop = ScriptTurn(reason="Re-checking the quote before applying anything.",
                      tool=ScriptToolCall(name="price_quote", args={"product": "{input.product}",
                                                                    "seats": "{input.seats}", "term_months": 12}),
                      repeat="forever")
    scripts = {**base_hierarchy.spec.scripts, "pricing": [loop]}
    return _rehash(base_hierarchy, "looping", scripts=scripts)


def spike(base_hierarchy: Hierarchy) -> Hierarchy:
    big = {"supervisor", "sales", "finance", "legal"}
    scripts = {agent: ([t.model_copy(update={"output_tokens": SPIKE_OUTPUT_TOKENS}) for t in turns]
                       if agent in big else turns)
               for agent, turns in base_hierarchy.spec.scripts.items()}
    agents = {name: (a.model_copy(update={"model": "strong"}) if name in big and a.model else a)
              for name, a in base_hierarchy.spec.agents.items()}
    models = {name: m.model_copy(update={"max_output_tokens": SPIKE_OUTPUT_TOKENS, "timeout": spike_timeout(m)})
              for name, m in base_hierarchy.spec.models.items()}
    return _rehash(base_hierarchy, "spike", scripts=scripts, agents=agents, models=models)


def spike_timeout(model: ModelSpec) -> float:
    """A model call deadline that a whole spike answer fits in at --speed 1. The deadline is wall time (not scaled by
    the demo's speed) while the scripted latency is: at speed 1, 12,000 tokens on the strong model take ~60.6 s, past
    its 60 s default, so every spike call timed out unbilled and the cost-spike runbook never fired. Twice the mean
    latency leaves room for the scripted jitter."""
    return max(float(model.timeout), 2 * (model.latency + SPIKE_OUTPUT_TOKENS * model.latency_per_token))
