"""TCP keepalive on the Postgres store's connections (engine/store/pg/connection.py): the socket libpq opened has
SO_KEEPALIVE on with the short timers Flightdeck sets (30 s idle, 10 s between probes, 3 probes; 60 s user timeout),
unless the store's URL sets its own. Read back from the connection's real socket; a real PostgreSQL on 127.0.0.1."""

from __future__ import annotations

import os
import socket
from typing import Any

from engine.store.location import PostgresLocation, parse_store_location
from engine.store.pg.connection import connect


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
