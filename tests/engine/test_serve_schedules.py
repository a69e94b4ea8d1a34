"""fleet.yaml schedules (engine/serve/schedules.py): a seconds cron fires runs keyed by their slot; after downtime
`run_once` fires one run for the missed slots and `skip` none, from the last fire the store recorded."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from engine.durable.keys import run_id_for_key
from engine.serve.service import FleetEngine
from engine.store import open_reader
from tests.serve_support import Serving, until, until_async

pytestmark = pytest.mark.slow


def _schedules(name: str, cron: str, missed: str) -> str:
    return (f"  - name: {name}\n    hierarchy: serving\n    cron: \"{cron}\"\n    missed: {missed}\n"
            f"    tenant: cron\n    input: {{request: {name}}}\n")


def test_a_seconds_cron_fires_runs_keyed_by_their_slot_and_publishes_its_row(tmp_path: Path) -> None:
    serving = Serving(tmp_path, "{}", extra="schedules:\n" + _schedules("tick", "* * * * * *", "skip"))
    serving.open_gate()

    async def body(fleet: FleetEngine) -> list[float]:
        assert fleet.scheduler is not None
        fired: list[float] = []

        def two_fires() -> bool:
            last = fleet.scheduler.last_fire.get("tick") if fleet.scheduler else None
            if last is not None and last not in fired:
                fired.append(last)
            return len(fired) >= 2

        await until(two_fires, what="the schedule to fire twice")
        ids = [run_id_for_key(f"schedule:tick:{int(slot)}") for slot in fired]

        async def done() -> bool:
            views = [await fleet.get_run(run_id) for run_id in ids]
            return all(v is not None and v.state == "completed" for v in views)

        await until_async(done, what="both scheduled runs to complete")
        [row] = fleet.schedules()
        assert row.name == "tick" and row.last_fire == fired[-1] and row.next_fire is not None
        assert row.next_fire > row.last_fire and row.last_run_id == ids[-1]
        return fired

    fired = serving.serve(body)
    assert all(slot == int(slot) for slot in fired)  # each a whole second: the slot, not when it ran
    reader = open_reader(serving.store)
    try:
        [stored] = reader.schedules()
    finally:
        reader.close()
    assert stored.last_fire is not None and stored.last_fire >= fired[-1]


def test_after_downtime_run_once_fires_one_run_for_the_missed_slots_and_skip_none(tmp_path: Path) -> None:
    hourly = "0 0 * * * *"  # every hour on the hour (seconds first)
    serving = Serving(tmp_path, "{}", extra="schedules:\n" + _schedules("once", hourly, "run_once")
                      + _schedules("skipped", hourly, "skip"))
    serving.open_gate()

    async def first(fleet: FleetEngine) -> None:
        fleet.publish()  # the schedules' rows exist in the store, never fired

    serving.serve(first)
    # The engine was down for three hours after its last fire (as the store recorded it).
    last = (int(time.time()) // 3600 - 3) * 3600
    conn = sqlite3.connect(serving.store / "traces.db")
    with conn:
        conn.execute("UPDATE schedules SET last_fire = ?", (float(last),))
    conn.close()
    latest_missed = (int(time.time()) // 3600) * 3600

    async def second(fleet: FleetEngine) -> None:
        run_id = run_id_for_key(f"schedule:once:{latest_missed}")

        async def fired() -> bool:
            view = await fleet.get_run(run_id)
            return view is not None and view.state == "completed"

        await until_async(fired, what="run_once to fire the latest missed slot")
        reader = open_reader(fleet.engine.store.dir)

        def missed_events() -> list[object]:
            fleet.engine.writer.flush()
            return reader.query("SELECT data FROM events WHERE kind = 'schedule.missed'")

        try:
            await until(lambda: len(missed_events()) == 2, what="both schedules to record their missed slots")
        finally:
            reader.close()
        for slot in range(last + 3600, latest_missed + 1, 3600):  # skip started nothing for any missed slot
            assert await fleet.get_run(run_id_for_key(f"schedule:skipped:{slot}")) is None
        assert await fleet.get_run(run_id_for_key(f"schedule:once:{last + 3600}")) is None  # one run, not three
        assert fleet.scheduler is not None and fleet.scheduler.last_fire["once"] == latest_missed

    serving.serve(second)
