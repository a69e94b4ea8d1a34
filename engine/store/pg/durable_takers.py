"""Which engines on a Postgres store take operators' resume requests now (issue 16: `flightdeck resume`, `reconcile`
and the console's R on Postgres).

On a store directory the one engine holding it says so in engine.lock's `durable` field (EngineStore.publish_durable).
A Postgres store has no lock file and several engines: each durable engine wholly on Postgres records the same two
facts in `durable_pickup`, one row per engine id: `pickup` (it takes `resume` and `reconcile` requests within a control
poll: engine/runtime/durable_pickup.py) and `auto_resume` (it also carries reconciled runs on by itself), and the
`started` of the engine life that wrote them. Liveness is the engines registry's (pg/engine_registry.py): not
stopped and a heartbeat under STALE_AFTER_S old. A row only counts for the life that wrote it (`started` equals the
registry's): an engine id restarted without --durable, or not yet past DurableRuns' open, takes nothing.

Which of the live takers takes a request is decided by the request itself, not here: the take is a `resume_taken`
audit row written under the control plane's write lock (engine/controls/run_requests.py), so exactly one does.
The table is created on first use (IF NOT EXISTS, under an advisory lock), like pg/liveness.py's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.store.control import STALE_AFTER_S
from engine.store.pg.connection import connect, store_error

if TYPE_CHECKING:
    from engine.store.location import PostgresLocation

TAKERS_LOCK = 0x66647470  # pg_advisory_xact_lock key while the table is created ("fdtp")

DDL = """
CREATE TABLE IF NOT EXISTS durable_pickup (
    engine_id TEXT PRIMARY KEY,
    started DOUBLE PRECISION NOT NULL,
    pickup BOOLEAN NOT NULL,
    auto_resume BOOLEAN NOT NULL,
    at DOUBLE PRECISION NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class DurableTaker:
    """A live durable engine on the Postgres store that takes resume requests now."""

    engine_id: str
    pid: int
    host: str
    heartbeat: float
    auto_resume: bool  # it also carries reconciled runs on by itself (not --no-resume, not flagged off)

    def describe(self) -> str:
        return f"engine {self.engine_id} (pid {self.pid} on {self.host})"


def publish(location: PostgresLocation, engine_id: str, *, pickup: bool, auto_resume: bool) -> None:
    """Record whether this engine (its registered life) takes resume requests now; StoreError on a driver error."""
    import psycopg

    try:
        with connect(location, application_name="flightdeck-durable") as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (TAKERS_LOCK,))
            conn.execute(DDL)
            conn.execute("INSERT INTO durable_pickup (engine_id, started, pickup, auto_resume, at) "
                         "SELECT id, started, %s, %s, %s FROM engines WHERE id = %s "
                         "ON CONFLICT (engine_id) DO UPDATE SET started = EXCLUDED.started, pickup = EXCLUDED.pickup, "
                         "auto_resume = EXCLUDED.auto_resume, at = EXCLUDED.at",
                         (pickup, auto_resume, time.time(), engine_id))
    except psycopg.Error as exc:
        raise store_error(location, exc, "recording a durable engine's pickup") from None


def live_takers(location: PostgresLocation, now: float | None = None) -> list[DurableTaker]:
    """The live engines that take resume requests now, freshest heartbeat first ([] on a database no durable
    engine has used); StoreError (password masked) when it cannot be read."""
    import psycopg

    now = time.time() if now is None else now
    try:
        with connect(location) as conn:
            if conn.execute("SELECT to_regclass('durable_pickup')").fetchone() in (None, (None,)):
                return []
            rows: list[Any] = conn.execute(
                "SELECT e.id, e.pid, e.host, e.heartbeat, p.auto_resume FROM engines e JOIN durable_pickup p "
                "ON p.engine_id = e.id AND p.started = e.started "
                "WHERE p.pickup AND e.stopped IS NULL AND e.heartbeat >= %s ORDER BY e.heartbeat DESC, e.id",
                (now - STALE_AFTER_S,)).fetchall()
    except psycopg.Error as exc:
        raise store_error(location, exc, "reading the durable engines") from None
    return [DurableTaker(engine_id=str(r[0]), pid=int(r[1]), host=str(r[2]), heartbeat=float(r[3]),
                         auto_resume=bool(r[4])) for r in rows]


def taking_requests(location: PostgresLocation) -> set[str]:
    """The engine ids whose current life takes resume requests, whatever their heartbeat: for a caller that decides
    liveness itself (the console, on its own clock, through ControlAPI.engines())."""
    return {engine_id for engine_id, (pickup, _auto) in pickup_states(location).items() if pickup}


def pickup_states(location: PostgresLocation) -> dict[str, tuple[bool, bool]]:
    """Engine id -> (pickup, auto_resume) for every engine whose current life is a durable engine (what `flightdeck
    engines` shows in DURABLE); StoreError (password masked) when it cannot be read."""
    import psycopg

    try:
        with connect(location) as conn:
            if conn.execute("SELECT to_regclass('durable_pickup')").fetchone() in (None, (None,)):
                return {}
            rows = conn.execute("SELECT p.engine_id, p.pickup, p.auto_resume FROM durable_pickup p JOIN engines e "
                                "ON e.id = p.engine_id AND e.started = p.started").fetchall()
    except psycopg.Error as exc:
        raise store_error(location, exc, "reading the durable engines") from None
    return {str(row[0]): (bool(row[1]), bool(row[2])) for row in rows}
