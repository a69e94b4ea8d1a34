"""control.db DDL of the operator control plane (engine.controls): kill switches, safe-mode flags, approvals, breaker
and budget overrides, and the hash-chained audit log. CONTROLS_V2 is engine.store.control_schema.CONTROL_MIGRATIONS'
second entry; CONTROLS_V4_BINDING_SQL is run by v4's data step (engine.store.control_binding.bind_existing). The value
tuples the CHECK constraints name are re-exported as the control plane's vocabulary by engine.controls.schema.

Readers and the indexes that serve them (every read on the engine's watcher path is an indexed one):

- active kill switches: kill_switches_active (snapshot, in id order) and kill_switches_active_target (set_kill's
  duplicate check, release by scope), both partial on released IS NULL.
- active flags: flags_active, a UNIQUE partial index on (name, scope, target) over the rows not cleared (set/clear),
  so "at most one active row per flag" is enforced by SQLite itself, not only by the API. The target is wrapped in
  ifnull() because a UNIQUE index treats NULLs as distinct (global flags have no target). flags_active_id serves
  the snapshot.
- pending approvals (snapshot, `flightdeck approvals`, oldest first): approvals_pending, partial on status='pending';
  cancel_approvals_for_run: approvals_pending_run; a resumed durable run's lookup by call: approvals_call (v5).
- approvals decided since the watcher last looked: approvals_decided on decided_seq, a counter the API assigns inside
  the deciding write transaction. Writers to control.db are serialized, so the counter is gap-free and monotonic
  across processes; wall-clock times from different processes are not, which is why the watcher's cursor is not a
  timestamp.
- unapplied breaker / budget overrides: partial indexes on applied IS NULL.
- audit: read by id (newest first, verify in id order), which the INTEGER PRIMARY KEY already serves. AUTOINCREMENT
  means an id is never reused, so a deleted row always leaves a gap (or a sqlite_sequence above the last row) that
  verify_chain() can report.

Columns beyond the brief's list: kill_switches/flags/approvals keep the operator's words as given; approvals has
`window_s` (the original decision window, so escalation can double it) and `decided_seq` (see above);
breaker_overrides/budget_overrides have `source` like flags do, so runbook actions are distinguishable.
"""

from __future__ import annotations

KILL_SCOPES: tuple[str, ...] = ("global", "run", "agent", "tool", "hierarchy")
KILL_MODES: tuple[str, ...] = ("kill", "drain", "pause")
FLAG_SCOPES: tuple[str, ...] = ("global", "hierarchy", "run")
APPROVAL_STATUSES: tuple[str, ...] = ("pending", "approved", "denied", "timed_out", "cancelled")
ON_TIMEOUT_POLICIES: tuple[str, ...] = ("deny", "approve", "escalate")
BREAKER_ACTIONS: tuple[str, ...] = ("force_open", "reset", "disable")


def _in(values: tuple[str, ...]) -> str:
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"


CONTROLS_V2 = f"""
CREATE TABLE kill_switches (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    scope TEXT NOT NULL CHECK (scope IN {_in(KILL_SCOPES)}),
    target TEXT,
    run_id TEXT,
    mode TEXT NOT NULL CHECK (mode IN {_in(KILL_MODES)}),
    reason TEXT NOT NULL CHECK (length(trim(reason)) > 0),
    operator TEXT NOT NULL,
    created REAL NOT NULL,
    released REAL,
    released_by TEXT,
    release_reason TEXT,
    acked REAL,
    acked_by TEXT,
    CHECK ((scope = 'global') = (target IS NULL)),
    CHECK (run_id IS NULL OR scope = 'agent')
);
CREATE INDEX kill_switches_active ON kill_switches (id) WHERE released IS NULL;
CREATE INDEX kill_switches_active_target ON kill_switches (scope, target, run_id) WHERE released IS NULL;

CREATE TABLE flags (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    scope TEXT NOT NULL CHECK (scope IN {_in(FLAG_SCOPES)}),
    target TEXT,
    previous_value TEXT,
    source TEXT NOT NULL,
    reason TEXT NOT NULL,
    operator TEXT NOT NULL,
    created REAL NOT NULL,
    cleared REAL,
    cleared_by TEXT,
    clear_reason TEXT,
    acked REAL,
    CHECK ((scope = 'global') = (target IS NULL))
);
CREATE UNIQUE INDEX flags_active ON flags (name, scope, ifnull(target, '')) WHERE cleared IS NULL;
CREATE INDEX flags_active_id ON flags (id) WHERE cleared IS NULL;

CREATE TABLE approvals (
    id TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    span_id TEXT,
    agent TEXT NOT NULL,
    tool TEXT NOT NULL,
    arguments TEXT NOT NULL,
    args_hash TEXT NOT NULL,
    risk TEXT,
    reason TEXT,
    requested REAL NOT NULL,
    deadline REAL NOT NULL,
    window_s REAL NOT NULL,
    level INTEGER NOT NULL DEFAULT 0,
    on_timeout TEXT NOT NULL CHECK (on_timeout IN {_in(ON_TIMEOUT_POLICIES)}),
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN {_in(APPROVAL_STATUSES)}),
    decided REAL,
    decided_by TEXT,
    decision_reason TEXT,
    edited_arguments TEXT,
    decided_seq INTEGER,
    engine_id TEXT
);
CREATE INDEX approvals_pending ON approvals (requested) WHERE status = 'pending';
CREATE INDEX approvals_pending_run ON approvals (run_id) WHERE status = 'pending';
CREATE UNIQUE INDEX approvals_decided ON approvals (decided_seq) WHERE decided_seq IS NOT NULL;
CREATE INDEX approvals_requested ON approvals (requested);

CREATE TABLE breaker_overrides (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    action TEXT NOT NULL CHECK (action IN {_in(BREAKER_ACTIONS)}),
    reason TEXT NOT NULL,
    operator TEXT NOT NULL,
    source TEXT NOT NULL DEFAULT 'operator',
    created REAL NOT NULL,
    applied REAL,
    applied_by TEXT
);
CREATE INDEX breaker_overrides_unapplied ON breaker_overrides (id) WHERE applied IS NULL;

CREATE TABLE budget_overrides (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    limits TEXT NOT NULL,
    reason TEXT NOT NULL,
    operator TEXT NOT NULL,
    source TEXT NOT NULL DEFAULT 'operator',
    created REAL NOT NULL,
    applied REAL
);
CREATE INDEX budget_overrides_unapplied ON budget_overrides (id) WHERE applied IS NULL;

CREATE TABLE audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT,
    before TEXT,
    after TEXT,
    reason TEXT,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
"""

# Binding (engine.controls.binding): every control row the engine acts on carries the hash of the audit row that
# recorded its current state, and the engine checks that audit row before it obeys the row. The index serves that
# lookup. Rows that existed before this version are bound by CONTROLS_V4's data step (they were trusted before).
BOUND_TABLES: tuple[str, ...] = ("kill_switches", "flags", "approvals", "breaker_overrides", "budget_overrides")

CONTROLS_V4_BINDING_SQL = "\n".join(f"ALTER TABLE {table} ADD COLUMN audit_hash TEXT;" for table in BOUND_TABLES) + """
CREATE INDEX audit_by_hash ON audit (hash);
"""

# v5: a durable run's approval request names the call it gates (`call_key`, the side-effect key of its structural
# path: `<run>:<call path>`), so a resumed run waits on the same request (same id and deadline) or obeys the
# decision an operator made while its engine was down, and parallel calls cannot swap requests.
CONTROLS_V5_APPROVAL_CALL = """
ALTER TABLE approvals ADD COLUMN call_key TEXT;
CREATE INDEX approvals_call ON approvals (call_key) WHERE call_key IS NOT NULL;
"""

# v6 (issue 16): one acknowledgement per engine per kill switch. kill_switches.acked/acked_by keep the first one
# (what "acknowledged" meant on a store directory: its one engine); on a Postgres store every engine of the fleet
# applies a switch, and the operator needs to see which of them did ("acknowledged by 2 of 3 live engines"). Not
# bound to an audit row: acknowledgements are the engine's bookkeeping, as the acked column is. Switches
# acknowledged before v6 keep their one ack here.
CONTROLS_V6_KILL_ACKS = """
CREATE TABLE kill_switch_acks (
    switch_id INTEGER NOT NULL REFERENCES kill_switches (id),
    engine_id TEXT NOT NULL,
    acked REAL NOT NULL,
    PRIMARY KEY (switch_id, engine_id)
);
INSERT INTO kill_switch_acks (switch_id, engine_id, acked)
    SELECT id, acked_by, acked FROM kill_switches WHERE acked IS NOT NULL AND acked_by IS NOT NULL;
"""
