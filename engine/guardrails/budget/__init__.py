"""Budgets enforced by reservation: a pure, clock-injected ledger the runtime calls around every model and tool call.

Before a call the runtime *reserves* its worst case (estimated input, max output tokens, estimated cost, one call)
against the scope it runs in and every enclosing scope; after the call it *settles* the actual usage, which releases
the rest, or *releases* everything if the call never happened. Reservations count against limits exactly like spend,
so any number of concurrent callers can never jointly overshoot a budget: each one only starts if its worst case fits.

Scopes nest (agent invocation inside run inside a hierarchy's rolling 24 h cap). A reservation is atomic across the
whole chain: either every scope records it or none does.

One module per job: limits (what can be limited, parsing operator input), vectors (packed amounts, Demand,
Actual, compiled limits), windows (rolling day, burn rate), records (Breach, events, usage), scope (one scope's
state), ledger (BudgetLedger, Reservation) and ledger_queries (its reads off the hot path), shared (a daily cost cap
several engines lease from one source: a Postgres store). Import the public names from here; the modules are the layout.
"""

from engine.guardrails.budget.ledger import BudgetLedger, Reservation
from engine.guardrails.budget.limits import (
    MAX_LIMIT_AMOUNT,
    MAX_LIMIT_USD,
    BudgetLimits,
    Dimension,
    ScopeKind,
    limits_attribute,
    limits_from_attribute,
    merge_limits,
    parse_budget_overrides,
)
from engine.guardrails.budget.records import Breach, BudgetEvent, DimensionUsage, ScopeUsage
from engine.guardrails.budget.scope import ATTRIBUTION_KEYS
from engine.guardrails.budget.vectors import Actual, Demand

__all__ = [
    "ATTRIBUTION_KEYS",
    "MAX_LIMIT_AMOUNT",
    "MAX_LIMIT_USD",
    "Actual",
    "Breach",
    "BudgetEvent",
    "BudgetLedger",
    "BudgetLimits",
    "Demand",
    "Dimension",
    "DimensionUsage",
    "Reservation",
    "ScopeKind",
    "ScopeUsage",
    "limits_attribute",
    "limits_from_attribute",
    "merge_limits",
    "parse_budget_overrides",
]
