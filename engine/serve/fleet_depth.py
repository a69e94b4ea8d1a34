"""A queue's `max_depth` counted across the fleet (issue 16): on a Postgres store every serve engine admits onto
the same DBOS queue, so each engine's own tally (queue_state.py) would let K engines queue K x max_depth. What
counts instead is what DBOS holds ENQUEUED on the queue, every engine's, plus what this engine is enqueueing now.

Asking DBOS on every submission would put a query on each admission, so the question asked is cheap (the n-th
ENQUEUED row, not a count: engine/durable/queues.enqueued_at_least) and mostly asked ahead:

- *Far from the bound.* `check()` asks whether the queue holds max_depth - headroom runs (headroom = the last
  max(HEADROOM_MIN, max_depth / HEADROOM_DIV) places, at most max_depth). If not, the next `headroom` admissions
  here (its "room") take the fast path: dict operations, no query. The check runs once a second (the service's
  publish loop), and again, under the queue's lock, when the room runs out (at most every RECHECK_S); an answer
  is usable for FRESH_S. So far from the bound a submission costs one query per `headroom` admissions.
- *Near the bound* (the check said so), each admission asks whether the queue holds max_depth - (this engine's
  enqueues still in flight) runs, under the queue's lock held until its enqueue returns (one at a time per queue
  on an engine), and is refused (429) if so. A "full" answer is reused for FULL_FOR_S so a storm of refusals costs
  a few queries a second, not one each.

What it can over-admit (docs/architecture.md "A fleet of serve engines on Postgres"): at most (engines - 1) x
headroom, when every engine's last check found the queue just short of max_depth - headroom and each spends its
whole room before its next check; once the checks say near, at most the other engines' enqueues in flight at the
moment of an admission's query, one per engine and queue (engines - 1). A queue with max_depth <= HEADROOM_MIN is
always near: engines - 1. A refusal always comes from a query at most FULL_FOR_S old, never a stale count.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import anyio

from engine.durable import queues as durable_queues

FRESH_S = 2.0  # how long a far-from-the-bound check stays usable (checked every second)
RECHECK_S = 0.1  # the room ran out: ask again whether the queue is far from the bound, at most this often
FULL_FOR_S = 0.05  # a "full" answer refuses without asking again for this long
HEADROOM_MIN = 32  # near the bound = the last max(HEADROOM_MIN, max_depth // HEADROOM_DIV) slots
HEADROOM_DIV = 20


class FleetFull(Exception):
    """The queue holds at least max_depth runs across the fleet (the service turns it into a 429)."""

    def __init__(self, at_least: int) -> None:
        super().__init__(at_least)
        self.at_least = at_least


@dataclass
class FleetDepth:
    """One queue's fleet-wide depth bound, as this engine sees it."""

    queue: str
    max_depth: int
    room: int = 0  # fast-path admissions left from the last far-from-the-bound check
    room_until: float = -math.inf  # (monotonic) when that check goes stale
    checked_at: float = -math.inf  # (monotonic) when the last far-from-the-bound check was asked
    full_until: float = -math.inf  # (monotonic) until when a "full" answer stands
    in_flight: int = 0  # admissions here whose enqueue has not returned (not in DBOS yet, or not known to be)
    checks: int = 0  # queries asked of DBOS (tests, diagnostics)
    lock: anyio.Lock = field(default_factory=anyio.Lock)

    @property
    def headroom(self) -> int:
        return min(self.max_depth, max(HEADROOM_MIN, self.max_depth // HEADROOM_DIV))

    async def check(self) -> None:
        """Far from the bound? (once a second): if the queue holds fewer than max_depth - headroom runs, the next
        headroom - (enqueues in flight) admissions need no query."""
        started, in_flight = time.monotonic(), self.in_flight
        self.checked_at = started
        self.checks += 1
        near = await durable_queues.enqueued_at_least(self.queue, self.max_depth - self.headroom)
        # Enqueues that were in flight when the query started may or may not be in its answer: counted as not.
        self.room = 0 if near else max(0, self.headroom - in_flight - 1)
        self.room_until = started + FRESH_S

    def _fast(self) -> bool:
        return self.room > 0 and time.monotonic() < self.room_until

    @asynccontextmanager
    async def admitting(self) -> AsyncIterator[None]:
        """Hold one slot while the submission is enqueued; raises FleetFull (before yielding) when there is none."""
        if not self._fast():
            async with self.lock:  # one admission of this queue at a time on this engine, until the room is back
                if not self._fast() and time.monotonic() - self.checked_at >= RECHECK_S:
                    await self.check()  # the room ran out or went stale: far from the bound still?
                if not self._fast():  # near the bound: ask for this one
                    await self._exact()
                    self.in_flight += 1
                    try:
                        yield
                    finally:
                        self.in_flight -= 1
                    return
        self.room -= 1
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1

    async def _exact(self) -> None:
        """FleetFull if the queue holds max_depth runs with this engine's enqueues still in flight."""
        if time.monotonic() < self.full_until:
            raise FleetFull(self.max_depth)
        self.checks += 1
        asked = time.monotonic()
        if await durable_queues.enqueued_at_least(self.queue, self.max_depth - self.in_flight):
            self.full_until = asked + FULL_FOR_S
            raise FleetFull(self.max_depth)
