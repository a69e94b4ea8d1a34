"""The store gate: no model or tool call starts that the trace store cannot record.

The trace writer reports its health on its acknowledgement thread the moment it changes (engine/store/writer.py,
`on_health`): "degraded" when commits start failing (disk full, I/O error, locked: the writer process retries with
back-off), "ok" when they succeed again, "gone" when the writer process ended (killed, crashed). The gate turns
that into what the runtime obeys:

- degraded, policy "wait" (the default): `blocked` is set on that thread at once, so every call reaching the gate
  (`RuntimeControls.before_call`, which every model and tool call passes) waits there, whatever the event loop is
  busy with; in-flight calls finish (their results are queued, bounded, and stored once space returns). The store
  is shown degraded (the lock file's `store` field: `flightdeck engines`, the console header) and, on recovery, a
  `store.recovered` event records how long it lasted.
- degraded, policy "exit", or gone: the engine must stop. `failure` is set (a StoreError, exit code 3), calls at
  the gate are refused, and every active run is cancelled (in-flight calls included) on the event loop. When the
  writer is gone nothing can be recorded any more: the next engine on the store marks those runs `abandoned`.
- fenced (a durable engine on a shared Postgres store that stalled past the takeover threshold, whose runs another
  engine took: runtime/durable_fence.py): the same stop as "gone", with the fence as the reason (`failure` is an
  EngineFenced), shown as "fenced"; the runs it stops are the taker's now, so their ends are not written here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio

from engine.errors import EngineFenced, StoreError
from engine.runtime.controls import OperatorStop

if TYPE_CHECKING:
    from engine.store.writer_types import WriterHealth

log = logging.getLogger(__name__)

ON_STORE_ERROR = ("wait", "exit")


class StoreUnavailable(OperatorStop):
    """The trace store cannot record this call: it must not start (the agent ends `killed`)."""


@dataclass(frozen=True, slots=True)
class StoreHealth:
    """The store as the gate sees it: "ok", "degraded" or "gone", why, and since when (epoch seconds)."""

    state: str
    error: str | None
    since: float


class StoreGate:
    def __init__(self, *, on_error: str = "wait", stop_all: Callable[[str], int] | None = None,
                 event: Callable[[str, dict[str, object]], None] | None = None,
                 publish: Callable[[StoreHealth], None] | None = None) -> None:
        """`stop_all(reason)` cancels every active run (returns how many); `event(kind, data)` records a trace
        event; `publish(health)` shows the health to operators. All three run on the event loop."""
        if on_error not in ON_STORE_ERROR:
            raise ValueError(f"on_error must be one of {ON_STORE_ERROR}, got {on_error!r}")
        self.on_error = on_error
        self.blocked = False  # read on the hot path: one attribute, set from the writer's thread
        self.failure: StoreError | None = None
        self.health = StoreHealth("ok", None, time.time())
        self.stopped_runs = 0  # runs cancelled because the store failed
        self.writer_gone = False  # the writer process ended: nothing more can be recorded
        self.fenced: str | None = None  # why another engine owns this engine's runs now (runtime/durable_fence.py)
        self._stop_all = stop_all
        self._event = event
        self._publish = publish
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: anyio.Event | None = None
        self._fenced_seen: anyio.Event | None = None

    def attach(self) -> None:
        """Call on the event loop, before the writer can report (anyio primitives need a running loop)."""
        self._loop = asyncio.get_running_loop()
        self._changed = anyio.Event()
        self._fenced_seen = anyio.Event()

    # -- the writer's acknowledgement thread ---------------------------------------------------------------------

    def on_writer_health(self, health: WriterHealth) -> None:
        """Thread-safe. Blocks (or fails) the gate right here, then lets the event loop do the rest."""
        if health.state == "gone":
            self.writer_gone = True
        if health.state == "gone" or (health.state == "degraded" and self.on_error == "exit"):
            if self.failure is None:
                error = health.error or "the trace store is unavailable"
                self.failure = StoreError(error if health.state == "gone" else
                                          f"{error} (and --on-store-error is exit)")
            self.blocked = True
        else:
            self.blocked = health.state != "ok" or self.failure is not None
        loop = self._loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(self._apply, health.state, health.error, time.time())
        except RuntimeError:  # the loop has closed: the engine is already shutting down
            pass

    def fence(self, reason: str) -> None:
        """Thread-safe (the takeover thread calls it): this engine's runs were taken by another engine. No call
        starts from here on (at once, whatever the loop does), then the loop stops every run and shows why."""
        if self.fenced is not None:
            return
        self.fenced = reason
        self.failure = EngineFenced(reason)
        self.blocked = True
        loop = self._loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(self._apply_fence, reason, time.time())
        except RuntimeError:  # the loop has closed: the engine is already shutting down
            pass

    def refusal(self) -> str:
        """Why no call or run starts (once `failure` is set)."""
        return str(self.fenced) if self.fenced is not None else f"the trace store is unavailable: {self.failure}"

    # -- the event loop ----------------------------------------------------------------------------------------

    def _apply(self, state: str, error: str | None, at: float) -> None:
        before = self.health
        if self.fenced is not None:  # stopped for good already; the fence is what operators see
            pass
        elif self.failure is not None:
            if before.state != "failed":
                self.health = StoreHealth("failed", str(self.failure), at)
                if self._publish is not None:
                    self._publish(self.health)
                if self._stop_all is not None:
                    self.stopped_runs = self._stop_all(f"killed: the trace store is unavailable: {self.failure}")
        elif state == "degraded":
            if before.state == "ok":
                self.health = StoreHealth("degraded", error, at)
                log.error("trace store degraded: %s; no new model or tool call starts until commits succeed again "
                          "(retrying)", error)
                if self._event is not None:  # stored once commits succeed again, before the recovery event
                    self._event("store.degraded", {"error": error})
            else:
                self.health = StoreHealth("degraded", error, before.since)
            if self._publish is not None:
                self._publish(self.health)
        elif state == "ok" and before.state == "degraded":
            self.health = StoreHealth("ok", None, at)
            lasted = max(0.0, at - before.since)
            log.warning("trace store recovered after %.1fs; calls resume (it was: %s)", lasted, before.error)
            if self._event is not None:
                self._event("store.recovered", {"error": before.error, "degraded_s": round(lasted, 3)})
            if self._publish is not None:
                self._publish(self.health)
        self._wake()

    def _apply_fence(self, reason: str, at: float) -> None:
        self.health = StoreHealth("fenced", reason, at)
        if self._publish is not None:
            self._publish(self.health)
        if self._event is not None:
            self._event("engine.fenced", {"reason": reason})
        if self._stop_all is not None:
            self.stopped_runs = self._stop_all(f"killed: {reason}")
        if self._fenced_seen is not None:
            self._fenced_seen.set()
        self._wake()

    async def wait_fenced(self) -> str:
        """Returns (why) once this engine is fenced: serve mode stops serving then (engine/serve/serving.py)."""
        assert self._fenced_seen is not None, "attach() first"
        await self._fenced_seen.wait()
        return str(self.fenced)

    def _wake(self) -> None:
        assert self._changed is not None
        changed, self._changed = self._changed, anyio.Event()
        changed.set()

    async def wait_usable(self) -> None:
        """The gate's slow path: wait while the store is degraded; raise StoreUnavailable once it has failed."""
        while self.blocked:
            if self.failure is not None:
                raise StoreUnavailable(f"stopped: {self.refusal()}")
            assert self._changed is not None
            changed = self._changed
            if not self.blocked:  # cleared between the check and here (the writer's thread)
                return
            # Bounded: a health change posted to the loop wakes it, and this also re-reads `blocked`, which the
            # writer's thread sets before the loop hears of it.
            with anyio.move_on_after(0.25):
                await changed.wait()
