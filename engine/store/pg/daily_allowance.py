"""Daily budgets shared by every engine on one Postgres store: the database side of
engine/guardrails/budget/shared.py (an AllowanceSource).

Three tables (component `budget` in `flightdeck_schema`, migrated like the others):
- `budget_daily`: one row per hierarchy, the cap last asked for. Every exchange upserts it first, which takes the
  row's lock for the rest of the transaction: exchanges for one hierarchy run one at a time across engines.
- `budget_daily_spend`: settled spend reported by each holder (an engine id), in one-minute buckets. The rolling
  day is the buckets newer than 24 h + 1 min (budget/windows.py's rule: spend leaves between 24 h and 24 h + 60 s).
- `budget_leases`: each holder's unspent slice and when it expires. A live holder renews it with every exchange.

Invariant: spend in the window + every live lease <= the cap (a grant only ever fills the room left). Times are the
database's clock, so engines on hosts with skewed clocks agree on when a lease has expired.

A holder that died (kill -9, a lost host) leaves a lease and possibly spend it never reported. The first exchange
after the lease expired deletes it (the slice comes back) and reconciles the holder's spend from the traces: what
its runs of that hierarchy in the window cost (`runs.engine_id`, written by the same engine) beyond what it reported
is recorded as its spend, so a crash neither eats the day's budget nor lets the cap be spent twice.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.errors import StoreError
from engine.store.location import PostgresLocation, StoreLocation
from engine.store.pg.connection import connect, store_error
from engine.store.pg.schema import migrate

if TYPE_CHECKING:
    import psycopg

COMPONENT = "budget"
DEFAULT_LEASE_TTL_S = 60.0  # a dead engine's slice comes back within this; live ones renew every third of it
DAY_S = 86_400.0  # the same window as engine/guardrails/budget/windows.py (store may not import guardrails)
BUCKET_S = 60.0
NANO = 1_000_000_000

_V1 = """
CREATE TABLE budget_daily (
    hierarchy TEXT COLLATE "C" PRIMARY KEY,
    cap_nano BIGINT NOT NULL,
    updated DOUBLE PRECISION NOT NULL
);
CREATE TABLE budget_daily_spend (
    hierarchy TEXT COLLATE "C" NOT NULL,
    minute DOUBLE PRECISION NOT NULL,
    holder TEXT COLLATE "C" NOT NULL,
    cost_nano BIGINT NOT NULL,
    PRIMARY KEY (hierarchy, minute, holder)
);
CREATE TABLE budget_leases (
    hierarchy TEXT COLLATE "C" NOT NULL,
    holder TEXT COLLATE "C" NOT NULL,
    held_nano BIGINT NOT NULL,
    expires DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (hierarchy, holder)
);
"""

PG_BUDGET_MIGRATIONS: list[str] = [_V1]


@dataclass(frozen=True, slots=True)
class Grant:
    """One exchange's outcome, in nano-dollars: this holder's lease now, and what it saw of the others."""

    held: int
    spent: int
    others: int


class PgDailyAllowance:
    """The shared daily allowance of every hierarchy on one Postgres store, for one holder (an engine)."""

    def __init__(self, location: PostgresLocation, holder: str, *, ttl: float = DEFAULT_LEASE_TTL_S) -> None:
        self.location = location
        self.holder = holder
        self.ttl = ttl
        self._lock = threading.Lock()  # the ledger's lock serializes callers already; this guards the connection
        self._conn: psycopg.Connection[Any] | None = None
        self._has_runs = False
        with self._lock:
            self._connection()  # a bad URL or a database it cannot migrate fails the engine's start, not a call

    def _connection(self) -> psycopg.Connection[Any]:
        conn = self._conn
        if conn is None:
            conn = connect(self.location, application_name="flightdeck-budget")
            try:
                migrate(conn, self.location, COMPONENT, PG_BUDGET_MIGRATIONS)
                self._has_runs = conn.execute("SELECT to_regclass('runs')").fetchone() != (None,)
            except Exception:
                conn.close()
                raise
            self._conn = conn
        return conn

    def exchange(self, hierarchy: str, cap: int, *, report: int, keep: int, want: int, at_least: int) -> Grant:
        import psycopg

        with self._lock:
            try:
                conn = self._connection()
                with conn.transaction():
                    return self._exchange(conn, hierarchy, cap, report, keep, want, at_least)
            except psycopg.Error as exc:
                self._drop()  # the next exchange reconnects
                raise store_error(self.location, exc, "leasing a daily budget") from None

    def _exchange(self, conn: psycopg.Connection[Any], hierarchy: str, cap: int, report: int, keep: int, want: int,
                  at_least: int) -> Grant:
        (now,) = _one(conn, "INSERT INTO budget_daily AS d VALUES (%s, %s, extract(epoch FROM clock_timestamp())) "
                              "ON CONFLICT (hierarchy) DO UPDATE SET cap_nano = EXCLUDED.cap_nano, "
                              "updated = EXCLUDED.updated RETURNING d.updated", (hierarchy, cap))
        now = float(now)
        cutoff = now - DAY_S - BUCKET_S
        if report:
            self._add_spend(conn, hierarchy, self.holder, now, report)
        dead = conn.execute("DELETE FROM budget_leases WHERE hierarchy = %s AND holder <> %s AND expires <= %s "
                            "RETURNING holder", (hierarchy, self.holder, now)).fetchall()
        for (holder,) in dead:
            self._reconcile(conn, hierarchy, holder, now, cutoff)
        spent, others, mine = _one(conn,
            "SELECT (SELECT coalesce(sum(cost_nano), 0) FROM budget_daily_spend WHERE hierarchy = %(h)s "
            "AND minute > %(cutoff)s), (SELECT coalesce(sum(held_nano), 0) FROM budget_leases WHERE hierarchy = %(h)s "
            "AND holder <> %(me)s), (SELECT expires > %(now)s FROM budget_leases WHERE hierarchy = %(h)s "
            "AND holder = %(me)s)", {"h": hierarchy, "cutoff": cutoff, "me": self.holder, "now": now})
        # A lease that expired (this engine stalled for longer than the ttl) backs nothing any more: what it kept
        # is asked for again, like new allowance.
        base = keep if mine else 0
        lost = keep - base
        room = cap - int(spent) - int(others) - base
        if want + lost <= room:
            added = want + lost
        elif 0 < at_least + lost <= room:
            added = room
        else:
            added = 0
        held = base + added
        if held > 0:
            conn.execute("INSERT INTO budget_leases VALUES (%s, %s, %s, %s) ON CONFLICT (hierarchy, holder) DO UPDATE "
                         "SET held_nano = EXCLUDED.held_nano, expires = EXCLUDED.expires",
                         (hierarchy, self.holder, held, now + self.ttl))
        elif mine is not None:
            conn.execute("DELETE FROM budget_leases WHERE hierarchy = %s AND holder = %s", (hierarchy, self.holder))
        if report or dead:  # what left the window: nothing reads it again
            conn.execute("DELETE FROM budget_daily_spend WHERE hierarchy = %s AND minute <= %s", (hierarchy, cutoff))
        return Grant(held, int(spent), int(others))

    @staticmethod
    def _add_spend(conn: psycopg.Connection[Any], hierarchy: str, holder: str, now: float, cost: int) -> None:
        conn.execute("INSERT INTO budget_daily_spend VALUES (%s, %s, %s, %s) ON CONFLICT (hierarchy, minute, holder) "
                     "DO UPDATE SET cost_nano = budget_daily_spend.cost_nano + EXCLUDED.cost_nano",
                     (hierarchy, now - now % BUCKET_S, holder, cost))

    def _reconcile(self, conn: psycopg.Connection[Any], hierarchy: str, holder: str, now: float,
                   cutoff: float) -> None:
        """A dead holder's spend the traces show beyond what it reported, recorded as its spend now."""
        if not self._has_runs:
            return
        (traced,) = _one(conn, "SELECT coalesce(sum(cost_usd), 0) FROM runs WHERE engine_id = %s "
                               "AND hierarchy = %s AND started > %s", (holder, hierarchy, cutoff))
        (reported,) = _one(conn, "SELECT coalesce(sum(cost_nano), 0) FROM budget_daily_spend WHERE hierarchy = %s "
                                 "AND holder = %s AND minute > %s", (hierarchy, holder, cutoff))
        missing = round(float(traced) * NANO) - int(reported)
        if missing > 0:
            self._add_spend(conn, hierarchy, holder, now, missing)

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # already broken: nothing to release
                pass

    def close(self) -> None:
        with self._lock:
            self._drop()


def _one(conn: psycopg.Connection[Any], sql: str, params: Any) -> tuple[Any, ...]:
    """The one row an aggregate or RETURNING statement gives."""
    row = conn.execute(sql, params).fetchone()
    assert row is not None
    return tuple(row)


def open_daily_allowance(location: StoreLocation | None, holder: str, *,
                         ttl: float = DEFAULT_LEASE_TTL_S) -> PgDailyAllowance | None:
    """The shared daily allowance of a Postgres store (None for a store directory: one engine holds its lock, and
    its daily caps stay in memory). StoreError (password masked) when the store cannot be reached or migrated."""
    if not isinstance(location, PostgresLocation):
        return None
    import psycopg

    try:
        return PgDailyAllowance(location, holder, ttl=ttl)
    except psycopg.Error as exc:
        raise store_error(location, exc, "opening the shared daily budgets") from None
    except StoreError:
        raise
