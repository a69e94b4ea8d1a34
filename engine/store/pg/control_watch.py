"""ControlWatcher: wake within milliseconds when the control plane on a Postgres store changes, instead of polling.

Every committed change to a control table NOTIFYs channel `flightdeck_control` in its own transaction (statement
triggers, pg/control_schema.py; the payload is the table's name), so the notification is delivered exactly when the
change becomes visible: never before its COMMIT, never for a rolled-back one, and also for a change made with plain
SQL outside Flightdeck (the engine's binding check then refuses it). `wait()` blocks on the watcher's own connection
until one arrives or the timeout passes.

How an engine uses it (engine/runtime/control_worker.py's listener thread): open the watcher FIRST, then
read the snapshot, then loop `wait()` -> snapshot. A change committed between the snapshot and the first wait is
already queued on the LISTENing connection, so it is never missed; a spurious wake costs one snapshot read. The
timeout doubles as the safety net a poller had: wake at least every so often and read anyway.

One watcher per thread (it owns one connection); `close()` from another thread makes a blocked `wait()` return.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.store.pg.connection import connect, store_error
from engine.store.pg.control_schema import CHANNEL

if TYPE_CHECKING:
    import psycopg

    from engine.store.location import PostgresLocation


@dataclass(frozen=True, slots=True)
class ControlChange:
    """What woke a wait: the control tables changed by the transactions committed since (their NOTIFY payloads)."""

    tables: frozenset[str]
    received: float  # time.monotonic() when the first notification was read


class ControlWatcher:
    """LISTENs on the store's control channel from construction on."""

    def __init__(self, location: PostgresLocation) -> None:
        import psycopg

        self.location = location
        self._closing = False  # close() was called: a failing wait is the stop, not a lost connection
        self._conn: psycopg.Connection[Any] = connect(location, autocommit=True)
        try:
            self._conn.execute(f"LISTEN {CHANNEL}")  # CHANNEL is our own identifier
        except psycopg.Error as exc:
            self._conn.close()
            raise store_error(location, exc, "listening for control changes") from None

    def wait(self, timeout_s: float) -> ControlChange | None:
        """Block until a control change commits (then also take every notification already queued, so one burst of
        writes wakes the caller once) or `timeout_s` passes (None). StoreError if the connection fails."""
        import psycopg

        try:
            first = list(self._conn.notifies(timeout=max(0.0, timeout_s), stop_after=1))
            if not first:
                return None
            received = time.monotonic()
            # Whatever else has already arrived: a transaction touching several tables sends one per table.
            rest = list(self._conn.notifies(timeout=0.0))
        except psycopg.Error as exc:
            # Closed by another thread to stop the wait. A connection the server dropped is closed too (and broken):
            # that must be an error, or the caller would take it for "nothing changed" forever.
            if self._closing:
                return None
            raise store_error(self.location, exc, "waiting for control changes") from None
        return ControlChange(frozenset(n.payload for n in first + rest), received)

    def close(self) -> None:
        self._closing = True
        self._conn.close()

    def __enter__(self) -> ControlWatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
