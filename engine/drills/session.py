"""One batch of runs on a store, then the store read back: what drills and evals share.

The runs happen in one `anyio.run` on a store opened for an engine (the given directory, else a temporary one that
is deleted afterwards); the engine store is closed (its trace writer flushed and stopped) before the reader opens,
so the read sees every span and event the runs recorded.
"""

from __future__ import annotations

import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import anyio

from engine.store import EngineStore, open_engine_store, open_reader
from engine.store.reader import TraceReader

__all__ = ["run_then_read"]

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
