"""Which engines on a Postgres store take resume requests (engine/store/pg/durable_takers.py): a durable engine's
`durable_pickup` row counts only for the life that wrote it, while that life is alive and says it takes requests.
A real PostgreSQL on 127.0.0.1, engines registered through the real registry."""

from __future__ import annotations

import os
import socket
import time

from engine.store.location import PostgresLocation
from engine.store.pg.control_db import PgControlDB
from engine.store.pg.durable_takers import live_takers, publish, taking_requests
from engine.store.pg.engine_registry import claim_engine_id
from tests.console_fleet_support import pg_location


def register(location: PostgresLocation, engine_id: str) -> None:
    claim_engine_id(location, engine_id=engine_id, pid=os.getpid(), host=socket.gethostname(), user="ops",
                    version="test", started=time.time())


def test_a_taker_counts_while_its_life_is_alive_and_takes_requests(pg_url: str) -> None:
    location = pg_location(pg_url)
    assert live_takers(location) == [] and taking_requests(location) == set()  # no table yet: nothing, no error
    register(location, "fleet/a")
    register(location, "fleet/b")  # registered, never durable: takes nothing
    publish(location, "fleet/a", pickup=True, auto_resume=False)
    [taker] = live_takers(location)
    assert (taker.engine_id, taker.pid, taker.auto_resume) == ("fleet/a", os.getpid(), False)
    assert taking_requests(location) == {"fleet/a"}
    # Its heartbeat gone stale: not live (the console decides liveness itself and still sees the row).
    assert live_takers(location, now=time.time() + 60) == []
    # Closing: it takes nothing more.
    publish(location, "fleet/a", pickup=False, auto_resume=False)
    assert live_takers(location) == [] and taking_requests(location) == set()


def test_a_row_of_an_earlier_life_does_not_count_for_the_next_one(pg_url: str) -> None:
    location = pg_location(pg_url)
    register(location, "fleet/a")
    publish(location, "fleet/a", pickup=True, auto_resume=True)
    control = PgControlDB(location)
    try:
        control.mark_stopped("fleet/a")
    finally:
        control.close()
    assert live_takers(location) == []  # stopped
    register(location, "fleet/a")  # back under its id, as `flightdeck run` without --durable: publishes nothing
    assert live_takers(location) == [] and taking_requests(location) == set()
    publish(location, "fleet/a", pickup=True, auto_resume=True)  # this life is durable
    assert [t.engine_id for t in live_takers(location)] == ["fleet/a"]
