"""Which durable engines on a Postgres store are alive, and who takes over a dead one's runs (issue 16).

Liveness is the engines registry's (pg/engine_registry.py): the trace schema's `engines` table, one row per engine
with its `heartbeat` and `stopped`. An engine wholly on Postgres beats there from its store's heartbeat thread; a
durable engine also beats there from its takeover thread (runtime/durable_takeover.py), which is what keeps the row
fresh for an engine on a store directory whose traces go to Postgres (its store's heartbeat goes to control.db).
An engine is dead once it stopped (closed, or a successor on its store directory marked it: that successor holds
the directory's lock) or its heartbeat is older than the takeover threshold.

- `durable_takeovers`: one row per dead engine whose runs a live engine took: the claim. Claiming is one
  `INSERT ... ON CONFLICT DO UPDATE ... WHERE <the claimant is dead>`: the primary key serializes two engines
  claiming at once (the second waits for the first's commit and then sees a live claimant: no row), so one engine
  takes a dead engine's runs; a claimant that died before it resumed them (its claim void) is itself dead, and the
  next taker claims both. Once the claimant has resumed them onto its own queue (`done`), the claim is final: those
  runs are the claimant's now, and if it dies they are found under it.
- `durable_executors`: one row per life of a durable engine: its DBOS executor id (`<engine id>~<random>`, fresh at
  every start) and its engine id. A fresh executor id per life keeps DBOS's own start-up recovery (which resumes its
  executor's PENDING workflows unchecked) from carrying on an earlier life's runs under a stable engine id: the
  engine takes those itself, with the checks a takeover makes. A dead engine's runs are found under all its lives'
  executor ids.
The tables are created on first use (IF NOT EXISTS, under an advisory lock), outside the trace schema's migrations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.store.pg.connection import connect, store_error

if TYPE_CHECKING:
    from engine.store.location import PostgresLocation

LIVENESS_LOCK = 0x666C6476  # pg_advisory_xact_lock key while the tables are created ("fldv")

DDL = """
CREATE TABLE IF NOT EXISTS durable_executors (
    executor_id TEXT PRIMARY KEY,
    engine_id TEXT NOT NULL,
    started DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS durable_executors_engine ON durable_executors (engine_id);
CREATE TABLE IF NOT EXISTS durable_takeovers (
    engine_id TEXT PRIMARY KEY,
    taken_by TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL,
    done BOOLEAN NOT NULL DEFAULT false
);
"""

@dataclass(frozen=True, slots=True)
class Fence:
    """Another engine claimed this engine's runs (it was seen dead: stalled past the takeover threshold)."""

    taken_by: str
    at: float  # when the claim was made (the taker's clock)


# Engines not stopped whose heartbeat is fresh: alive. Any other is dead.
_LIVE = "SELECT id FROM engines WHERE stopped IS NULL AND heartbeat >= %s"


class Liveness:
    """One connection (autocommit) for one engine's beats and takeover claims. Not thread-safe: one thread uses it."""

    def __init__(self, location: PostgresLocation) -> None:
        self.location = location
        self._conn: Any = None

    def _connection(self) -> Any:
        if self._conn is None or self._conn.closed:
            self._conn = connect(self.location, application_name="flightdeck-durable")
            with self._conn.transaction():
                self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (LIVENESS_LOCK,))
                self._conn.execute(DDL)
        return self._conn

    def _run(self, action: str, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        """One statement; StoreError (password masked) on a driver error, and the next call reconnects."""
        import psycopg

        try:
            cur = self._connection().execute(sql, params)
            return list(cur.fetchall()) if cur.description is not None else []
        except psycopg.Error as exc:
            self.close()
            raise store_error(self.location, exc, action) from None

    def beat(self, engine_id: str, now: float) -> Fence | None:
        """This engine is alive: its registered row's heartbeat (never moved back; the row must exist, registered
        when the engine's store opened), unless another engine has claimed its runs: then no beat (a fenced engine
        must not look alive again) and the claim is returned.

        One transaction that updates the row first (taking its lock) and then reads the claim: a claim locks the same
        row while it checks the engine is dead (`claim`), so the two serialize. A claim committed first is seen here
        (the beat is rolled back); a beat committed first makes the claim find the engine alive. So an engine whose
        beat found no claim cannot have been claimed as of that beat's start: the lease (runtime/durable_fence.py)
        counts from there."""
        import psycopg

        try:
            conn = self._connection()
            with conn.transaction() as tx:
                conn.execute("UPDATE engines SET heartbeat = GREATEST(heartbeat, %s) WHERE id = %s", (now, engine_id))
                row = conn.execute("SELECT taken_by, at FROM durable_takeovers WHERE engine_id = %s "
                                   "AND taken_by != %s", (engine_id, engine_id)).fetchone()
                if row is None:
                    return None
                tx.force_rollback = True  # fenced: the beat is not written
            return Fence(taken_by=str(row[0]), at=float(row[1]))
        except psycopg.Error as exc:
            self.close()
            raise store_error(self.location, exc, "a durable engine's heartbeat") from None

    def mark_stopped(self, engine_ids: list[str], now: float) -> None:
        """These engines stopped (closed, or known dead: their store directory's lock is held by a successor)."""
        if engine_ids:
            self._run("recording stopped durable engines",
                      "UPDATE engines SET stopped = %s WHERE id = ANY(%s) AND stopped IS NULL",
                      (now, list(engine_ids)))

    def dead_unclaimed(self, engine_id: str, now: float, stale_after: float) -> list[str]:
        """Dead engines (stopped, or no heartbeat for `stale_after` seconds) that no live engine has claimed,
        oldest heartbeat first; never `engine_id` itself. Engines that never ran a durable run are claimed too
        (once each: the claim then finds nothing of theirs in DBOS); the registry does not say which were durable."""
        rows = self._run("reading the engines' heartbeats",
                         "SELECT e.id FROM engines e LEFT JOIN durable_takeovers t ON t.engine_id = e.id "
                         "WHERE e.id != %s AND (e.stopped IS NOT NULL OR e.heartbeat < %s) "
                         f"AND (t.taken_by IS NULL OR (NOT t.done AND t.taken_by NOT IN ({_LIVE}))) "
                         "ORDER BY e.heartbeat",
                         (engine_id, now - stale_after, now - stale_after))
        return [str(row[0]) for row in rows]

    def register_executor(self, executor_id: str, engine_id: str, now: float) -> list[str]:
        """Record this life's DBOS executor id; returns the executor ids of the engine id's earlier lives."""
        self._run("registering a durable executor",
                  "INSERT INTO durable_executors (executor_id, engine_id, started) VALUES (%s, %s, %s)",
                  (executor_id, engine_id, now))
        return [e for e in self.executors_of([engine_id]) if e != executor_id]

    def executors_of(self, engine_ids: list[str]) -> list[str]:
        """Every DBOS executor id these engines ran under: their lives' ids, and the engine ids themselves (the
        executor id of engines from before per-life ids, and of a store directory's engines)."""
        rows = self._run("reading durable executors",
                         "SELECT executor_id FROM durable_executors WHERE engine_id = ANY(%s) ORDER BY started",
                         (list(engine_ids),))
        return [*engine_ids, *(str(row[0]) for row in rows)]

    def forget_claims_on(self, engine_id: str) -> None:
        """This engine is alive again under `engine_id` (a stable FLIGHTDECK_ENGINE_ID): a claim on its earlier
        life is history (those runs are the claimant's), and its next death must be claimable again."""
        self._run("clearing an old takeover claim", "DELETE FROM durable_takeovers WHERE engine_id = %s",
                  (engine_id,))

    def claim(self, dead: str, taker: str, now: float, stale_after: float) -> bool:
        """Claim the dead engine's runs for `taker`; False when a live engine holds the claim already, or the engine
        is alive after all (it beat since it was listed dead: its row is locked and read again, see `beat`)."""
        rows = self._run("claiming a dead engine's runs",
                         "INSERT INTO durable_takeovers (engine_id, taken_by, at) SELECT id, %s, %s FROM engines "
                         "WHERE id = %s AND (stopped IS NOT NULL OR heartbeat < %s) FOR UPDATE "
                         "ON CONFLICT (engine_id) DO UPDATE SET taken_by = EXCLUDED.taken_by, at = EXCLUDED.at "
                         f"WHERE NOT durable_takeovers.done AND durable_takeovers.taken_by NOT IN ({_LIVE}) "
                         "RETURNING taken_by",
                         (taker, now, dead, now - stale_after, now - stale_after))
        return bool(rows)

    def finish(self, dead: list[str], taker: str) -> None:
        """`taker` has resumed these dead engines' runs onto its own queue: its claims on them are final."""
        self._run("finishing a takeover", "UPDATE durable_takeovers SET done = true WHERE engine_id = ANY(%s) "
                  "AND taken_by = %s", (list(dead), taker))

    def claims(self) -> dict[str, str]:
        """Every claim: dead engine -> the engine that took its runs (tests, operators)."""
        return {str(dead): str(taker) for dead, taker in
                self._run("reading takeover claims", "SELECT engine_id, taken_by FROM durable_takeovers", ())}

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None
