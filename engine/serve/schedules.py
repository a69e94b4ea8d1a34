"""fleet.yaml schedules: each fires on its cron (croniter; five fields, or six with seconds first) by submitting a run
with the idempotency key `schedule:NAME:<fire epoch>`, so one slot never starts two runs, whichever engine or
restart fires it. DBOS's scheduler is not used: it takes schedules registered in code before launch, not ones read
from a file at start, and has no missed-run policy of ours.

Where the last fire comes from: the store's traces.db `schedules` table (`last_fire`), written the moment a slot
fires (and again with the rest every second), read when the engine opens. After downtime, `missed: skip` fires
nothing for the slots that passed; `run_once` fires one run, for the latest of them."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import anyio
from croniter import croniter  # type: ignore[import-untyped]

from engine.serve.contracts import Refused, Submission
from engine.serve.views import state_tuple
from engine.store.trace_rows import ScheduleRow

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

    from engine.serve.fleet import ScheduleSpec
    from engine.serve.service import FleetEngine

log = logging.getLogger(__name__)
MAX_MISSED_SCAN = 1_000_000  # slots looked at after downtime (a seconds cron down for 11 days); the rest skip


def _slots(cron: str, after: float) -> croniter:
    return croniter(cron, after, second_at_beginning=len(cron.split()) == 6)


class Scheduler:
    def __init__(self, service: FleetEngine, specs: list[ScheduleSpec]) -> None:
        self.service = service
        self.specs = specs
        self.next_fire: dict[str, float | None] = {}
        self.last_fire: dict[str, float | None] = {}
        self.last_run_id: dict[str, str | None] = {}
        self._scope = anyio.CancelScope()

    async def start(self, tasks: TaskGroup) -> None:
        for row in await anyio.to_thread.run_sync(self._stored):
            self.last_fire[row.name] = row.last_fire
            self.last_run_id[row.name] = row.last_run_id
        now = time.time()
        for spec in self.specs:
            self.next_fire[spec.name] = float(_slots(spec.cron, now).get_next(float))
        tasks.start_soon(self._main)

    def _stored(self) -> list[ScheduleRow]:
        from engine.errors import StoreError
        from engine.store import open_trace_reads

        try:
            reader = open_trace_reads(self.service.engine.store.trace_location)
        except StoreError:
            return []
        try:
            return reader.schedules()
        finally:
            reader.close()

    def stop(self) -> None:
        self._scope.cancel()

    async def _main(self) -> None:
        with self._scope:
            async with anyio.create_task_group() as group:
                for spec in self.specs:
                    group.start_soon(self._run, spec)

    async def _run(self, spec: ScheduleSpec) -> None:
        now = time.time()
        last = self.last_fire.get(spec.name)
        if last is not None and last < now:
            missed = self._latest_missed(spec, last, now)
            if missed is not None:
                self.service.engine.tracer.event(None, None, "schedule.missed", name=spec.name, data={
                    "schedule": spec.name, "policy": spec.missed, "last_fire": last, "latest_missed": missed,
                    "fired": spec.missed == "run_once"})
            if missed is not None and spec.missed == "run_once":
                await self._fire(spec, missed)
        slots = _slots(spec.cron, max(now, last or now))
        while True:
            slot = float(slots.get_next(float))
            self.next_fire[spec.name] = slot
            await anyio.sleep(max(0.0, slot - time.time()))
            await self._fire(spec, slot)

    @staticmethod
    def _latest_missed(spec: ScheduleSpec, last: float, now: float) -> float | None:
        slots, latest = _slots(spec.cron, last), None
        for _ in range(MAX_MISSED_SCAN):
            slot = float(slots.get_next(float))
            if slot > now:
                break
            latest = slot
        return latest

    async def _fire(self, spec: ScheduleSpec, slot: float) -> None:
        submission = Submission(spec.hierarchy, spec.input, source=f"schedule:{spec.name}", tenant=spec.tenant,
                                priority=spec.priority, idempotency_key=f"schedule:{spec.name}:{int(slot)}")
        run_id: str | None = None
        try:
            run_id = (await self.service.submit(submission)).run_id
        except Refused as exc:  # counted and recorded by the service (queue.rejected); the slot is not retried
            log.warning("schedule %s: the run for %s was refused: %s", spec.name, int(slot), exc.reason)
        self.last_fire[spec.name] = slot
        self.last_run_id[spec.name] = run_id
        row = self.row(spec)
        self.service.engine.writer.state("schedules", (row.name,), state_tuple(row))

    def row(self, spec: ScheduleSpec) -> ScheduleRow:
        return ScheduleRow(name=spec.name, hierarchy=spec.hierarchy, cron=spec.cron, missed=spec.missed,
                           next_fire=self.next_fire.get(spec.name), last_fire=self.last_fire.get(spec.name),
                           last_run_id=self.last_run_id.get(spec.name), updated=time.time())

    def rows(self) -> list[ScheduleRow]:
        return [self.row(spec) for spec in self.specs]
