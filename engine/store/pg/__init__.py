"""The Postgres store (issue 16, in progress): `--store postgresql://...`.

What is here: the trace store's tables (schema.py: runs, spans, events and the current-state tables, the same
columns and meanings as traces.db), a batch writer that commits the SQLite trace writer's batches (batch_writer.py,
with the Postgres SQL of each statement in batch_sql.py and a global, gap-free event sequence), a reader with
TraceReader's public methods (reader.py) and pruning (prune.py). The engine does not write here yet, and control.db's
tables are not here yet: see docs/architecture.md, "Postgres store".

psycopg (the `postgres` extra) is imported only inside this package.
"""
