"""One batch of runs on a store, then the store read back: what drills and evals share.

The runs happen in one `anyio.run` on a store opened for an engine (the given directory, else a temporary one that
is deleted afterwards; or a Postgres store, `run_then_read_postgres`); the engine store is closed (its trace writer
flushed and stopped) before the reader opens, so the read sees every span and event the runs recorded.
"""

from __future__ import annotations

import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import anyio

from engine.store import EngineStore, open_engine_store, open_reader, open_trace_reads
from engine.store.location import PostgresLocation
from engine.store.reader import TraceReader
from engine.store.reader_protocol import TraceReads

__all__ = ["run_then_read", "run_then_read_postgres"]

Ran = TypeVar("Ran")
Read = TypeVar("Read")


def run_then_read(store_dir: str | Path | None, work: Callable[[EngineStore], Awaitable[Ran]],
                  read: Callable[[TraceReader, Ran], Read], *, prefix: str = "flightdeck-") -> Read:
    """`work(store)` (async: it opens its own Engines on the store), then `read(reader, what work returned)`."""
    with tempfile.TemporaryDirectory(prefix=prefix) as scratch:
        where = Path(store_dir) if store_dir is not None else Path(scratch)
        store = open_engine_store(where)
        try:
            ran = anyio.run(work, store)
        finally:
            store.close()
        reader = open_reader(where)
        try:
            return read(reader, ran)
        finally:
            reader.close()


def run_then_read_postgres(location: PostgresLocation, work: Callable[[EngineStore], Awaitable[Ran]],
                           read: Callable[[TraceReads, Ran], Read]) -> Read:
    """`run_then_read` on an engine wholly on a Postgres store (its config from $FLIGHTDECK_CONFIG), read back
    through the store's trace reads."""
    store = open_engine_store(location)
    try:
        ran = anyio.run(work, store)
    finally:
        store.close()
    reader = open_trace_reads(location)
    try:
        return read(reader, ran)
    finally:
        reader.close()
