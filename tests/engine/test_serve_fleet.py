"""Serve mode's engine side (engine/serve/service.py): a fleet's runs are queued on DBOS and run as fresh runs when
dequeued; an idempotency key names one run; hierarchies that do not load are refused by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import InputError
from engine.serve.contracts import Refused, Submission
from engine.serve.fleet import fleet_of, load_fleet
from engine.serve.service import FleetEngine, open_fleet
from engine.store import open_reader
from tests.serve_support import Serving, until_async

pytestmark = pytest.mark.slow


def test_submitted_runs_queue_then_run_fresh_and_a_key_names_one_run(tmp_path: Path) -> None:
    serving = Serving(tmp_path, "{concurrency: 2}")
    serving.open_gate()

    async def body(fleet: FleetEngine) -> list[str]:
        assert fleet.hierarchies() == ["serving"]
        with pytest.raises(Refused) as unknown:
            await fleet.submit(Submission("nope", {}))
        assert unknown.value.status == 404 and "no hierarchy named 'nope'" in unknown.value.reason
        first = await fleet.submit(Submission("serving", {"request": "a"}, tenant="acme", idempotency_key="ev-1"))
        again = await fleet.submit(Submission("serving", {"request": "a"}, tenant="acme", idempotency_key="ev-1"))
        assert first.created and not again.created and again.run_id == first.run_id
        others = [await fleet.submit(Submission("serving", {"request": str(i)})) for i in range(2)]
        ids = [first.run_id] + [o.run_id for o in others]
        assert all(a.created and a.queue == "serving" and a.state == "queued" for a in [first, *others])

        async def all_done() -> bool:
            views = [await fleet.get_run(run_id) for run_id in ids]
            return all(v is not None and v.state == "completed" for v in views)

        await until_async(all_done, what="the three runs to complete")
        late = await fleet.submit(Submission("serving", {"request": "a"}, idempotency_key="ev-1"))
        assert not late.created and late.state == "completed"
        done = await fleet.get_run(first.run_id)  # a started run still says where it came from
        assert done is not None and (done.queue, done.source, done.tenant) == ("serving", "api", "acme")
        assert done.submitted is not None and done.started is not None and done.submitted <= done.started
        listed = await fleet.list_runs(hierarchy="serving")
        assert {v.run_id for v in listed} >= set(ids)
        return ids

    ids = serving.serve(body)
    assert len(serving.lines()) == 3  # one charge per run, none twice
    reader = open_reader(serving.store)
    try:
        rows = [reader.get_run(run_id) for run_id in ids]
    finally:
        reader.close()
    assert all(row is not None and row.status == "completed" and row.resumed == 0 for row in rows)


def test_a_fleet_whose_hierarchy_does_not_load_or_repeats_a_name_is_refused(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text("hierarchies:\n  - file: missing.yaml\n")
    with pytest.raises(InputError, match="missing.yaml"):
        import anyio

        async def go() -> None:
            async with open_fleet(tmp_path / "store", load_fleet(fleet)):
                pass

        anyio.run(go)
    with pytest.raises(InputError, match="two hierarchies are named 'deal-desk'"):
        import anyio

        async def twice() -> None:
            async with open_fleet(tmp_path / "store", fleet_of(["deal-desk", "deal-desk"])):
                pass

        anyio.run(twice)


def test_queue_state_is_published_every_second_per_queue_and_active_tenant(tmp_path: Path) -> None:
    import sqlite3

    serving = Serving(tmp_path, "{concurrency: 1, max_depth: 50, rate_limit: 10/1m}")

    def stored() -> dict[tuple[str, str], tuple[int, int, str]]:
        conn = sqlite3.connect(serving.store / "traces.db")
        try:
            return {(q, t): (d, r, a) for q, t, d, r, a in conn.execute(
                "SELECT queue, tenant, depth, running, admission FROM queues")}
        finally:
            conn.close()

    async def body(fleet: FleetEngine) -> None:
        from tests.serve_support import until

        ids = [(await fleet.submit(Submission("serving", {}, tenant="acme"))).run_id for _ in range(3)]
        await until(lambda: stored().get(("serving", "")) == (2, 1, "open")
                    and stored().get(("serving", "acme")) == (2, 1, "open"), what="the published queue rows")
        [queue_row, tenant_row] = fleet.queues()
        assert (queue_row.max_depth, queue_row.concurrency, queue_row.rate_limit) == (50, 1, "10/1m")
        assert queue_row.admitted_per_min == 3 and queue_row.oldest_age_s is not None
        assert tenant_row.tenant == "acme" and tenant_row.admitted_per_min == 3
        assert fleet.health().queued == 2 and fleet.health().running == 1 and fleet.health().status == "ok"
        serving.open_gate()

        async def done() -> bool:
            views = [await fleet.get_run(run_id) for run_id in ids]
            return all(v is not None and v.state == "completed" for v in views)

        await until_async(done, what="the runs to complete")
        # The tenant gone idle gets one last row (nothing queued or running), then no more.
        await until(lambda: stored().get(("serving", "acme")) == (0, 0, "open"), what="the idle tenant's row")
        assert [r.tenant for r in fleet.queues()] == [""]

    serving.serve(body)
