"""A kill switch scoped to a run expires when that run ends: Flightdeck releases it (actor `flightdeck`, reason
"run ended"), audited and bound like any release, so `flightdeck kill --list` and the console stop listing a spent
switch as in force. Switches on other runs, and broader ones, stay."""

from __future__ import annotations

from pathlib import Path

import anyio

from engine.controls.api import ControlAPI
from engine.runtime.engine import Engine, RunRequest
from engine.store import open_engine_store
from tests.durable_support import flightdeck
from tests.engine.test_degraded_runs import ADDER
from tests.engine_helpers import write_hierarchy


def test_switches_of_an_ended_run_are_released_by_flightdeck_audited_and_others_stay(tmp_path: Path,
                                                                                      store_dir: Path) -> None:
    hierarchy = write_hierarchy(tmp_path, ADDER)
    api = ControlAPI(store_dir, "alice")
    try:
        on_killed = api.set_kill("run", "run-killed", "kill", reason="runaway")
        on_agent = api.set_kill("agent", "ghost", "kill", reason="ghost agent", run_id="run-done")
        elsewhere = api.set_kill("run", "run-never", "kill", reason="not started yet")
        tool = api.set_kill("tool", "no_such_tool", "kill", reason="broken tool")
    finally:
        api.close()

    def in_force() -> set[int]:
        with ControlAPI(store_dir, "alice") as reader:
            return {s.id for s in reader.active_kill_switches()}

    async def go() -> tuple[str, str]:
        with open_engine_store(store_dir) as store:
            async with Engine(store, latency_scale=0, runbooks=False) as engine:
                compiled = engine.compile(hierarchy)
                killed = await engine.run_compiled(compiled, RunRequest(input="go"), run_id="run-killed")
                done = await engine.run_compiled(compiled, RunRequest(input="go"), run_id="run-done")
                with anyio.fail_after(10):  # the release is a background write on the control thread
                    while {on_killed.id, on_agent.id} & await anyio.to_thread.run_sync(in_force):
                        await anyio.sleep(0.02)
                return killed.status, done.status

    assert anyio.run(go) == ("killed", "completed")
    assert in_force() == {elsewhere.id, tool.id}
    with ControlAPI(store_dir, "alice") as api:
        released = [e for e in api.audit_log() if e.action == "release"]
        assert sorted(e.target for e in released) == ["agent:ghost in run:run-done", "run:run-killed"]
        assert {(e.actor, e.reason) for e in released} == {("flightdeck", "run ended")}
        assert api.verify_audit().ok  # the chain and the switches' bindings hold
        assert api.kill_switch(on_killed.id).released_by == "flightdeck"
    listed = flightdeck("kill", "--list", "--store", str(store_dir))
    assert listed.returncode == 0, listed.stderr
    assert "run-never" in listed.stdout and "run-killed" not in listed.stdout and "run-done" not in listed.stdout
