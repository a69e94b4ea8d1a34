"""Python-function checks for support-triage's eval dataset (`eval/tickets.jsonl`): `flightdeck eval` imports them
by `module:function` and calls them with the output field the check names and the case."""

from __future__ import annotations

from typing import Any

from engine.evals.dataset import EvalCase
from engine.scoring.scorers import Score


def quotes_subject(reply: Any, case: EvalCase) -> Score:
    """A specialist's reply names the ticket it answers (its subject, in quotes)."""
    subject = case.run_input.get("subject", "") if isinstance(case.run_input, dict) else ""
    if isinstance(reply, str) and f'"{subject}"' in reply:
        return Score("quotes_subject", 1.0, True, "the reply quotes the ticket's subject")
    return Score("quotes_subject", 0.0, False, f"the reply does not quote the subject {subject!r}")
