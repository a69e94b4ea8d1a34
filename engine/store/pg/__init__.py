"""The Postgres store (issue 16, in progress): `--store postgresql://...`.

What is here: the trace store's tables (schema.py: runs, spans, events and the current-state tables, the same
columns and meanings as traces.db), a batch writer that commits the SQLite trace writer's batches (batch_writer.py,
with the Postgres SQL of each statement in batch_sql.py and a global, gap-free event sequence), the engine's
trace-writer process's commit target on it (writer_target.py: reconnection, exactly-once commits, giving up), the
engine's own rows (engine_record.py), a reader with TraceReader's public methods (reader.py) and pruning (prune.py);
the control plane: control.db's tables (control_schema.py), PgControlDB with ControlDB's interface for ControlAPI
(control_db.py) and ControlWatcher, woken by LISTEN/NOTIFY on every committed control change (control_watch.py).
The engine writes its traces here only through open_engine_store's `traces_to` (no command offers it yet) and
does not use the control plane here yet: see docs/architecture.md, "Postgres store".

psycopg (the `postgres` extra) is imported only inside this package.
"""
