"""PgSqlReads: `engine.store.sql_reads.SqlReads` on a Postgres store: a read-only session (the database refuses any
write in it, as traces.db opened mode=ro does) whose `execute` takes qmark SQL. A connection the server dropped
(a restart, a failover) fails the statement in flight with a StoreError and is replaced on the next one, so a
long-lived reader (the live exporter) recovers by itself."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from engine.store.location import PostgresLocation
from engine.store.pg.connection import connect, store_error, to_driver_sql
from engine.store.pg.schema import check_version


class PgSqlReads:
    def __init__(self, location: PostgresLocation) -> None:
        self.location = location
        self._conn = self._connect()

    def _connect(self) -> Any:
        import psycopg

        conn = connect(self.location, autocommit=True)
        try:
            conn.execute("SET default_transaction_read_only = on")
            check_version(conn, self.location)
        except psycopg.Error as exc:
            conn.close()
            raise store_error(self.location, exc, "open") from None
        except BaseException:
            conn.close()
            raise
        return conn

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Any:
        import psycopg

        if self._conn.broken:
            self._conn.close()
            self._conn = self._connect()
        try:
            # Always a parameter list (even empty): then `%%` (a literal % in qmark SQL) is unescaped.
            return self._conn.execute(to_driver_sql(sql), list(parameters))
        except psycopg.Error as exc:
            raise store_error(self.location, exc, "read") from None

    def close(self) -> None:
        self._conn.close()
