"""The queues view's data (thread side): the published queue and schedule rows, the queue/tenant flags in force and
whether an engine is alive, through console/queue_status.read_queues. Returns None when nothing changed since the
last poll (the view then repaints only its ages, once a second)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from console.polling import ReaderState
from console.queue_status import QueuesSnapshot, read_queues

if TYPE_CHECKING:
    from console.screens.base import ConsoleContext


class QueuesFeed:
    def __init__(self, ctx: ConsoleContext) -> None:
        self.ctx = ctx
        self.state = ReaderState(ctx.source)
        self.last: Any = object()

    def poll(self) -> QueuesSnapshot | None:
        reader = None
        if self.state.source.has_traces():
            reader = self.state.reader
        try:
            snapshot = read_queues(reader, self.ctx.source.control(), self.ctx.clock())
        except Exception:
            self.state.reset()
            raise
        if snapshot == self.last:
            return None
        self.last = snapshot
        return snapshot

    def invalidate(self) -> None:
        self.last = object()

    def close(self) -> None:
        self.state.close()
