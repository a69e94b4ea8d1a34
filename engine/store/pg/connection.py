"""Connecting to a Postgres store: psycopg imported here (a missing driver is a clear StoreError, not an
ImportError), errors that never show the URL's password, and NUMERIC results as Python numbers.

TCP keepalive: every connection turns libpq's keepalives on with short timers (KEEPALIVE) unless the URL sets them.
A connection can hang without breaking: the server's host is gone or a NAT/firewall dropped the flow silently, and
no RST ever comes. Without probes an idle connection (the control listener blocked on LISTEN, a writer between
batches, a heartbeat connection) would notice only at the kernel's default, two hours of silence plus ~11 minutes
of probes; with these, after keepalives_idle + keepalives_count x keepalives_interval = 30 + 3 x 10 = 60 s of
silence from the server. `tcp_user_timeout` (60 s) covers what keepalive does not: data sent and never
acknowledged (a query or COMMIT written to a peer that vanished) fails after 60 s instead of TCP's ~15 minutes of
retransmissions. Either ends in a broken connection, which the callers already handle (the writer retries and
reconnects, the listener reconnects, a command exits 3). A URL's own values win (`?keepalives_idle=120`).

sum() over BIGINT columns returns NUMERIC, which psycopg loads as Decimal; the store's readers want the int (or float)
SQLite would give, so reader connections load NUMERIC as int when integral and float otherwise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.errors import StoreError

if TYPE_CHECKING:
    import psycopg

    from engine.store.location import PostgresLocation

CONNECT_TIMEOUT_S = 10
# libpq connection parameters set on every connection whose URL does not set them (see the module docstring).
KEEPALIVE: dict[str, int] = {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10,
                             "keepalives_count": 3, "tcp_user_timeout": 60_000}
WRITER_APPLICATION = "flightdeck-trace-writer"


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError as exc:  # the `postgres` extra is not installed
        raise StoreError("a Postgres store needs the psycopg driver: pip install 'flightdeck[postgres]'") from exc
    return psycopg


def connect(location: PostgresLocation, *, autocommit: bool = True,
            application_name: str = "flightdeck") -> psycopg.Connection[Any]:
    """A connection to the store's database; StoreError (password masked) when it cannot be reached.
    `application_name` is what pg_stat_activity shows (the trace writers' is WRITER_APPLICATION)."""
    driver = _psycopg()
    try:
        conn: psycopg.Connection[Any] = driver.connect(location.dsn, autocommit=autocommit,
                                                       connect_timeout=CONNECT_TIMEOUT_S,
                                                       application_name=application_name,
                                                       **keepalive_defaults(location))
    except driver.Error as exc:
        raise StoreError(f"cannot connect to the Postgres store {location.masked}: "
                         f"{_one_line(location.scrub(str(exc)))}") from None
    _load_numeric_as_number(conn)
    return conn


def keepalive_defaults(location: PostgresLocation) -> dict[str, int]:
    """KEEPALIVE's parameters the store's URL does not set itself (keyword arguments would override the URL's)."""
    return keepalive_params(location.dsn)


def keepalive_params(dsn: str) -> dict[str, int]:
    """keepalive_defaults for a URL given as text (what DBOS's engine is configured with: engine/durable/host.py)."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        given = conninfo_to_dict(dsn)
    except _psycopg().Error:  # a URL libpq cannot parse: connect() reports it, with the password masked
        return {}
    return {name: value for name, value in KEEPALIVE.items() if name not in given}


def to_driver_sql(sql: str) -> str:
    """qmark SQL (`?`, what the store's shared queries use) as psycopg's format SQL (`%s`); a literal `%` is
    doubled."""
    return sql.replace("%", "%%").replace("?", "%s")


def store_error(location: PostgresLocation, exc: Exception, action: str) -> StoreError:
    """A driver error as a StoreError that names the store (masked) and the action."""
    return StoreError(f"Postgres store {location.masked}: {action} failed: {_one_line(location.scrub(str(exc)))}")


def _one_line(text: str) -> str:
    """A driver message on one line (libpq adds hints on lines of their own): a log line, a health field."""
    return " ".join(text.split())


def _load_numeric_as_number(conn: psycopg.Connection[Any]) -> None:
    from psycopg.adapt import Loader

    class NumberLoader(Loader):
        def load(self, data: Any) -> int | float:
            text = bytes(data).decode("ascii")
            if "." in text or "e" in text or "N" in text or "I" in text:  # fraction, exponent, NaN, Infinity
                return float(text)
            return int(text)

    conn.adapters.register_loader("numeric", NumberLoader)
