"""RunbookEngine on its own thread, fed committed events through on_commit exactly as the writer does: incidents
are updated rather than duplicated, nothing is applied or paged twice, timed rollbacks wait for quiet, failed pages
are recorded, and runs a dead engine left behind count as abandoned."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from engine.clock import FakeClock
from engine.runbooks.loader import parse_runbook
from engine.runbooks.model import Runbook
from engine.runbooks.runtime import RunbookEngine
from engine.store import open_engine_store
from engine.store.config import StoreConfig, parse_config
from tests.fakes.receiver import Receiver, receiver  # noqa: F401 (receiver is a fixture)

BODY = "\n## What it means\nx\n## How to confirm\nx\n## First steps\nx\n## How to roll back\nx\n## When to escalate\nx\n"


def runbook(front: str) -> Runbook:
    return parse_runbook(("---\n" + front.strip("\n") + "\n---\n" + BODY).encode(), Path("t.md"))


LOOPS = runbook("""
id: loops
title: Loops
severity: sev2
owner: [hook]
detect: {signal: loop_detected, threshold: 2, for: 1m, scope: agent, quiet: 1m}
actions:
  - flag: {name: "agent.{agent}", value: paused, scope: hierarchy}
  - page: {}
apply: auto
rollback: {after: 2m, require_quiet: true}
""")


class Traced:
    def __init__(self) -> None:
        self.events: list[tuple[str, str | None, dict[str, Any]]] = []
        self.lock = threading.Lock()

    def __call__(self, run_id: Any, span_id: Any, kind: str, *, agent: Any = None, name: str | None = None,
                 data: dict[str, Any] | None = None) -> None:
        with self.lock:
            self.events.append((kind, name, data or {}))

    def kinds(self) -> list[str]:
        with self.lock:
            return [k for k, _, _ in self.events]


def config(receiver: Receiver) -> StoreConfig:
    return parse_config(f'[notifiers.hook]\ntype = "webhook"\nurl = "{receiver.url("/hook")}"\n', "config.toml")


def rows(store_dir: Path, sql: str) -> list[dict[str, Any]]:
    conn = sqlite3.connect(store_dir / "control.db")
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(sql).fetchall()]
    finally:
        conn.close()


class Feed:
    def __init__(self) -> None:
        self.seq = 0

    def __call__(self, kind: str, run: str | None = None, agent: str | None = None, name: str | None = None,
                 **data: Any) -> tuple[Any, ...]:
        self.seq += 1
        return (self.seq, kind, run, None, agent, name, data or None)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_engine(store_dir: Path, receiver: Receiver, clock: FakeClock, traced: Traced,
                runbooks: list[Runbook]) -> RunbookEngine:
    store_dir.mkdir(parents=True, exist_ok=True)
    rb = RunbookEngine(store_dir, engine_id="e" * 32, tracer_event=traced, config=config(receiver), runbooks=runbooks,
                       clock=clock, tick=0.05, pager_options={"initial_backoff": 0.01})
    rb.start()
    return rb


def test_firing_again_updates_the_incident_without_applying_or_paging_twice(
        store_dir: Path, receiver: Receiver, clock: FakeClock) -> None:
    traced = Traced()
    rb = make_engine(store_dir, receiver, clock, traced, [LOOPS])
    feed = Feed()
    try:
        rb.on_commit([feed("run.started", "r1", name="h", hierarchy="h"), feed("loop.detected", "r1", "planner"),
                      feed("loop.detected", "r1", "planner")])
        assert rb.settle()
        clock.advance(90)  # the loops left the window: the quiet period starts...
        assert rb.settle()
        rb.on_commit([feed("loop.detected", "r1", "planner"), feed("loop.detected", "r1", "planner")])
        assert rb.settle()  # ...and they are back within it: the same firing, nothing new
        (incident,) = rows(store_dir, "SELECT * FROM incidents")
        assert (incident["fired"], incident["firing"]) == (1, 1)
        clock.advance(70)  # out of the window again; the rollback is due (2 min) but waits for quiet
        assert rb.settle()
        clock.advance(60)  # quiet for a minute: cleared, then rolled back
        assert rb.settle()
        rb.on_commit([feed("loop.detected", "r1", "planner"), feed("loop.detected", "r1", "planner")])
        assert rb.settle()  # it fires again: the incident (not resolved) is updated, the actions applied again
        (incident,) = rows(store_dir, "SELECT * FROM incidents")
        assert (incident["fired"], incident["firing"]) == (2, 1)
        applications = rows(store_dir, "SELECT * FROM runbook_applications ORDER BY id")
        assert [a["rolled_back_by"] for a in applications] == ["runbook:loops", None]
        assert len(receiver.on("/hook")) == 1  # one page per incident, not per firing
        kinds = [r["kind"] for r in rows(store_dir, "SELECT kind FROM incident_events ORDER BY id")]
        assert kinds == ["detected", "applied", "paged", "rollback_postponed", "cleared", "rolled_back", "detected",
                         "applied"]
    finally:
        rb.stop()
    assert rb.errors == []
    assert {"runbook.detected", "runbook.applied", "runbook.page", "runbook.cleared", "runbook.rolled_back"} <= \
        set(traced.kinds())


def test_a_timed_rollback_waits_while_the_signal_still_fires(store_dir: Path, receiver: Receiver,
                                                             clock: FakeClock) -> None:
    rb = make_engine(store_dir, receiver, clock, Traced(), [LOOPS])
    feed = Feed()
    try:
        rb.on_commit([feed("run.started", "r1", name="h", hierarchy="h")])
        for _ in range(4):  # keep looping: two loops every 50 s for 200 s
            rb.on_commit([feed("loop.detected", "r1", "planner"), feed("loop.detected", "r1", "planner")])
            assert rb.settle()
            clock.advance(50)
            assert rb.settle()
        (application,) = rows(store_dir, "SELECT * FROM runbook_applications")
        assert application["rolled_back"] is None  # due after 120 s, but the signal never went quiet
        kinds = [r["kind"] for r in rows(store_dir, "SELECT kind FROM incident_events ORDER BY id")]
        assert kinds.count("rollback_postponed") == 1
        clock.advance(130)  # the loops left the window: the quiet period starts (evaluated once a tick)
        assert rb.settle()
        assert rows(store_dir, "SELECT rolled_back FROM runbook_applications")[0]["rolled_back"] is None
        clock.advance(60)  # quiet for a minute: cleared, and the overdue rollback goes ahead
        assert rb.settle()
        assert rows(store_dir, "SELECT rolled_back_by FROM runbook_applications")[0]["rolled_back_by"] == \
            "runbook:loops"
    finally:
        rb.stop()


def test_a_page_that_cannot_be_sent_is_on_the_time_line(store_dir: Path, receiver: Receiver,
                                                        clock: FakeClock) -> None:
    unconfigured = runbook(LOOPS_TEXT.replace("owner: [hook]", "owner: [nobody]"))
    rb = make_engine(store_dir, receiver, clock, Traced(), [unconfigured])
    feed = Feed()
    try:
        rb.on_commit([feed("run.started", "r", name="h", hierarchy="h"), feed("loop.detected", "r", "a"),
                      feed("loop.detected", "r", "a")])
        assert rb.settle()
    finally:
        rb.stop()
    failed = rows(store_dir, "SELECT * FROM incident_events WHERE kind = 'page_failed'")
    assert [f["text"] for f in failed] == ["could not page nobody (trigger): no notifier named 'nobody' in the store "
                                           "config ([notifiers.nobody])"]
    assert rows(store_dir, "SELECT * FROM flags")  # the actions were applied all the same


LOOPS_TEXT = """
id: loops
title: Loops
severity: sev2
owner: [hook]
detect: {signal: loop_detected, threshold: 2, for: 1m, scope: agent}
actions:
  - flag: {name: "agent.{agent}", value: paused, scope: hierarchy}
  - page: {}
apply: auto
"""


def test_runs_a_dead_engine_left_behind_are_counted_as_abandoned(store_dir: Path, receiver: Receiver,
                                                                 clock: FakeClock) -> None:
    with open_engine_store(store_dir) as store:  # an engine that "dies": its run never ends
        store.writer.run_started("r-dead", "ledger", None, store.engine_id, "0", {}, 0, None, 1.0)
        store.writer.flush()
    with open_engine_store(store_dir) as store:
        assert store.abandoned_runs == ["r-dead"]
        watch = runbook("id: dead\ntitle: Dead\nseverity: sev3\ndetect: {signal: runs_abandoned, threshold: 1, "
                        "for: 1h, scope: hierarchy}")
        rb = RunbookEngine.for_store(store, tracer_event=Traced(), clock=clock, runbooks=[watch],
                                     environ={}, tick=0.05)
        rb.start(store.abandoned_runs)
        try:
            assert rb.settle()
        finally:
            rb.stop()
    (incident,) = rows(store_dir, "SELECT * FROM incidents")
    assert incident["scope"] == "hierarchy:ledger"
    assert json.loads(incident["context"])["runs"] == ["r-dead"]
