"""The control commands as an operator runs them: `python -m console.cli ...` in real subprocesses against a tmp
store. Errors must be one clear line and an exit code, never a traceback."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from console.commands.controls import APPROVAL_FIELDS, ENGINE_FIELDS, FLAG_FIELDS
from engine.clock import FakeClock
from engine.controls.api import ControlAPI
from engine.store.control import ControlDB
from tests.engine.test_controls_preview import write_running_store
from tests.engine_standin import start_engine_standin

pytestmark = pytest.mark.slow


def cli(store_dir: Path, *args: str, env: dict[str, str] | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "FLIGHTDECK_OPERATOR": "alice", **(env or {})}
    environment.pop("FLIGHTDECK_STORE", None)
    proc = subprocess.run([sys.executable, "-m", "console.cli", *args, "--store", str(store_dir)],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=timeout, env=environment)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


@pytest.fixture
def api(store_dir: Path) -> Iterator[ControlAPI]:
    with ControlAPI(store_dir, "engine:e1") as control:
        yield control


def _request(api: ControlAPI, **overrides: Any) -> dict[str, Any]:
    call: dict[str, Any] = {"run_id": "r1", "span_id": "s1", "agent": "clerk", "tool": "issue_refund",
                            "arguments": {"order": "A-1", "amount": 120}, "risk": "high", "reason": "asked twice",
                            "deadline_s": 600, "on_timeout": "deny", "engine_id": "e1", **overrides}
    return api.request_approval(**call)


# ---------------------------------------------------------------------------------------------- kill / release

def test_kill_with_yes_records_the_switch(store_dir: Path) -> None:
    proc = cli(store_dir, "kill", "--all", "--mode", "drain", "--reason", "deploy freeze", "--yes")
    assert proc.returncode == 0, proc.stderr
    assert "kill switch #1 set: global, mode drain, by alice" in proc.stdout
    assert "no engine is running on this store" in proc.stdout
    with ControlAPI(store_dir, "checker") as api:
        (switch,) = api.active_kill_switches()
        assert (switch.scope, switch.mode, switch.operator, switch.reason) == \
            ("global", "drain", "alice", "deploy freeze")
        assert api.audit_log()[0].actor == "alice"


def test_kill_without_yes_and_without_a_tty_refuses(store_dir: Path) -> None:
    proc = cli(store_dir, "kill", "--tool", "crm_lookup", "--reason", "vendor outage")
    assert proc.returncode == 2
    assert "--yes: refusing to set a kill switch without confirmation" in proc.stderr
    with ControlAPI(store_dir, "checker") as api:
        assert api.active_kill_switches() == [] and api.audit_log() == []


def test_kill_input_errors(store_dir: Path) -> None:
    assert "--reason: is required" in cli(store_dir, "kill", "--all", "--yes").stderr
    proc = cli(store_dir, "kill", "--tool", "x", "--in-run", "r1", "--reason", "x", "--yes")
    assert proc.returncode == 2 and "--in-run: only goes with --agent" in proc.stderr
    proc = cli(store_dir, "kill", "--run", "nope", "--reason", "x", "--yes")
    assert proc.returncode == 2 and "--run: no run 'nope'" in proc.stderr
    proc = cli(store_dir, "kill", "--all", "--run", "r1", "--reason", "x", "--yes")
    assert proc.returncode == 2  # argparse: the scopes are mutually exclusive


def test_kill_run_prints_what_it_will_stop(store_dir: Path) -> None:
    write_running_store(store_dir)
    proc = cli(store_dir, "kill", "--run", "run-b", "--reason", "looping", "--yes", "--wait-ack", "0")
    assert proc.returncode == 0, proc.stderr
    assert "would stop: 1 run(s), 1 running agent(s), 2 in-flight call(s)" in proc.stdout
    assert "kb_search" in proc.stdout and "crm_lookup" in proc.stdout
    assert "kill switch #1 set: run:run-b" in proc.stdout

    proc = cli(store_dir, "kill", "--run", "run-c", "--reason", "x", "--yes")
    assert proc.returncode == 2 and "run run-c is not running (status completed)" in proc.stderr
    proc = cli(store_dir, "kill", "--run", "run-", "--reason", "x", "--yes")
    assert proc.returncode == 2 and "--run: run id prefix 'run-' is ambiguous" in proc.stderr

    proc = cli(store_dir, "kill", "--tool", "crm_lookup", "--mode", "pause", "--reason", "x", "--yes",
               "--wait-ack", "0")
    assert "pause tool:crm_lookup would pause: 2 run(s), 0 running agent(s), 2 in-flight call(s)" in proc.stdout

    proc = cli(store_dir, "release", "--run", "run-", "--reason", "prefix")  # resolved like kill resolves it
    assert proc.returncode == 2 and "--run: run id prefix 'run-' is ambiguous" in proc.stderr
    proc = cli(store_dir, "release", "--run", "run-b", "--reason", "contained")
    assert proc.returncode == 0 and "released kill switch #1 (run:run-b, kill)" in proc.stdout


def test_unacknowledged_kill_with_a_running_engine_suggests_terminate(store_dir: Path) -> None:
    store_dir.mkdir()
    db = ControlDB.open(store_dir)
    try:
        db.register_engine(version="test", pid=424242)
        proc = cli(store_dir, "kill", "--hierarchy", "deal-desk", "--reason", "runaway", "--yes",
                   "--wait-ack", "0.3")
    finally:
        db.close()
    assert proc.returncode == 1
    assert "kill switch #1 set" in proc.stdout
    assert "engine pid 424242 (alive) did not acknowledge the switch within 0.3s" in proc.stderr
    assert "flightdeck engines --terminate 424242" in proc.stderr


def test_acknowledged_kill_reports_the_ack(store_dir: Path) -> None:
    store_dir.mkdir()
    db = ControlDB.open(store_dir)
    engine_id = db.register_engine(version="test")
    stop = threading.Event()

    def engine_acks() -> None:  # what the engine's watcher does, in miniature
        with ControlAPI(store_dir, f"engine:{engine_id}") as engine:
            deadline = time.monotonic() + 30
            while not stop.is_set() and time.monotonic() < deadline:
                pending = [s.id for s in engine.active_kill_switches() if s.acked is None]
                if pending:
                    engine.ack_kill_switches(pending, engine_id)
                    return
                stop.wait(0.02)

    watcher = threading.Thread(target=engine_acks)
    watcher.start()
    try:
        proc = cli(store_dir, "kill", "--agent", "planner", "--reason", "looping", "--yes", "--wait-ack", "20")
    finally:
        stop.set()
        watcher.join()
        db.close()
    assert proc.returncode == 0, proc.stderr
    assert f"acknowledged by engine {engine_id[:12]}" in proc.stdout


def test_release_by_id_then_again(store_dir: Path) -> None:
    assert cli(store_dir, "kill", "--tool", "crm", "--reason", "x", "--yes").returncode == 0
    listed = json.loads(cli(store_dir, "kill", "--list", "--json").stdout)
    assert [s["target"] for s in listed] == ["crm"]
    proc = cli(store_dir, "release", "--id", str(listed[0]["id"]), "--reason", "vendor fixed")
    assert proc.returncode == 0 and f"released kill switch #{listed[0]['id']} (tool:crm, kill) by alice" in proc.stdout
    proc = cli(store_dir, "release", "--id", str(listed[0]["id"]), "--reason", "again")
    assert proc.returncode == 2 and "was already released by alice" in proc.stderr
    proc = cli(store_dir, "release", "--tool", "crm", "--reason", "again")
    assert proc.returncode == 2 and "no active kill switch for tool:crm" in proc.stderr
    assert cli(store_dir, "release", "--all").returncode == 2  # --reason is required
    assert json.loads(cli(store_dir, "kill", "--list", "--json").stdout) == []


# ---------------------------------------------------------------------------------------------- approvals

def test_approvals_json_lists_pending_requests(store_dir: Path, api: ControlAPI) -> None:
    first = _request(api)
    second = _request(api, tool="send_email", arguments={"to": "x@example.com"})
    decided = _request(api)
    api.deny(decided.id, "no")
    proc = cli(store_dir, "approvals", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert [r["id"] for r in rows] == [first.id, second.id]
    assert all(tuple(r) == APPROVAL_FIELDS for r in rows)
    assert rows[1]["arguments"] == {"to": "x@example.com"} and rows[1]["args_hash"] == second.args_hash
    every = json.loads(cli(store_dir, "approvals", "--all", "--json").stdout)
    assert {r["id"]: r["status"] for r in every}[decided.id] == "denied"
    human = cli(store_dir, "approvals").stdout
    assert first.id in human and "issue_refund" in human and decided.id not in human


def test_approve_and_deny(store_dir: Path, api: ControlAPI) -> None:
    plain, edited, denied = _request(api), _request(api), _request(api)
    proc = cli(store_dir, "approve", plain.id, "--reason", "verified", "--expect-hash", plain.args_hash[:12])
    assert proc.returncode == 0, proc.stderr
    assert f"approved {plain.id}: tool issue_refund for agent clerk in run r1 (by alice)" in proc.stdout
    proc = cli(store_dir, "approve", edited.id, "--edit-args", '{"order": "A-1", "amount": 50}', "--reason", "cap")
    assert proc.returncode == 0 and "with edited arguments" in proc.stdout
    assert cli(store_dir, "deny", denied.id, "--reason", "no").returncode == 0
    assert api.approval(edited.id).edited_arguments == {"amount": 50, "order": "A-1"}
    assert api.approval(denied.id).status == "denied"
    assert [r.action for r in api.audit_log()[:3]] == ["deny", "edit_approve", "approve"]


def test_approval_errors_exit_2_with_the_message(store_dir: Path, api: ControlAPI) -> None:
    row = _request(api)
    past = FakeClock(epoch=time.time() - 3600)
    with ControlAPI(store_dir, "engine:e1", clock=past) as old_engine:
        expired = _request(old_engine, deadline_s=60)
    other_hash = "0" * 64

    cases = [
        (("approve", row.id, "--reason", "ok", "--expect-hash", other_hash), "arguments changed since you looked"),
        (("approve", row.id, "--edit-args", "{amount: 5", "--reason", "x"), "--edit-args: not valid JSON"),
        (("approve", row.id, "--edit-args", "[5]", "--reason", "x"), "--edit-args: must be a JSON object"),
        (("approve", row.id, "--reason", "x", "--expect-hash", "xyz"), "--expect-hash: expected the sha256"),
        (("deny", "ap-00000000", "--reason", "x"), "no approval ap-00000000"),
        (("approve", expired.id, "--reason", "late"), f"approval {expired.id} expired at"),
    ]
    for args, message in cases:
        proc = cli(store_dir, *args)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert message in proc.stderr, (args, proc.stderr)
    assert cli(store_dir, "approve", row.id, "--reason", "ok").returncode == 0
    proc = cli(store_dir, "deny", row.id, "--reason", "too late", env={"FLIGHTDECK_OPERATOR": "bob"})
    assert proc.returncode == 2
    assert f"approval {row.id} was already approved by alice at" in proc.stderr
    proc = cli(store_dir, "approve", row.id)
    assert proc.returncode == 2 and "--reason" in proc.stderr


# ---------------------------------------------------------------------------------------------- safe mode

def test_safe_mode_set_list_clear(store_dir: Path) -> None:
    proc = cli(store_dir, "safe-mode", "set", "tools.side_effects=OFF", "--reason", "incident 7")
    assert proc.returncode == 0, proc.stderr
    assert "tools.side_effects = off at global (was unset)" in proc.stdout
    proc = cli(store_dir, "safe-mode", "set", "models.max_tier=standard", "--scope", "hierarchy:deal-desk",
               "--reason", "slow down", "--operator", "carol")
    assert proc.returncode == 0, proc.stderr
    flags = json.loads(cli(store_dir, "safe-mode", "list", "--json").stdout)
    assert all(tuple(f) == FLAG_FIELDS for f in flags)
    assert {(f["name"], f["value"], f["scope"], f["target"], f["operator"]) for f in flags} == {
        ("tools.side_effects", "off", "global", None, "alice"),
        ("models.max_tier", "standard", "hierarchy", "deal-desk", "carol")}
    assert "tools.side_effects" in cli(store_dir, "safe-mode", "list").stdout

    proc = cli(store_dir, "safe-mode", "clear", "tools.side_effects", "--reason", "over")
    assert proc.returncode == 0 and "cleared tools.side_effects at global (it was off)" in proc.stdout
    assert [f["name"] for f in json.loads(cli(store_dir, "safe-mode", "list", "--json").stdout)] == \
        ["models.max_tier"]
    proc = cli(store_dir, "safe-mode", "clear", "tools.side_effects", "--reason", "again")
    assert proc.returncode == 2 and "flag tools.side_effects is not set at global" in proc.stderr


def test_safe_mode_errors_name_the_flag(store_dir: Path) -> None:
    cases = [
        (("safe-mode", "set", "tools.side_effect=off", "--reason", "x"), "tools.side_effect: unknown flag"),
        (("safe-mode", "set", "approvals=maybe", "--reason", "x"), "approvals: expected one of all, default"),
        (("safe-mode", "set", "concurrency.max=0", "--reason", "x"), "concurrency.max: expected a whole number"),
        (("safe-mode", "set", "approvals", "--reason", "x"), "FLAG=VALUE: expected FLAG=VALUE"),
        (("safe-mode", "set", "approvals=all", "--scope", "tenant:x", "--reason", "x"), "--scope: expected global"),
        (("safe-mode", "set", "runs.admission=paused", "--scope", "run:r1", "--reason", "x"),
         "runs.admission: cannot be set at run scope"),
        (("safe-mode", "set", "approvals=all", "--reason", " "), "--reason: is required"),
    ]
    for args, message in cases:
        proc = cli(store_dir, *args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert message in proc.stderr, (args, proc.stderr)
    assert json.loads(cli(store_dir, "safe-mode", "list", "--json").stdout) == []


# ---------------------------------------------------------------------------------------------- breakers, audit

def test_breakers_open_and_list(store_dir: Path) -> None:
    proc = cli(store_dir, "breakers", "list")
    assert proc.returncode == 3 and "no store at" in proc.stderr  # nothing recorded there: not silently created
    proc = cli(store_dir, "breakers", "open", "tool:crm_lookup", "--reason", "vendor outage")
    assert proc.returncode == 2  # no engine has reported a breaker here: nothing known to force
    assert "unknown breaker 'tool:crm_lookup' (the engine has not reported any breaker on this store yet)" in \
        proc.stderr
    from tests.console.test_console_views_ops import write_breakers

    write_breakers(store_dir)
    proc = cli(store_dir, "breakers", "open", "tool:crm_lookup", "--reason", "vendor outage")
    assert proc.returncode == 0 and "force_open tool:crm_lookup" in proc.stdout
    assert cli(store_dir, "breakers", "reset", "tool:crm_lookup").returncode == 2  # --reason required to act
    proc = cli(store_dir, "breakers", "disable", "crm_lookup", "--reason", "x")
    assert proc.returncode == 2 and "KEY: expected KIND:NAME" in proc.stderr
    listed = json.loads(cli(store_dir, "breakers", "list", "--json").stdout)
    assert [(b["key"], b["state"], [o["action"] for o in b["overrides"]]) for b in listed] == [
        ("model:gpt-4o", "half_open", []), ("tool:crm_lookup", "open", ["force_open"]), ("tool:kb_search", "closed", [])]


def test_audit_list_and_verify_and_tampering(store_dir: Path) -> None:
    assert cli(store_dir, "kill", "--all", "--reason", "a", "--yes").returncode == 0
    assert cli(store_dir, "release", "--all", "--reason", "b").returncode == 0
    assert cli(store_dir, "safe-mode", "set", "approvals=all", "--reason", "c").returncode == 0
    rows = json.loads(cli(store_dir, "audit", "--json").stdout)
    assert [r["action"] for r in rows] == ["flag_set", "release", "kill"]
    assert [r["reason"] for r in rows] == ["c", "b", "a"]
    proc = cli(store_dir, "audit", "verify")
    assert proc.returncode == 0 and "audit log intact: 3 row(s)" in proc.stdout
    with sqlite3.connect(store_dir / "control.db") as conn:
        conn.execute("UPDATE audit SET actor = 'mallory' WHERE id = 2")
    proc = cli(store_dir, "audit", "verify")
    assert proc.returncode == 1
    assert "audit log TAMPERED at row 2: row 2 was altered" in proc.stderr
    verdict = json.loads(cli(store_dir, "audit", "verify", "--json").stdout)
    assert (verdict["ok"], verdict["first_bad_id"]) == (False, 2)


# ---------------------------------------------------------------------------------------------- engines

def test_engines_json(store_dir: Path) -> None:
    store_dir.mkdir()
    db = ControlDB.open(store_dir)
    try:
        engine_id = db.register_engine(version="9.9", pid=31337)
    finally:
        db.close()
    proc = cli(store_dir, "engines", "--json")
    assert proc.returncode == 0, proc.stderr
    (engine,) = json.loads(proc.stdout)
    assert tuple(engine) == ENGINE_FIELDS
    assert (engine["id"], engine["pid"], engine["version"], engine["alive"], engine["holds_lock"]) == \
        (engine_id, 31337, "9.9", True, False)


def test_engines_terminate_end_to_end(store_dir: Path) -> None:
    proc, engine_id = start_engine_standin(store_dir, "ignore-term")
    try:
        listed = json.loads(cli(store_dir, "engines", "--json").stdout)
        assert [(e["id"], e["holds_lock"]) for e in listed] == [(engine_id, True)]
        refused = cli(store_dir, "engines", "--terminate", str(proc.pid), "--reason", "wedged")
        assert refused.returncode == 2 and "--yes" in refused.stderr and proc.poll() is None
        done = cli(store_dir, "engines", "--terminate", str(proc.pid), "--reason", "wedged", "--yes", "--grace", "0.2")
        assert done.returncode == 0, done.stderr
        assert f"engine pid {proc.pid} stopped after SIGTERM then SIGKILL" in done.stdout
        assert proc.wait(timeout=10) < 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    rows = json.loads(cli(store_dir, "audit", "--json").stdout)
    assert rows[0]["action"] == "engine_terminate" and rows[0]["actor"] == "alice"


def _cli_on_a_tty(store_dir: Path, answer: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run with stdin on a pseudo-terminal (so the confirmation prompt is shown) and type `answer`."""
    import pty

    master, slave = pty.openpty()
    environment = {**os.environ, "FLIGHTDECK_OPERATOR": "alice"}
    environment.pop("FLIGHTDECK_STORE", None)
    try:
        proc = subprocess.Popen([sys.executable, "-m", "console.cli", *args, "--store", str(store_dir)],
                                stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=environment)
        os.write(master, answer.encode() + b"\n")  # buffered by the terminal until the prompt reads it
        out, err = proc.communicate(timeout=60)
    finally:
        os.close(slave)
        os.close(master)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_kill_on_a_terminal_asks_first(store_dir: Path) -> None:
    declined = _cli_on_a_tty(store_dir, "no", "kill", "--tool", "crm", "--reason", "outage")
    assert declined.returncode == 1
    assert "type yes to continue" in declined.stdout and "aborted: nothing was changed" in declined.stderr
    accepted = _cli_on_a_tty(store_dir, "yes", "kill", "--tool", "crm", "--reason", "outage")
    assert accepted.returncode == 0, accepted.stderr
    assert "kill switch #1 set: tool:crm" in accepted.stdout
    with ControlAPI(store_dir, "checker") as api:
        assert [s.target for s in api.active_kill_switches()] == ["crm"]
        assert [r.action for r in api.audit_log()] == ["kill"]
