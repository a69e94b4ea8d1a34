"""The small typed values the TraceWriter (engine/store/writer.py) hands out: its health, its backlog, and the flush
marker an event loop awaits (TraceWriter.commit_now, the write-ahead for side effects)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class WriterHealth:
    """What the writer can promise right now. `state`: "ok"; "degraded" (commits fail and are being retried: disk
    full, I/O error, locked); "gone" (the writer process ended: nothing emitted from now on will be stored)."""

    state: str
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Backlog:
    """What is emitted but not yet committed: items, approximate bytes (pickled frames in flight, plus the queued
    items at the in-flight average), and the age in seconds of the oldest uncommitted frame."""

    items: int
    bytes: int
    age_s: float


class LoopWaiter:
    """A flush marker an event loop awaits: set() is called from the acknowledgement thread."""

    __slots__ = ("_loop", "frame", "future")

    def __init__(self, loop: Any) -> None:
        self._loop = loop
        self.future = loop.create_future()
        self.frame = 0

    def set(self) -> None:
        try:
            self._loop.call_soon_threadsafe(self._resolve)
        except RuntimeError:  # the loop closed: nobody waits any more
            pass

    def _resolve(self) -> None:
        if not self.future.done():
            self.future.set_result(None)
