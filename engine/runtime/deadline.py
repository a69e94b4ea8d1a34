"""A per-call timeout that costs about a microsecond.

`anyio.fail_after` costs ~35 us and `asyncio.timeout` ~14 us per use on this machine, and even one
`loop.call_later` handle per call (create, heap push, cancel, heap pop) costs a few; the engine wraps every model
and tool call in a timeout, and its whole budget is 250 us per model call. Timeouts come from a handful of
configured durations, and deadlines with the same duration expire in the order they were set, so each duration
gets a FIFO lane with ONE timer for its oldest live deadline: entering appends, leaving sets a flag, and the timer
(when it fires) cancels what has expired, drops what has finished and re-arms for the next live deadline.

It runs on the asyncio backend only (the engine's backend). A cancellation from anyone else (a kill switch's
cancel scope) still propagates as cancellation: only our own expiry becomes TimeoutError.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import deque
from types import TracebackType

try:  # Python 3.11's asyncio.current_task is a Python wrapper around this (C) mapping; 3.12 made it C itself
    from asyncio.tasks import _current_tasks  # type: ignore[attr-defined]

    def _current_task(loop: asyncio.AbstractEventLoop) -> asyncio.Task[object] | None:
        return _current_tasks.get(loop)
except ImportError:  # pragma: no cover - other Pythons
    def _current_task(loop: asyncio.AbstractEventLoop) -> asyncio.Task[object] | None:
        return asyncio.current_task(loop)


class Deadline:
    """Also the handle an operator's tool kill switch uses: `kill(reason)` cancels the call, which then raises
    OperatorStop instead of TimeoutError."""

    __slots__ = ("_cancels", "_expiry", "_seconds", "_task", "done", "expired", "killed")

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._task: asyncio.Task[object] | None = None
        self.done = False
        self.expired = False
        self.killed: str | None = None
        self._cancels = 0

    async def __aenter__(self) -> Deadline:
        loop = asyncio.get_running_loop()
        task = _current_task(loop)
        assert task is not None, "Deadline needs to run inside an asyncio task"
        self._task = task
        _lane(loop, self._seconds).add(loop, self)
        return self

    def _expire(self) -> None:
        self.expired = True
        self._cancels += 1
        assert self._task is not None
        self._task.cancel()

    def kill(self, reason: str) -> None:
        if self.killed is None and self._task is not None and not self.done:
            self.killed = reason
            self._cancels += 1
            self._task.cancel()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> bool:
        self.done = True
        task, self._task = self._task, None  # a finished call's task must not stay alive in a lane
        if exc_type is asyncio.CancelledError and self._cancels:
            assert task is not None
            remaining = 0
            for _ in range(self._cancels):
                remaining = task.uncancel()
            if remaining == 0:  # only our own cancellation: anyone else's keeps propagating
                if self.killed is not None:
                    from engine.runtime.controls import OperatorStop

                    raise OperatorStop(self.killed, tool_only=True) from exc
                raise TimeoutError from exc
        return False


class _Lane:
    """The live deadlines of one duration on one event loop, oldest first, and the one timer for the oldest."""

    # No reference to the loop or the timer handle (which holds the loop): the lanes live in the loop's own
    # attributes, and a reference back would keep a closed loop alive.
    __slots__ = ("_armed", "_entries", "_expiries", "_lanes", "_seconds")

    def __init__(self, seconds: float, lanes: dict[float, _Lane]) -> None:
        self._seconds = seconds
        self._entries: deque[Deadline] = deque()
        self._expiries: deque[float] = deque()
        self._armed = False
        self._lanes = lanes

    def add(self, loop: asyncio.AbstractEventLoop, deadline: Deadline) -> None:
        entries = self._entries
        # Most calls finish long before their timeout: drop finished ones from the front as new ones arrive, so
        # the lane holds roughly the calls in flight.
        while entries and entries[0].done:
            entries.popleft()
            self._expiries.popleft()
        expiry = loop.time() + self._seconds
        entries.append(deadline)
        self._expiries.append(expiry)
        if not self._armed:
            self._armed = True
            loop.call_at(expiry, self._fire, loop)

    def _fire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._armed = False
        entries, expiries = self._entries, self._expiries
        now = loop.time()
        while entries:
            head = entries[0]
            if head.done:
                entries.popleft()
                expiries.popleft()
            elif expiries[0] <= now:
                entries.popleft()
                expiries.popleft()
                head._expire()
            else:
                self._armed = True
                loop.call_at(expiries[0], self._fire, loop)
                return
        if self._lanes.get(self._seconds) is self:
            del self._lanes[self._seconds]  # an unused duration does not keep a lane


_ATTRIBUTE = "_flightdeck_deadline_lanes"
# For loops that take no attributes (uvloop's): keyed weakly, so a closed loop can still go.
_lanes_elsewhere: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[float, _Lane]] = \
    weakref.WeakKeyDictionary()


def _lane(loop: asyncio.AbstractEventLoop, seconds: float) -> _Lane:
    lanes: dict[float, _Lane] | None = getattr(loop, _ATTRIBUTE, None)
    if lanes is None:
        lanes = _lanes_elsewhere.get(loop)
        if lanes is None:
            lanes = {}
            try:
                setattr(loop, _ATTRIBUTE, lanes)
            except AttributeError:
                _lanes_elsewhere[loop] = lanes
    lane = lanes.get(seconds)
    if lane is None:
        lane = lanes[seconds] = _Lane(seconds, lanes)
    return lane
