"""The per-call Deadline: one timer per duration lane, yet every call times out on its own deadline, finished calls
never time out, other cancellations propagate, and kill() becomes OperatorStop."""

from __future__ import annotations

import asyncio

import pytest

from engine.runtime.controls import OperatorStop
from engine.runtime.deadline import _ATTRIBUTE, Deadline


async def _sleep_under(seconds: float, sleep: float, log: list[str], name: str) -> None:
    try:
        async with Deadline(seconds):
            await asyncio.sleep(sleep)
        log.append(f"{name}:done")
    except TimeoutError:
        log.append(f"{name}:timeout")


def test_each_call_times_out_on_its_own_deadline_in_a_shared_lane() -> None:
    async def main() -> list[str]:
        log: list[str] = []
        loop = asyncio.get_running_loop()
        started = loop.time()
        # Same duration, staggered starts: one lane, one timer, three expiries in order; one finishes in time.
        first = asyncio.create_task(_sleep_under(0.05, 10, log, "a"))
        await asyncio.sleep(0.02)
        quick = asyncio.create_task(_sleep_under(0.05, 0.001, log, "quick"))
        second = asyncio.create_task(_sleep_under(0.05, 10, log, "b"))
        await asyncio.gather(first, quick, second)
        assert loop.time() - started < 1.0
        return log

    assert asyncio.run(main()) == ["quick:done", "a:timeout", "b:timeout"]


def test_finished_calls_never_fire_and_lanes_are_dropped_when_empty() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        for _ in range(1000):
            async with Deadline(0.02):
                await asyncio.sleep(0)
        lanes = getattr(loop, _ATTRIBUTE)
        assert 0.02 in lanes
        await asyncio.sleep(0.05)  # the lane's timer fires once, finds only finished calls, and removes the lane
        assert 0.02 not in lanes

    asyncio.run(main())


def test_mixed_durations_expire_independently() -> None:
    async def main() -> list[str]:
        log: list[str] = []
        await asyncio.gather(_sleep_under(0.2, 10, log, "long"), _sleep_under(0.03, 10, log, "short"),
                             _sleep_under(0.2, 0.06, log, "fits"))
        return log

    assert asyncio.run(main()) == ["short:timeout", "fits:done", "long:timeout"]


def test_someone_elses_cancellation_propagates_and_kill_is_an_operator_stop() -> None:
    async def main() -> None:
        async def guarded() -> None:
            async with Deadline(30):
                await asyncio.sleep(10)

        task = asyncio.create_task(guarded())
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

        handles: list[Deadline] = []

        async def killable() -> None:
            async with Deadline(30) as handle:
                handles.append(handle)
                await asyncio.sleep(10)

        task = asyncio.create_task(killable())
        await asyncio.sleep(0.01)
        handles[0].kill("operator says stop")
        with pytest.raises(OperatorStop, match="operator says stop"):
            await task

    asyncio.run(main())
