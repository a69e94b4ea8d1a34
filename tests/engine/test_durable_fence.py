"""runtime/durable_fence.py's lease: a durable engine on a shared store starts no call once its last confirmed beat
is older than its lease (it may have been seen dead while it stalled) until a beat renews it, and once the beat finds
it fenced the call is refused. The beat thread is a real thread here; the database side is tests/store_pg/
test_pg_fence.py."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import anyio
import pytest

from engine.runtime.controls import OperatorStop, RuntimeControls
from engine.runtime.durable_fence import Lease
from engine.runtime.store_gate import StoreGate

CTX = SimpleNamespace(run_id="r1", compiled=SimpleNamespace(name="h"))


async def _expired(lease: Lease) -> None:
    with anyio.fail_after(5):
        while lease.current():
            await anyio.sleep(0.005)


def test_a_call_waits_for_a_beat_once_the_lease_ran_out_and_is_refused_when_fenced() -> None:
    controls = RuntimeControls()
    gate = StoreGate()
    controls.store_gate = gate
    lease = controls.lease = Lease(stale_after=0.1)
    reason = "engine a stalled 3.0s without a heartbeat; engine b took its runs; it stops so no step runs twice"

    async def main() -> None:
        gate.attach()
        await controls.before_call(CTX, "worker", None)  # type: ignore[arg-type]  # fresh: passes at once
        await _expired(lease)  # a stall: no beat confirmed the engine alive for longer than its lease
        started = anyio.Event()
        passed: list[float] = []

        async def call() -> None:
            started.set()
            await controls.before_call(CTX, "worker", None)  # type: ignore[arg-type]
            passed.append(time.monotonic())

        async with anyio.create_task_group() as group:
            group.start_soon(call)
            await started.wait()
            await anyio.sleep(0)  # the call is at the lease now
            assert not passed, "a call started with the lease run out"
            beat = time.monotonic()
            threading.Thread(target=lease.renew, args=(beat,)).start()  # the takeover thread's beat found no claim
        assert passed and passed[0] >= beat
        await _expired(lease)

        def fenced() -> None:  # the takeover thread's beat found a claim (Takeover._fenced's order)
            gate.fence(reason)
            lease.fenced = True

        threading.Thread(target=fenced).start()
        with pytest.raises(OperatorStop, match="engine b took its runs"):
            await controls.before_call(CTX, "worker", None)  # type: ignore[arg-type]
        assert controls.admission_refusal("h") == f"refused: {reason}"

    anyio.run(main)
