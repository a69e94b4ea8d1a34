"""The TraceWriter's shipper thread (engine/store/writer.py): every SHIP_INTERVAL (sooner when woken) it sends what
the emit methods queued, as one pickled frame, down the pipe to the trace-writer process, together with any control
message; it keeps items back while a full bound is in flight (so emitters see them and slow down), and on close
sends what is left and then tells the writer process to stop."""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import IO, Any

from engine.store.batch import FLUSH
from engine.store.frames import encode, write_frame
from engine.store.writer_acks import Acknowledgements
from engine.store.writer_flight import InFlight

# The writer's logger, as before the split (operators and tests filter on it).
log = logging.getLogger("engine.store.writer")

# How often the shipper sends what accumulated. Shipping is cheap (one pickle, one write); the writer process
# decides when to commit, so this only bounds how late an item joins the writer's queue.
SHIP_INTERVAL = 0.005
MAX_FRAME_ITEMS = 20_000


class Shipper:
    """What the shipper thread reads from: the emit queue, the control messages, the wake event. `flushes` counts
    flush markers on the queue (emitters add, the shipper takes them off): it filters them out only when any are."""

    def __init__(self, queue: deque[tuple[Any, ...]], to_writer: IO[bytes], flight: InFlight,
                 acks: Acknowledgements, space: threading.Condition, max_queue: int, max_bytes: int) -> None:
        self.queue = queue
        self.wake = threading.Event()
        self.control: deque[tuple[Any, ...]] = deque()  # messages for the writer process
        self.flushes = 0
        self.to_writer = to_writer
        self.flight = flight
        self.acks = acks
        self.space = space
        self.max_queue = max_queue
        self.max_bytes = max_bytes

    def send(self, message: tuple[Any, ...]) -> None:
        """Queue a control message for the writer process (sent before the next frame)."""
        self.control.append(message)
        self.wake.set()

    def run(self) -> None:
        """The thread's body: until close() has been asked for and everything is sent, or the writer is gone."""
        queue, fd, flight, acks = self.queue, self.to_writer.fileno(), self.flight, self.acks
        try:
            while True:
                if not acks.stopping:
                    self.wake.wait(SHIP_INTERVAL)
                    self.wake.clear()
                while self.control:
                    write_frame(fd, encode(self.control.popleft()))
                room = self.max_queue - (flight.shipped - flight.acked)
                if flight.bytes_in_flight >= self.max_bytes:
                    room = 0
                if room <= 0 and not acks.stopping:
                    # The writer process is behind (or cannot commit): keep items here, where emitters see them.
                    with self.space:
                        self.space.wait(0.05)
                    if acks.gone is not None:
                        return
                    continue
                count = min(len(queue), MAX_FRAME_ITEMS, max(room, MAX_FRAME_ITEMS if acks.stopping else 1))
                if count:
                    self.ship_frame(fd, count)
                if acks.stopping and not queue:
                    write_frame(fd, encode(("close", 0.0)))
                    return
        except OSError as exc:  # the writer process is gone; the acknowledgement thread reports why
            log.debug("trace shipper stopped: %s", exc)
        finally:
            self.to_writer.close()

    def ship_frame(self, fd: int, count: int) -> None:
        popleft = self.queue.popleft
        items = [popleft() for _ in range(count)]
        waiters: list[threading.Event] = []
        if self.flushes:
            waiters = [item[1] for item in items if item[0] == FLUSH]
            if waiters:
                self.flushes -= len(waiters)
                items = [item for item in items if item[0] != FLUSH]
        write_frame(fd, self.flight.ship(items, waiters))
