"""Retry from a span in the run view (issue 13): y shows what `flightdeck retry RUN --from SPAN` would do (side effects
done AGAIN first, the budget, what replays and what runs again), requires a reason, then starts `flightdeck retry`
in a process of its own (it writes the audit row `retry` and runs the new run) and opens the new run. Spans that
cannot be retried from, an engine holding the store and a read-only console are refused on the hint line, nothing
written. Real store files, the real app under Pilot, a real `flightdeck retry` process on the real engine.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from console.app import create_app
from console.widgets.modals import FormModal
from engine.controls.api import ControlAPI
from tests.console.test_console_actions import fill, modal, notified, submit
from tests.console_helpers import (
    RETRY_RUN,
    engine_store,
    register_engine,
    retry_store,
    span_id_of,
    utc,  # noqa: F401 - an autouse fixture: pins TZ=UTC
    wait_for,
)
from tests.durable_support import flightdeck
from tests.engine_helpers import spans

pytestmark = pytest.mark.anyio

TO_PRICING = span_id_of(RETRY_RUN, 4)  # the delegation to pricing: apply_discount and send_proposal run again


def app_for(store: Path, *, read_only: bool = False) -> Any:
    return create_app(store, operator="alice", read_only=read_only, clock=time.time, poll_interval=0.05)


def retries(store: Path) -> list[Any]:
    with ControlAPI(store, "reader") as api:
        return [e for e in api.audit_log(limit=1000) if e.action == "retry"]


def run_row(store: Path, run_id: str) -> tuple[str, str] | None:
    conn = sqlite3.connect(f"file:{store / 'traces.db'}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT status, attributes FROM runs WHERE id = ?", (run_id,)).fetchone()
    finally:
        conn.close()
    return (row[0], row[1]) if row else None


async def on_span(pilot: Any, run_id: str, span_id: str) -> Any:
    """The run view on `run_id`, its whole tree in, with the cursor on `span_id`."""
    app = pilot.app
    app.main.run_command(f":run {run_id}")
    view = app.main.view("run")
    await wait_for(pilot, lambda: view.is_mounted and view.run is not None and view.run.id == run_id
                   and span_id in view.tree.nodes and not view.spans, what="the run's tree")
    view.tree.reveal(view.tree.nodes[span_id])
    view.tree.focus()
    await wait_for(pilot, lambda: view.detail.span is not None and view.detail.span.get("id") == span_id,
                   what="the span selected")
    return view


async def test_retry_preview_shows_the_limits_the_original_started_with(tmp_path: Path) -> None:
    # The retry process starts with the original's --budget overrides (engine/runtime/retry_preview.py): the
    # confirmation says so instead of the hierarchy's limits.
    store = retry_store(tmp_path / "store", budget={"model_calls": 9})
    app = app_for(store)
    async with app.run_test(size=(160, 48)) as pilot:
        await on_span(pilot, RETRY_RUN, TO_PRICING)
        await pilot.press("y")
        form = await modal(pilot)
        assert "model_calls 9: the original's --budget overrides" in form.body.plain
        await pilot.press("escape")


async def test_retry_preview_lists_side_effects_done_again_first(tmp_path: Path) -> None:
    store = retry_store(tmp_path / "store")
    app = app_for(store)
    async with app.run_test(size=(160, 48)) as pilot:
        view = await on_span(pilot, RETRY_RUN, TO_PRICING)
        await pilot.press("y")
        form = await modal(pilot)
        body = form.body.plain
        assert form.form_title == f"Retry run {RETRY_RUN} from span {TO_PRICING}"
        assert form.has_class("-danger")  # the red border: side effects are done again
        warning = body.index("2 SIDE EFFECT(S) WILL BE DONE AGAIN")
        assert warning < body.index("budget:") < body.index("replays (1 recorded") < body.index("runs again (8")
        assert body.index("apply_discount") < body.index("budget:") and body.index("send_proposal") < body.index(
            "budget:")
        assert "The original spent $0.0160 in 6 model calls" in body and "(no run limit)" in body  # deal-desk: none
        # The warning is drawn bold red, not only worded.
        style = next(str(span.style) for span in form.body.spans if span.start <= warning < span.end)
        assert "bold" in style and "red" in style
        # No reason: refused inside the form. Esc: nothing written, nothing started.
        await submit(pilot)
        assert isinstance(app.screen, FormModal)
        await pilot.press("escape")
        await wait_for(pilot, lambda: "was not retried (nothing was written)" in view.hint, what="cancel hint")
    assert retries(store) == [] and not (store / "retries").exists()


@pytest.fixture()
def ran(tmp_path: Path) -> tuple[Path, Any]:
    """A store with one deal-desk run by the real engine (its spans carry call paths), and the run's result."""
    store = tmp_path / "store"
    [original] = engine_store(store, runs=1)
    return store, original


@pytest.mark.slow
async def test_retry_key_starts_the_new_run_and_opens_it(ran: tuple[Path, Any]) -> None:
    store, original = ran
    # From the delegation to the proposal writer: the pricing work replays, send_proposal is done again.
    [deleg] = [s.id for s in spans(store, original.run_id) if s.attributes.get("path") == "supervisor.1.0"]
    app = app_for(store)
    async with app.run_test(size=(160, 48)) as pilot:
        view = await on_span(pilot, original.run_id, deleg)
        await pilot.press("y")
        form = await fill(pilot, reason="proposal bounced; mail relay fixed")
        assert "1 SIDE EFFECT(S) WILL BE DONE AGAIN" in form.body.plain and "send_proposal" in form.body.plain
        await submit(pilot)
        await wait_for(pilot, lambda: view.run_id != original.run_id, what="the new run opened")
        new_id = view.run_id
        assert notified(app, f"Retry of run {original.run_id} started as run {new_id}")
        await wait_for(pilot, lambda: view.run is not None and view.run.id == new_id, timeout=30,
                       what="the new run's row on screen")
        await wait_for(pilot, lambda: notified(app, f"Retry run {new_id} (of {original.run_id}) ended completed"),
                       timeout=90, what="the retry process ended")
    status, attributes = run_row(store, new_id) or ("", "")
    assert status == "completed" and original.run_id in attributes and deleg in attributes
    [entry] = retries(store)
    assert (entry.actor, entry.target, entry.reason) == ("alice", f"run:{original.run_id}",
                                                         "proposal bounced; mail relay fixed")
    assert entry.after["new_run_id"] == new_id and entry.after["side_effects_again"] == ["send_proposal"]
    assert (store / "retries" / f"{new_id}.log").is_file()


@pytest.mark.slow
async def test_a_retry_process_that_refuses_goes_back_and_says_why(tmp_path: Path) -> None:
    # The console sees no engine alive, but something holds the engine lock (an engine that has not registered yet):
    # flightdeck retry refuses (exit 2, nothing written) and the console says so and shows the original run again.
    from engine.store.lock import StoreLock

    store = retry_store(tmp_path / "store")
    lock = StoreLock.acquire(store)
    try:
        app = app_for(store)
        async with app.run_test(size=(160, 48)) as pilot:
            view = await on_span(pilot, RETRY_RUN, TO_PRICING)
            await pilot.press("y")
            await fill(pilot, reason="try it")
            await submit(pilot)
            await wait_for(pilot, lambda: "did not start" in view.hint, timeout=30, what="the refusal")
            assert f"is in use by engine pid {os.getpid()}" in view.hint and "nothing was written" in view.hint
            assert view.run_id == RETRY_RUN
            assert any(n.severity == "error" and "did not start" in n.message for n in app._notifications)
    finally:
        lock.release()
    assert retries(store) == []


@pytest.mark.parametrize(("run_id", "span", "why"), [
    (RETRY_RUN, span_id_of(RETRY_RUN, 1), "is a run span: a retry starts from a model call"),
    ("a1b2c3d4e5f6", span_id_of("a1b2c3d4e5f6", 3), "has no call path"),
    ("c3d4e5f6a1b2", span_id_of("c3d4e5f6a1b2", 3), "is running"),
])
async def test_retry_key_explains_a_span_it_cannot_retry_from(tmp_path: Path, run_id: str, span: str,
                                                              why: str) -> None:
    store = retry_store(tmp_path / "store")
    app = app_for(store)
    async with app.run_test(size=(160, 48)) as pilot:
        view = await on_span(pilot, run_id, span)
        await pilot.press("y")
        await wait_for(pilot, lambda: why in view.hint, what="the refusal on the hint line")
        assert not isinstance(app.screen, FormModal)
        assert notified(app, why)
    assert retries(store) == [] and not (store / "retries").exists()


async def test_retry_key_refused_while_an_engine_serves_the_store(tmp_path: Path) -> None:
    store = retry_store(tmp_path / "store")
    register_engine(store, heartbeat=time.time() + 60)  # alive, heartbeat fresh: it holds the engine lock
    app = app_for(store)
    async with app.run_test(size=(160, 48)) as pilot:
        view = await on_span(pilot, RETRY_RUN, TO_PRICING)
        await pilot.press("y")
        await wait_for(pilot, lambda: "An engine holds this store (pid 4242 on ops-host)" in view.hint,
                       what="the refusal")
        assert f"flightdeck retry {RETRY_RUN} --from {TO_PRICING}" in view.hint
        assert not isinstance(app.screen, FormModal)
    assert retries(store) == []


async def test_retry_key_refused_in_a_read_only_console(tmp_path: Path) -> None:
    store = retry_store(tmp_path / "store")
    app = app_for(store, read_only=True)
    async with app.run_test(size=(160, 48)) as pilot:
        await on_span(pilot, RETRY_RUN, TO_PRICING)
        await pilot.press("y")
        await pilot.pause()
        assert not isinstance(app.screen, FormModal) and notified(app, "read-only console")
    assert retries(store) == []


@pytest.mark.parametrize(("run_id", "why"), [
    ("NOT-HEX", "is not a run id"),
    (RETRY_RUN, f"run {RETRY_RUN} exists already"),
])
@pytest.mark.slow
def test_retry_cli_run_id_must_be_new(tmp_path: Path, run_id: str, why: str) -> None:
    store = retry_store(tmp_path / "store")
    done = flightdeck("retry", RETRY_RUN, "--from", TO_PRICING, "--run-id", run_id, "--reason", "r", "--yes",
                      "--store", str(store))
    assert done.returncode == 2 and "--run-id" in done.stderr and why in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and retries(store) == []
