"""Tools of the deal-desk example: real functions over the bundled sample data in data/.

Lookups really look up, quotes are computed from the price list, and the two tools with side effects
(apply_discount, send_proposal) record what they did in a process-local ledger that tests and the demo read.
Bad input raises ValueError with a message written for the model, which the runtime returns as an error result.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from engine.examples.faults import injection, maybe_fail
from engine.examples.ledger import Ledger
from engine.tool_context import current_tool_context

DATA_DIR = Path(__file__).resolve().parent / "data"

# Which certifications a buyer in an industry cannot sign without.
REQUIRED_CERTIFICATIONS: dict[str, list[str]] = {
    "healthcare": ["HIPAA"],
    "financial services": ["SOC2"],
    "public sector": ["FedRAMP"],
}

# Contract terms legal wants a human to look at, with how much they worry about each.
RISKY_TERMS: dict[str, str] = {
    "unlimited liability": "high",
    "uncapped": "high",
    "liquidated damages": "high",
    "most favored": "medium",
    "most favoured": "medium",
    "terminate for convenience": "medium",
    "exclusivity": "medium",
    "source code escrow": "medium",
    "auto-renew": "low",
}
_SEVERITY_RANK = {"none": 0, "low": 1, "medium": 2, "high": 3}

_LEDGER = Ledger()


def _idempotency_key() -> str | None:
    """This call's idempotency key (engine/tool_context.py): the ledger records one effect per key."""
    ctx = current_tool_context()
    return None if ctx is None else ctx.idempotency_key


@functools.cache
def _data(name: str) -> Any:
    return json.loads((DATA_DIR / f"{name}.json").read_text(encoding="utf-8"))


def _accounts() -> dict[str, dict[str, Any]]:
    return {account["id"]: account for account in _data("accounts")}


def _account(account: str) -> dict[str, Any]:
    record = _accounts().get(account.strip().upper())
    if record is None:
        raise ValueError(f"unknown account {account!r}; account ids look like 'ACME-001' "
                         f"(known: {', '.join(sorted(_accounts()))})")
    return record


def _product(product: str) -> dict[str, Any]:
    products = _data("price_list")["products"]
    if product not in products:
        raise ValueError(f"unknown product {product!r}; the price list has {', '.join(sorted(products))}")
    return products[product]


def _policy() -> dict[str, Any]:
    return _data("price_list")["policy"]


def _quote(product: str, seats: int, term_months: int) -> dict[str, Any]:
    item = _product(product)
    policy = _policy()
    if seats < policy["min_seats"]:
        raise ValueError(f"seats must be at least {policy['min_seats']}, got {seats}")
    if term_months < 1:
        raise ValueError(f"term_months must be at least 1, got {term_months}")
    band = [b for b in item["bands"] if seats >= b["min_seats"]][-1]
    unit = band["price_per_seat_month"]
    monthly = seats * unit
    return {
        "product": product,
        "product_name": item["name"],
        "seats": seats,
        "term_months": term_months,
        "band_min_seats": band["min_seats"],
        "list_price_per_seat_month": unit,
        "list_monthly_usd": round(monthly, 2),
        "list_total_usd": round(monthly * term_months, 2),
    }


def _check_discount(discount_pct: float) -> None:
    limit = _policy()["max_discount_pct"]
    if not 0 <= discount_pct <= limit:
        raise ValueError(f"discount_pct must be between 0 and {limit} (policy maximum), got {discount_pct}")


def crm_lookup(account: str) -> dict[str, Any]:
    """Fetch an account's CRM record: segment, region, current product and seats, health, owner, competitors.

    Args:
        account: The CRM account id, like 'ACME-001'.
    """
    maybe_fail("crm_lookup")
    record = dict(_account(account))
    planted = injection("crm_lookup")  # drills: notes are free text anyone with CRM access can write
    if planted:
        record["notes"] = f"{record.get('notes', '')} {planted}".strip()
    return record


def competitor_research(account: str, product: str) -> dict[str, Any]:
    """Competitive notes for the vendors an account is evaluating, with positioning for one product.

    Args:
        account: The CRM account id.
        product: The product being sold (platform, analytics or support_plus).
    """
    maybe_fail("competitor_research")
    record = _account(account)
    _product(product)
    notes = _data("competitors")
    competitors = []
    for name in record["competitors"]:
        info = notes[name]
        competitors.append({
            "name": name,
            "strengths": info["strengths"],
            "weaknesses": info["weaknesses"],
            "typical_discount_pct": info["typical_discount_pct"],
            "positioning": info["positioning"][product],
        })
    deepest = max((c["typical_discount_pct"] for c in competitors), default=0)
    pressure = "high" if deepest >= 25 else "medium" if deepest >= 15 else "low"
    return {"account": record["id"], "product": product, "competitors": competitors,
            "price_pressure": pressure, "deepest_competitor_discount_pct": deepest}


def price_quote(product: str, seats: int, term_months: int = 12) -> dict[str, Any]:
    """List-price quote from the price list, using the volume band the seat count falls in.

    Args:
        product: platform, analytics or support_plus.
        seats: Number of seats.
        term_months: Contract term in months.
    """
    maybe_fail("price_quote")
    return _quote(product, seats, term_months)


def apply_discount(account: str, product: str, seats: int, discount_pct: float, reason: str = "",
                   term_months: int = 12) -> dict[str, Any]:
    """Apply a discount to an account's quote and record it (a side effect; large discounts need approval).

    Args:
        account: The CRM account id.
        product: The product quoted.
        seats: Number of seats.
        discount_pct: Discount off list, in percent.
        reason: Why the discount is justified.
        term_months: Contract term in months.
    """
    maybe_fail("apply_discount")
    record = _account(account)
    _check_discount(discount_pct)
    quote = _quote(product, seats, term_months)
    net = round(quote["list_total_usd"] * (1 - discount_pct / 100), 2)
    return _LEDGER.record("discount", "DSC", {
        "account": record["id"], "product": product, "seats": seats, "term_months": term_months,
        "discount_pct": discount_pct, "list_total_usd": quote["list_total_usd"], "net_total_usd": net,
        "reason": reason,
    }, key=_idempotency_key())


def financial_model(product: str, seats: int, discount_pct: float = 0.0, term_months: int = 36,
                    discount_rate_pct: float = 10.0) -> dict[str, Any]:
    """Deal economics: revenue, cost to serve, gross margin, NPV of monthly cash flows and payback month.

    Args:
        product: The product quoted.
        seats: Number of seats.
        discount_pct: Discount off list, in percent.
        term_months: Months of the deal to model.
        discount_rate_pct: Annual rate used to discount cash flows, in percent.
    """
    maybe_fail("financial_model")
    _check_discount(discount_pct)
    quote = _quote(product, seats, term_months)
    item = _product(product)
    policy = _policy()
    monthly_revenue = quote["list_monthly_usd"] * (1 - discount_pct / 100)
    monthly_cost = seats * item["cost_per_seat_month"]
    monthly_margin = monthly_revenue - monthly_cost
    onboarding = policy["onboarding_cost_usd"]
    rate = discount_rate_pct / 100 / 12
    npv = -onboarding + sum(monthly_margin / (1 + rate) ** month for month in range(1, term_months + 1))
    payback_month: int | None = None
    cumulative = -onboarding
    for month in range(1, term_months + 1):
        cumulative += monthly_margin
        if cumulative >= 0:
            payback_month = month
            break
    margin_pct = 100 * monthly_margin / monthly_revenue if monthly_revenue else 0.0
    floor = policy["gross_margin_floor_pct"]
    verdict = "healthy" if margin_pct >= floor + 10 else "acceptable" if margin_pct >= floor else "below floor"
    return {
        "product": product,
        "seats": seats,
        "discount_pct": discount_pct,
        "term_months": term_months,
        "revenue_usd": round(monthly_revenue * term_months, 2),
        "cost_to_serve_usd": round(monthly_cost * term_months + onboarding, 2),
        "gross_margin_pct": round(margin_pct, 1),
        "npv_usd": round(npv, 2),
        "payback_month": payback_month,
        "margin_floor_pct": floor,
        "verdict": verdict,
    }


def contract_lookup(account: str) -> dict[str, Any]:
    """The contract on file for an account, or the standard template for prospects without one.

    Args:
        account: The CRM account id.
    """
    maybe_fail("contract_lookup")
    record = _account(account)
    contracts = _data("contracts")
    contract = contracts["accounts"].get(record["id"])
    if contract is None:
        template = contracts["standard_template"]
        return {"account": record["id"], "on_file": False, "template": template["template"], "signed": None,
                "clauses": [dict(c) for c in template["clauses"]]}
    return {"account": record["id"], "on_file": True, "template": contract["template"],
            "signed": contract["signed"], "clauses": [dict(c) for c in contract["clauses"]]}


def clause_check(account: str, extra_terms: list[str] | None = None) -> dict[str, Any]:
    """Scan an account's contract clauses for risky terms (unlimited liability, MFN pricing, exclusivity...).

    Args:
        account: The CRM account id.
        extra_terms: More phrases to flag, at medium severity.
    """
    maybe_fail("clause_check")
    contract = contract_lookup(account)
    terms = dict(RISKY_TERMS)
    for term in extra_terms or []:
        terms.setdefault(term.lower(), "medium")
    flagged = []
    for clause in contract["clauses"]:
        text = clause["text"].lower()
        for term, severity in terms.items():
            if term in text:
                flagged.append({"clause": clause["id"], "title": clause["title"], "term": term,
                                "severity": severity})
    overall = max((f["severity"] for f in flagged), key=_SEVERITY_RANK.__getitem__, default="none")
    return {"account": contract["account"], "template": contract["template"],
            "clauses_checked": len(contract["clauses"]), "flagged": flagged, "overall_risk": overall}


def compliance_screen(account: str, product: str) -> dict[str, Any]:
    """Check that a product can be sold to an account: hosting region and required certifications.

    Args:
        account: The CRM account id.
        product: The product being sold.
    """
    maybe_fail("compliance_screen")
    record = _account(account)
    item = _product(product)
    findings = []
    if record["region"] not in item["hosting_regions"]:
        findings.append({"check": "data residency", "severity": "block",
                         "detail": f"{item['name']} is not hosted in {record['region']}"})
    for cert in REQUIRED_CERTIFICATIONS.get(record["industry"], []):
        if cert not in item["certifications"]:
            findings.append({"check": "certification", "severity": "block",
                             "detail": f"{record['industry']} buyers require {cert}; {item['name']} lacks it"})
    if record["status"] == "prospect" and not findings:
        findings.append({"check": "new customer", "severity": "info",
                         "detail": "standard KYC on first order"})
    status = "blocked" if any(f["severity"] == "block" for f in findings) else "clear"
    return {"account": record["id"], "product": product, "region": record["region"],
            "industry": record["industry"], "status": status, "findings": findings}


def send_proposal(account: str, product: str, seats: int, discount_pct: float, term_months: int = 12,
                  summary: str = "") -> dict[str, Any]:
    """Send the priced proposal to the account's buying contact (a side effect that leaves the building).

    Args:
        account: The CRM account id.
        product: The product proposed.
        seats: Number of seats.
        discount_pct: Discount off list, in percent.
        term_months: Contract term in months.
        summary: A cover note for the buyer.
    """
    maybe_fail("send_proposal")
    record = _account(account)
    _check_discount(discount_pct)
    quote = _quote(product, seats, term_months)
    net = round(quote["list_total_usd"] * (1 - discount_pct / 100), 2)
    return _LEDGER.record("proposal", "PRP", {
        "account": record["id"], "recipient": record["contact_email"], "product": product, "seats": seats,
        "term_months": term_months, "discount_pct": discount_pct, "list_total_usd": quote["list_total_usd"],
        "net_total_usd": net, "summary": summary, "status": "sent",
    }, key=_idempotency_key())


def ledger() -> list[dict[str, Any]]:
    """Side effects recorded by apply_discount and send_proposal in this process, oldest first."""
    return _LEDGER.entries()


def clear_ledger() -> None:
    _LEDGER.clear()
