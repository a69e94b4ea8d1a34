"""What a TraceWriter (engine/store/writer.py) has shipped to its trace-writer process and not yet seen committed:
numbered frames in flight, their item counts, bytes and age (the back-pressure bounds), and the flush markers
waiting on them. The shipper thread opens and sends frames; the acknowledgement thread settles them. Each counter
has one writing thread, so no lock is needed (`shipped`/`bytes_shipped`: the shipper; `acked`/`bytes_acked`: the
acknowledgement thread)."""

from __future__ import annotations

import threading
import time
from typing import Any

from engine.store.frames import encode


class InFlight:
    __slots__ = ("acked", "acked_frame", "bytes_acked", "bytes_shipped", "meta", "next_frame", "shipped", "sizes",
                 "waiters")

    def __init__(self) -> None:
        self.shipped = 0  # items
        self.acked = 0
        self.bytes_shipped = 0
        self.bytes_acked = 0
        self.next_frame = 1
        self.acked_frame = 0
        self.sizes: dict[int, int] = {}
        # frame -> (bytes, time shipped): the byte and age bounds. Written by the shipper, popped by the ack thread.
        self.meta: dict[int, tuple[int, float]] = {}
        self.waiters: dict[int, list[threading.Event]] = {}

    @property
    def bytes_in_flight(self) -> int:
        """Bytes of pickled frames shipped and not yet acknowledged."""
        return self.bytes_shipped - self.bytes_acked

    def oldest_age(self) -> float:
        """Seconds since the oldest unacknowledged frame was shipped (0 when none is)."""
        meta = self.meta.get(self.acked_frame + 1)
        return 0.0 if meta is None else time.monotonic() - meta[1]

    def ship(self, items: list[tuple[Any, ...]], waiters: list[threading.Event]) -> bytes:
        """Number the next frame of `items` (flush markers already taken out: `waiters`, released when it commits),
        count it as in flight and return its payload, to be written down the pipe."""
        frame = self.next_frame
        self.next_frame += 1
        for waiter in waiters:
            waiter.frame = frame  # type: ignore[attr-defined]
        self.sizes[frame] = len(items)
        if waiters:
            self.waiters[frame] = waiters
        payload = encode_items(frame, items, bool(waiters))
        self.meta[frame] = (len(payload), time.monotonic())
        self.bytes_shipped += len(payload)
        self.shipped += len(items)
        return payload

    def acknowledge(self, frame: int) -> None:
        """Every frame up to `frame` is committed: settle them and release their flush markers."""
        acked = 0
        for number in range(self.acked_frame + 1, frame + 1):
            acked += self.sizes.pop(number, 0)
            meta = self.meta.pop(number, None)
            if meta is not None:
                self.bytes_acked += meta[0]
            for waiter in self.waiters.pop(number, ()):
                waiter.set()
        self.acked_frame = frame
        self.acked += acked

    def release_waiters(self) -> None:
        """The writer process ended: release every flush marker still waiting (their callers check why)."""
        for waiters in list(self.waiters.values()):
            for waiter in waiters:
                waiter.set()
        self.waiters.clear()


def encode_items(frame: int, items: list[tuple[Any, ...]], urgent: bool) -> bytes:
    try:
        return encode(("items", frame, items, urgent))
    except Exception:  # one payload that cannot cross (too deeply nested, ...) must not lose its neighbours
        return encode(("items", frame, [_crossable(item) for item in items], urgent))


def _crossable(item: tuple[Any, ...]) -> tuple[Any, ...]:
    try:
        encode(item)
        return item
    except Exception as exc:
        marker = {"_unserialisable": f"{type(exc).__name__}: {exc}"[:200]}
        return tuple(value if value is None or isinstance(value, (str, int, float)) else marker for value in item)
