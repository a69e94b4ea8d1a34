"""A durable engine on a shared Postgres store takes over the runs of engines that died (issue 16).

Several engines are executors of one DBOS system database, each with its own executor id (its engine id). A thread
beats for this engine every `interval` seconds (engine/store/pg/liveness.py) and, on each beat, looks for dead
engines (no beat for `stale_after` seconds, or stopped) whose runs no live engine has claimed. For each it claims
(one row, once across the fleet: two live engines never both take a dead engine's runs) and hands the claim to the
event loop, which lists the dead executor's PENDING run workflows and resumes them onto this engine's own DBOS queue
(`DurableHost.take_over`): they carry on here, their recorded side effects replayed, never run again
(runtime/side_effects.py).

On start an engine also knows its own store directory's predecessors are dead whatever their last beat (it holds the
directory's lock), so it marks them stopped and takes their runs at once rather than `stale_after` seconds later.

An engine that was itself declared dead while it stalled (and woke to find its runs taken) is fenced: it starts no
further step and stops (runtime/durable_fence.py).

What is not taken over: runs an operator's kill switch covers (they stay PENDING in DBOS with a `run.not_resumed`
event). An engine with auto-resume off (`--no-resume`, flag `runs.auto_resume=false`) claims nothing: a dead
engine's runs wait for an engine that carries them on.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any

import anyio

from engine.errors import InputError
from engine.runtime.durable_fence import Lease, fence_message, report_fenced

if TYPE_CHECKING:
    from engine.store.engine_store import EngineStore
    from engine.store.location import PostgresLocation
    from engine.store.pg.liveness import Fence, Liveness

log = logging.getLogger(__name__)

HEARTBEAT_S = 1.0
STALE_AFTER_S = 10.0  # an engine silent this long is dead: ten missed beats, far above a busy loop's stall

# On the event loop: take over these dead engines' runs, found under these DBOS executor ids (every life of theirs:
# pg/liveness.py), (DurableRuns.take_over). Returns how many it took.
TakeOver = Callable[[list[str], list[str]], Coroutine[Any, Any, int]]
# Called on the takeover thread once this engine is fenced, with the one line that says why (the store gate's fence).
OnFenced = Callable[[str], None]


TAKEOVER_AFTER_ENV = "FLIGHTDECK_TAKEOVER_AFTER"


def takeover_after(environ: Mapping[str, str]) -> float | None:
    """Seconds without a heartbeat after which a durable engine on a shared store takes a dead engine's runs, from
    $FLIGHTDECK_TAKEOVER_AFTER (None: STALE_AFTER_S). InputError naming the variable for anything but 1-3600."""
    text = environ.get(TAKEOVER_AFTER_ENV, "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 1.0 <= value <= 3600.0:
        raise InputError(f"expected seconds between 1 and 3600, got {text[:40]!r}", field=TAKEOVER_AFTER_ENV)
    return value


def predecessors(store: EngineStore) -> list[str]:
    """The engines that used this store directory before this one: dead, since this one holds its lock (the
    directory's control.db registers them). An engine wholly on Postgres has no directory and so no predecessors:
    every other engine on the database is live until its heartbeat stops."""
    control = getattr(store, "control", None)  # test doubles of the store may have none
    if control is None or getattr(store, "store_dir", True) is None:
        return []
    return [str(row["id"]) for row in control.query("SELECT id FROM engines WHERE id != ?", (store.engine_id,))]


class Takeover:
    """The beating and claiming thread of one durable engine; `start()` on the engine's event loop."""

    def __init__(self, location: PostgresLocation, engine_id: str, take_over: TakeOver, *,
                 interval: float = HEARTBEAT_S, stale_after: float = STALE_AFTER_S,
                 willing: Callable[[], bool] = lambda: True, on_fenced: OnFenced | None = None) -> None:
        """`willing()`: whether this engine carries dead engines' runs on now (auto-resume); asked before claiming.
        `on_fenced(message)`: another engine took this one's runs (it stalled): it must stop."""
        from engine.store.pg.liveness import Liveness

        self.engine_id = engine_id
        # A short threshold beats more often, so that a healthy engine's lease (a share of it) never runs out.
        self.interval = min(interval, stale_after / 4)
        self.stale_after = stale_after
        self.liveness: Liveness = Liveness(location)
        self.claimed: list[str] = []  # dead engines whose runs this engine took (tests, `flightdeck engines`)
        self.runs: list[str] = []  # their runs found in flight (taken, or left with a `run.not_resumed` event)
        self._take_over = take_over
        self._willing = willing
        self._on_fenced = on_fenced
        self.lease = Lease(stale_after)  # no call starts unless a beat confirmed this engine alive just now
        self.fence: Fence | None = None  # set once another engine took this engine's runs
        self._confirmed = time.monotonic()  # when the last beat that found no claim started (the thread's)
        self.claiming = True  # False once the engine closes: it beats on (its runs are still its own) but takes none
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    async def start(self, known_dead: list[str]) -> None:
        """First beat, then take `known_dead`'s runs and any other dead engine's, before returning; then beat on."""
        self._loop = asyncio.get_running_loop()
        now = time.time()
        await anyio.to_thread.run_sync(self._first_beat, known_dead, now)
        await self._scan_once()
        if self.fence is not None:  # fenced at its first beat: nothing more to beat for
            return
        self._thread = threading.Thread(target=self._run, name="flightdeck-durable-takeover", daemon=True)
        self._thread.start()

    def _first_beat(self, known_dead: list[str], now: float) -> None:
        started = time.monotonic()
        self.liveness.forget_claims_on(self.engine_id)  # a claim on an earlier life under this id is history
        fence = self.liveness.beat(self.engine_id, now)
        if fence is not None:  # claimed in between: this life was seen dead before it started (a stall)
            self._fenced(fence, time.monotonic() - started)
            return
        self.lease.renew(started)
        self.liveness.mark_stopped(known_dead, now)

    async def _scan_once(self) -> None:
        claimed, executors = await anyio.to_thread.run_sync(self._claim_dead)
        if claimed:
            await self._take_over(claimed, executors)
            await anyio.to_thread.run_sync(self.liveness.finish, claimed, self.engine_id)

    def _claim_dead(self) -> tuple[list[str], list[str]]:
        """The dead engines this engine claimed now, and the DBOS executor ids their runs are under."""
        if not self.claiming or not self._willing():
            return [], []
        now = time.time()
        claimed = [dead for dead in self.liveness.dead_unclaimed(self.engine_id, now, self.stale_after)
                   if self.liveness.claim(dead, self.engine_id, now, self.stale_after)]
        if not claimed:
            return [], []
        # Said at info: most dead engines of a fleet (cleanly stopped ones) leave nothing to take; the runs
        # actually taken are said at warning by DurableRuns.take_over.
        log.info("claimed the runs of dead engines %s", ", ".join(claimed))
        self.claimed.extend(claimed)
        return claimed, self.liveness.executors_of(claimed)

    def _fenced(self, fence: Fence, stalled_s: float) -> None:
        """Another engine took this engine's runs: stop taking any, tell the engine, record it stopped."""
        self.fence = fence
        self.claiming = False
        message = fence_message(self.engine_id, fence.taken_by, stalled_s, self.stale_after)
        report_fenced(message)
        if self._on_fenced is not None:
            self._on_fenced(message)  # the gate refuses every call from here on...
        self.lease.fenced = True  # ...before calls held by the expired lease go on to it
        try:
            self.liveness.mark_stopped([self.engine_id], time.time())
        except Exception as exc:  # it beats no more either way: its heartbeat goes stale
            log.warning("could not record the fenced engine stopped: %s", exc)

    def _beat(self) -> bool:
        """One beat: renews the lease, or fences this engine (returns False: the thread ends). Raises when the store
        cannot be reached (the lease is then not renewed: calls wait once it runs out)."""
        started = time.monotonic()
        fence = self.liveness.beat(self.engine_id, time.time())
        if fence is not None:
            self._fenced(fence, started - self._confirmed)
            return False
        self.lease.renew(started)
        self._confirmed = started
        return True

    def _run(self) -> None:
        failing = False
        self._confirmed = time.monotonic()  # when the last beat that found no claim started
        while not self._stop.wait(self.interval):
            try:
                if not self._beat():
                    return
                claimed, executors = self._claim_dead()
            except Exception as exc:  # the store unreachable: said once per episode, retried on the next beat
                if not failing:
                    log.warning("durable heartbeat failed (retrying every %gs): %s", self.interval, exc)
                failing = True
                continue
            failing = False
            loop = self._loop
            if claimed and loop is not None and not self._stop.is_set():
                future: concurrent.futures.Future[int] = asyncio.run_coroutine_threadsafe(
                    self._take_over(claimed, executors), loop)
                try:
                    # Beating on while the loop resumes them (it can take seconds under load): this engine must
                    # not look dead, nor its own calls wait for their lease, because it is taking others' runs.
                    while True:
                        try:
                            future.result(timeout=self.interval)
                            break
                        except concurrent.futures.TimeoutError:
                            if future.done():  # the take-over itself timed out: not a wait that ran out
                                raise
                            try:
                                if not self._beat():
                                    return
                            except Exception:  # unreachable for now: said by the next beat of the main loop
                                pass
                    self.liveness.finish(claimed, self.engine_id)
                except Exception:  # the claim stands until this engine dies; the runs stay PENDING (logged)
                    log.exception("taking over the runs of %s failed", claimed)

    async def close(self) -> None:
        """Stop beating and claiming, and record this engine stopped (its runs are then anyone's to take). On
        anyio's worker threads: DBOS shut the loop's default executor down when it was destroyed."""
        self._stop.set()
        if self._thread is not None:
            await anyio.to_thread.run_sync(self._thread.join)
        try:
            await anyio.to_thread.run_sync(self.liveness.mark_stopped, [self.engine_id], time.time())
        except Exception as exc:
            log.warning("could not record the durable engine stopped: %s", exc)
        finally:
            self.liveness.close()
