"""Issue 15, incidents: a page's severity is its incident's (never less severe), and an incident whose detection has
cleared and whose actions were rolled back reads `clearing`, not FIRING."""

from __future__ import annotations

import json
from pathlib import Path

from engine.controls.incidents import IncidentStore, incident_state
from engine.runbooks.loader import page_targets, parse_runbook
from engine.store.control import ControlDB
from engine.store.control_rows import Incident
from tests.durable_support import flightdeck
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


def test_a_cleared_incident_with_nothing_in_force_reads_clearing_in_the_cli(store_dir: Path) -> None:
    store_dir.mkdir(parents=True)
    db = ControlDB.open(store_dir)
    store = IncidentStore(db)
    try:
        def fire(scope: str) -> Incident:
            return store.open_or_update(runbook="looping-agent", title="Loop", severity="sev2", apply_mode="auto",
                                        scope=scope, readings=[{"signal": "loop_detected", "value": 3, "fired": True}],
                                        context={}, summary="loop", actor="runbook:looping-agent",
                                        engine_id="e1")[0]

        still = fire("agent:a")
        quiet = fire("agent:b")
        store.cleared(quiet.id, [], "runbook:looping-agent")
        cleared = store.get(quiet.id)
    finally:
        db.close()
    assert incident_state(still, actions_in_force=False) == "firing"
    assert incident_state(cleared, actions_in_force=False) == "clearing"
    assert incident_state(cleared, actions_in_force=True) == "quiet"  # cleared, its actions still in force
    assert incident_state(cleared.replace(status="resolved"), actions_in_force=False) == "resolved"
    listed = {r["id"]: r for r in json.loads(flightdeck("incidents", "--store", str(store_dir), "--json").stdout)}
    assert (listed[still.id]["state"], listed[quiet.id]["state"]) == ("firing", "clearing")
    table = flightdeck("incidents", "--store", str(store_dir)).stdout
    assert "STATE" in table
    assert "clearing" in next(line for line in table.splitlines() if line.startswith(quiet.id))
    assert "FIRING" in next(line for line in table.splitlines() if line.startswith(still.id))


def test_firing_with_no_engine_alive_says_nothing_watches_it(store_dir: Path) -> None:
    """The demo's screenshot read "engines none running" next to "1 firing": firing is what an engine's detection
    saw, and once every engine has stopped nothing watches the signal. The CLI says so (FIRING?, `watched`)."""
    store_dir.mkdir(parents=True)
    db = ControlDB.open(store_dir)
    try:
        fired = IncidentStore(db).open_or_update(
            runbook="looping-agent", title="Loop", severity="sev2", apply_mode="auto", scope="agent:a",
            readings=[{"signal": "loop_detected", "value": 3, "fired": True}], context={}, summary="loop",
            actor="runbook:looping-agent", engine_id="e1")[0]
    finally:
        db.close()

    def listed() -> tuple[dict, str]:
        (row,) = json.loads(flightdeck("incidents", "--store", str(store_dir), "--json").stdout)
        return row, flightdeck("incidents", "--store", str(store_dir)).stdout

    row, table = listed()
    assert (row["state"], row["watched"]) == ("firing", False)
    assert "FIRING?" in next(line for line in table.splitlines() if line.startswith(fired.id))
    assert "no engine is running, so nothing watches these signals" in table

    db = ControlDB.open(store_dir)
    try:
        db.register_engine(version="test")  # an engine alive now (a fresh heartbeat)
        row, table = listed()
    finally:
        db.close()
    assert (row["state"], row["watched"]) == ("firing", True)
    line = next(line for line in table.splitlines() if line.startswith(fired.id))
    assert "FIRING" in line and "FIRING?" not in line and "nothing watches" not in table

