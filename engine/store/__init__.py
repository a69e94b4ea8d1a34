"""The trace store: a directory (default ./.flightdeck, mode 0700) holding

- traces.db   what happened (runs, spans, events, engines); WAL; written only by the engine holding the lock,
              through TraceWriter; read by anyone through TraceReader.
- control.db  what operators and the engine intend; rollback journal, synchronous=FULL; many writers (ControlDB).
- engine.lock flock held by the one engine process; its JSON names the holder.
- config.toml store-wide settings (secrets to redact, patterns, notifiers, console keys); see config.py.

Or a PostgreSQL database (`--store postgresql://...`, issue 16, in progress: engine/store/pg/ holds its trace
store; the CLI serves reads from it, and an engine can write its traces there while its control plane stays in a
directory: open_engine_store's `traces_to`). location.py parses the `--store` value into either.

Entry points: resolve_store_location / resolve_store_dir, open_engine_store (the engine), open_reader and
open_trace_reads (CLI, console). The store imports no feature package (all DDL and migrations of both databases
are here). Submodules are imported lazily, for start-up time only (there is no import cycle to break):
`import engine.store` takes ~4 ms, importing every export eagerly ~125 ms (config's pydantic models, the writer),
which the console's reader-only start and the CLI's read commands would pay for nothing (measured with
`python -X importtime`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence

    from engine.store.config import StoreConfig
    from engine.store.control import ControlDB
    from engine.store.engine_store import EngineStore
    from engine.store.location import PostgresLocation, StoreLocation
    from engine.store.preflight import InputCheck
    from engine.store.reader import TraceReader
    from engine.store.reader_protocol import TraceReads
    from engine.store.redact import Redactor
    from engine.store.writer import TraceWriter

__all__ = [
    "ControlDB",
    "EngineStore",
    "Redactor",
    "StoreConfig",
    "TraceReader",
    "TraceWriter",
    "load_config",
    "open_engine_store",
    "open_reader",
    "open_trace_reads",
    "resolve_store_dir",
    "resolve_store_location",
]

_LAZY = {
    "EngineStore": "engine.store.engine_store",
    "TraceReader": "engine.store.reader",
    "TraceWriter": "engine.store.writer",
    "ControlDB": "engine.store.control",
    "StoreConfig": "engine.store.config",
    "load_config": "engine.store.config",
    "Redactor": "engine.store.redact",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'engine.store' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


def resolve_store_dir(arg: str | os.PathLike[str] | None) -> Path:
    """The store directory: the --store argument, else $FLIGHTDECK_STORE, else ./.flightdeck. For callers that need
    a directory store: a Postgres URL raises PostgresNotSupported (exit 2; the CLI names the command), never a
    directory named after the URL. InputError for a URL of another scheme."""
    from engine.store.location import PostgresLocation, PostgresNotSupported, resolve_store_location

    location = resolve_store_location(arg)
    if isinstance(location, PostgresLocation):
        raise PostgresNotSupported(location)
    return location.path


def resolve_store_location(arg: str | os.PathLike[str] | None) -> StoreLocation:
    """The store: a directory or a Postgres URL (location.py), from --store, else $FLIGHTDECK_STORE, else the
    default directory."""
    from engine.store.location import resolve_store_location as _resolve

    return _resolve(arg)


def open_engine_store(store_dir: str | os.PathLike[str] | PostgresLocation, *,
                      config_file: str | os.PathLike[str] | None = None,
                      flush_interval: float | None = None, max_queue: int = 100_000,
                      heartbeat_interval: float = 1.0, input_checks: Sequence[InputCheck] = (),
                      traces_to: PostgresLocation | None = None, give_up_after: float | None = None,
                      engine_id: str | None = None) -> EngineStore:
    """Open a store for the engine: run `input_checks` on the directory and the config (a feature's files in it or
    named by the config, e.g. engine.runbooks.loader.check_store_runbooks), create the directory (0700) if needed,
    take the lock (StoreLocked if another engine holds it), create/migrate both databases, load the config
    (InputError if invalid), mark runs left 'running' by a dead engine 'abandoned', register this engine and start
    its TraceWriter and heartbeat.

    `traces_to` (issue 16, an internal seam: no command offers it yet): the traces go to this Postgres store, while
    the lock, control.db and config stay in `store_dir`; `give_up_after`: seconds of failing Postgres commits after
    which the trace writer stops and the engine stops starting work (default 60).

    A PostgresLocation instead of a directory: the engine wholly on that Postgres store (pg_engine_store.py: no
    directory and no lock; the control plane and the traces in the database; config from `config_file`, else
    $FLIGHTDECK_CONFIG, else defaults; `engine_id`, else $FLIGHTDECK_ENGINE_ID, else a fresh uuid). `input_checks`
    run with no directory (None) and that config, before the engine registers."""
    from engine.store.engine_store import open_engine_store as _open
    from engine.store.location import PostgresLocation as Postgres
    from engine.store.writer import DEFAULT_FLUSH_INTERVAL

    if isinstance(store_dir, Postgres):
        from engine.store.pg_engine_store import open_postgres_engine_store

        return open_postgres_engine_store(
            store_dir, config_file=config_file,
            flush_interval=DEFAULT_FLUSH_INTERVAL if flush_interval is None else flush_interval,
            max_queue=max_queue, heartbeat_interval=heartbeat_interval, engine_id=engine_id,
            give_up_after=give_up_after, input_checks=input_checks)
    return _open(Path(store_dir), config_file=config_file,
                 flush_interval=DEFAULT_FLUSH_INTERVAL if flush_interval is None else flush_interval,
                 max_queue=max_queue, heartbeat_interval=heartbeat_interval, input_checks=input_checks,
                 traces_to=traces_to, give_up_after=give_up_after)


def open_reader(store_dir: str | os.PathLike[str]) -> TraceReader:
    """A TraceReader on an existing store. StoreError if there is none, StoreDamaged / StoreTooNew as they apply."""
    from engine.errors import StoreError
    from engine.store.files import TRACES_DB
    from engine.store.reader import TraceReader

    path = Path(store_dir) / TRACES_DB
    if not path.is_file():
        raise StoreError(f"no store at {store_dir} (run `flightdeck run` first or pass --store)")
    return TraceReader(path)


def open_trace_reads(location: StoreLocation) -> TraceReads:
    """The trace store's reads on either backend: a TraceReader on a directory's traces.db, or a PgTraceReader on a
    Postgres database (StoreError when it cannot connect or holds no trace store)."""
    from engine.store.location import PostgresLocation

    if isinstance(location, PostgresLocation):
        from engine.store.pg.reader import PgTraceReader

        return PgTraceReader.connect(location)
    return open_reader(location.path)

