"""Tools of the support-triage example: real functions over the bundled customers, KB articles and past tickets.

Searches score by word overlap (small and predictable, which is what a demo needs); issue_refund and
create_ticket record their side effects in a process-local ledger.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any, Literal

from engine.examples.faults import maybe_fail
from engine.examples.ledger import Ledger
from engine.tool_context import current_tool_context

DATA_DIR = Path(__file__).resolve().parent / "data"

# Phrases a support reply must not contain: promises support cannot keep, and internal references.
FORBIDDEN_PHRASES: dict[str, str] = {
    "guarantee": "promises an outcome support cannot guarantee",
    "definitely": "promises an outcome support cannot guarantee",
    "will never happen again": "promises an outcome support cannot guarantee",
    "jira-": "mentions an internal issue tracker reference",
    "internal only": "quotes internal-only material",
}
MAX_REPLY_CHARS = 1500
_WORD = re.compile(r"[a-z0-9]+")
_STOPWORDS = frozenset("a an and are at be but by for from has have i in is it my of on or our the this to we "
                       "what when why with you your".split())

_LEDGER = Ledger()


def _idempotency_key() -> str | None:
    """This call's idempotency key (engine/tool_context.py): the ledger records one effect per key."""
    ctx = current_tool_context()
    return None if ctx is None else ctx.idempotency_key


@functools.cache
def _data(name: str) -> Any:
    return json.loads((DATA_DIR / f"{name}.json").read_text(encoding="utf-8"))


def _customer(customer_id: str) -> dict[str, Any]:
    for customer in _data("customers"):
        if customer["id"] == customer_id.strip().upper():
            return customer
    known = ", ".join(c["id"] for c in _data("customers"))
    raise ValueError(f"unknown customer {customer_id!r}; customer ids look like 'CUS-001' (known: {known})")


def _words(text: str) -> set[str]:
    return {word for word in _WORD.findall(text.lower()) if word not in _STOPWORDS}


def _rank(query: str, items: list[dict[str, Any]], fields: tuple[str, ...], limit: int) -> list[tuple[int, dict]]:
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    wanted = _words(query)
    if not wanted:
        raise ValueError("query has no searchable words")
    scored = []
    for item in items:
        text = " ".join(" ".join(v) if isinstance(v, list) else str(v or "") for v in (item[f] for f in fields))
        score = len(wanted & _words(text))
        if score:
            scored.append((score, item))
    scored.sort(key=lambda pair: (-pair[0], pair[1]["id"]))
    return scored[:limit]


def billing_lookup(customer_id: str) -> dict[str, Any]:
    """A customer's plan, open balance and invoices.

    Args:
        customer_id: The customer id, like 'CUS-001'.
    """
    customer = _customer(customer_id)
    return {"customer_id": customer["id"], "name": customer["name"], "plan": customer["plan"],
            "balance_usd": customer["balance_usd"], "invoices": [dict(i) for i in customer["invoices"]]}


def issue_refund(customer_id: str, invoice_id: str, amount_usd: float, reason: str) -> dict[str, Any]:
    """Refund part or all of a paid invoice (a side effect; larger refunds need approval).

    Args:
        customer_id: The customer id.
        invoice_id: The invoice to refund, like 'INV-1006'.
        amount_usd: How much to refund, in USD.
        reason: Why, in a sentence the customer could read.
    """
    customer = _customer(customer_id)
    invoice = next((i for i in customer["invoices"] if i["id"] == invoice_id), None)
    if invoice is None:
        raise ValueError(f"invoice {invoice_id!r} does not belong to {customer['id']}; its invoices are "
                         f"{', '.join(i['id'] for i in customer['invoices'])}")
    if invoice["status"] != "paid":
        raise ValueError(f"invoice {invoice_id} is {invoice['status']}; only paid invoices can be refunded")
    if not 0 < amount_usd <= invoice["amount_usd"]:
        raise ValueError(f"amount_usd must be more than 0 and at most the invoice amount "
                         f"({invoice['amount_usd']}), got {amount_usd}")
    return _LEDGER.record("refund", "RFD", {"customer_id": customer["id"], "invoice_id": invoice_id,
                                            "amount_usd": amount_usd, "reason": reason, "status": "issued"},
                          key=_idempotency_key())


def search_kb(query: str, limit: int = 3) -> dict[str, Any]:
    """Search knowledge-base articles by title, tags and body.

    Args:
        query: Words describing the problem.
        limit: Maximum number of articles to return.
    """
    maybe_fail("search_kb")
    ranked = _rank(query, _data("kb_articles"), ("title", "tags", "body"), limit)
    return {"query": query, "articles": [
        {"id": a["id"], "title": a["title"], "score": score, "snippet": a["body"][:120]} for score, a in ranked]}


def get_article(article_id: str) -> dict[str, Any]:
    """The full text of one knowledge-base article.

    Args:
        article_id: The article id, like 'KB-101'.
    """
    for article in _data("kb_articles"):
        if article["id"] == article_id.strip().upper():
            return dict(article)
    raise ValueError(f"unknown article {article_id!r}; article ids look like 'KB-101'")


def search_tickets(query: str, limit: int = 3) -> dict[str, Any]:
    """Search resolved past tickets for similar problems and how they were fixed.

    Args:
        query: Words describing the problem.
        limit: Maximum number of tickets to return.
    """
    ranked = _rank(query, _data("tickets"), ("subject", "tags", "resolution"), limit)
    return {"query": query, "tickets": [
        {"id": t["id"], "subject": t["subject"], "score": score, "resolution": t["resolution"], "kb": t["kb"]}
        for score, t in ranked]}


def check_reply(draft: str) -> dict[str, Any]:
    """Check a drafted reply against support policy: no promises, no internal references, a next step, length.

    Args:
        draft: The reply text to check.
    """
    text = draft.lower()
    issues: list[dict[str, str | None]] = [{"phrase": phrase, "problem": problem}
                                           for phrase, problem in FORBIDDEN_PHRASES.items() if phrase in text]
    if len(draft) > MAX_REPLY_CHARS:
        issues.append({"phrase": None, "problem": f"longer than {MAX_REPLY_CHARS} characters ({len(draft)})"})
    if not any(marker in text for marker in ("please", "next step", "let us know", "reply")):
        issues.append({"phrase": None, "problem": "gives the customer no next step"})
    return {"ok": not issues, "issues": issues, "length": len(draft)}


def create_ticket(customer_id: str, subject: str,
                  priority: Literal["low", "normal", "high"] = "normal") -> dict[str, Any]:
    """Open a follow-up ticket for the customer (a side effect).

    Args:
        customer_id: The customer id.
        subject: One line describing the follow-up.
        priority: low, normal or high.
    """
    customer = _customer(customer_id)
    if priority not in ("low", "normal", "high"):
        raise ValueError(f"priority must be low, normal or high, got {priority!r}")
    return _LEDGER.record("ticket", "TKT", {"customer_id": customer["id"], "subject": subject,
                                            "priority": priority, "status": "open"}, key=_idempotency_key())


def ledger() -> list[dict[str, Any]]:
    """Side effects recorded by issue_refund and create_ticket in this process, oldest first."""
    return _LEDGER.entries()


def clear_ledger() -> None:
    _LEDGER.clear()
