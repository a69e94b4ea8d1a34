"""The embedded PostgreSQL fixture itself: a real server on loopback TCP, a fresh database per test."""

from __future__ import annotations

import psycopg

from tests.pg_support import EmbeddedPostgres


def test_server_listens_on_loopback_tcp(postgres_server: EmbeddedPostgres) -> None:
    with psycopg.connect(postgres_server.url) as conn:
        row = conn.execute("SELECT inet_server_addr()::text, inet_server_port(), current_setting('server_version')"
                           ).fetchone()
    assert row is not None
    assert row[0].startswith("127.0.0.1") and row[1] == postgres_server.port
    assert row[2].startswith("18.")


def test_each_database_starts_empty(postgres_server: EmbeddedPostgres, pg_url: str) -> None:
    with psycopg.connect(pg_url) as conn:
        conn.execute("CREATE TABLE marker (x int)")
    other = postgres_server.create_database()
    try:
        with psycopg.connect(other) as conn:
            found = conn.execute("SELECT count(*) FROM pg_tables WHERE tablename = 'marker'").fetchone()
        assert found == (0,)
    finally:
        postgres_server.drop_database(other)
