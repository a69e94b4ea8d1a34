"""A durable engine takes operators' requests that a run go on (engine/controls/run_requests.py): on start, every
one still open, and while it runs, each new one within a control poll (issue 13: a reconcile decision or a resume
no longer waits for the next engine start).

How: the control thread (runtime/control_worker.py) runs `_watch` after every control.db change; it reads the
`resume` and `reconcile` audit rows newer than the last it saw (one range read on the primary key), and for each
run they name that may go on now (`run_requests.pending`: durable, ended in a state it resumes from, every side
effect decided, that ending not taken), it takes it (`run_requests.take`: the `resume_taken` audit row, in one
BEGIN IMMEDIATE transaction that checked nobody took that ending) and hands it to the event loop, which starts the
run again as a new DBOS execution (`DurableHost.start_again`, DBOS's public API). Taking before starting is what
makes it exactly once: two engines, an engine's start and its first poll, or two polls, never start one ending of
a run twice; recorded side effects replay as on every resume (runtime/side_effects.py).

What is not taken: a reconcile-driven run while auto-resume is off (`--no-resume`, flag `runs.auto_resume=false`:
an operator's explicit resume still is), a run an operator's kill switch covers, a run this engine is running, and
anything once the engine is closing (the next engine takes it on start). `flightdeck resume`'s own engine takes
nothing (`DurableRuns.pickup = False`): it resumes the one run it was started for.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import TYPE_CHECKING

from engine.controls import run_requests
from engine.controls.run_requests import Pending

if TYPE_CHECKING:
    from engine.controls.api import ControlAPI
    from engine.runtime.durable_runs import DurableRuns

log = logging.getLogger(__name__)


class Pickup:
    """The durable engine's side of run requests; `start()` once DurableRuns has opened DBOS."""

    def __init__(self, durable: DurableRuns) -> None:
        self.durable = durable
        self.closing = False
        self.taken: list[Pending] = []  # what this engine took, oldest first (tests and `flightdeck engines` read it)
        self.cursor = 0  # the newest audit row the watcher has read (control thread only)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, skip: set[str]) -> list[Pending]:
        """Register the watcher and take what is open now (`skip`: runs this engine resumes already). Returns what
        it took."""
        worker = self.durable.engine.controls.worker
        if worker is None:
            return []
        self._loop = asyncio.get_running_loop()

        def register(api: ControlAPI) -> None:
            # On the control thread: every commit after this read changes data_version, so the watcher sees it.
            with api.read() as conn:
                self.cursor = run_requests.head(conn)
            worker.watch(self._watch)

        await worker.call(register)
        found = await worker.call(lambda api: self._take(api, None, skip))
        for pending in found:
            await self._start(pending)
        return found

    async def close(self) -> None:
        """Take nothing more; wait for the starts already handed to the loop."""
        self.closing = True
        worker = self.durable.engine.controls.worker
        if worker is not None and self._loop is not None:
            # A round trip through the control thread: a watcher busy taking a run when `closing` was set has
            # finished, and its hand-over to the loop (queued before this job's answer) has run.
            await worker.call(lambda api: None)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- the control thread ----------------------------------------------------------------------------------------

    def _watch(self, api: ControlAPI) -> None:
        if self.closing:
            return
        with api.read() as conn:
            runs, self.cursor = run_requests.runs_asked_since(conn, self.cursor)
        if not runs:
            return
        found = self._take(api, runs, set())
        loop = self._loop
        if found and loop is not None:
            loop.call_soon_threadsafe(self._spawn, found)

    def _take(self, api: ControlAPI, runs: list[str] | None, skip: set[str]) -> list[Pending]:
        """Take every run of `runs` (None: every run anything may ask for) that may go on now."""
        from engine.errors import StoreError
        from engine.store import open_trace_reads

        durable = self.durable
        engine_id = durable.engine.store.engine_id
        reconcile_ok = durable.why_not_resume() is None
        try:  # the trace store the engine writes to: traces.db, or a Postgres store
            reader = open_trace_reads(durable.trace_location)
        except StoreError as exc:  # no traces.db yet: nothing has run, so nothing asks
            log.debug("run requests: %s", exc)
            return []
        taken: list[Pending] = []
        try:
            if runs is None:
                with api.read() as conn:
                    asked = run_requests.runs_ever_asked(conn)
                waiting = reader.list_runs(limit=10_000, status="needs_reconcile")
                runs = list(dict.fromkeys([*asked, *(row.id for row in waiting)]))
            for run_id in runs:
                if run_id in skip or durable.busy(run_id) or self.closing:
                    continue
                with api.read() as conn:  # most runs named are not takeable: no write lock for those
                    if run_requests.pending(conn, reader, run_id) is None:
                        continue
                with api.transaction() as conn:  # the check again, and the take, in one write transaction
                    found = run_requests.pending(conn, reader, run_id)
                    if found is None or (found.kind == run_requests.RECONCILE_ACTION and not reconcile_ok):
                        continue
                    if durable.killed_by_operator(run_id) is not None:
                        continue
                    row = run_requests.take(conn, run_id, request=found.request, kind=found.kind,
                                            ended=found.ended, engine_id=engine_id, now=api.now())
                    if row is None:
                        continue
                durable.mark_busy(run_id)
                taken.append(replace(found, taken=row.id))
        finally:
            reader.close()
        return taken

    # -- the event loop --------------------------------------------------------------------------------------------

    def _spawn(self, found: list[Pending]) -> None:
        for pending in found:
            task = asyncio.get_running_loop().create_task(self._start(pending))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _start(self, pending: Pending) -> None:
        """Start the taken run again here (a new DBOS execution of its workflow)."""
        durable = self.durable
        self.taken.append(pending)
        try:
            await durable.start_taken(pending.run_id, pending.limits, {"kind": pending.kind,
                                                                       "request": pending.request})
        except Exception as exc:  # given back and recorded on the run; the engine goes on
            log.exception("starting run %s again failed", pending.run_id)
            error = f"{type(exc).__name__}: {exc}"
            released = await self._give_back(pending, error)
            durable.not_resumed(pending.run_id, f"taken ({pending.kind}, audit row {pending.request}) but could "
                                                f"not start: {error}; " + (
                                                    f"the take is given back (audit row {released}): a later "
                                                    "flightdeck resume, or another engine's start, takes it"
                                                    if released else "the take could not be given back"))

    async def _give_back(self, pending: Pending, error: str) -> int | None:
        """The `resume_released` row for the take (run_requests.release): its id, or None when control.db
        refused it too (the take then holds, as before this existed)."""
        worker = self.durable.engine.controls.worker
        if worker is None:
            return None
        engine_id = self.durable.engine.store.engine_id

        def release(api: ControlAPI) -> int:
            with api.transaction() as conn:
                return run_requests.release(conn, pending.run_id, taken=pending.taken, ended=pending.ended,
                                            engine_id=engine_id, error=error, now=api.now()).id

        try:
            return await worker.call(release)
        except Exception:
            log.exception("giving back the take of run %s failed", pending.run_id)
            return None

