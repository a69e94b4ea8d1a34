"""The TraceWriter's acknowledgement thread (engine/store/writer.py): reads what the trace-writer process reports
(frames committed with the last sequence number and stats, failing and recovered commits, rows lost, redaction
time-outs, a crash) and keeps it: the committed position, the writer's health and problems, and the callbacks that
hear about commits and health changes."""

from __future__ import annotations

import logging
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from engine.errors import StoreError
from engine.store.batch import CommittedEvent
from engine.store.frames import read_frame
from engine.store.writer_flight import InFlight
from engine.store.writer_types import WriterHealth

if TYPE_CHECKING:
    from engine.store.location import PostgresLocation

# The writer's logger, as before the split (operators and tests filter on it).
log = logging.getLogger("engine.store.writer")

CommitCallback = Callable[[list[CommittedEvent]], None]
HealthCallback = Callable[[WriterHealth], None]


class Acknowledgements:
    """What the writer process has reported, as the engine sees it. `stopping` is set by TraceWriter.close()."""

    def __init__(self, db_path: Path | PostgresLocation, last_seq: int, flight: InFlight,
                 space: threading.Condition) -> None:
        self.db_path = db_path
        self.flight = flight
        self.space = space  # notified whenever items leave flight (emitters waiting for room wait on it)
        self.callbacks: list[CommitCallback] = []
        self.seq_callbacks: list[Callable[[int], None]] = []
        self.health_callbacks: list[HealthCallback] = []
        self.state_lock = threading.Lock()
        self.transient: StoreError | None = None
        self.lost: StoreError | None = None
        self.lost_unreported = False
        self.gone: StoreError | None = None  # the writer process ended (or could not be reached)
        self.stopping = False
        self.stats: dict[str, float] = {"batches": 0, "items": 0, "events": 0, "build_cpu_s": 0.0,
                                        "commit_cpu_s": 0.0}
        self.last_committed_seq = last_seq
        self.last_commit_time = 0.0  # time.time() when the last commit was acknowledged
        self.redaction_timeouts = 0  # strings the writer process stored as TIMED_OUT (as last reported)

    @property
    def error(self) -> StoreError | None:
        with self.state_lock:
            return self.transient or self.lost or self.gone

    def read(self, stream: IO[bytes], process: subprocess.Popen[bytes]) -> None:
        """The thread's body: until the writer process's pipe ends."""
        crash: str | None = None
        try:
            while True:
                message = read_frame(stream)
                if message is None:
                    break
                tag = message[0]
                if tag == "ack":
                    self.acknowledge(*message[1:])
                elif tag == "transient":
                    self.set_transient(message[1])
                elif tag == "lost":
                    self.record_lost(message[1])
                elif tag == "redaction_timed_out":
                    self.redaction_timed_out(int(message[1]))
                elif tag == "gave_up":  # commits kept failing past the Postgres give-up window
                    crash = str(message[1])
                elif tag == "crashed":
                    crash = message[1].strip().splitlines()[-1]
                    log.error("trace writer process for %s crashed:\n%s", self.db_path, message[1])
        except (EOFError, OSError, ValueError) as exc:
            crash = f"lost contact with it ({exc})"
        code = process.wait()
        unexpected = not (self.stopping and code == 0 and crash is None)
        if unexpected:
            why = crash or (f"it was killed by signal {-code}" if code < 0 else f"it exited with code {code}")
            self.gone = StoreError(f"the trace writer process for {self.db_path} stopped: {why}")
            if not self.health_callbacks:
                log.error("%s", self.gone)
        elif self.gone is None:
            self.gone = StoreError(f"the trace writer for {self.db_path} is closed")
        self.flight.release_waiters()
        with self.space:
            self.space.notify_all()
        if unexpected:
            self.report(WriterHealth("gone", str(self.gone)))

    def acknowledge(self, frame: int | None, last_seq: int, stats: dict[str, float],
                    events: list[CommittedEvent] | None) -> None:
        if frame is not None:
            self.flight.acknowledge(frame)
        if last_seq > self.last_committed_seq:
            self.last_committed_seq = last_seq
            _call_each(self.seq_callbacks, last_seq, "trace on_commit_seq callback failed")
        self.last_commit_time = time.time()
        self.stats = stats
        with self.space:
            self.space.notify_all()
        if events:
            _call_each(self.callbacks, events, "trace on_commit callback failed")

    def report(self, health: WriterHealth) -> None:
        _call_each(self.health_callbacks, health, "trace writer health callback failed")

    def redaction_timed_out(self, total: int) -> None:
        """Once per writer: the operator's pattern is costing stored data (the trace has the event with counts)."""
        first = self.redaction_timeouts == 0
        self.redaction_timeouts = total
        if first:
            from engine.store.user_patterns import TIMED_OUT  # not at import: it loads the regex package

            log.warning("redaction pattern timed out: %d string(s) stored in %s as %r instead of their text; "
                        "simplify [redaction].patterns in config.toml (event redaction.timed_out counts them)",
                        total, self.db_path, TIMED_OUT)

    def set_transient(self, message: str | None) -> None:
        with self.state_lock:
            was = self.transient
            self.transient = None if message is None else StoreError(message)
        if self.health_callbacks:
            if (message is None) != (was is None) or (message is not None and message != str(was)):
                self.report(WriterHealth("ok") if message is None else WriterHealth("degraded", message))
        elif message is None:
            if was is not None:
                log.warning("trace writer recovered; commits to %s resumed", self.db_path)
        elif was is None:
            log.error("%s (retrying)", message)

    def record_lost(self, message: str) -> None:
        if not (self.stopping and self.health_callbacks):  # else close() raises it to whoever reports it
            log.error("%s", message)
        with self.state_lock:
            self.lost = StoreError(message)
            self.lost_unreported = True

    def raise_lost(self) -> None:
        """Raise the loss of rows recorded since the last call, once."""
        with self.state_lock:
            if not self.lost_unreported:
                return
            self.lost_unreported = False
            lost = self.lost
        if lost is not None:
            raise lost


def _call_each(callbacks: list[Callable[[Any], None]], value: Any, failed: str) -> None:
    """Call every callback (a copy of the list: one may register another) with `value`; log, and otherwise ignore,
    what one raises."""
    for callback in list(callbacks):
        try:
            callback(value)
        except Exception:
            log.exception(failed)
