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


def released_by_flightdeck(store_dir: Path, switch_id: int) -> bool:
    with ControlAPI(store_dir, "alice") as api:
        return api.kill_switch(switch_id).released_by == "flightdeck"


async def until_released(store_dir: Path, switch_id: int) -> None:
    with anyio.fail_after(10):  # the release is a background write on the control thread, after the next poll
        while not await anyio.to_thread.run_sync(released_by_flightdeck, store_dir, switch_id):
            await anyio.sleep(0.02)


def test_a_switch_set_in_a_runs_last_moments_is_released_when_the_engine_sees_it(tmp_path: Path,
                                                                                 store_dir: Path) -> None:
    """The snapshot the run ended with did not hold the switch yet (the CLI's check passed while it ran): the
    engine still releases it once a later snapshot shows it, rather than leaving it in force for good."""
    hierarchy = write_hierarchy(tmp_path, ADDER)

    async def go() -> None:
        with open_engine_store(store_dir) as store:
            async with Engine(store, latency_scale=0, runbooks=False) as engine:
                done = await engine.run_compiled(engine.compile(hierarchy), RunRequest(input="go"), run_id="run-late")
                assert done.status == "completed"
                with ControlAPI(store_dir, "alice") as api:
                    late = api.set_kill("run", "run-late", "kill", reason="set as the run ended")
                    other = api.set_kill("run", "run-other", "kill", reason="a run this engine never ran")
                await until_released(store_dir, late.id)
        assert not released_by_flightdeck(store_dir, other.id)

    anyio.run(go)


def test_switches_on_runs_a_dead_engine_left_are_released_by_the_next_engine(tmp_path: Path,
                                                                            store_dir: Path) -> None:
    with open_engine_store(store_dir) as store:  # an engine that "dies": its run never ends
        store.writer.run_started("r-dead", "adder", None, store.engine_id, "0", {}, 0, None, 1.0)
        store.writer.flush()
    with ControlAPI(store_dir, "alice") as api:
        on_dead = api.set_kill("run", "r-dead", "kill", reason="stop the runaway")

    async def go() -> None:
        with open_engine_store(store_dir) as store:
            assert store.abandoned_runs == ["r-dead"]
            async with Engine(store, latency_scale=0, runbooks=False):
                await until_released(store_dir, on_dead.id)

    anyio.run(go)
    with ControlAPI(store_dir, "alice") as api:
        (entry,) = [e for e in api.audit_log() if e.action == "release"]
        assert (entry.target, entry.actor, entry.reason) == ("run:r-dead", "flightdeck", "run ended")
