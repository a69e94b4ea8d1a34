"""The control watcher stages each snapshot on its own thread, so the gate refuses new calls before the (possibly
busy) event loop gets to apply it; apply then never rolls the gate back to an older snapshot."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from engine.controls.api import ControlSnapshot
from engine.runtime.controls import OperatorStop, RuntimeControls
from engine.store.control_rows import KillSwitch


def _snapshot(*switches: KillSwitch) -> ControlSnapshot:
    return ControlSnapshot(kill_switches=tuple(switches), flags=(), pending_approvals=(), decided_approvals=(),
                           breaker_overrides=(), budget_overrides=(), decided_cursor=0, taken=0.0)


HALT = KillSwitch(id=7, scope="global", target=None, run_id=None, mode="kill", reason="incident", operator="ops",
                  created=0.0)
CTX = SimpleNamespace(run_id="r1", compiled=SimpleNamespace(name="h"))


def test_a_staged_switch_stops_calls_before_the_loop_applies_it() -> None:
    controls = RuntimeControls()

    async def main() -> None:
        await controls.before_call(CTX, "worker", None)  # type: ignore[arg-type]  # nothing active: passes
        controls.stage(_snapshot(HALT), from_watcher=True)  # what the watcher thread does on reading it
        with pytest.raises(OperatorStop, match="switch #7"):
            await controls.before_call(CTX, "worker", None)  # type: ignore[arg-type]
        assert controls.admission_refusal("h") is not None

    asyncio.run(main())


def test_applying_an_older_snapshot_keeps_the_newer_staged_state() -> None:
    controls = RuntimeControls()

    async def main() -> None:
        from engine.runtime.control_worker import ControlWorker

        controls.attach(ControlWorker(lambda: None, controls.apply))  # type: ignore[arg-type,return-value]
        older = _snapshot()
        controls.stage(older, from_watcher=True)
        controls.stage(_snapshot(HALT), from_watcher=True)  # read next, while `older` still waits for the loop
        controls.apply(older)
        assert [s.id for s in controls.switches] == [7]
        with pytest.raises(OperatorStop):
            await controls.before_call(CTX, "worker", None)  # type: ignore[arg-type]

    asyncio.run(main())
