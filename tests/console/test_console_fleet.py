"""Issue 16: one console for the whole fleet, on a Postgres store. Three engines registered on one database (alive,
STALE, stopped; tests/console_fleet_support.py), runs of each, a breaker two engines publish under the same name.
The real app under Pilot on a real PostgreSQL on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from console.app import create_app
from console.screens.breakers_fleet import fleet_cell
from console.screens.engines import engine_cell
from engine.errors import StoreError
from engine.store.location import PostgresLocation
from tests.console_fleet_support import ENGINE_A, ENGINE_B, ENGINE_C, FLEET_RUNS, fleet_store, pg_location
from tests.console_helpers import FIXED_NOW, fixed_clock, utc, wait_for  # noqa: F401 - utc: an autouse fixture (TZ=UTC)
from tests.pg_support import EmbeddedPostgres

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def fleet(postgres_server: EmbeddedPostgres) -> Iterator[PostgresLocation]:
    url = postgres_server.create_database()
    try:
        yield fleet_store(url)
    finally:
        postgres_server.drop_database(url)


def app_on(location: PostgresLocation, *, read_only: bool = True) -> Any:
    return create_app(location, operator="alice", read_only=read_only, clock=fixed_clock, poll_interval=0.05)


async def runs_loaded(pilot: Any) -> Any:
    runs = pilot.app.main.view("runs")
    await wait_for(pilot, lambda: runs.table.total_count == len(FLEET_RUNS), what="every engine's runs")
    return runs


async def test_the_console_opens_on_a_postgres_store_with_every_engines_runs(fleet: PostgresLocation) -> None:
    app = app_on(fleet)
    async with app.run_test(size=(160, 48)) as pilot:
        runs = await runs_loaded(pilot)
        assert {item.run.engine_id for item in runs.table.values()} == {ENGINE_A, ENGINE_B, ENGINE_C}
        assert "engine" in [column.key for column in runs.table.columns]
        await wait_for(pilot, lambda: app.main.header.snapshot is not None, what="header")
        assert app.main.header.slot_text("engines") == "1 alive, 1 STALE"  # the fleet's, by the console's clock
        assert "0 Engines" in app.main.header.render().plain  # the fleet's view is in the view bar
        assert app.notifier.count == 0  # nothing the console reads failed on Postgres


async def test_e_shows_one_engines_runs_then_the_next_then_all(fleet: PostgresLocation) -> None:
    app = app_on(fleet)
    async with app.run_test(size=(160, 48)) as pilot:
        runs = await runs_loaded(pilot)
        expected = {engine: {r[0] for r in FLEET_RUNS if r[6] == engine} for engine in (ENGINE_A, ENGINE_B, ENGINE_C)}
        for engine in (ENGINE_A, ENGINE_B, ENGINE_C):  # in engine id order
            await pilot.press("e")
            assert runs.filter.engine == engine
            assert runs.table.row_count == len(expected[engine])
            assert {runs.table.get(key).run.id for key in runs.table.visible_keys()} == expected[engine]
            assert f"engine {engine}" in runs.query_one("#runs-title").plain
        await pilot.press("e")  # past the last engine: every run again
        assert runs.filter.engine is None and runs.table.row_count == len(FLEET_RUNS)
        await pilot.press("e", "p")  # with the problems toggle: engine A's failed run only
        assert {runs.table.get(key).run.id for key in runs.table.visible_keys()} == {"b2c3d4e5f6a1"}
        await pilot.press("escape")  # clears both
        assert runs.filter.empty and runs.table.row_count == len(FLEET_RUNS)


async def test_the_engines_view_lists_the_fleet_and_enter_shows_an_engines_runs(fleet: PostgresLocation) -> None:
    app = app_on(fleet)
    async with app.run_test(size=(160, 48)) as pilot:
        await runs_loaded(pilot)
        await pilot.press("0")
        view = app.main.view("engines")
        await wait_for(pilot, lambda: view.table.total_count == 3, what="three engines")
        lines = {line.id: line for line in view.table.values()}
        assert (lines[ENGINE_A].host, lines[ENGINE_A].pid, lines[ENGINE_A].version) == ("host-a", 4101, "0.9.0")
        assert (lines[ENGINE_A].load, lines[ENGINE_B].load, lines[ENGINE_C].load) == (1, 1, 0)
        assert lines[ENGINE_A].queues == ("deal-desk",)
        assert lines[ENGINE_B].queues == ("deal-desk", "support-triage")
        states = {key: engine_cell(line, "state", FIXED_NOW).plain for key, line in lines.items()}
        assert states == {ENGINE_A: "alive", ENGINE_B: "STALE", ENGINE_C: "stopped"}
        assert view.table.cursor_key == ENGINE_B  # STALE first
        assert "has sent no heartbeat for 40s" in view.hint
        await pilot.press("down")  # engine A (alive)
        assert view.table.cursor_key == ENGINE_A
        await pilot.press("enter")
        runs = app.main.view("runs")
        await wait_for(pilot, lambda: app.main.active_id == "runs" and runs.filter.engine == ENGINE_A,
                       what="the runs view on engine A")
        assert runs.table.row_count == sum(1 for r in FLEET_RUNS if r[6] == ENGINE_A)


async def test_breakers_fleet_wide_count_the_engines_that_see_each_one_open(fleet: PostgresLocation) -> None:
    app = app_on(fleet)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("4")
        view = app.main.view("breakers")
        await wait_for(pilot, lambda: view.loaded and view.table.total_count == 2, what="breakers")
        rows = {key[1]: row for key, row in zip(view.table.keys(), view.table.values(), strict=True)}
        assert rows["tool:price_quote"].state == "open"  # the worst view of it: engine A's
        assert fleet_cell(view.fleet.get(("deal-desk", "tool:price_quote"))).plain == "1/2 open"
        assert fleet_cell(view.fleet.get(("deal-desk", "tool:crm_lookup"))).plain == "0/2 open"
        assert view.table.cursor_key == ("deal-desk", "tool:price_quote")  # open first
        assert "1 of 2 engines see it open" in view.query_one("#breaker-why").plain


async def test_every_view_reads_the_database_without_a_notification(fleet: PostgresLocation) -> None:
    app = app_on(fleet)
    async with app.run_test(size=(160, 48)) as pilot:
        await runs_loaded(pilot)
        await pilot.press("6")  # the runbooks view too (tests/console/test_console_fleet_runbooks.py)
        view = app.main.view("runbooks")
        await wait_for(pilot, lambda: view.snapshot is not None, what="view 6 read the Postgres control plane")
        for key in ("3", "5", "7", "8"):
            await pilot.press(key)
        await pilot.press("1")
        await pilot.pause(0.3)
        assert app.notifier.count == 0, app.notifier.store_problem


def test_console_preflight_refuses_a_database_without_a_trace_store(pg_url: str) -> None:
    from console.commands.ui import preflight

    with pytest.raises(StoreError, match="no Flightdeck trace store"):
        preflight(pg_location(pg_url))


def test_console_preflight_passes_on_a_fleet(fleet: PostgresLocation) -> None:
    from console.commands.ui import preflight

    preflight(fleet)  # no exception: `flightdeck console --store postgresql://...` goes on to open the UI


async def test_a_run_of_the_fleet_opens_with_its_span_tree_and_events(fleet: PostgresLocation) -> None:
    app = app_on(fleet)
    async with app.run_test(size=(160, 48)) as pilot:
        await runs_loaded(pilot)
        app.main.run_command(":run b2c3d4e5f6a1")  # engine A's failed run
        run = app.main.view("run")
        await wait_for(pilot, lambda: run.is_mounted and "b2c3d4e5f6a1-07" in run.tree.nodes and run.events.count > 0,
                       what="the run's spans and events from Postgres")
        assert app.notifier.count == 0


async def test_a_kill_switch_from_the_fleet_console_is_written_to_postgres_and_audited(
        fleet: PostgresLocation) -> None:
    from engine.controls.api import ControlAPI
    from tests.console.test_console_actions import fill, modal, notified, submit

    app = app_on(fleet, read_only=False)
    async with app.run_test(size=(160, 48)) as pilot:
        runs = await runs_loaded(pilot)
        runs.table.select_key("d4e5f6a1b2c3")  # engine A's running run
        await pilot.press("k")
        form = await modal(pilot)
        assert "run:d4e5f6a1b2c3 would stop: 1 run(s)" in str(form.query_one("#form-body Static").render())
        await fill(pilot, reason="runaway discounting on host-a")
        await submit(pilot)
        await wait_for(pilot, lambda: notified(app, "set: run:d4e5f6a1b2c3, mode kill, by alice"), what="set")
    with ControlAPI(fleet, "auditor") as api:
        [switch] = [s for s in api.active_kill_switches() if s.target == "d4e5f6a1b2c3"]
        assert (switch.scope, switch.mode, switch.operator, switch.reason) == (
            "run", "kill", "alice", "runaway discounting on host-a")
        assert api.verify_audit(None).ok


@pytest.mark.anyio
@pytest.mark.parametrize("width", [100, 120, 160])
async def test_ten_views_of_a_fleet_fit_the_title_line_and_no_header_line_wraps(fleet: PostgresLocation,
                                                                                 width: int) -> None:
    app = app_on(fleet)
    async with app.run_test(size=(width, 30)) as pilot:
        await runs_loaded(pilot)
        lines = app.main.header.render().split("\n")
        assert len(lines) == 3
        for line in lines:
            assert line.cell_len <= width, line.plain
        title = lines[0].plain
        # Every number key is named, the active view in full, and the operator's mode is kept.
        assert "1 Runs" in title and "read-only" in title, title
        assert all(f" {key} " in title or f" {key}" in title for key in "1234567890"), title
        assert ("0 Engines" in title) is (width >= 120), title


async def test_a_kill_switch_from_the_console_waits_for_every_live_engine_of_the_fleet(
        postgres_server: EmbeddedPostgres) -> None:
    """On Postgres each engine acknowledges a switch for itself (kill_switch_acks): the console says `acknowledged
    by 2 of 2 live engine(s)` once both did, and names the live engine that did not within the wait."""
    import time

    from engine.controls.api import ControlAPI
    from engine.store.pg.control_db import PgControlDB
    from engine.store.pg.engine_registry import claim_engine_id
    from tests.console.test_console_actions import fill, modal, notified, submit

    url = postgres_server.create_database()
    try:
        location = fleet_store(url)
        engine_d = "host-d/serve-1"
        claim_engine_id(location, engine_id=engine_d, pid=4404, host="host-d", user="ops", version="0.9.0",
                        started=time.time())
        control = PgControlDB(location)
        try:
            control.heartbeat(ENGINE_A)  # alive by the wall clock, which the ack watcher's ControlAPI reads
            control.mark_stopped(ENGINE_B)  # its heartbeat is the fixed clock's: the wall clock cannot judge it
        finally:
            control.close()
        app = app_on(location, read_only=False)
        async with app.run_test(size=(160, 48)) as pilot:
            runs = await runs_loaded(pilot)
            async def kill(run_id: str, ackers: tuple[str, ...]) -> int:
                runs.table.select_key(run_id)
                await pilot.press("k")
                await modal(pilot)
                await fill(pilot, reason=f"drill on {run_id}")
                await submit(pilot)
                await wait_for(pilot, lambda: notified(app, f"set: run:{run_id}"), what="set")
                with ControlAPI(location, "engine") as api:
                    [switch] = [s for s in api.active_kill_switches() if s.target == run_id]
                    for engine_id in ackers:
                        api.ack_kill_switches([switch.id], engine_id)
                return switch.id

            both = await kill("d4e5f6a1b2c3", (ENGINE_A, engine_d))
            await wait_for(pilot, lambda: notified(
                app, f"#{both} (run:d4e5f6a1b2c3) acknowledged by 2 of 2 live engine(s)"), what="both")
            one = await kill("c3d4e5f6a1b2", (ENGINE_A,))
            await wait_for(pilot, lambda: notified(
                app, f"#{one} (run:c3d4e5f6a1b2) acknowledged by 1 of 2 live engine(s)"), what="one")
            assert notified(app, "Not within 3s: host-d/serve-1 (pid 4404 on host-d)")
    finally:
        postgres_server.drop_database(url)


def test_the_header_says_when_a_kill_switch_waits_for_some_live_engine_of_the_fleet(
        postgres_server: EmbeddedPostgres) -> None:
    """A switch one engine of two acknowledged is not shown as acknowledged: each engine stops its own runs, so the
    header says `NOT ACKED BY EVERY ENGINE` until the last live engine did (an engine no longer live does not count)."""
    from typing import cast

    from console.header_slots import kill_switches_slot
    from console.widgets.header import HeaderContext
    from engine.controls.api import ControlAPI
    from engine.store.pg.control_db import PgControlDB

    url = postgres_server.create_database()
    try:
        location = fleet_store(url)
        with ControlAPI(location, "alice") as api:
            switch = api.set_kill("global", None, "kill", "runaway fleet")
            api.ack_kill_switches([switch.id], ENGINE_A)
        control = PgControlDB(location)
        try:
            def slot(live: frozenset[str]) -> str:
                ctx = HeaderContext(reader=cast(Any, None), control=control, now=0.0, store_dir=None,
                                    cache={"engines": {"alive": len(live), "alive_ids": live}})
                value = kill_switches_slot(ctx)
                assert value.level == "crit"
                return value.text + " | " + (value.alarm or "")

            both = frozenset({ENGINE_A, ENGINE_B})
            assert slot(both).startswith("1 active (1 NOT ACKED BY EVERY ENGINE) | 1 kill switch(es) in force, 1 not "
                                         "acknowledged by an engine")
            assert slot(frozenset({ENGINE_A})).startswith("1 active | ")  # B is no longer live: nothing waits
            with ControlAPI(location, "engine") as api:
                api.ack_kill_switches([switch.id], ENGINE_B)
            assert slot(both).startswith("1 active | ")
        finally:
            control.close()
    finally:
        postgres_server.drop_database(url)
