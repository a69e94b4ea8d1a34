"""The engine refusing control rows changed in control.db outside Flightdeck: a running engine (real store files),
rows forged with plain SQL on another connection, incidents read back with `python -m console.cli incidents`."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.controls.api import ControlAPI
from engine.runtime.engine import Engine
from engine.runtime.results import RunResult
from engine.store.control_rows import Approval
from tests import fixture_tools, runtime_tools
from tests.engine.test_controls_runtime import (
    RECORD_BIG,
    SLOW_THEN_FLAKY,
    hierarchy_text,
    in_thread,
    scenario,
    wait_until,
)
from tests.engine_helpers import events, spans, write_hierarchy


def _tool_spans(store_dir: Path, run_id: str) -> list[dict[str, Any]]:
    return [s for s in spans(store_dir, run_id) if s.kind == "tool"]


def _approval_scenario(tmp_path: Path, store_dir: Path,
                       decide: Callable[[ControlAPI, dict[str, Any]], Any]) -> RunResult:
    """A run whose tool call waits for an approval; `decide` plays whoever acts on the pending request."""
    hierarchy = write_hierarchy(tmp_path, hierarchy_text(RECORD_BIG))

    async def act(engine: Engine, api: ControlAPI, results: list[RunResult]) -> None:
        await wait_until(lambda: bool(api.pending_approvals()) or bool(results))
        pending = api.pending_approvals()
        if pending:
            await in_thread(decide, api, pending[0])

    (result,) = scenario(store_dir, hierarchy, act)
    return result


def _forge(store_dir: Path, sql: str, params: tuple[Any, ...] = ()) -> None:
    """What someone with write access to control.db does without Flightdeck: plain SQL, no audit row."""
    conn = sqlite3.connect(store_dir / "control.db", isolation_level=None)
    try:
        conn.execute(sql, params)
    finally:
        conn.close()


def _incidents(store_dir: Path) -> list[dict[str, Any]]:
    proc = subprocess.run([sys.executable, "-m", "console.cli", "incidents", "--all", "--json", "--store",
                           str(store_dir)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "FLIGHTDECK_OPERATOR": "alice"})
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    return [i for i in json.loads(proc.stdout) if i["runbook"] == "control-tampered"]


def _findings(engine: Engine) -> list[Any]:
    worker = engine.controls.worker
    assert worker is not None and worker.verifier is not None
    return worker.verifier.findings


def test_an_approval_forged_to_approved_with_new_arguments_is_refused(tmp_path: Path, store_dir: Path) -> None:
    def forge(api: ControlAPI, row: Approval) -> None:
        _forge(store_dir, "UPDATE approvals SET status = 'approved', decided = ?, decided_by = 'alice', "
                          "decision_reason = 'ok', edited_arguments = ?, decided_seq = 1 WHERE id = ?",
               (time.time(), json.dumps({"note": "forged refund", "amount": 99_999}), row.id))

    result = _approval_scenario(tmp_path, store_dir, forge)
    (tool,) = _tool_spans(store_dir, result.run_id)
    assert tool.status == "denied" and "control-tampered" in tool.attributes["error"]
    assert fixture_tools.journal() == []  # the tool never ran, with either arguments
    (incident,) = _incidents(store_dir)
    assert incident["severity"] == "sev1" and incident["scope"].startswith("approvals:ap-")
    # The forger kept the request's audit hash: it records a request, not a decision.
    assert "audit entry for 'approval_requested'" in incident["context"]["problem"]
    (event,) = events(store_dir, kinds=["control.tampered"])
    assert event.data["table"] == "approvals"


def test_a_kill_switch_inserted_with_sql_is_not_obeyed(tmp_path: Path, store_dir: Path) -> None:
    hierarchy = write_hierarchy(tmp_path, hierarchy_text(SLOW_THEN_FLAKY))

    async def act(engine: Engine, api: ControlAPI, results: list[RunResult]) -> None:
        await wait_until(lambda: "s1" in runtime_tools.CALLS)
        _forge(store_dir, "INSERT INTO kill_switches (scope, target, mode, reason, operator, created) "
                          "VALUES ('global', NULL, 'kill', 'forged', 'mallory', ?)", (time.time(),))
        await wait_until(lambda: bool(_findings(engine)))
        assert engine.controls.switches == []  # never part of the gate's view
        runtime_tools.release_slow.set()

    (result,) = scenario(store_dir, hierarchy, act)
    assert result.status == "completed"
    assert "f1" in runtime_tools.CALLS
    with ControlAPI(store_dir, "checker") as api:
        (switch,) = api.active_kill_switches()
    assert switch.acked is None  # not acknowledged either: the operator sees it never took effect
    (incident,) = _incidents(store_dir)
    assert incident["severity"] == "sev1" and incident["scope"] == f"kill_switches:{switch.id}"


def test_a_pause_switch_released_with_sql_stays_in_force(tmp_path: Path, store_dir: Path) -> None:
    hierarchy = write_hierarchy(tmp_path, hierarchy_text(SLOW_THEN_FLAKY))

    async def act(engine: Engine, api: ControlAPI, results: list[RunResult]) -> None:
        await wait_until(lambda: "s1" in runtime_tools.CALLS)
        (run_id,) = list(engine.controls.runs)
        switch = await in_thread(api.set_kill, "run", run_id, "pause", "hold on")
        await wait_until(lambda: api.kill_switch(switch.id).acked is not None)
        _forge(store_dir, "UPDATE kill_switches SET released = ?, released_by = 'mallory' WHERE id = ?",
               (time.time(), switch.id))
        await wait_until(lambda: bool(_findings(engine)))
        assert [s.id for s in engine.controls.switches] == [switch.id]  # the engine still obeys it
        runtime_tools.release_slow.set()
        await in_thread(api.set_kill, "run", run_id, "kill", "end it")  # a real switch is obeyed as ever

    (result,) = scenario(store_dir, hierarchy, act)
    assert result.status == "killed" and "end it" in (result.error or "")
    assert "f1" not in runtime_tools.CALLS  # held by the pause the forged release tried to lift
    (incident,) = _incidents(store_dir)
    assert incident["scope"].startswith("kill_switches:") and "not 'release'" in incident["context"]["problem"]


def test_legitimate_controls_raise_no_finding(tmp_path: Path, store_dir: Path) -> None:
    hierarchy = write_hierarchy(tmp_path, hierarchy_text(RECORD_BIG))

    async def act(engine: Engine, api: ControlAPI, results: list[RunResult]) -> None:
        await in_thread(api.set_flag, "tools.side_effects", "on", reason="normal")
        await in_thread(api.override_breaker, "tool:flaky", "reset", "clean slate")
        await wait_until(lambda: bool(api.pending_approvals()) or bool(results))
        (pending,) = api.pending_approvals()
        await in_thread(api.approve, pending.id, "fine", edited_arguments={"note": "capped", "amount": 400})
        await wait_until(lambda: bool(results))
        assert _findings(engine) == []

    (result,) = scenario(store_dir, hierarchy, act)
    assert result.status == "completed" and fixture_tools.journal()[0]["amount"] == 400
    assert _incidents(store_dir) == []


def test_a_breaker_override_forged_as_applied_is_not_replayed_at_start(tmp_path: Path, store_dir: Path) -> None:
    hierarchy = write_hierarchy(tmp_path, hierarchy_text(SLOW_THEN_FLAKY))
    with ControlAPI(store_dir, "setup"):
        pass  # creates the store
    # Marked applied, so no snapshot shows it: only the engine's replay of past overrides at start would obey it.
    _forge(store_dir, "INSERT INTO breaker_overrides (key, action, reason, operator, source, created, applied, "
                      "applied_by) VALUES ('tool:flaky', 'force_open', 'forged', 'mallory', 'operator', ?, ?, 'e0')",
           (time.time(), time.time()))

    async def act(engine: Engine, api: ControlAPI, results: list[RunResult]) -> None:
        assert [f.table for f in _findings(engine)] == ["breaker_overrides"]
        runtime_tools.release_slow.set()

    (result,) = scenario(store_dir, hierarchy, act)
    assert result.status == "completed" and "f1" in runtime_tools.CALLS  # the flaky tool was not withheld
    (incident,) = _incidents(store_dir)
    assert incident["scope"] == "breaker_overrides:1"


def _cli(store_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "console.cli", *args, "--store", str(store_dir)],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "FLIGHTDECK_OPERATOR": "alice"})
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def test_flightdeck_run_refuses_an_approval_forged_while_it_waits(tmp_path: Path, store_dir: Path) -> None:
    """End to end: the engine is `python -m console.cli run`, the forger another process's SQL."""
    path = tmp_path / "ctl.yaml"
    path.write_text(hierarchy_text(RECORD_BIG, deadline="30s"))
    engine = subprocess.Popen([sys.executable, "-m", "console.cli", "run", str(path), "--input", "go", "--store",
                               str(store_dir)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "FLIGHTDECK_OPERATOR": "alice"})
    try:
        deadline = time.monotonic() + 30
        pending: list[dict[str, Any]] = []
        while not pending:
            assert time.monotonic() < deadline and engine.poll() is None, "the run never asked for approval"
            if (store_dir / "control.db").is_file():
                pending = json.loads(_cli(store_dir, "approvals", "--json").stdout or "[]")
            time.sleep(0.05)
        _forge(store_dir, "UPDATE approvals SET status = 'approved', decided = ?, decided_by = 'alice', "
                          "decision_reason = 'ok', edited_arguments = ?, decided_seq = 1 WHERE id = ?",
               (time.time(), json.dumps({"note": "forged refund", "amount": 99_999}), pending[0]["id"]))
        out, err = engine.communicate(timeout=60)
    finally:
        if engine.poll() is None:
            engine.kill()
            engine.wait()
    assert engine.returncode == 0, out + err
    (run,) = json.loads(_cli(store_dir, "runs", "--json").stdout)
    trace = _cli(store_dir, "trace", run["id"], "--json")

    def tool_spans(span: dict[str, Any]) -> list[dict[str, Any]]:
        found = [span] if span["kind"] == "tool" else []
        return found + [s for child in span.get("children", []) for s in tool_spans(child)]

    (tool,) = tool_spans(json.loads(trace.stdout))
    assert tool["status"] == "denied" and "control-tampered" in tool["attributes"]["error"]
    # The engine's own incident for the row; `flightdeck run` also runs the shipped runbooks, whose
    # control-tampered runbook may open its paging incident (scope global) before the engine exits.
    incidents = _incidents(store_dir)
    (incident,) = [i for i in incidents if i["scope"] != "global"]
    assert incident["severity"] == "sev1" and incident["scope"] == f"approvals:{pending[0]['id']}"
    assert len(incidents) <= 2


def test_a_switch_or_flag_lifted_with_sql_while_no_engine_runs_stays_in_force_after_a_restart(
        tmp_path: Path, store_dir: Path) -> None:
    """The engine that obeyed a kill switch and a safe-mode flag stops; someone releases both with SQL; the next
    engine on the store has no memory of them, yet must not take the forged release as real."""
    hierarchy = write_hierarchy(tmp_path, hierarchy_text(SLOW_THEN_FLAKY))
    with ControlAPI(store_dir, "alice") as api:
        switch = api.set_kill("tool", "flaky", "kill", "vendor is broken")
        flag = api.set_flag("agent.worker", "disabled", "global", reason="keep the worker out")

    async def first(engine: Engine, api: ControlAPI, results: list[RunResult]) -> None:
        await wait_until(lambda: api.kill_switch(switch.id).acked is not None)
        runtime_tools.release_slow.set()

    scenario(store_dir, hierarchy, first)  # the first engine obeys both, then stops
    _forge(store_dir, "UPDATE kill_switches SET released = ?, released_by = 'mallory' WHERE id = ?",
           (time.time(), switch.id))
    _forge(store_dir, "UPDATE flags SET cleared = ?, cleared_by = 'mallory' WHERE id = ?", (time.time(), flag.id))

    async def second(engine: Engine, api: ControlAPI, results: list[RunResult]) -> None:
        await wait_until(lambda: len(_findings(engine)) >= 2)
        assert [s.id for s in engine.controls.switches] == [switch.id]  # still obeyed
        runtime_tools.release_slow.set()

    (result,) = scenario(store_dir, hierarchy, second)
    assert "f1" not in runtime_tools.CALLS and "s1" not in runtime_tools.CALLS, runtime_tools.CALLS
    scopes = sorted(i["scope"] for i in _incidents(store_dir))
    assert scopes == [f"flags:{flag.id}", f"kill_switches:{switch.id}"]
