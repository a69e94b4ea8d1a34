"""View 8 (queues, serve mode): the rows the engine publishes (traces.db `queues` and `schedules`, written here
through the engine store's writer exactly as the engine writes them), its p/d/o keys (flags queue.NAME and
tenant.NAME through ControlAPI, audited), stale rows with no engine, and the header's queues slot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from console.app import create_app
from tests.console.test_console_actions import fill, modal, notified, submit
from tests.console_helpers import FIXED_NOW, _open_writer, fixed_clock, fixed_store, register_engine, wait_for

pytestmark = pytest.mark.anyio

# (queue, tenant, hierarchy, depth, running, oldest_age_s, admitted_per_min, rejected_total, max_depth, concurrency,
#  rate_limit, admission) -- `updated` is added by write_queues.
QUEUES = (
    ("support-triage", "", "support-triage", 12, 2, 40.0, 30.0, 0, 500, 4, "60/1m", "open"),
    ("support-triage", "globex", "support-triage", 12, 2, 40.0, 30.0, 0, 100, 2, None, "open"),
    ("deal-desk", "", "deal-desk", 430, 4, 95.0, 120.0, 17, 500, 4, "10/1s", "open"),
    ("deal-desk", "acme", "deal-desk", 400, 3, 95.0, 100.0, 15, 450, 2, None, "open"),
    ("deal-desk", "initech", "deal-desk", 30, 1, 12.0, 20.0, 2, 450, 2, None, "open"),
)
# (name, hierarchy, cron, missed, next_fire, last_fire, last_run_id)
SCHEDULES = (
    ("nightly-digest", "support-triage", "0 2 * * *", "skip", FIXED_NOW + 250.0, FIXED_NOW - 86_150.0,
     "a1a1a1a1a1a1"),
    ("quarter-close", "deal-desk", "*/15 * * * *", "run_once", FIXED_NOW + 30.0, None, None),
)


def write_queues(store: Path, queues: tuple[tuple[Any, ...], ...] = QUEUES, *, updated: float = FIXED_NOW - 0.5,
                 schedules: tuple[tuple[Any, ...], ...] = SCHEDULES) -> None:
    writer = _open_writer(store)
    try:
        for row in queues:
            writer.state("queues", row[:2], (*row, updated))
        for sched in schedules:
            writer.state("schedules", sched[:1], (*sched, updated))
        writer.flush()
    finally:
        writer.close()


def queues_store(store: Path, **kwargs: Any) -> Path:
    fixed_store(store)
    write_queues(store, **kwargs)
    return store


@pytest.fixture()
def store(tmp_path: Path) -> Path:
    return queues_store(tmp_path / "store")


def app_for(store: Path, **kwargs: Any) -> Any:
    kwargs.setdefault("operator", "alice")
    kwargs.setdefault("read_only", False)
    kwargs.setdefault("clock", fixed_clock)
    return create_app(store, poll_interval=0.05, **kwargs)


async def show_queues(pilot: Any) -> Any:
    await pilot.press("8")
    view = pilot.app.main.view("queues")
    await wait_for(pilot, lambda: view.loaded, what="queues loaded")
    return view


def shown(view: Any) -> list[tuple[str, str]]:
    return [(line.row.queue, line.row.tenant) for line in (view.table.get(k) for k in view.table.visible_keys())]


def text_of(widget: Any) -> str:
    return widget._text.plain if hasattr(widget, "_text") else str(widget.render())


async def test_queues_deepest_first_tenants_under_their_queue_with_words(store: Path) -> None:
    from console.screens.queues_table import queue_cell, schedule_cell

    app = app_for(store)
    async with app.run_test(size=(160, 48)) as pilot:
        view = await show_queues(pilot)
        assert shown(view) == [("deal-desk", ""), ("deal-desk", "acme"), ("deal-desk", "initech"),
                               ("support-triage", ""), ("support-triage", "globex")]
        first = view.table.get(("deal-desk", ""))
        assert queue_cell(first, "admission", FIXED_NOW).plain == "open"
        assert queue_cell(first, "depth", FIXED_NOW).plain == "430/500"
        assert queue_cell(first, "oldest", FIXED_NOW).plain == "1m 35s"
        assert queue_cell(first, "limits", FIXED_NOW) == "4 · 10/1s · max 500"
        assert queue_cell(view.table.get(("deal-desk", "acme")), "name", FIXED_NOW).plain == "  └ tenant acme"
        title = text_of(view.query_one("#queues-title"))
        assert "2 · 442 queued · 6 running" in title and "1 BACKED UP" in title and "as of" not in title
        nightly = view.schedules.get("nightly-digest")
        assert schedule_cell(nightly, "next", FIXED_NOW).plain == "in 4m 10s"
        assert schedule_cell(nightly, "last", FIXED_NOW) == "23h 55m ago"
        assert [view.schedules.get(k).name for k in view.schedules.visible_keys()] == ["quarter-close",
                                                                                          "nightly-digest"]
        assert "Queue deal-desk is backed up (86% of max depth 500)" in view.hint


async def test_paused_admission_is_a_word_not_only_a_colour(tmp_path: Path) -> None:
    from console.screens.queues_table import queue_cell

    rows = ((*QUEUES[0][:11], "paused"), (*QUEUES[2][:11], "draining"))
    store = queues_store(tmp_path / "store", queues=rows)
    app = app_for(store)
    async with app.run_test(size=(160, 48)) as pilot:
        view = await show_queues(pilot)
        paused = queue_cell(view.table.get(("support-triage", "")), "admission", FIXED_NOW)
        draining = queue_cell(view.table.get(("deal-desk", "")), "admission", FIXED_NOW)
        assert (paused.plain, draining.plain) == ("PAUSED", "DRAINING")
        assert "red" in str(paused.style) and "yellow" in str(draining.style)


async def test_empty_store_says_how_to_start_serve_mode(tmp_path: Path) -> None:
    store = fixed_store(tmp_path / "store")
    app = app_for(store)
    async with app.run_test(size=(160, 48)) as pilot:
        view = await show_queues(pilot)
        assert view.table.row_count == 0
        assert "No queue published yet: start serve mode with `flightdeck serve`" in view.hint
        assert "none published" in text_of(view.query_one("#queues-title"))
        await pilot.press("p")
        await wait_for(pilot, lambda: notified(app, "No queue selected"), what="refused")


async def test_rows_no_engine_refreshes_say_as_of_when(tmp_path: Path) -> None:
    store = fixed_store(tmp_path / "store", engine=False)
    register_engine(store, heartbeat=FIXED_NOW - 120, stopped=True)
    write_queues(store, updated=FIXED_NOW - 120)
    app = app_for(store)
    async with app.run_test(size=(160, 48)) as pilot:
        view = await show_queues(pilot)
        assert "as of 07:58:00 (no engine)" in text_of(view.query_one("#queues-title"))
        assert "as of 07:58:00: no engine publishes them now (no engine is running)" in view.hint
        await wait_for(pilot, lambda: "as of 07:58:00 (no engine)" in app.main.header.slot_text("queues"),
                       what="header says stale")
        assert "Queue" not in (app.main.hint_line.alarm or "")  # a stale backlog is not a live alarm
        assert app.main.header.snapshot.values["queues"].level == "warn"


def flags_and_audit(store: Path) -> tuple[dict[str, tuple[str, str]], list[tuple[str, str, str | None]]]:
    from engine.controls.api import ControlAPI

    with ControlAPI(store, "tester") as api:
        flags = {f.name: (f.value, f.operator) for f in api.active_flags()}
        log = [(r.action, r.reason, r.target) for r in api.audit_log() if r.actor == "alice"]
    return flags, log


async def test_p_d_o_set_the_flags_with_a_preview_a_reason_and_an_audit_row(store: Path) -> None:
    app = app_for(store)
    async with app.run_test(size=(160, 48)) as pilot:
        view = await show_queues(pilot)
        view.table.select_key(("deal-desk", "acme"))
        await pilot.press("p")
        form = await modal(pilot)
        body = str(form.query_one("#form-body Static").render())
        assert "Tenant acme of queue deal-desk (deal-desk) is open: 400 queued, 3 running" in body
        assert "tenant.acme=paused: that tenant's submissions are refused (HTTP 503) on every queue" in body
        await fill(pilot, reason="acme floods the queue")
        await submit(pilot)
        await wait_for(pilot, lambda: notified(app, "tenant.acme=paused by alice (audited)"), what="paused")
        view.table.select_key(("deal-desk", ""))
        await pilot.press("d")
        body = str((await modal(pilot)).query_one("#form-body Static").render())
        assert "queue.deal-desk=draining: submissions are refused; queued runs still start" in body
        await fill(pilot, reason="deploy in 5 minutes")
        await submit(pilot)
        await wait_for(pilot, lambda: notified(app, "queue.deal-desk=draining by alice"), what="draining")
        flags, log = flags_and_audit(store)
        assert flags["tenant.acme"] == ("paused", "alice") and flags["queue.deal-desk"] == ("draining", "alice")
        # The published admission does not show it yet (no engine applied it): the row says where it is going.
        await wait_for(pilot, lambda: view.table.get(("deal-desk", "")).pending == "draining", what="pending")
        from console.screens.queues_table import queue_cell

        assert queue_cell(view.table.get(("deal-desk", "")), "admission", FIXED_NOW).plain == "open→DRAINING"
        await pilot.press("o")
        body = str((await modal(pilot)).query_one("#form-body Static").render())
        assert "In force now: queue.deal-desk=draining (o clears it)" in body
        await fill(pilot, reason="deploy done")
        await submit(pilot)
        await wait_for(pilot, lambda: "queue.deal-desk" not in flags_and_audit(store)[0], what="cleared")
        view.table.select_key(("deal-desk", "initech"))
        await pilot.press("d")  # a tenant has no draining state
        await wait_for(pilot, lambda: notified(app, "A tenant cannot be drained"), what="refused")
        assert not isinstance(app.screen, type(form))
        footer_keys = {b.binding.key for b in app.screen.active_bindings.values() if b.binding.show}
        assert {"p", "d", "o"} <= footer_keys
    flags, log = flags_and_audit(store)
    assert flags == {"tenant.acme": ("paused", "alice")}
    assert sorted(log) == [("flag_cleared", "deploy done", "queue.deal-desk@global"),
                           ("flag_set", "acme floods the queue", "tenant.acme@global"),
                           ("flag_set", "deploy in 5 minutes", "queue.deal-desk@global")]


async def test_escape_in_the_preview_changes_nothing_and_read_only_refuses(store: Path) -> None:
    app = app_for(store)
    async with app.run_test(size=(160, 48)) as pilot:
        await show_queues(pilot)
        await pilot.press("p")
        await modal(pilot)
        await pilot.press("escape")
        await wait_for(pilot, lambda: notified(app, "Nothing was changed."), what="cancelled")
    assert flags_and_audit(store) == ({}, [])
    app = app_for(store, read_only=True)
    async with app.run_test(size=(160, 48)) as pilot:
        await show_queues(pilot)
        await pilot.press("p")
        await wait_for(pilot, lambda: notified(app, "read-only console"), what="refused")
    assert flags_and_audit(store) == ({}, [])


def header_line(app: Any, row: int) -> str:
    return app.main.header._slot_line(row, False, 160).plain


async def test_header_shows_queue_depth_and_the_backed_up_alarm_pointing_to_view_8(store: Path) -> None:
    app = app_for(store)
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_for(pilot, lambda: app.main.header.slot_text("queues") != "", what="queues slot")
        assert app.main.header.slot_text("queues") == "442 queued · 1 BACKED UP (deal-desk)"
        assert "queues 442 queued · 1 BACKED UP (deal-desk)" in header_line(app, 1)
        await wait_for(pilot, lambda: app.main.hint_line.alarm is not None, what="alarm")
        assert app.main.hint_line.alarm == ("Queue deal-desk is backed up (86% of max depth 500): press 8, pause its "
                                            "noisiest tenant (p) or drain it (d).")
        await show_queues(pilot)
        await wait_for(pilot, lambda: "select its noisiest tenant" in (app.main.hint_line.alarm or ""),
                       what="alarm here")


async def test_healthy_queues_are_calm_and_a_store_without_serve_mode_has_no_queues_slot(tmp_path: Path) -> None:
    calm = tuple((*row[:5], 1.0, *row[6:]) for row in QUEUES if row[0] == "support-triage")
    store = queues_store(tmp_path / "calm", queues=calm)
    app = app_for(store)
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_for(pilot, lambda: app.main.header.slot_text("queues") != "", what="queues slot")
        assert app.main.header.snapshot.values["queues"].level == "ok"
        assert "queues 12 queued · 2 running" in header_line(app, 1)
    app = app_for(fixed_store(tmp_path / "plain"))
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_for(pilot, lambda: app.main.header.snapshot is not None, what="header")
        assert "queues" not in header_line(app, 1)


def test_a_backed_up_queue_ranks_after_open_breakers_and_before_kill_switches() -> None:
    from console.widgets.header import SlotValue, urgency

    crit = SlotValue("x", "crit")
    assert urgency("breakers", crit) > urgency("queues", crit) > urgency("kill_switches", crit)
    assert urgency("queues", crit) > urgency("safe_mode", crit)


def test_backed_up_reasons() -> None:
    from console.queue_status import backed_up, relative
    from engine.store.trace_rows import QueueRow

    base = QueueRow("q", "", "h", 10, 0, 5.0, 1.0, 0, 100, 2, None, "open", FIXED_NOW)
    assert backed_up(base) is None
    assert backed_up(QueueRow("q", "", "h", 80, 0, 5.0, 1.0, 0, 100, 2, None, "open", FIXED_NOW)) == \
        "80% of max depth 100"
    assert backed_up(QueueRow("q", "", "h", 1, 0, 301.0, 1.0, 0, None, 2, None, "open", FIXED_NOW)) == \
        "oldest waiting 5m 1s"
    assert backed_up(QueueRow("q", "", "h", 0, 0, None, 0.0, 0, 100, 2, None, "paused", FIXED_NOW)) == \
        "admission paused"
    assert relative(FIXED_NOW + 250, FIXED_NOW) == "in 4m 10s"
    assert relative(FIXED_NOW - 7300, FIXED_NOW) == "2h 1m ago"
    assert relative(FIXED_NOW, FIXED_NOW) == "now" and relative(None, FIXED_NOW) == "-"


async def test_sorts_keep_tenants_under_their_queue_and_the_command_line_opens_the_view(store: Path) -> None:
    app = app_for(store)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("colon", *":queues"[1:], "enter")
        view = app.main.view("queues")
        await wait_for(pilot, lambda: view.loaded and app.main.active_id == "queues", what=":queues")
        await pilot.press("s")  # oldest item first
        assert shown(view) == [("deal-desk", ""), ("deal-desk", "acme"), ("deal-desk", "initech"),
                               ("support-triage", ""), ("support-triage", "globex")]
        await pilot.press("s", "s")  # queue, A to Z
        await pilot.press("S")  # reversed: support-triage first, its tenant still under it
        assert shown(view)[0] == ("support-triage", "") and shown(view)[1][0] == "support-triage"
        assert "sorted by queue, reversed" in text_of(view.query_one("#queues-title"))
        await pilot.press("S")
        assert shown(view)[0] == ("deal-desk", "")
        await pilot.press("slash", *"initech", "enter")
        await wait_for(pilot, lambda: shown(view) == [("deal-desk", "initech")], what="filtered")


async def test_rows_update_in_place_as_the_engine_publishes(store: Path) -> None:
    app = app_for(store)
    async with app.run_test(size=(160, 48)) as pilot:
        view = await show_queues(pilot)
        view.table.select_key(("support-triage", "globex"))
        drained = tuple((*r[:3], 0 if r[0] == "deal-desk" else r[3], *r[4:]) for r in QUEUES)
        write_queues(store, drained, updated=FIXED_NOW - 0.2)
        await wait_for(pilot, lambda: view.table.get(("deal-desk", "")).row.depth == 0, what="new depth")
        assert shown(view)[0] == ("support-triage", "")  # now the deepest
        assert view.table.cursor_key == ("support-triage", "globex")  # the cursor follows its row
        await wait_for(pilot, lambda: app.main.header.slot_text("queues") == "12 queued · 6 running",
                       what="header calm again")
        assert "Queues healthy" in view.hint
