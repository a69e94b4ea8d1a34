"""Issue 16: view 6 (runbooks and incidents) on a Postgres store. The incidents are the Postgres control plane's
(tests/console_fleet_support.py fleet_incidents), the runbooks the shipped ones (as `flightdeck runbooks list` shows
there), and the view's actions are written to the database through ControlAPI, with their audit rows. The real app
under Pilot on a real PostgreSQL on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from console.app import create_app
from console.screens.runbooks_detail import POSTGRES_HINT
from engine.store.location import PostgresLocation
from tests.console.test_console_views_rb import answer
from tests.console_fleet_support import FLEET_INCIDENTS, fleet_incidents, fleet_store
from tests.console_helpers import fixed_clock, utc, wait_for  # noqa: F401 - utc: an autouse fixture (TZ=UTC)
from tests.pg_support import EmbeddedPostgres

pytestmark = pytest.mark.anyio

SIZE = (160, 48)
LOOPING, QUIET = FLEET_INCIDENTS


@pytest.fixture
def fleet(postgres_server: EmbeddedPostgres) -> Iterator[PostgresLocation]:
    """A fresh database per test: the tests write to it."""
    url = postgres_server.create_database()
    try:
        yield fleet_incidents(fleet_store(url))
    finally:
        postgres_server.drop_database(url)


def app_on(location: PostgresLocation, *, read_only: bool = False) -> Any:
    return create_app(location, operator="alice", read_only=read_only, clock=fixed_clock, poll_interval=0.05)


async def open_runbooks(pilot: Any) -> Any:
    await pilot.press("6")
    view = pilot.app.main.view("runbooks")
    await wait_for(pilot, lambda: view.snapshot is not None and view.incidents_table.row_count == 2,
                   what="the Postgres control plane's incidents")
    return view


async def test_view_6_lists_the_postgres_incidents_and_the_shipped_runbooks(fleet: PostgresLocation) -> None:
    from engine.runbooks.loader import load_runbooks

    app = app_on(fleet, read_only=True)
    async with app.run_test(size=SIZE) as pilot:
        view = await open_runbooks(pilot)
        assert [i.id for i in view.incidents] == [LOOPING, QUIET]  # firing and not acknowledged first
        assert view.incidents[1].acknowledged_by == "bob"
        assert [rb.id for rb in view.runbooks] == [rb.id for rb in load_runbooks(None)]  # the shipped ones
        title = view.query_one("#rb-title").plain
        assert f"2 open · 1 firing · 1 not acknowledged · {len(view.runbooks)} shipped runbooks" in title
        assert view.hint.endswith(POSTGRES_HINT)  # what is not there on Postgres, on the hint line
        # The dry run of the selected incident's runbook reads the Postgres control plane too.
        await wait_for(pilot, lambda: view.plan is not None and view.plan.incident_id == LOOPING, what="dry run")
        assert view.plan.error is None and view.plan.steps
        assert any("3 loops" in note.text for note in view.plan.timeline)  # its time line, from the database
        assert app.notifier.count == 0, app.notifier.store_problem


async def test_ack_from_view_6_is_written_to_postgres_and_audited(fleet: PostgresLocation) -> None:
    from engine.controls.api import ControlAPI
    from engine.controls.incidents import IncidentStore

    app = app_on(fleet)
    async with app.run_test(size=SIZE) as pilot:
        view = await open_runbooks(pilot)
        assert view.selected_incident.id == LOOPING
        await pilot.press("a")
        await answer(pilot, "on it from the fleet console")
        await wait_for(pilot, lambda: view.selected_incident is not None
                       and view.selected_incident.acknowledged_by == "alice", what="acknowledged on screen")
        await pilot.press("n")
        await answer(pilot, "pricing agent restarted on host-a")
        await wait_for(pilot, lambda: "pricing agent restarted on host-a" in str(view.query_one("#rb-detail").render()),
                       what="the note on the time line")
        assert app.notifier.store_problem is None
    with ControlAPI(fleet, "auditor", create=False) as api:
        incident = IncidentStore(api.db).get(LOOPING)
        assert (incident.status, incident.acknowledged_by) == ("acknowledged", "alice")
        mine = [(e.action, e.target, e.reason) for e in reversed(api.audit_log(limit=20)) if e.actor == "alice"]
        assert mine == [("incident_ack", LOOPING, "on it from the fleet console"),
                        ("incident_note", LOOPING, "pricing agent restarted on host-a")]
        assert api.verify_audit(None).ok


async def test_ack_of_an_incident_already_acknowledged_says_so_without_writing(fleet: PostgresLocation) -> None:
    from engine.controls.api import ControlAPI
    from tests.console.test_console_actions import notified

    app = app_on(fleet)
    async with app.run_test(size=SIZE) as pilot:
        view = await open_runbooks(pilot)
        await pilot.press("down")
        await wait_for(pilot, lambda: view.selected_incident is not None and view.selected_incident.id == QUIET,
                       what="the acknowledged incident")
        await pilot.press("a")
        await answer(pilot, "me too")
        await wait_for(pilot, lambda: notified(app, "already acknowledged"), what="the refusal")
        assert app.is_running
    with ControlAPI(fleet, "auditor", create=False) as api:
        assert not [e for e in api.audit_log(limit=20) if e.actor == "alice"]


async def test_apply_then_roll_back_from_view_6_on_postgres(fleet: PostgresLocation) -> None:
    from console.screens.text_prompt import TextPrompt
    from engine.controls.api import ControlAPI
    from engine.runbooks import actions

    def my_audit() -> list[str]:
        with ControlAPI(fleet, "auditor", create=False) as api:
            return [e.action for e in reversed(api.audit_log(limit=50)) if e.actor == "alice"]

    app = app_on(fleet)
    async with app.run_test(size=SIZE) as pilot:
        view = await open_runbooks(pilot)
        assert view.selected_incident.id == LOOPING
        await pilot.press("p")
        await wait_for(pilot, lambda: isinstance(app.screen, TextPrompt), what="the apply confirmation")
        assert "Dry run: applying looping-agent to agent:pricing would:" in str(app.screen.body)
        await answer(pilot, "stop the loop on host-a")
        await wait_for(pilot, lambda: "runbook_applied" in my_audit(), what="applied, in the Postgres audit log")
        await wait_for(pilot, lambda: view.applications_for("looping-agent", "agent:pricing", LOOPING),
                       what="the application in force on screen")
        await pilot.press("b")
        await wait_for(pilot, lambda: isinstance(app.screen, TextPrompt), what="the rollback confirmation")
        await answer(pilot, "loop fixed upstream")
        await wait_for(pilot, lambda: "runbook_rolled_back" in my_audit(), what="rolled back")
        assert app.notifier.store_problem is None
    with ControlAPI(fleet, "auditor", create=False) as api:
        assert actions.active_applications(api.db) == []  # nothing of it left in force
        assert api.verify_audit(None).ok


async def test_view_6_on_postgres_shows_the_runbooks_of_the_configs_runbooks_dir(
        fleet: PostgresLocation, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from console.screens.runbooks_detail import POSTGRES_CONFIG_HINT
    from engine.runbooks.loader import load_runbooks, shipped_dir

    (tmp_path / "rb").mkdir()
    text = (shipped_dir() / "cost-spike.md").read_text().replace("id: cost-spike", "id: cost-spike-local", 1)
    (tmp_path / "rb" / "cost-spike-local.md").write_text(text)
    (tmp_path / "engine.toml").write_text('[runbooks]\ndir = "rb"\n')
    monkeypatch.setenv("FLIGHTDECK_CONFIG", str(tmp_path / "engine.toml"))  # what the fleet's engines read
    app = app_on(fleet, read_only=True)
    async with app.run_test(size=SIZE) as pilot:
        view = await open_runbooks(pilot)
        ids = [rb.id for rb in view.runbooks]
        assert "cost-spike-local" in ids and len(ids) == len(load_runbooks(None)) + 1
        title = view.query_one("#rb-title").plain
        assert f"· {len(ids)} runbooks" in title and "shipped runbooks" not in title
        assert view.hint.endswith(POSTGRES_CONFIG_HINT)
