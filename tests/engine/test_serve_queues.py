"""What DBOS's queues do for serve mode (engine/durable/queues.py): priorities, per-tenant concurrency and rate
limits decide which queued run starts; bad input for a hierarchy is refused (422) before anything is queued. And
the tally behind admission (engine/serve/queue_state.py): Retry-After from the drain rate, rate-limited events."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from engine.serve.contracts import Refused, Submission
from engine.serve.fleet import fleet_of
from engine.serve.queue_state import QueueCounts
from engine.serve.service import FleetEngine, open_fleet
from engine.store import open_reader
from tests.serve_support import Serving, until, until_async


async def _status(fleet: FleetEngine, run_id: str) -> str | None:
    durable = fleet.engine.durable
    assert durable is not None and durable.host is not None
    return await durable.host.status(run_id)


@pytest.mark.slow
def test_priority_then_age_decides_which_queued_run_starts_next(tmp_path: Path) -> None:
    serving = Serving(tmp_path, "{concurrency: 1}")

    async def body(fleet: FleetEngine) -> list[str]:
        first = (await fleet.submit(Submission("serving", {}))).run_id
        await until(lambda: fleet.counts.queues["serving"].running, what="the first run to start")
        low = (await fleet.submit(Submission("serving", {}, priority=900))).run_id
        high = (await fleet.submit(Submission("serving", {}, priority=10))).run_id
        serving.open_gate()

        async def done() -> bool:
            return all([await _status(fleet, r) == "SUCCESS" for r in (first, low, high)])

        await until_async(done, what="all three to finish")
        return [first, high, low]

    expected = serving.serve(body)
    reader = open_reader(serving.store)
    try:
        started = sorted(expected, key=lambda r: reader.get_run(r).started)  # type: ignore[union-attr]
    finally:
        reader.close()
    assert started == expected  # the later, higher-priority run went first


@pytest.mark.slow
def test_per_tenant_concurrency_and_the_rate_limit_hold_runs_in_the_queue(tmp_path: Path) -> None:
    serving = Serving(tmp_path, "{concurrency: 3, per_tenant_concurrency: 1, rate_limit: 3/1h}")

    async def body(fleet: FleetEngine) -> None:
        a1 = (await fleet.submit(Submission("serving", {}, tenant="a"))).run_id
        a2 = (await fleet.submit(Submission("serving", {}, tenant="a"))).run_id
        b1 = (await fleet.submit(Submission("serving", {}, tenant="b"))).run_id
        await until(lambda: len(fleet.counts.queues["serving"].running) == 2, what="one run per tenant to start")
        running = set(fleet.counts.queues["serving"].running)
        assert b1 in running and len(running & {a1, a2}) == 1  # tenant a has its one run going, the other waits
        assert [fleet.counts.waiting(r) is not None for r in (a1, a2)].count(True) == 1
        serving.open_gate()
        await until_async(lambda: _is_done(fleet, [a1, a2, b1]), what="tenant a's second run after its first")
        c1 = (await fleet.submit(Submission("serving", {}, tenant="c"))).run_id
        # Three runs started this hour: the fourth waits for the limiter, though nothing else runs (DBOS polls the
        # queue every 0.1 s: 15 polls go by without it starting).
        started = False
        with anyio.move_on_after(1.5):
            await until(lambda: fleet.counts.waiting(c1) is None, timeout=10, what="c1 to start")
            started = True
        assert not started and await _status(fleet, c1) == "ENQUEUED"

    serving.serve(body)


async def _is_done(fleet: FleetEngine, ids: list[str]) -> bool:
    return all([await _status(fleet, r) == "SUCCESS" for r in ids])


@pytest.mark.slow
def test_input_that_breaks_the_entry_agents_contract_is_refused_with_422(tmp_path: Path) -> None:
    async def go() -> None:
        async with open_fleet(tmp_path / "store", fleet_of(["deal-desk"]), latency_scale=0.0) as fleet:
            with pytest.raises(Refused) as bad:
                await fleet.submit(Submission("deal-desk", {"account": "ACME", "seats": "many"}))
            assert bad.value.status == 422 and bad.value.field == "input"
            assert fleet.counts.total_queued() == 0

    anyio.run(go)


def test_retry_after_follows_the_drain_rate_and_refusal_events_are_rate_limited() -> None:
    counts = QueueCounts("q", "h")
    now = 1_000_000.0
    assert counts.retry_after_s(5, now) == 300  # nothing started in the last minute: the longest hint
    for second in range(60):
        counts.started.add(now - second, 2)  # two a second
    assert counts.retry_after_s(10, now) == 5
    assert counts.retry_after_s(1, now) == 1  # clamped to at least a second
    assert [counts.rejected_event_due(now + t)[0] for t in (0, 0.1, 0.5, 1.0, 1.2)] == [
        True, False, False, True, False]
    assert counts.rejected_event_due(now + 2.5) == (True, 1)  # carries the one refusal since that wrote none
