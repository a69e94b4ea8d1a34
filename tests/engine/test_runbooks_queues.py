"""The queue_backlog signal (serve mode) on the watchdog with a fake clock: queue rows reach it as `queue.state`
events, exactly as the trace writer hands the engine's `writer.state("queues", ...)` upserts to on_commit; each
measure, per hierarchy and global, the noisiest tenant in the context, rows nobody publishes any more, and the
loader's placeholder check."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from engine.clock import FakeClock
from engine.errors import InputError
from engine.runbooks.watchdog import Watchdog
from tests.engine.test_runbooks_watchdog import detect, runbook

T0 = 1_800_000_000.0


def row(queue: str, tenant: str, depth: int, *, max_depth: int | None = 100, oldest: float | None = 10.0,
        hierarchy: str | None = None, updated: float = T0, admitted: float = 1.0) -> tuple[Any, ...]:
    return (queue, tenant, hierarchy or queue, depth, 1, oldest, admitted, 0, max_depth, 2, None, "open", updated)


def state(*rows: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    return [(0, "queue.state", None, None, None, None, {"key": list(r[:2]), "row": list(r)}) for r in rows]


def test_the_writer_hands_queue_upserts_to_on_commit(store_dir: Path) -> None:
    from engine.store.engine_store import open_traces_db
    from engine.store.files import TRACES_DB, ensure_store_dir
    from engine.store.writer import TraceWriter

    ensure_store_dir(store_dir)
    open_traces_db(store_dir / TRACES_DB).close()
    writer = TraceWriter(store_dir / TRACES_DB, flush_interval=3600)
    seen: list[Any] = []
    lock = threading.Lock()

    def on_commit(events: list[Any]) -> None:
        with lock:
            seen.extend(events)

    writer.on_commit(on_commit)
    try:
        writer.state("queues", ("q", ""), row("q", "", 5))
        writer.state("breakers", ("h", "tool:x"), ("h", "tool:x", "tool", "x", "closed", 0.0, 0.0, 0, 0, 0, 0, None,
                                                   None, T0))
        writer.flush()
    finally:
        writer.close()
    with lock:
        kinds = [e[1] for e in seen]
    assert kinds == ["queue.state"]  # only queue rows: breakers have their own events
    assert seen[0][6] == {"key": ["q", ""], "row": list(row("q", "", 5))}


def test_depth_pct_per_hierarchy_fires_with_the_noisiest_tenant_in_the_context() -> None:
    clock = FakeClock(epoch=T0)
    dog = Watchdog([detect("  - {signal: queue_backlog, threshold: 80, for: 1m, scope: hierarchy, quiet: 1m}")])
    dog.feed(state(row("deals", "", 90), row("deals", "acme", 70, admitted=5), row("deals", "globex", 20),
                   row("support", "", 10)), clock.time())
    assert dog.evaluate(clock.time()) == []  # a gauge: it must hold for a minute
    clock.advance(60)
    dog.feed(state(row("deals", "", 90, updated=clock.time()), row("support", "", 10, updated=clock.time())),
             clock.time())
    (fired,) = dog.evaluate(clock.time())
    assert (fired.kind, fired.scope) == ("fire", "hierarchy:deals")
    assert fired.readings[0]["value"] == 90.0
    assert (fired.context["queue"], fired.context["tenant"], fired.context["hierarchy"]) == ("deals", "acme", "deals")
    clock.advance(30)  # the queue drains
    dog.feed(state(row("deals", "", 10, updated=clock.time())), clock.time())
    assert dog.evaluate(clock.time()) == []
    clock.advance(61)
    dog.feed(state(row("deals", "", 10, updated=clock.time())), clock.time())
    (cleared,) = dog.evaluate(clock.time())
    assert cleared.kind == "clear"


@pytest.mark.parametrize(("measure", "value"), [("depth", 7.0), ("oldest_age_s", 900.0)])
def test_other_measures_and_global_scope(measure: str, value: float) -> None:
    clock = FakeClock(epoch=T0)
    dog = Watchdog([detect(f"  - {{signal: queue_backlog, threshold: 5, for: 1m, params: {{measure: {measure}}}}}")])
    rows = (row("a", "", 3, oldest=100.0), row("b", "", 7, max_depth=None, oldest=900.0))
    for _ in range(2):
        dog.feed(state(*(r[:-1] + (clock.time(),) for r in rows)), clock.time())
        transitions = dog.evaluate(clock.time())
        clock.advance(60)
    (fired,) = transitions
    assert (fired.scope, fired.readings[0]["value"], fired.context["queue"]) == ("global", value, "b")
    assert fired.context["tenant"] is None  # no tenant rows: {tenant} stays unfilled


def test_no_max_depth_has_no_percentage_and_unpublished_rows_have_no_value() -> None:
    clock = FakeClock(epoch=T0)
    dog = Watchdog([detect("  - {signal: queue_backlog, threshold: 80, for: 1m}")])
    dog.feed(state(row("a", "", 500, max_depth=None)), clock.time())
    clock.advance(61)
    assert dog.evaluate(clock.time()) == []
    dog.feed(state(row("b", "", 99, updated=clock.time())), clock.time())
    dog.evaluate(clock.time())
    clock.advance(120)  # nobody published b again (no engine): its last row is not a live value
    assert dog.evaluate(clock.time()) == []
    assert not dog.is_firing("rb", "global")


def test_tenant_and_queue_placeholders_only_for_queue_detections() -> None:
    front = ("id: q\ntitle: Q\nseverity: sev3\nowner: [oncall]\ndetect: {signal: %s, threshold: 1, for: 1m, scope: "
             "hierarchy}\nactions:\n  - flag: {name: \"tenant.{tenant}\", value: paused, scope: global}\n")
    runbook(front % "queue_backlog")  # fine
    with pytest.raises(InputError, match=r"\{tenant\} is not filled by a detection per hierarchy"):
        runbook(front % "loop_detected")
