"""traces.db schema: what happened. Written only by the engine holding the store lock (see writer.py).

Every index here serves a named read in reader.py or a write in writer.py / recovery.py; there are deliberately no
others, because each index costs on the write hot path. Append-only migration list: see migrate.py for the rules.
"""

from __future__ import annotations

from engine.store.migrate import Migration

RUN_STATUSES = ("running", "completed", "failed", "budget_exceeded", "killed", "loop_detected", "abandoned",
                "refused", "needs_reconcile")
SPAN_KINDS = ("run", "agent", "llm", "tool", "delegation", "route", "stage")
SPAN_STATUSES = ("running", "ok", "error", "cancelled", "timeout", "budget_exceeded", "loop_detected", "denied",
                 "outcome_unknown", "abandoned", "validation_failed", "skipped")

# Event kinds the writer adds on its own for every run / span start and end.
RUN_STARTED = "run.started"
RUN_ENDED = "run.ended"
SPAN_STARTED = "span.started"
SPAN_ENDED = "span.ended"

_V1 = """
CREATE TABLE runs (
    id TEXT PRIMARY KEY,
    hierarchy TEXT NOT NULL,
    hierarchy_hash TEXT,
    engine_id TEXT,
    engine_version TEXT,
    status TEXT NOT NULL,
    tenant TEXT,
    seed INTEGER,
    input TEXT,
    output TEXT,
    error TEXT,
    started REAL NOT NULL,
    ended REAL,
    tokens_in INTEGER NOT NULL DEFAULT 0,
    tokens_out INTEGER NOT NULL DEFAULT 0,
    cost_usd REAL NOT NULL DEFAULT 0,
    model_calls INTEGER NOT NULL DEFAULT 0,
    tool_calls INTEGER NOT NULL DEFAULT 0,
    agents_active INTEGER NOT NULL DEFAULT 0,
    attributes TEXT,
    last_seq INTEGER NOT NULL DEFAULT 0
);
-- list_runs (newest first, keyset paging), usage(since=...)
CREATE INDEX runs_started ON runs (started, id);
-- list_runs(status=...), count_runs active, recovery of 'running' runs
CREATE INDEX runs_status_started ON runs (status, started, id);
CREATE INDEX runs_hierarchy_started ON runs (hierarchy, started, id);
CREATE INDEX runs_tenant_started ON runs (tenant, started, id);
-- count_runs(since): what finished in the last hour (covering: status is all that query reads)
CREATE INDEX runs_ended ON runs (ended, status) WHERE ended IS NOT NULL;

CREATE TABLE spans (
    id TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    parent_id TEXT,
    kind TEXT NOT NULL,
    agent TEXT,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    started REAL NOT NULL,
    ended REAL,
    tokens_in INTEGER NOT NULL DEFAULT 0,
    tokens_out INTEGER NOT NULL DEFAULT 0,
    cost_usd REAL NOT NULL DEFAULT 0,
    model TEXT,
    attributes TEXT,
    last_seq INTEGER NOT NULL DEFAULT 0
);
-- spans(run_id), span_tree, usage per run
CREATE INDEX spans_run_started ON spans (run_id, started);
-- running_spans() and recovery: only in-flight spans are in this index, so it stays tiny.
CREATE INDEX spans_running ON spans (run_id, started) WHERE status = 'running';

CREATE TABLE events (
    seq INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    run_id TEXT,
    span_id TEXT,
    kind TEXT NOT NULL,
    agent TEXT,
    name TEXT,
    data TEXT
);
CREATE INDEX events_run_seq ON events (run_id, seq);
CREATE INDEX events_kind_seq ON events (kind, seq);

CREATE TABLE engines (
    id TEXT PRIMARY KEY,
    pid INTEGER NOT NULL,
    host TEXT NOT NULL,
    user TEXT NOT NULL,
    version TEXT NOT NULL,
    started REAL NOT NULL,
    stopped REAL
);
"""

# Current state the engine publishes for the console: one row per breaker and per budget scope of a run.
_V2_CURRENT_STATE = """
CREATE TABLE breakers (
    hierarchy TEXT NOT NULL,
    key TEXT NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    state TEXT NOT NULL,
    failure_rate REAL,
    slow_call_rate REAL,
    calls_in_window INTEGER,
    failed_calls INTEGER,
    slow_calls INTEGER,
    not_permitted_calls INTEGER,
    next_probe_at REAL,
    since REAL,
    updated REAL NOT NULL,
    PRIMARY KEY (hierarchy, key)
);
CREATE TABLE budgets (
    run_id TEXT NOT NULL,
    scope TEXT NOT NULL,
    agent TEXT,
    data TEXT NOT NULL,
    updated REAL NOT NULL,
    PRIMARY KEY (run_id, scope)
);
"""

# The (kind, seq) index cost the writer about a third of its SQLite time per event and served one rare read
# (events of given kinds, which the (run_id, seq) index or the seq order bound well enough).
_V3_DROP_KIND_INDEX = """
DROP INDEX IF EXISTS events_kind_seq;
"""

# Durable runs (engine/runtime/durable_runs.py): how often a run resumed after its engine died, and how many of its
# recorded side effects replayed instead of running again. Computed from the row's attributes, which the resumed
# run's start rewrites: no new column for the writer to fill on its hot path.
_V4_RESUMED = """
ALTER TABLE runs ADD COLUMN resumed INTEGER GENERATED ALWAYS AS
    (coalesce(json_extract(attributes, '$.resumed'), 0)) VIRTUAL;
ALTER TABLE runs ADD COLUMN replayed_steps INTEGER GENERATED ALWAYS AS
    (coalesce(json_extract(attributes, '$.replayed_steps'), 0)) VIRTUAL;
"""

# Serve mode (engine/serve/): each queue's (and each tenant's) state and each schedule's next fire, published by the
# engine every second for the console and runbooks. One row per key, like breakers.
_V5_QUEUES = """
CREATE TABLE queues (
    queue TEXT NOT NULL,
    tenant TEXT NOT NULL DEFAULT '',
    hierarchy TEXT NOT NULL,
    depth INTEGER NOT NULL,
    running INTEGER NOT NULL,
    oldest_age_s REAL,
    admitted_per_min REAL NOT NULL,
    rejected_total INTEGER NOT NULL,
    max_depth INTEGER,
    concurrency INTEGER,
    rate_limit TEXT,
    admission TEXT NOT NULL,
    updated REAL NOT NULL,
    PRIMARY KEY (queue, tenant)
);
CREATE TABLE schedules (
    name TEXT PRIMARY KEY,
    hierarchy TEXT NOT NULL,
    cron TEXT NOT NULL,
    missed TEXT NOT NULL,
    next_fire REAL,
    last_fire REAL,
    last_run_id TEXT,
    updated REAL NOT NULL
);
"""

TRACES_MIGRATIONS: list[Migration] = [
    _V1,
    _V2_CURRENT_STATE,
    _V3_DROP_KIND_INDEX,
    _V4_RESUMED,
    _V5_QUEUES,
]
