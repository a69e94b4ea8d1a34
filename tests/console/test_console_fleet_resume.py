"""Issue 16: the resume key (R) on a Postgres store. The console records the resume in the database's control plane
(the same audit row as on a directory) for the live durable engines that take resume requests (`durable_pickup`,
engine/store/pg/durable_takers.py); with none live it says so before asking and writes nothing, as `flightdeck
resume` exits 3 there. The fleet of tests/console_fleet_support.py (engine A alive, C stopped) plus one
failed durable run; the real app under Pilot on a real PostgreSQL on 127.0.0.1."""

from __future__ import annotations

from typing import Any

import pytest

from console.app import create_app
from console.widgets.modals import FormModal
from engine.controls.api import ControlAPI
from engine.store.location import PostgresLocation
from engine.store.pg.batch_writer import PgBatchWriter
from engine.store.pg.durable_takers import publish
from tests.console.test_console_actions import fill, modal, notified, submit
from tests.console_fleet_support import ENGINE_A, ENGINE_C, FLEET_RUNS, fleet_store, pg_location
from tests.console_helpers import FIXED_NOW, fixed_clock, utc, wait_for, write_deal_run  # noqa: F401 - utc: autouse

pytestmark = pytest.mark.anyio

DURABLE = "e5f6a1b2c3d4"  # engine A's failed durable run


def durable_fleet(url: str) -> PostgresLocation:
    location = fleet_store(url)
    with PgBatchWriter(location, engine_id=ENGINE_A) as writer:
        write_deal_run(writer, DURABLE, started=FIXED_NOW - 300, status="failed", tenant="globex",
                       error="pricing: price_quote failed", engine_id=ENGINE_A,
                       attributes={"durable": True, "paths": 2})
    return location


def resumes(location: PostgresLocation) -> list[Any]:
    with ControlAPI(location, "reader", create=False, read_only=True) as api:
        return [entry for entry in api.audit_log(limit=1000) if entry.action == "resume"]


async def resume_selected(pilot: Any) -> Any:
    runs = pilot.app.main.view("runs")
    await wait_for(pilot, lambda: runs.table.total_count == len(FLEET_RUNS) + 1, what="every engine's runs")
    runs.table.select_key(DURABLE)
    await wait_for(pilot, lambda: runs.table.cursor_key == DURABLE, what="cursor on the durable run")
    await pilot.press("R")
    return runs


def app_on(location: PostgresLocation) -> Any:
    return create_app(location, operator="alice", read_only=False, clock=fixed_clock, poll_interval=0.05)


async def test_resume_on_postgres_is_recorded_for_the_live_durable_engine(pg_url: str) -> None:
    location = durable_fleet(pg_url)
    publish(location, ENGINE_A, pickup=True, auto_resume=True)  # A (alive) takes requests
    publish(location, ENGINE_C, pickup=True, auto_resume=True)  # C would, but it stopped
    app = app_on(location)
    async with app.run_test(size=(160, 48)) as pilot:
        runs = await resume_selected(pilot)
        form = await modal(pilot)
        assert f"resume run {DURABLE} (deal-desk, failed" in form.body.plain
        assert f"A durable engine on this Postgres store, {ENGINE_A} (pid 4101 on host-a), takes it" \
            in form.body.plain
        await fill(pilot, reason="pricing-api is back")
        await submit(pilot)
        await wait_for(pilot, lambda: "recorded (audit row" in runs.hint, what="resume recorded")
        assert f"{ENGINE_A} (pid 4101 on host-a), takes it within seconds" in runs.hint
        assert "or one of" not in runs.hint  # the stopped engine is not counted
        assert notified(app, f"Resume of run {DURABLE} recorded")
    [entry] = resumes(location)
    assert (entry.actor, entry.target, entry.reason) == ("alice", f"run:{DURABLE}", "pricing-api is back")
    assert entry.after["status"] == "failed"


async def test_resume_on_postgres_with_no_live_durable_engine_says_so_before_asking(pg_url: str) -> None:
    location = durable_fleet(pg_url)
    publish(location, ENGINE_A, pickup=False, auto_resume=False)  # alive, but takes no requests (closing)
    app = app_on(location)
    async with app.run_test(size=(160, 48)) as pilot:
        runs = await resume_selected(pilot)
        said = "No live durable engine on this Postgres store takes resume requests"
        await wait_for(pilot, lambda: notified(app, said), what="why not")
        assert said in runs.hint and "nothing was written" in runs.hint
        assert not isinstance(app.screen, FormModal)  # nothing asked
        assert app.is_running and app.notifier.store_problem is None
    assert resumes(location) == []


@pytest.mark.slow
async def test_retry_key_on_postgres_starts_the_retry_process_on_the_database(pg_url: str) -> None:
    """y on a Postgres store: the confirmation, then `flightdeck retry` in a process of its own with the store in its
    environment (the URL never on a command line), one more engine on the database; the console opens the new run."""
    import json
    import time

    from tests.console.test_console_retry import on_span
    from tests.durable_support import flightdeck
    from tests.store_pg.pg_durable_support import query

    deal = json.dumps({"account": "ACME-001", "product": "platform", "seats": 100, "requested_discount_pct": 5})
    ran = flightdeck("run", "deal-desk", "--durable", "--speed", "0", "--store", pg_url, "--input", deal, "--json")
    assert ran.returncode == 0, ran.stderr[-3000:]
    original = json.loads(ran.stdout)[0]["id"]
    [deleg] = [span for span, attrs in query(pg_url, "SELECT id, attributes FROM spans WHERE run_id = %s", (original,))
               if json.loads(attrs or "{}").get("path") == "supervisor.1.0"]
    location = pg_location(pg_url)
    app = create_app(location, operator="alice", read_only=False, clock=time.time, poll_interval=0.05)
    async with app.run_test(size=(160, 48)) as pilot:
        view = await on_span(pilot, original, deleg)
        await pilot.press("y")
        form = await fill(pilot, reason="proposal bounced; mail relay fixed")
        assert "1 SIDE EFFECT(S) WILL BE DONE AGAIN" in form.body.plain and "flightdeck-" in form.body.plain
        await submit(pilot)
        await wait_for(pilot, lambda: view.run_id != original, what="the new run opened")
        new_id = view.run_id
        await wait_for(pilot, lambda: notified(app, f"Retry run {new_id} (of {original}) ended completed"),
                       timeout=90, what="the retry process ended")
    assert query(pg_url, "SELECT status FROM runs WHERE id = %s", (new_id,)) == [("completed",)]
    with ControlAPI(location, "reader", create=False, read_only=True) as api:
        [entry] = [e for e in api.audit_log(limit=100) if e.action == "retry"]
    assert (entry.actor, entry.target, entry.after["new_run_id"]) == ("alice", f"run:{original}", new_id)
