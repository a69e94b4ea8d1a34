"""A queue's `max_depth` counted across the fleet (issue 16): on a Postgres store every serve engine admits onto
the same DBOS queue, so each engine's own tally (queue_state.py) would let K engines queue K x max_depth. What
counts instead is what DBOS holds ENQUEUED on the queue, every engine's, plus what this engine is enqueueing now.

Asking DBOS on every submission would put a query on each admission, so the question asked is cheap and asked
only near the bound:

- *Far from the bound.* Once a second (the service's publish loop) `check()` asks whether the queue holds at least
  max_depth - headroom runs (engine/durable/queues.enqueued_at_least: the n-th row, not a count). If not, the next
  `headroom` admissions here take the fast path: dict operations, no query. Fresh for FRESH_S only.
- *Near the bound* (the room ran out, or the check is stale or said the queue is near full), each admission asks
  whether the queue holds max_depth - (this engine's enqueues still in flight) runs, under a per-queue lock held
  until its enqueue returns, and is refused (429) if so. A "full" answer is reused for FULL_FOR_S so a storm of
  refusals costs a few queries a second, not one each.

What it can over-admit (docs/architecture.md "A fleet of serve engines on Postgres"): near the bound, the other
engines' enqueues in flight at the moment of the check, at most one per engine per queue (engines - 1); far from
it, only if the other engines admit more than `headroom` runs to the queue within FRESH_S of this engine's last
check, by the excess. It never refuses on a stale count: a refusal always comes from a check at most FULL_FOR_S
old."""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import anyio

from engine.durable import queues as durable_queues

FRESH_S = 2.0  # how long a far-from-the-bound check stays usable (checked every second)
FULL_FOR_S = 0.05  # a "full" answer refuses without asking again for this long
HEADROOM_MIN = 32  # near the bound = the last max(HEADROOM_MIN, max_depth // HEADROOM_DIV) slots
HEADROOM_DIV = 10


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
        self.checks += 1
        near = await durable_queues.enqueued_at_least(self.queue, self.max_depth - self.headroom)
        # Enqueues that were in flight when the query started may or may not be in its answer: counted as not.
        self.room = 0 if near else max(0, self.headroom - in_flight - 1)
        self.room_until = started + FRESH_S

    @asynccontextmanager
    async def admitting(self) -> AsyncIterator[None]:
        """Hold one slot while the submission is enqueued; raises FleetFull (before yielding) when there is none."""
        if self.room > 0 and time.monotonic() < self.room_until:
            self.room -= 1
            self.in_flight += 1
            try:
                yield
            finally:
                self.in_flight -= 1
            return
        async with self.lock:  # near the bound: one admission of this queue at a time on this engine
            if time.monotonic() < self.full_until:
                raise FleetFull(self.max_depth)
            self.checks += 1
            asked = time.monotonic()
            if await durable_queues.enqueued_at_least(self.queue, self.max_depth - self.in_flight):
                self.full_until = asked + FULL_FOR_S
                raise FleetFull(self.max_depth)
            self.in_flight += 1
            try:
                yield
            finally:
                self.in_flight -= 1
