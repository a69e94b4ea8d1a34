"""An engine wholly on a Postgres store (issue 16): no store directory, no engine.lock, the control plane in the
database (PgControlDB), the traces through the trace-writer process committing to it (pg/writer_target.py).

What differs from a store directory (engine_store.py), and why:
- No lock: several engines share one database by design. Each registers under its id in the `engines` table and
  heartbeats (pg/engine_registry.py); that, not a lock, is how the others and the operators tell it is alive.
- The engine id: `FLIGHTDECK_ENGINE_ID` (or `engine_id=`) gives an engine a stable id across restarts, e.g.
  `host-a/serve-1`; it then closes out the runs its own earlier life left `running` as `abandoned`, and refuses to
  start while that id is alive elsewhere. Without one, each start is a fresh uuid with nothing to close out.
  Runs of OTHER engines are never touched, live or dead: taking over a dead engine's runs needs to know it is dead
  for good and who takes them (a later slice of issue 16, with DBOS recovery); until then they stay `running`.
- config.toml: there is no directory to hold it. `config_file=` (`flightdeck run --config FILE`), else
  `FLIGHTDECK_CONFIG`, else the defaults (redaction on, no notifiers, no [otel]).
- Runbooks: the shipped ones and the directory the config's `[runbooks] dir` names (there is no STORE/runbooks),
  checked by `input_checks` before the engine registers; incidents and applications in the database.
  OpenTelemetry export ([otel] in the config): the exporter process reads the database (engine/export/worker.py).
- What a lock holder publishes in engine.lock (durable, store and export health) goes to the engine's registry
  row (`engines.published`, trace schema v5; EngineStore sends it with its heartbeat).
"""

from __future__ import annotations

import os
import re
import socket
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from engine.errors import InputError, StoreError
from engine.store.config import StoreConfig, load_config
from engine.store.control import current_user
from engine.store.redact import Redactor
from engine.store.writer import TraceWriter

if TYPE_CHECKING:
    from engine.store.engine_store import EngineStore
    from engine.store.location import PostgresLocation
    from engine.store.preflight import InputCheck

ENGINE_ID_ENV = "FLIGHTDECK_ENGINE_ID"
CONFIG_ENV = "FLIGHTDECK_CONFIG"
_ENGINE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/-]{0,99}")


def engine_id_from(given: str | None, environ: Mapping[str, str]) -> str:
    """The engine's id: `given`, else $FLIGHTDECK_ENGINE_ID, else a fresh uuid. InputError naming the variable for
    one that is not 1-100 letters, digits and . _ : @ / - (it goes into messages, logs and the audit log)."""
    field = "engine_id" if given is not None else ENGINE_ID_ENV
    text = given if given is not None else environ.get(ENGINE_ID_ENV, "").strip()
    if not text:
        return uuid.uuid4().hex
    if not _ENGINE_ID.fullmatch(text):
        raise InputError(f"expected 1-100 letters, digits and . _ : @ / - (starting with a letter or digit), got "
                         f"{text[:120]!r}", field=field)
    return text


def engine_config(config_file: str | os.PathLike[str] | None, environ: Mapping[str, str]) -> StoreConfig:
    """The config of an engine without a store directory: `config_file`, else $FLIGHTDECK_CONFIG, else defaults."""
    chosen: str | os.PathLike[str] | None = config_file if config_file is not None else (
        environ.get(CONFIG_ENV, "").strip() or None)
    if chosen is None:
        return StoreConfig()
    return load_config(Path("."), chosen)


def open_postgres_engine_store(location: PostgresLocation, *, config_file: str | os.PathLike[str] | None,
                               flush_interval: float, max_queue: int, heartbeat_interval: float,
                               environ: Mapping[str, str] | None = None, engine_id: str | None = None,
                               give_up_after: float | None = None,
                               input_checks: Sequence[InputCheck] = ()) -> EngineStore:
    """See the module docstring. `input_checks` run with no directory and the config (the runbook loader's
    check_store_runbooks reads the config's [runbooks] dir). InputError for a bad config, a bad file a check reads
    or engine id (before anything is written), StoreLocked
    when the engine id is alive elsewhere, StoreError (password masked) when the database cannot be used."""
    from engine import __version__
    from engine.store.engine_store import EngineStore
    from engine.store.pg.control_db import PgControlDB
    from engine.store.pg.engine_registry import claim_engine_id

    env = os.environ if environ is None else environ
    config = engine_config(config_file, env)
    for check in input_checks:
        check(None, config)
    redactor = Redactor.from_config(config, env)
    engine_id = engine_id_from(engine_id, env)
    now, host, user, pid = time.time(), socket.gethostname(), current_user(), os.getpid()
    abandoned = claim_engine_id(location, engine_id=engine_id, pid=pid, host=host, user=user, version=__version__,
                                started=now)
    control: PgControlDB | None = None
    try:
        control = PgControlDB(location)
        writer = TraceWriter(location, redactor=redactor, flush_interval=flush_interval, max_queue=max_queue,
                             give_up_after=give_up_after, engine_id=engine_id)
    except BaseException:
        try:
            if control is None:
                control = PgControlDB(location)
            control.mark_stopped(engine_id)  # registered, but never ran: not a live engine for anyone
        except StoreError:
            pass
        finally:
            if control is not None:
                control.close()
        raise
    store = EngineStore(None, lock=None, traces=None, control=control, config=config, redactor=redactor,
                        engine_id=engine_id, writer=writer, heartbeat_interval=heartbeat_interval,
                        trace_location=location)
    store.abandoned_runs = abandoned
    return store
