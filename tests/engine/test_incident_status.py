"""Issue 15, incidents: a page's severity is its incident's (never less severe), and an incident whose detection has
cleared and whose actions were rolled back reads `clearing`, not FIRING."""

from __future__ import annotations

from pathlib import Path

from engine.runbooks.loader import page_targets, parse_runbook
from tests.engine.test_runbooks_loader import BODY

FRONT = """---
id: sev
title: Sev
severity: sev2
owner: [oncall]
detect:
  - {signal: loop_detected, threshold: 3, for: 5m, scope: agent}
actions:
  - page: {severity: sev3}
  - page: {to: [secondary], severity: sev1}
  - page: {}
apply: auto
---
"""


def test_a_page_is_never_less_severe_than_its_incident() -> None:
    runbook = parse_runbook((FRONT + BODY).encode(), Path("sev.md"))
    assert page_targets(runbook) == [(["oncall"], "sev2"), (["secondary"], "sev1"), (["oncall"], "sev2")]
