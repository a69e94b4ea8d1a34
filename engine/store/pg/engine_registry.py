"""Engine registration on a Postgres store: each engine's row in the `engines` table (the trace schema's, v3: see
pg/schema.py for why one table), its heartbeat, its stop, and the listing `ControlAPI.engines()` shows.

What differs from control.db's `engines` (engine/store/control.py), and why:
- Several engines share one Postgres by design, so nothing holds a lock over "the store": an engine is dead when its
  heartbeat is older than STALE_AFTER_S (or, on the same host, its pid is gone), never because another one started.
- The id can be stable across restarts (`FLIGHTDECK_ENGINE_ID`, engine/store/pg_engine_store.py): an engine that
  comes back under its id closes out the runs its earlier life left `running` (`claim_engine_id`). It refuses while
  that id is live elsewhere (two processes under one id would abandon each other's runs). Without a stable id every
  start is a fresh uuid and has no leftovers: runs of dead engines stay `running` until takeover (a later slice of
  issue 16) closes them out.
- Heartbeats are plain autocommit UPDATEs of the engine's own row: they take no control-plane write lock and fire no
  NOTIFY (the `engines` table has no trigger), so a fleet's heartbeats wake no engine's control watcher.
Times are the engines' own clocks, as on control.db: hosts of a fleet need synchronized clocks (NTP) for the stale
mark to mean what it says.
"""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING, Any

from engine.errors import StoreLocked
from engine.store.control import STALE_AFTER_S
from engine.store.control_rows import EngineRecord, EngineStatus
from engine.store.pg.connection import connect, store_error
from engine.store.pg.engine_record import abandon_runs_of
from engine.store.pg.schema import PUBLISHED_VERSION, migrate, schema_version

if TYPE_CHECKING:
    import psycopg

    from engine.store.location import PostgresLocation

# pg_advisory_xact_lock(key, hashtext(id)) while an id is claimed: two engines starting under one id at once take
# turns, so exactly one of them finds the other live.
ENGINE_CLAIM_LOCK = 0x46_44_45_4E  # 'FDEN'

# The trace schema version that has the `heartbeat` column.
REGISTRATION_VERSION = 3

_COLUMNS = 'id, pid, host, "user", version, started, heartbeat, stopped'
# With what the engine publishes about itself (trace schema v5): EngineRecord's last field.
_PUBLISHED_COLUMNS = _COLUMNS + ", published"


def claim_engine_id(location: PostgresLocation, *, engine_id: str, pid: int, host: str, user: str, version: str,
                    started: float) -> list[str]:
    """Register this engine under `engine_id` (creating or upgrading the trace schema first) and close out the runs
    an earlier engine under the same id left `running` as `abandoned`; returns their ids. StoreLocked if an engine
    under that id is alive (not stopped, heartbeat fresh); StoreError (password masked) on a driver error."""
    import psycopg

    conn = connect(location, autocommit=True)
    try:
        migrate(conn, location)  # the `engines` table is the trace schema's (v3): the writer may not have run yet
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (ENGINE_CLAIM_LOCK, engine_id))
            row = conn.execute(f"SELECT {_PUBLISHED_COLUMNS} FROM engines WHERE id = %s FOR UPDATE",
                               (engine_id,)).fetchone()
            earlier = EngineRecord(*row) if row is not None else None
            if earlier is not None and _alive(earlier, started):
                raise StoreLocked(
                    f"engine id {engine_id!r} is in use on the Postgres store {location.masked}: pid {earlier.pid} "
                    f"on {earlier.host} (user {earlier.user}), last heartbeat {started - earlier.heartbeat:.1f}s ago. "
                    f"Give this engine another FLIGHTDECK_ENGINE_ID, or stop that one first (it counts as dead "
                    f"{STALE_AFTER_S:g}s after its last heartbeat)")
            # published '{}': this life has published nothing yet (not durable until it says so).
            conn.execute(
                f"INSERT INTO engines ({_PUBLISHED_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, NULL, '{{}}') "
                "ON CONFLICT (id) DO UPDATE SET pid = EXCLUDED.pid, host = EXCLUDED.host, "
                "\"user\" = EXCLUDED.\"user\", version = EXCLUDED.version, started = EXCLUDED.started, "
                "heartbeat = EXCLUDED.heartbeat, "
                "stopped = NULL, published = EXCLUDED.published", (engine_id, pid, host, user, version, started,
                                                                   started))
            if earlier is None:
                return []
            return abandon_runs_of(conn, [engine_id], started)
    except psycopg.Error as exc:
        raise store_error(location, exc, "registering the engine") from None
    finally:
        conn.close()


def _alive(row: EngineRecord, now: float) -> bool:
    if row.stopped is not None or now - row.heartbeat > STALE_AFTER_S:
        return False
    if row.host == socket.gethostname():  # on this host a gone pid is dead at once, without waiting for staleness
        try:
            os.kill(row.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # another user's live process
            return True
    return True


def heartbeat(conn: psycopg.Connection[Any], engine_id: str, now: float, published: str | None = None) -> None:
    """The engine is alive now; with `published` (a JSON object's text), also what it publishes about itself,
    replaced whole (the engine holds the object and sends it when it changed)."""
    if published is None:
        conn.execute("UPDATE engines SET heartbeat = %s WHERE id = %s", (now, engine_id))
    else:
        conn.execute("UPDATE engines SET heartbeat = %s, published = %s WHERE id = %s", (now, published, engine_id))


def mark_stopped(conn: psycopg.Connection[Any], engine_id: str, stopped: float) -> None:
    conn.execute("UPDATE engines SET stopped = %s, heartbeat = GREATEST(heartbeat, %s) "
                 "WHERE id = %s AND stopped IS NULL", (stopped, stopped, engine_id))


def list_engines(conn: psycopg.Connection[Any], now: float, limit: int = 50) -> list[EngineStatus]:
    """Newest first, `alive` and `stale` as ControlDB.list_engines says them. None when no engine has registered:
    no trace schema yet (a database only the control commands have used), or one from before heartbeats (v3)."""
    version = schema_version(conn)
    if version < REGISTRATION_VERSION:
        return []
    columns = _PUBLISHED_COLUMNS if version >= PUBLISHED_VERSION else _COLUMNS  # a reader does not migrate
    rows = conn.execute(f"SELECT {columns} FROM engines ORDER BY started DESC LIMIT %s", (limit,)).fetchall()
    out = []
    for row in rows:
        record = EngineRecord(*row)
        running = record.stopped is None
        fresh = now - record.heartbeat <= STALE_AFTER_S
        out.append(EngineStatus(**record.as_dict(), alive=running and fresh, stale=running and not fresh))
    return out
