"""A run that completed without a tool call the engine withheld or an operator denied is `completed (degraded)`:
the reader derives what was withheld from the run's denied tool spans (TraceReader.degraded_calls)."""

from __future__ import annotations

import json
from pathlib import Path

from engine.controls.api import ControlAPI
from engine.runtime.engine import RunResult
from engine.store import open_reader
from tests.durable_support import flightdeck
from tests.engine_helpers import run_sync, write_hierarchy

ADDER = """
name: adder
entry: lead
models:
  m: {model: m, tier: economy, price_in: 0.15, price_out: 0.6, latency: 0, latency_per_token: 0}
tools:
  add: {function: "tests.fixture_tools:add"}
agents:
  lead: {contract: Adds numbers., model: m, tools: [add]}
scripts:
  lead:
    - {tool: {name: add, args: {a: 1, b: 2}}}
    - final: done
"""


def clean_and_degraded_runs(tmp_path: Path, store_dir: Path) -> tuple[RunResult, RunResult]:
    """Two completed runs of ADDER: one clean, one after `tool.add=disabled` (its add call is withheld)."""
    hierarchy = write_hierarchy(tmp_path, ADDER)
    (clean,) = run_sync(store_dir, hierarchy, "go")
    api = ControlAPI(store_dir, "alice")
    try:
        api.set_flag("tool.add", "disabled", reason="tool is misbehaving")
    finally:
        api.close()
    (withheld,) = run_sync(store_dir, hierarchy, "go")
    return clean, withheld


def test_a_run_whose_tool_was_withheld_reads_as_degraded_and_a_clean_run_does_not(tmp_path: Path,
                                                                                 store_dir: Path) -> None:
    clean, withheld = clean_and_degraded_runs(tmp_path, store_dir)
    assert clean.status == withheld.status == "completed"
    reader = open_reader(store_dir)
    try:
        calls = reader.degraded_calls([clean.run_id, withheld.run_id])
    finally:
        reader.close()
    assert [(c.run_id, c.tool, c.kind) for c in calls] == [(withheld.run_id, "add", "withheld")]
    assert "disabled by safe mode" in calls[0].reason
    # `flightdeck runs`: the table says it, with what was withheld; --json gains `degraded`, `status` unchanged.
    table = flightdeck("runs", "--store", str(store_dir))
    assert table.returncode == 0, table.stderr
    line = next(x for x in table.stdout.splitlines() if x.startswith(withheld.run_id))
    assert "completed (degraded)" in line
    assert "completed (degraded)" not in next(x for x in table.stdout.splitlines() if x.startswith(clean.run_id))
    assert f"{withheld.run_id}  add is disabled by safe mode" in table.stdout
    rows = {r["id"]: r for r in json.loads(flightdeck("runs", "--store", str(store_dir), "--json").stdout)}
    assert rows[withheld.run_id]["status"] == "completed" and rows[clean.run_id]["degraded"] == []
    (call,) = rows[withheld.run_id]["degraded"]
    assert call["tool"] == "add" and call["kind"] == "withheld" and "disabled by safe mode" in call["reason"]
