"""The Postgres trace store's schema: the same tables, columns and meanings as traces.db (traces_schema.py), in
Postgres types, with their version in `flightdeck_schema`.

Differences from traces.db, and why:
- REAL is DOUBLE PRECISION, INTEGER is BIGINT, JSON columns stay TEXT holding JSON (the reader parses them, as on
  SQLite: jsonb would reject a payload with an escaped NUL that traces.db stores).
- Ids and names compare byte-wise (COLLATE "C"), as SQLite does: paging by (started, id) and run-id prefixes
  (`id >= 'ab' AND id < 'ac'`) then mean the same on both backends and use the indexes.
- `runs.resumed` / `runs.replayed_steps` are plain columns the writer fills from the attributes (on SQLite they are
  generated from the JSON; a generated column here would need a JSON cast that can fail an insert).
- `event_seq`: one row holding the last event sequence number. Every writer takes it (UPDATE ... RETURNING) inside
  its batch's transaction, so numbers are gap-free (a rolled-back batch gives its numbers back) and commit in order:
  a reader tailing `seq > last_seen` can never miss an event committed later with a smaller number. The price is
  that batches with events commit one at a time across engines (one short row lock per batch).
- `trace_writers` (v2): each trace-writer process's last committed batch, written in that batch's transaction: how
  a writer that lost its connection mid-commit learns whether the batch is in, so it is committed exactly once.

Migrations append to PG_TRACES_MIGRATIONS; each runs once, in one transaction, under an advisory lock (several
engines may open a fresh database at once). A database from a newer Flightdeck is refused. `flightdeck_schema` holds
one version per component: `traces` (here) and `control` (pg/control_schema.py), each migrated by this module's
`migrate`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from engine.errors import StoreError, StoreTooNew

if TYPE_CHECKING:
    import psycopg

    from engine.store.location import PostgresLocation

COMPONENT = "traces"
_NOUN = {"traces": "trace"}  # how messages name a component's schema ("trace schema version 2")
# An arbitrary, fixed key for pg_advisory_xact_lock: "migrating Flightdeck's schema".
_MIGRATION_LOCK = 0x46_44_53_43

# IF NOT EXISTS: the table is shared by every component (traces, control: pg/control_schema.py), and whichever is
# created first in a database makes it (migrate() below also makes it before any component's first step).
_V1 = """
CREATE TABLE IF NOT EXISTS flightdeck_schema (component TEXT PRIMARY KEY, version INTEGER NOT NULL);

CREATE TABLE runs (
    id TEXT COLLATE "C" PRIMARY KEY,
    hierarchy TEXT COLLATE "C" NOT NULL,
    hierarchy_hash TEXT,
    engine_id TEXT,
    engine_version TEXT,
    status TEXT NOT NULL,
    tenant TEXT COLLATE "C",
    seed BIGINT,
    input TEXT,
    output TEXT,
    error TEXT,
    started DOUBLE PRECISION NOT NULL,
    ended DOUBLE PRECISION,
    tokens_in BIGINT NOT NULL DEFAULT 0,
    tokens_out BIGINT NOT NULL DEFAULT 0,
    cost_usd DOUBLE PRECISION NOT NULL DEFAULT 0,
    model_calls BIGINT NOT NULL DEFAULT 0,
    tool_calls BIGINT NOT NULL DEFAULT 0,
    agents_active BIGINT NOT NULL DEFAULT 0,
    attributes TEXT,
    last_seq BIGINT NOT NULL DEFAULT 0,
    resumed BIGINT NOT NULL DEFAULT 0,
    replayed_steps BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX runs_started ON runs (started, id);
CREATE INDEX runs_status_started ON runs (status, started, id);
CREATE INDEX runs_hierarchy_started ON runs (hierarchy, started, id);
CREATE INDEX runs_tenant_started ON runs (tenant, started, id);
CREATE INDEX runs_ended ON runs (ended, status) WHERE ended IS NOT NULL;

CREATE TABLE spans (
    id TEXT COLLATE "C" PRIMARY KEY,
    run_id TEXT COLLATE "C" NOT NULL,
    parent_id TEXT COLLATE "C",
    kind TEXT NOT NULL,
    agent TEXT,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    started DOUBLE PRECISION NOT NULL,
    ended DOUBLE PRECISION,
    tokens_in BIGINT NOT NULL DEFAULT 0,
    tokens_out BIGINT NOT NULL DEFAULT 0,
    cost_usd DOUBLE PRECISION NOT NULL DEFAULT 0,
    model TEXT,
    attributes TEXT,
    last_seq BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX spans_run_started ON spans (run_id, started);
CREATE INDEX spans_running ON spans (run_id, started) WHERE status = 'running';

CREATE TABLE events (
    seq BIGINT PRIMARY KEY,
    ts DOUBLE PRECISION NOT NULL,
    run_id TEXT COLLATE "C",
    span_id TEXT COLLATE "C",
    kind TEXT NOT NULL,
    agent TEXT,
    name TEXT,
    data TEXT
);
CREATE INDEX events_run_seq ON events (run_id, seq);

CREATE TABLE event_seq (id INTEGER PRIMARY KEY CHECK (id = 1), last BIGINT NOT NULL);
INSERT INTO event_seq VALUES (1, 0);

CREATE TABLE engines (
    id TEXT PRIMARY KEY,
    pid BIGINT NOT NULL,
    host TEXT NOT NULL,
    "user" TEXT NOT NULL,
    version TEXT NOT NULL,
    started DOUBLE PRECISION NOT NULL,
    stopped DOUBLE PRECISION
);

CREATE TABLE breakers (
    hierarchy TEXT NOT NULL,
    key TEXT NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    state TEXT NOT NULL,
    failure_rate DOUBLE PRECISION,
    slow_call_rate DOUBLE PRECISION,
    calls_in_window BIGINT,
    failed_calls BIGINT,
    slow_calls BIGINT,
    not_permitted_calls BIGINT,
    next_probe_at DOUBLE PRECISION,
    since DOUBLE PRECISION,
    updated DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (hierarchy, key)
);
CREATE TABLE budgets (
    run_id TEXT COLLATE "C" NOT NULL,
    scope TEXT NOT NULL,
    agent TEXT,
    data TEXT NOT NULL,
    updated DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (run_id, scope)
);
CREATE TABLE queues (
    queue TEXT NOT NULL,
    tenant TEXT NOT NULL DEFAULT '',
    hierarchy TEXT NOT NULL,
    depth BIGINT NOT NULL,
    running BIGINT NOT NULL,
    oldest_age_s DOUBLE PRECISION,
    admitted_per_min DOUBLE PRECISION NOT NULL,
    rejected_total BIGINT NOT NULL,
    max_depth BIGINT,
    concurrency BIGINT,
    rate_limit TEXT,
    admission TEXT NOT NULL,
    updated DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (queue, tenant)
);
CREATE TABLE schedules (
    name TEXT PRIMARY KEY,
    hierarchy TEXT NOT NULL,
    cron TEXT NOT NULL,
    missed TEXT NOT NULL,
    next_fire DOUBLE PRECISION,
    last_fire DOUBLE PRECISION,
    last_run_id TEXT,
    updated DOUBLE PRECISION NOT NULL
);
"""

# v2: one row per trace-writer process (engines start one each), naming the last batch it committed and the last
# event number that batch took. Written in every batch's transaction, so a writer whose connection dropped while
# it was committing can tell, once reconnected, whether that batch is in (commit acknowledged to nobody) or not:
# it is then neither written twice nor lost (pg/writer_target.py).
_V2 = """
CREATE TABLE trace_writers (
    id TEXT PRIMARY KEY,
    batch_no BIGINT NOT NULL,
    last_seq BIGINT NOT NULL,
    updated DOUBLE PRECISION NOT NULL
);
"""

# v3: engine registration moves here from control.db's `engines` (issue 16): the trace schema's `engines` table,
# one row per engine id, is also its registration, with a heartbeat the engine bumps on its timer
# (pg/engine_registry.py). One table, not a second one in the control component: `runs.engine_id` names this row,
# and two rows per engine (one for the traces, one for the control plane) could disagree about whether it stopped.
# Rows written before v3 get their last known sign of life (stopped, else started).
_V3 = """
ALTER TABLE engines ADD COLUMN heartbeat DOUBLE PRECISION;
UPDATE engines SET heartbeat = COALESCE(stopped, started);
ALTER TABLE engines ALTER COLUMN heartbeat SET NOT NULL;
CREATE INDEX engines_started ON engines (started);
"""

# v4 (issue 16, the fleet's console): the current-state tables name the engine that published each row, and the
# ones a fleet's engines publish under the same names take it into their keys. Breakers are each engine's own view of
# a dependency (engines on one database overwrote each other's rows before: the last to publish won); queues and
# schedules are published by every serving engine. Budgets keep their key: a run id is one engine's already, the
# column says which. Rows from before v4 get '' (published before engines were told apart).
_V4 = """
ALTER TABLE breakers ADD COLUMN engine_id TEXT NOT NULL DEFAULT '';
ALTER TABLE breakers DROP CONSTRAINT breakers_pkey;
ALTER TABLE breakers ADD PRIMARY KEY (engine_id, hierarchy, key);
CREATE INDEX breakers_key ON breakers (hierarchy, key);
ALTER TABLE queues ADD COLUMN engine_id TEXT NOT NULL DEFAULT '';
ALTER TABLE queues DROP CONSTRAINT queues_pkey;
ALTER TABLE queues ADD PRIMARY KEY (engine_id, queue, tenant);
ALTER TABLE schedules ADD COLUMN engine_id TEXT NOT NULL DEFAULT '';
ALTER TABLE schedules DROP CONSTRAINT schedules_pkey;
ALTER TABLE schedules ADD PRIMARY KEY (engine_id, name);
ALTER TABLE budgets ADD COLUMN engine_id TEXT NOT NULL DEFAULT '';
"""

# v5 (issue 16, the fleet's `flightdeck engines`): what an engine wholly on Postgres publishes about itself, as an
# engine on a store directory does in its lock file's JSON (engine/store/lock.py `publish`): `durable` (a durable
# engine, and whether it takes operators' resume and reconcile requests), and the trace store's and the exporter's
# health (`store`, `export`). One JSON object (TEXT, as every JSON column here), written whole by the engine's
# heartbeat when it changed (pg/engine_registry.py). Registration sets '{}' (nothing published: not durable); NULL
# is a row from before v5 (not known).
_V5 = """
ALTER TABLE engines ADD COLUMN published TEXT;
"""

PG_TRACES_MIGRATIONS: list[str] = [_V1, _V2, _V3, _V4, _V5]
# The first version whose current-state tables carry engine_id (the fleet's breakers, queues and schedules).
FLEET_STATE_VERSION = 4
# The first version whose `engines` rows carry what each engine publishes about itself (durable, health).
PUBLISHED_VERSION = 5


def schema_version(conn: psycopg.Connection[Any], component: str = COMPONENT) -> int:
    """A component's schema version in this database; 0 when it has none (a fresh database)."""
    if conn.execute("SELECT to_regclass('flightdeck_schema')").fetchone() == (None,):
        return 0
    row = conn.execute("SELECT version FROM flightdeck_schema WHERE component = %s", (component,)).fetchone()
    return 0 if row is None else int(row[0])


def check_version(conn: psycopg.Connection[Any], location: PostgresLocation, component: str = COMPONENT,
                  migrations: Sequence[str] = PG_TRACES_MIGRATIONS, *, what: str = "trace store",
                  written_by: str = "nothing has written traces there yet") -> None:
    """For readers: the database holds this Flightdeck's schema of `component` (StoreError / StoreTooNew
    otherwise)."""
    version = schema_version(conn, component)
    known = len(migrations)
    noun = _NOUN.get(component, component)
    if version > known:
        raise StoreTooNew(f"the Postgres store {location.masked} has {noun} schema version {version}; this "
                          f"Flightdeck knows {known}: upgrade Flightdeck")
    if version == 0:
        raise StoreError(f"no Flightdeck {what} in {location.masked} ({written_by})")
    if version < known:
        raise StoreError(f"the Postgres store {location.masked} has {noun} schema version {version} (this "
                         f"Flightdeck uses {known}); open it with a writer once to upgrade it")


def migrate(conn: psycopg.Connection[Any], location: PostgresLocation, component: str = COMPONENT,
            migrations: Sequence[str] = PG_TRACES_MIGRATIONS) -> int:
    """Create or upgrade one component's schema; returns the version now in place. Needs an autocommit connection
    (the whole upgrade is one transaction, under an advisory lock shared by every component's migrations)."""
    known = len(migrations)
    noun = _NOUN.get(component, component)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        conn.execute("CREATE TABLE IF NOT EXISTS flightdeck_schema (component TEXT PRIMARY KEY, "
                     "version INTEGER NOT NULL)")
        version = schema_version(conn, component)
        if version > known:
            raise StoreTooNew(f"the Postgres store {location.masked} has {noun} schema version {version}; "
                              f"this Flightdeck knows {known}: upgrade Flightdeck")
        for number in range(version, known):
            conn.execute(migrations[number])  # our own literal DDL
        if version < known:
            conn.execute("INSERT INTO flightdeck_schema VALUES (%s, %s) ON CONFLICT (component) DO UPDATE "
                         "SET version = EXCLUDED.version", (component, known))
    return known
