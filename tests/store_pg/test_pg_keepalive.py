"""TCP keepalive on the Postgres store's connections (engine/store/pg/connection.py): the socket libpq opened has
SO_KEEPALIVE on with the short timers Flightdeck sets (30 s idle, 10 s between probes, 3 probes; 60 s user timeout),
unless the store's URL sets its own; DBOS's connections of a durable engine on the store too. Read back from the
connections' real sockets; a real PostgreSQL on 127.0.0.1."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import anyio
import psycopg
import pytest

from engine.hierarchy.loader import load_hierarchy
from engine.runtime.engine import Engine, RunRequest
from engine.store import open_engine_store
from engine.store.location import PostgresLocation, parse_store_location
from engine.store.pg.connection import connect
from tests.durable_support import CHARGING


def pg(url: str) -> PostgresLocation:
    location = parse_store_location(url)
    assert isinstance(location, PostgresLocation)
    return location


def socket_options(conn: Any) -> tuple[int, int, int, int, int]:
    """(SO_KEEPALIVE, TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT, TCP_USER_TIMEOUT) of the connection's socket."""
    sock = socket.socket(fileno=os.dup(conn.fileno()))
    try:
        return (sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
                sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
                sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
                sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT))
    finally:
        sock.close()  # closes the duplicate only: libpq's own descriptor stays open


def test_a_store_connection_probes_a_silent_server_after_a_minute(pg_url: str) -> None:
    conn = connect(pg(pg_url))
    try:
        assert socket_options(conn) == (1, 30, 10, 3, 60_000)  # the kernel's defaults: idle 7200 s, 75 s, 9, 0
        assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        conn.close()


def test_the_urls_own_keepalive_settings_win(pg_url: str) -> None:
    joiner = "&" if "?" in pg_url else "?"
    conn = connect(pg(f"{pg_url}{joiner}keepalives_idle=120&tcp_user_timeout=5000"))
    try:
        assert socket_options(conn) == (1, 120, 10, 3, 5000)
    finally:
        conn.close()


def keepidle_by_local_port() -> dict[int, int]:
    """TCP_KEEPIDLE of every IPv4/IPv6 TCP socket this process holds, by its local port."""
    found = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            if not os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                continue
            sock = socket.socket(fileno=os.dup(int(name)))
        except OSError:
            continue
        try:
            if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_STREAM:
                found[sock.getsockname()[1]] = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE)
        except OSError:
            pass
        finally:
            sock.close()
    return found


def test_a_durable_engines_dbos_connections_get_the_keepalive_too(pg_url: str, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "charging.yaml"
    path.write_text(CHARGING)
    monkeypatch.setenv("FLIGHTDECK_TEST_LEDGER", str(tmp_path / "ledger.jsonl"))
    seen: dict[str, Any] = {}

    async def go() -> None:
        with open_engine_store(tmp_path / "store", traces_to=pg(pg_url)) as store:
            async with Engine(store, latency_scale=0.0, runbooks=False, durable=True) as engine:
                result = await engine.run(load_hierarchy(str(path)), RunRequest(input="charge"))
                assert result.status == "completed", result
                # DBOS's backends (application_name dbos_transact) by their client port, which is our socket's.
                with psycopg.connect(pg_url, autocommit=True) as admin:
                    seen["dbos"] = {int(row[0]) for row in admin.execute(
                        "SELECT client_port FROM pg_stat_activity WHERE application_name = 'dbos_transact' "
                        "AND datname = current_database()").fetchall()}
                seen["sockets"] = keepidle_by_local_port()

    anyio.run(go)
    ours = {port: seen["sockets"][port] for port in seen["dbos"] if port in seen["sockets"]}
    assert ours, seen  # DBOS holds connections in this process
    assert set(ours.values()) == {30}, ours  # not the kernel's 7200 s
