"""The trace store on either backend, for tests that run the same reads against both (no tests here).

`TraceBackend.writer()` is a TraceWriter on a fresh traces.db (SQLite) or a PgBatchWriter on a fresh Postgres
database (tests/conftest.py: pg_url); both have the same emit methods, `flush()` and `close()` (which commits what
is buffered). `reader()` is the matching TraceReader or PgTraceReader.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.store.location import PostgresLocation, parse_store_location
from engine.store.pg.batch_writer import PgBatchWriter
from engine.store.pg.reader import PgTraceReader
from engine.store.reader import TraceReader
from tests.store_support import new_writer

BACKENDS = ("sqlite", "postgres")


@dataclass
class TraceBackend:
    name: str
    tmp_path: Path
    pg_url: str | None = None

    @property
    def location(self) -> PostgresLocation:
        assert self.pg_url is not None, "only the postgres backend has a URL"
        location = parse_store_location(self.pg_url)
        assert isinstance(location, PostgresLocation)
        return location

    @property
    def store_arg(self) -> str:
        """What `--store` takes for this store: the directory or the URL."""
        return str(self.tmp_path) if self.pg_url is None else self.pg_url

    def writer(self, **kwargs: Any) -> Any:
        if self.pg_url is None:
            return new_writer(self.tmp_path, **kwargs)
        return PgBatchWriter(self.location, **kwargs)

    def reader(self) -> TraceReader | PgTraceReader:
        if self.pg_url is None:
            return TraceReader(self.tmp_path / "traces.db")
        return PgTraceReader.connect(self.location)
