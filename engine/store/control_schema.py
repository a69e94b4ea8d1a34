"""control.db schema: what operators and the engine intend (kill switches, flags, approvals, breaker overrides,
audit, the engine heartbeat). Written by any operator process and by the engine, so it uses a rollback journal with
synchronous=FULL: an operator's "kill" must survive a power cut the moment the CLI says it was recorded.

HOW TO ADD A TABLE (a feature's tables too: their DDL lives in engine/store, e.g. runbooks_ddl.py, because the store
imports no feature package): append ONE new entry to CONTROL_MIGRATIONS below, e.g.

    CONTROL_MIGRATIONS: list[Migration] = [
        _V1_ENGINES,
        '''
        CREATE TABLE kill_switches (...);
        CREATE INDEX ...;
        ''',
    ]

An entry is an SQL script (statements separated by ';') or a function `(sqlite3.Connection) -> None` for data
migrations. Its position is its schema version (first entry = version 1). Never edit, reorder or remove an entry
once it has been merged: stores already at that version never re-run it. ControlDB applies pending entries in one
transaction on open, so every process sees the newest schema it knows; an older Flightdeck opening a newer store
gets StoreTooNew instead of guessing.
"""

from __future__ import annotations

from engine.store.control_binding import bind_existing
from engine.store.control_ddl import CONTROLS_V2, CONTROLS_V5_APPROVAL_CALL, CONTROLS_V6_KILL_ACKS
from engine.store.migrate import Migration
from engine.store.runbooks_ddl import RUNBOOKS_V3

_V1_ENGINES = """
CREATE TABLE engines (
    id TEXT PRIMARY KEY,
    pid INTEGER NOT NULL,
    host TEXT NOT NULL,
    user TEXT NOT NULL,
    version TEXT NOT NULL,
    started REAL NOT NULL,
    heartbeat REAL NOT NULL,
    stopped REAL
);
CREATE INDEX engines_started ON engines (started);
"""

CONTROL_MIGRATIONS: list[Migration] = [
    _V1_ENGINES,
    CONTROLS_V2,
    RUNBOOKS_V3,
    bind_existing,  # v4: control rows carry the hash of their audit row (engine.store.control_binding)
    CONTROLS_V5_APPROVAL_CALL,  # v5: approvals.call_key, the durable call an approval gates
    CONTROLS_V6_KILL_ACKS,  # v6: kill_switch_acks, one acknowledgement per engine (a Postgres fleet's)
]
