"""The one parser of `--store` / FLIGHTDECK_STORE: a directory or a Postgres URL, clear errors, masked passwords."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import InputError
from engine.store import resolve_store_dir
from engine.store.location import (
    PostgresLocation,
    PostgresNotSupported,
    StoreDirectory,
    mask_url,
    parse_store_location,
    resolve_store_location,
)


def test_a_path_is_a_directory_store(tmp_path: Path) -> None:
    assert parse_store_location(str(tmp_path)) == StoreDirectory(tmp_path)
    assert parse_store_location("~/fleet") == StoreDirectory(Path.home() / "fleet")
    assert parse_store_location("relative/dir") == StoreDirectory(Path("relative/dir"))


@pytest.mark.parametrize("url", ["postgresql://fd@db.internal:5433/traces", "postgres://fd@db/traces",
                                 "POSTGRESQL://fd@db/traces", "postgresql://fd:pw@[::1]:5432/traces?sslmode=require"])
def test_postgres_urls(url: str) -> None:
    location = parse_store_location(url)
    assert isinstance(location, PostgresLocation) and location.dsn == url


def test_the_password_is_masked_everywhere() -> None:
    location = parse_store_location("postgresql://fd:hunter2-secret@db:5432/traces")
    assert isinstance(location, PostgresLocation)
    assert location.masked == "postgresql://fd:***@db:5432/traces"
    for shown in (str(location), repr(location), f"{location}", location.scrub(f"failed for {location.dsn}")):
        assert "hunter2-secret" not in shown and "***" in shown
    query = parse_store_location("postgresql://fd@db/traces?sslmode=require&password=hunter2-secret")
    assert isinstance(query, PostgresLocation) and "hunter2-secret" not in str(query)
    assert str(query) == "postgresql://fd@db/traces?sslmode=require&password=***"
    assert mask_url("postgresql://fd@db/traces") == "postgresql://fd@db/traces"  # nothing to hide


@pytest.mark.parametrize("value, fragment", [
    ("mysql://fd@db/traces", "unsupported store URL scheme 'mysql'"),
    ("file:///tmp/store", "unsupported store URL scheme 'file'"),
    ("postgresql:///traces", "needs a host"),
    ("postgresql://fd:pw@db:notaport/traces", "not a valid Postgres URL"),
    ("postgresql://fd:pw@db:5432", "needs a database name"),
    ("   ", "is empty"),
])
def test_bad_values_name_the_field(value: str, fragment: str) -> None:
    with pytest.raises(InputError) as info:
        parse_store_location(value)
    assert info.value.field == "--store" and info.value.exit_code == 2
    assert fragment in info.value.message
    assert "pw@" not in str(info.value)  # a password in a bad URL is not echoed either


def test_the_environment_variable_is_parsed_and_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FLIGHTDECK_STORE", "redis://cache/0")
    with pytest.raises(InputError) as info:
        resolve_store_location(None)
    assert info.value.field == "FLIGHTDECK_STORE"
    monkeypatch.setenv("FLIGHTDECK_STORE", "postgresql://fd@db/traces")
    assert isinstance(resolve_store_location(None), PostgresLocation)
    assert resolve_store_location(str(tmp_path)) == StoreDirectory(tmp_path)  # --store wins over the variable
    monkeypatch.delenv("FLIGHTDECK_STORE")
    assert resolve_store_location(None) == StoreDirectory(Path(".flightdeck"))


def test_a_directory_only_caller_refuses_a_postgres_url_plainly() -> None:
    with pytest.raises(PostgresNotSupported) as info:
        resolve_store_dir("postgresql://fd:hunter2-secret@db/traces")
    message = str(info.value)
    assert info.value.exit_code == 2 and "issue 16" in message and "hunter2-secret" not in message
    assert "postgresql://fd:***@db/traces" in message
