"""The header's status lines fit the terminal by urgency (issue 15): the least urgent slot is shortened or hidden,
never cut mid-word ("incidents 1 (1"); hidden alarms are counted ("+N more"); one alarm order for the header and the
hint line. Unit tests of console/widgets/header_fit.py, then Pilot and snapshots on a store where everything is on
fire at once (breakers, approvals about to expire, a kill switch, a flag, incidents, runs waiting to reconcile).

Update the snapshots after an intended change with `pytest tests/console/test_console_header.py --snapshot-update`,
then look at the SVGs under tests/console/__snapshots__/ before committing them.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from console.app import create_app
from console.widgets.header import ALARM_ORDER, LEVELS, SlotValue, urgency
from console.widgets.header_fit import Part, fit_line, fit_parts, fit_sentence
from tests.console.test_console_views_ops import ops_store
from tests.console.test_console_views_rb import write_incidents
from tests.console_helpers import (
    SNAPSHOT_SIZES,
    fixed_clock,
    utc,  # noqa: F401 - an autouse fixture: pins TZ=UTC
    wait_for,
    write_durable_runs,
)


def part(label: str, *forms: str, level: str = "crit", rank: int = 0) -> Part:
    return Part(label, forms, "bold", LEVELS.index(level), (LEVELS.index(level), -rank))


# -- the fit, without a screen ------------------------------------------------------------------------------------

def test_everything_fits_shows_every_long_form() -> None:
    parts = [part("a", "1 open (x)", "1"), part("b", "none", level="ok", rank=1)]
    assert fit_line(parts, 80).plain == " a 1 open (x) │ b none"


def test_calm_slots_give_way_before_any_alarm_is_shortened() -> None:
    parts = [part("breakers", "1 OPEN (tool:crm_lookup)", "1 OPEN", rank=3),
             part("kill switches", "none", level="ok", rank=4),
             part("safe-mode", "off", level="ok", rank=5),
             part("incidents", "3 open · 2 firing", "3 (2 firing)", rank=1)]
    everything = " breakers 1 OPEN (tool:crm_lookup) │ kill switches none │ safe-mode off │ incidents 3 open · 2 firing"
    assert fit_line(parts, 101).plain == everything
    # Narrower: the least urgent calm one goes first (safe-mode), then kill switches, and only then do the alarms
    # shorten (the least urgent first: breakers).
    assert fit_line(parts, 100).plain == everything.replace(" │ safe-mode off", "")
    assert fit_line(parts, 70).plain == " breakers 1 OPEN (tool:crm_lookup) │ incidents 3 open · 2 firing"
    assert fit_line(parts, 55).plain == " breakers 1 OPEN │ incidents 3 open · 2 firing"


def test_alarms_hidden_least_urgent_first_and_counted() -> None:
    parts = [part("breakers", "1 OPEN", rank=4), part("approvals", "2 (25s)", rank=0),
             part("kill switches", "1 !ack", level="warn", rank=5), part("incidents", "3 (2 firing)", rank=2)]
    line = fit_line(parts, 55)
    assert line.plain == " approvals 2 (25s) │ incidents 3 (2 firing) │ +2 more"
    marker = line.spans[-1]
    assert line.plain[marker.start:marker.end] == "+2 more" and marker.style == "bold"  # the worst hidden's colour
    # The most urgent part is kept even when nothing else fits.
    assert fit_line(parts, 20).plain.startswith(" approvals")


@pytest.mark.parametrize("width", range(40, 170, 7))
def test_no_value_is_ever_cut(width: int) -> None:
    parts = [part("needs reconcile", "2 runs · flightdeck reconcile 7d6c5b4a9f8e", "2 · flightdeck reconcile "
                  "7d6c5b4a9f8e", rank=1),
             part("breakers", "1 OPEN (tool:crm_lookup)", "1 OPEN", rank=4),
             part("approvals", "2 pending, next expires in 25s", "2 (25s)", rank=0),
             part("kill switches", "1 active (1 NOT ACKED)", "1 !ack", rank=5),
             part("safe-mode", "tools.side_effects=off", "1 flag(s)", level="warn", rank=6),
             part("incidents", "3 open · 2 firing · 1 unacked", "3 (2 firing)", rank=2)]
    choice, shown = fit_parts(parts, width)
    line = fit_line(parts, width).plain
    assert len(line) <= width
    for p, form, visible in zip(parts, choice, shown, strict=True):
        if visible:
            assert f"{p.label} {p.forms[form]}" in line  # whole, or not there at all
    assert shown[2]  # approvals about to expire: the most urgent, always on screen


def test_one_alarm_order() -> None:
    crit = SlotValue("x", "crit")
    order = sorted(ALARM_ORDER, key=lambda slot_id: urgency(slot_id, crit), reverse=True)
    assert order[:7] == ["approvals", "reconcile", "incidents", "engines", "breakers", "queues", "kill_switches"]
    # A calm slot never outranks an alarm, whatever its place.
    assert urgency("approvals", SlotValue("none pending", "ok")) < urgency("safe_mode", SlotValue("x", "warn"))


# -- on screen, everything on fire at once -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    counter = itertools.count(1)
    # Approval ids are on screen (the hint line), so they are fixed; incident ids are not (only counts are).
    with mock.patch("engine.controls.approvals.secrets.token_hex", lambda n: f"{next(counter):0{n * 2}x}"):
        path = ops_store(tmp_path_factory.mktemp("header") / "store")
        write_durable_runs(path)
        write_incidents(path)
        yield path


def app_for(store: Path) -> Any:
    return create_app(store, operator="alice", read_only=True, clock=fixed_clock, poll_interval=0.05)


async def _ready(pilot: Any) -> None:
    app = pilot.app
    header = app.main.header
    alerts = app.main.view("approvals").alerts
    await wait_for(pilot, lambda: header.snapshot is not None and header.slot_text("incidents").startswith("3 open")
                   and header.slot_text("reconcile").startswith("2 runs") and alerts.seen is not None
                   and app.main.view("runs").table.total_count == 13, what="header and runs")
    app.clear_notifications()
    await pilot.pause()


@pytest.mark.parametrize("size", SNAPSHOT_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_header_on_fire_snapshot(snap_compare: Any, store: Path, size: tuple[int, int]) -> None:
    assert snap_compare(app_for(store), terminal_size=size, run_before=_ready)


@pytest.mark.anyio
@pytest.mark.parametrize("size", SNAPSHOT_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
async def test_header_lines_fit_without_cutting_a_value(store: Path, size: tuple[int, int]) -> None:
    from console.widgets.header import HEADER_SLOTS

    app = app_for(store)
    async with app.run_test(size=size) as pilot:
        await _ready(pilot)
        header = app.main.header
        lines = header.render().split("\n")
        assert len(lines) == 3
        for line in lines:
            assert line.cell_len <= size[0], line.plain
        values = header.snapshot.values
        for slot in HEADER_SLOTS:
            row = lines[slot.row].plain
            value = values[slot.id]
            if f" {slot.label} " in row:  # shown: one of its forms, whole
                assert f"{slot.label} {value.text}" in row or f"{slot.label} {value.short}" in row, (slot.id, row)
        # The most urgent alarms are on screen at both widths: runs waiting to reconcile (with the command), the
        # approval about to expire, the firing sev2 incident.
        row = lines[2].plain
        assert row.startswith(" needs reconcile 2")
        assert "flightdeck reconcile" in row and "approvals 2" in row
        # At 100 columns the sev2 incident gives way (it comes after reconcile in the alarm order), counted.
        assert "incidents 3" in row if size[0] >= 160 else row.endswith(" │ +4 more")
        # One order: the approval about to expire speaks on the hint line, before everything else.
        assert app.main.hint_line.sentence.startswith("Approval ap-00000001 (apply_discount) expires in")


@pytest.mark.anyio
@pytest.mark.parametrize(("width", "operator"), [(160, True), (120, True), (100, False)])
async def test_the_operator_keeps_their_name_beside_nine_views_down_to_compact_labels(
        store: Path, width: int, operator: bool) -> None:
    app = app_for(store)
    async with app.run_test(size=(width, 40)) as pilot:
        await _ready(pilot)
        title = app.main.header.render().split("\n")[0]
        assert title.cell_len <= width and "9 Evals" in title.plain
        assert ("alice · read-only" in title.plain) is operator, title.plain
        assert ("FLIGHTDECK" in title.plain) is (width >= 160), title.plain  # 120: compact labels keep the name
        assert "read-only" in title.plain


@pytest.mark.anyio
async def test_alarm_never_points_to_the_view_you_are_on(store: Path) -> None:
    app = app_for(store)
    async with app.run_test(size=(160, 48)) as pilot:
        await _ready(pilot)
        hint = app.main.hint_line
        assert hint.sentence.endswith("press 3 to decide.")
        await pilot.press("3")
        await wait_for(pilot, lambda: "a approves, d denies" in hint.sentence, what="alarm on view 3")
        assert "press 3" not in hint.sentence and hint.sentence.startswith("Approval ap-00000001")
        await pilot.press("1")
        await wait_for(pilot, lambda: hint.sentence.endswith("press 3 to decide."), what="alarm on view 1")


@pytest.mark.anyio
async def test_kill_switch_on_an_ended_run_is_spent_not_an_alarm(tmp_path: Path) -> None:
    from engine.controls.api import ControlAPI
    from tests.console_helpers import fixed_store

    store = fixed_store(tmp_path / "store")
    with ControlAPI(store, "bob") as api:
        api.set_kill("run", "1b2c3d4e5f0a", "kill", "runaway spend")  # that run has ended (killed)
    app = app_for(store)
    async with app.run_test(size=(100, 30)) as pilot:
        header = app.main.header
        await wait_for(pilot, lambda: header.snapshot is not None, what="header")
        value = header.snapshot.values["kill_switches"]
        assert (value.text, value.level, value.alarm) == ("1 spent (run ended)", "info", None)
        assert "kill switch" not in (app.main.hint_line.alarm or "")
        with ControlAPI(store, "bob") as api:
            api.set_kill("run", "c3d4e5f6a1b2", "kill", "looping")  # a running run: in force
        await wait_for(pilot, lambda: header.slot_text("kill_switches").startswith("1 active"), what="in force")
        value = header.snapshot.values["kill_switches"]
        assert value.text == "1 active (1 NOT ACKED) · 1 spent" and value.level == "crit"


def test_the_hint_line_cuts_the_description_of_an_alarm_never_what_to_press() -> None:
    """At 100 columns the demo's incident alarm ended "... press 6 f": the key to press was what got cut."""
    alarm = ("sev2 incident inc-fa0e311b is firing (tool-failure-storm on tool:competitor_research): press 6 for its "
             "runbook, a to acknowledge it.")
    assert fit_sentence(alarm, 200) == alarm
    fitted = fit_sentence(alarm, 97)
    assert len(fitted) == 97 and fitted.endswith("…: press 6 for its runbook, a to acknowledge it.")
    assert fitted.startswith("sev2 incident inc-fa0e311b is firing")
    assert fit_sentence("no colon in this sentence at all", 10) == "no colon in this sentence at all"  # Rich cuts it


def test_the_console_header_does_not_raise_a_live_alarm_for_an_unwatched_incident(store_dir: Path) -> None:
    from typing import Any, cast

    from console.incident_slots import incidents_slot
    from console.widgets.header import HeaderContext
    from engine.controls.incidents import IncidentStore
    from engine.store.control import ControlDB

    store_dir.mkdir(parents=True)
    db = ControlDB.open(store_dir)
    try:
        IncidentStore(db).open_or_update(
            runbook="looping-agent", title="Loop", severity="sev2", apply_mode="auto", scope="agent:a",
            readings=[{"signal": "loop_detected", "value": 3, "fired": True}], context={}, summary="loop",
            actor="runbook:looping-agent", engine_id="e1")

        def slot(alive: int) -> Any:
            ctx = HeaderContext(reader=cast(Any, None), control=db, now=0.0, store_dir=store_dir,
                                cache={"engines": {"alive": alive}})
            return incidents_slot(ctx)

        watched, unwatched = slot(1), slot(0)
    finally:
        db.close()
    assert watched.level == "crit" and watched.alarm and "1 firing" in watched.text
    assert unwatched.level == "warn" and not unwatched.alarm
    assert unwatched.text == "1 open · 1 firing when last watched (no engine)"


def test_the_runbooks_view_does_not_call_an_unwatched_incident_firing(store_dir: Path) -> None:
    """The runbooks view agrees with the header: with no engine alive, a firing incident is `FIRING?` (what the
    last engine saw) in its table, its detail, its runbook's STATE and the view's title, in yellow, not red."""
    from rich.text import Text

    from console.screens.runbooks_detail import incident_detail, state_text, title_text
    from console.views_data import runbooks_selection as selection
    from console.views_data.runbooks_feed import RunbooksSnapshot
    from engine.controls.incidents import IncidentStore, list_incidents
    from engine.store.control import ControlDB

    store_dir.mkdir(parents=True)
    db = ControlDB.open(store_dir)
    try:
        IncidentStore(db).open_or_update(
            runbook="looping-agent", title="Loop", severity="sev2", apply_mode="auto", scope="agent:a",
            readings=[{"signal": "loop_detected", "value": 3, "fired": True}], context={}, summary="loop",
            actor="runbook:looping-agent", engine_id="e1")
    finally:
        db.close()
    incidents = list_incidents(store_dir, active_only=True)
    watched = RunbooksSnapshot(incidents, [], [], None, True)
    unwatched = RunbooksSnapshot(incidents, [], [], None, False)
    assert selection.incident_state(watched, incidents[0]) == "firing"
    assert selection.incident_state(unwatched, incidents[0]) == "firing?"
    assert selection.detection_state(watched, "looping-agent")[0].startswith("FIRING")
    words, style = selection.detection_state(unwatched, "looping-agent")
    assert words == "FIRING? when last watched (no engine)" and "red" not in style
    assert state_text("firing?").plain == "FIRING?" and "red" not in str(state_text("firing?").style)
    detail = Text()
    incident_detail(detail, incidents[0], None, 0.0, suggested=False, state="firing?")
    assert "no engine is running now" in detail.plain
    assert "1 firing when last watched (no engine)" in title_text(incidents, 3, read_only=False, problem=None,
                                                                   watched=False).plain
    assert "1 firing ·" in title_text(incidents, 3, read_only=False, problem=None).plain
