"""Fencing a stalled durable engine on a shared Postgres store (issue 16).

An engine stalled longer than the takeover threshold (SIGSTOP, a long GC pause, a frozen VM) is dead to the fleet: a
live engine claims it (pg/liveness.py's `durable_takeovers`) and carries its runs on. When the stalled engine wakes,
its event loop would carry the same runs on too: two engines executing one run, model calls made twice, a
non-idempotent side effect started twice. The fence stops that, in two parts:

- The lease. The engine starts a model or tool call (every one passes `RuntimeControls.before_call`, so every side
  effect too) only while its last confirmed beat is under `lease_s` old, a little under the takeover threshold:
  while it holds, no other engine can have seen it dead. An engine that woke from a stall finds its lease expired
  and waits for its takeover thread's next beat, which either renews the lease or finds the claim. No step starts
  in between, whichever of the loop and the thread runs first after the stall. A cheap check on the hot path: one
  `time.monotonic()` (which keeps counting while a process is stopped).
- The fence. Each beat asks, in the same transaction that writes it, whether another engine has claimed this one
  (pg/liveness.py's `beat`, which serializes with a claim on the engine's row); if so the beat is not written (the
  engine must not look alive again), the engine is marked stopped, and the store gate is fenced (store_gate.py): no
  call starts, every active run is stopped at once, an `engine.fenced` event and one error line say why, and the
  engine exits like one whose trace store failed (exit code 3; serve stops serving). The runs it stops are the
  taker's now: their run rows' ends are not written here (runtime/run_lifecycle.py), and DBOS writes a workflow's
  outcome only for the execution that owns it (the taker's), so nothing of theirs is overwritten.
"""

from __future__ import annotations

import logging
import time

import anyio

log = logging.getLogger(__name__)

LEASE_SHARE = 0.8  # of the takeover threshold: the margin covers the beat's own latency and some clock skew
WAIT_STEP_S = 0.05  # how often a call held by an expired lease looks again (beats come every interval)


class Lease:
    """Whether this engine may start work now. Renewed by the takeover thread after each beat that found no
    claim; read on the event loop (plain attributes: a float and a flag, written atomically)."""

    def __init__(self, stale_after: float) -> None:
        self.lease_s = stale_after * LEASE_SHARE
        self.confirmed = time.monotonic()  # when the last confirmed beat started
        self.fenced = False

    def renew(self, beat_started: float) -> None:
        self.confirmed = max(self.confirmed, beat_started)

    def current(self) -> bool:
        return not self.fenced and time.monotonic() - self.confirmed < self.lease_s

    async def wait(self) -> None:
        """Hold a call until a beat renews the lease or finds this engine fenced (then the store gate refuses it)."""
        while not self.current() and not self.fenced:
            await anyio.sleep(WAIT_STEP_S)


def fence_message(engine_id: str, taken_by: str, stalled_s: float, stale_after: float) -> str:
    return (f"engine {engine_id} stalled {stalled_s:.1f}s without a heartbeat (the takeover threshold is "
            f"{stale_after:g}s); engine {taken_by} took its runs; it stops so no step runs twice")


def report_fenced(message: str) -> None:
    log.error("fenced: %s. Nothing is lost: the taker carries the runs on from their records. Find out why this "
              "engine stalled (SIGSTOP, swapping, a frozen VM, a long pause) before starting it again", message)
