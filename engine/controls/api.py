"""ControlAPI: the one way operators (CLI, console) and the engine read and change what is intended in control.db.

Every operator action writes its change AND its audit row in ONE short BEGIN IMMEDIATE transaction, so the log can
never disagree with the state, and a crash leaves neither. control.db has many writer processes; SQLite's write lock
serializes them (busy_timeout makes them queue instead of failing), and every state change is additionally a
conditional UPDATE (`... WHERE status = 'pending'`, `... WHERE released IS NULL`) so that the rule "exactly one
decision wins" holds even if a future caller forgets the transaction.

Rows come back as plain dicts, one key per column. JSON columns come back parsed: approvals' `arguments` and
`edited_arguments`, budget_overrides' `limits`, audit's `before` and `after`.

Engine side: the engine constructs `ControlAPI(store_dir, f"engine:{engine_id}", db=store.control)` to share its
ControlDB, polls `data_version()` and calls `snapshot()` when it changes, acknowledges what it applied (acks are not
audited: they are bookkeeping, not actions) and records approval requests and expiries (audited).
"""

from __future__ import annotations

import hashlib
import math
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any

from engine.clock import SYSTEM_CLOCK, Clock
from engine.controls import audit, binding
from engine.controls.anchor import AuditAnchor, anchor_problem
from engine.controls.audit import AuditVerification, canonical_json
from engine.controls.binding import SUPERSEDED, TIMEOUT_POLICY_ACTOR, bind
from engine.controls.flags import validate_flag, validate_flag_name
from engine.controls.schema import (BREAKER_ACTIONS, FLAG_SCOPES, KILL_MODES, KILL_SCOPES, ON_TIMEOUT_POLICIES)
from engine.errors import FlightdeckError, InputError, StoreError
from engine.store.control import BUSY_TIMEOUT_S, ControlDB
from engine.store.files import CONTROL_DB, connect, ensure_store_dir, translate_sqlite_error

# Mirrors engine.guardrails.breaker.BREAKER_KINDS and engine.guardrails.budget.Dimension (a test pins both): imported
# from there, every `flightdeck approvals` would pay for loading pydantic models it never uses.
BREAKER_KINDS: tuple[str, ...] = ("tool", "model", "delegation")
BUDGET_DIMENSIONS: tuple[str, ...] = ("input_tokens", "output_tokens", "total_tokens", "cost_usd", "model_calls",
                                      "tool_calls", "retries", "wall_time_s", "max_context_tokens")
_WHOLE_DIMENSIONS = frozenset(BUDGET_DIMENSIONS) - {"cost_usd", "wall_time_s"}

_ENGINE_SOURCES = re.compile(r"operator|engine|runbook:[A-Za-z0-9_.\-]+")
_HEX = re.compile(r"[0-9a-f]+")
MIN_HASH_PREFIX = 8
MAX_TEXT = 2000

# The snapshot's queries: each one is served by a partial index in schema.py (tests/test_controls_api.py checks the
# query plans), because the engine's watcher runs them every time anyone writes to control.db.
SNAPSHOT_QUERIES: dict[str, str] = {
    "kill_switches": "SELECT * FROM kill_switches WHERE released IS NULL ORDER BY id",
    "flags": "SELECT * FROM flags WHERE cleared IS NULL ORDER BY id",
    "pending_approvals": "SELECT * FROM approvals WHERE status = 'pending' ORDER BY requested, rowid",
    "decided_approvals": "SELECT * FROM approvals WHERE decided_seq > ? ORDER BY decided_seq",
    "breaker_overrides": "SELECT * FROM breaker_overrides WHERE applied IS NULL ORDER BY id",
    "budget_overrides": "SELECT * FROM budget_overrides WHERE applied IS NULL ORDER BY id",
}
_LAST_DECIDED_SEQ = ("SELECT decided_seq FROM approvals WHERE decided_seq IS NOT NULL "
                     "ORDER BY decided_seq DESC LIMIT 1")


class ControlError(FlightdeckError):
    """An operator action that cannot be applied as asked (already decided, expired, nothing to release...)."""

    exit_code = 2


@dataclass(frozen=True, slots=True)
class ControlSnapshot:
    """Everything the engine must obey, read in one transaction. Pass `decided_cursor` back as `decided_after`
    next time to get only the approvals decided (or timed out, or cancelled) since."""

    kill_switches: tuple[dict[str, Any], ...]
    flags: tuple[dict[str, Any], ...]
    pending_approvals: tuple[dict[str, Any], ...]
    decided_approvals: tuple[dict[str, Any], ...]
    breaker_overrides: tuple[dict[str, Any], ...]
    budget_overrides: tuple[dict[str, Any], ...]
    decided_cursor: int
    taken: float
    # The audit log's last row (id, hash) in the same read: the engine records it in traces.db as the anchor
    # `audit verify` checks the log against (engine.controls.anchor).
    audit_head: tuple[int, str] | None = None


# ------------------------------------------------------------------------------------------------ small helpers

def _optional_text(value: Any, field: str) -> str | None:
    """A stripped, bounded, printable string, or None for missing / blank; InputError naming `field` otherwise."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        raise InputError(f"expected text, got {type(value).__name__}", field=field)
    text: str = value.strip()
    if len(text) > MAX_TEXT:
        raise InputError(f"is longer than {MAX_TEXT} characters", field=field)
    if any(ord(c) < 32 and c not in "\t\n" for c in text):
        raise InputError("contains control characters", field=field)
    return text


def _text(value: Any, field: str) -> str:
    """Like _optional_text, but missing or blank is an error too (reasons, names, ids)."""
    text = _optional_text(value, field)
    if text is None:
        raise InputError("is required and must not be empty", field=field)
    return text


def _choice(value: Any, allowed: tuple[str, ...], field: str) -> str:
    if not isinstance(value, str) or value.strip().lower() not in allowed:
        raise InputError(f"expected one of {', '.join(allowed)}, got {value!r}", field=field)
    return value.strip().lower()


def _ids(ids: Iterable[int], field: str = "ids") -> list[int]:
    out = []
    for value in ids:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(f"expected whole-number ids, got {value!r}", field=field)
        out.append(value)
    return out


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _json_object(value: Any, field: str) -> str:
    if not isinstance(value, Mapping):
        raise InputError(f"must be a JSON object, got {type(value).__name__}", field=field)
    try:
        return canonical_json(dict(value))
    except (TypeError, ValueError) as exc:
        raise InputError(f"is not representable as JSON: {exc}", field=field) from None


def clock_text(ts: float | None, now: float | None = None) -> str:
    """12:03:04 for today-ish times (what an operator compares with the wall clock), the full date otherwise."""
    if ts is None:
        return "an unknown time"
    now = time.time() if now is None else now
    fmt = "%H:%M:%S" if abs(now - ts) < 12 * 3600 else "%Y-%m-%d %H:%M:%S"
    return time.strftime(fmt, time.localtime(ts))


def switch_label(row: Mapping[str, Any]) -> str:
    """How a kill switch's scope reads in the audit log and on screen: `run:abc`, `agent:planner in run:abc`."""
    if row["scope"] == "global":
        return "global"
    label = f"{row['scope']}:{row['target']}"
    return f"{label} in run:{row['run_id']}" if row.get("run_id") else label


def flag_scope_label(scope: str, target: str | None) -> str:
    return "global" if scope == "global" else f"{scope}:{target}"


def _decode(table: str, row: dict[str, Any]) -> dict[str, Any]:
    import json

    columns = {"approvals": ("arguments", "edited_arguments"), "budget_overrides": ("limits",)}.get(table, ())
    for column in columns:
        if isinstance(row.get(column), str):
            try:
                row[column] = json.loads(row[column])
            except ValueError:  # written by us, so never expected; still show the raw text rather than crash
                pass
    return row


def _fetch(conn: sqlite3.Connection, sql: str, params: Iterable[Any] = ()) -> list[dict[str, Any]]:
    cursor = conn.execute(sql, tuple(params))
    names = [d[0] for d in cursor.description or ()]
    return [dict(zip(names, values)) for values in cursor.fetchall()]


def _one(conn: sqlite3.Connection, sql: str, params: Iterable[Any] = ()) -> dict[str, Any] | None:
    rows = _fetch(conn, sql, params)
    return rows[0] if rows else None


# ------------------------------------------------------------------------------------------------ the API

class ControlAPI:
    """control.db for one actor: an operator name, or `engine:<id>` / `runbook:<id>` for engine-side actions.

    `create=False` refuses to create a store that does not exist (read-only CLI commands use it, so a mistyped
    --store is an error instead of a new empty store). `db` shares an already open ControlDB (the engine's).
    `read_only` opens control.db with SQLite's mode=ro and changes nothing on disk (read commands, forensics on a
    read-only store); any write through it fails with a StoreError saying the store was opened read-only."""

    def __init__(self, store_dir: Path | str, operator: str, *, clock: Clock = SYSTEM_CLOCK,
                 db: ControlDB | None = None, create: bool = True, read_only: bool = False) -> None:
        self.store_dir = Path(store_dir)
        self.operator: str = _text(operator, "operator")
        self._clock = clock
        self._owns_db = db is None
        if db is None:
            if not create and not (self.store_dir / CONTROL_DB).is_file():
                raise StoreError(f"no store at {self.store_dir} (nothing has been recorded there yet; "
                                 f"pass --store or set FLIGHTDECK_STORE)")
            if read_only:
                db = ControlDB.open(self.store_dir, clock=clock, read_only=True)
            else:
                ensure_store_dir(self.store_dir)
                db = ControlDB.open(self.store_dir, clock=clock)
        self._db = db
        self._watch: sqlite3.Connection | None = None
        self._watch_lock = threading.Lock()

    # -- plumbing ----------------------------------------------------------------------------------------------

    @property
    def path(self) -> Path:
        return self._db.path

    @property
    def db(self) -> ControlDB:
        """The ControlDB this API writes through (for IncidentStore and other owners of control.db tables)."""
        return self._db

    def now(self) -> float:
        return self._clock.time()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        if self._db.read_only:
            raise StoreError(f"cannot write to {self._db.path}: it was opened read-only (this is a read command)")
        try:
            with self._db.transaction() as conn:
                yield conn
        except sqlite3.Error as exc:
            raise translate_sqlite_error(exc, self._db.path, "write to") from exc

    def _query(self, table: str, sql: str, params: Iterable[Any] = ()) -> list[dict[str, Any]]:
        return [_decode(table, row) for row in self._db.query(sql, tuple(params))]

    def _watch_conn(self) -> sqlite3.Connection:
        """A second connection, kept open: PRAGMA data_version only changes for commits made by OTHER
        connections, so it must not be the one this process writes through."""
        if self._watch is None:
            self._watch = connect(self._db.path, busy_timeout_s=BUSY_TIMEOUT_S, check_same_thread=False,
                                  read_only=self._db.read_only)
        return self._watch

    @contextmanager
    def _read_tx(self) -> Iterator[sqlite3.Connection]:
        """One deferred read transaction: everything read inside sees the same committed state."""
        with self._watch_lock:
            conn = self._watch_conn()
            try:
                conn.execute("BEGIN")
                try:
                    yield conn
                finally:
                    conn.execute("COMMIT")
            except sqlite3.Error as exc:
                raise translate_sqlite_error(exc, self._db.path, "read") from exc

    def close(self) -> None:
        with self._watch_lock:
            if self._watch is not None:
                self._watch.close()
                self._watch = None
        if self._owns_db:
            self._db.close()

    def __enter__(self) -> "ControlAPI":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _actor_for(self, source: str) -> str:
        # A runbook acts inside the engine but is its own actor in the log, so "who did this" names the runbook.
        return source if source.startswith("runbook:") else self.operator

    @staticmethod
    def _source(source: Any) -> str:
        if not isinstance(source, str) or not _ENGINE_SOURCES.fullmatch(source):
            raise InputError(f"expected 'operator', 'engine' or 'runbook:ID', got {source!r}", field="source")
        return source

    # -- kill switches -----------------------------------------------------------------------------------------

    @staticmethod
    def _kill_target(scope: str, target: Any, run_id: Any) -> tuple[str | None, str | None]:
        target = _optional_text(target, "target")
        run_id = _optional_text(run_id, "run_id")
        if scope == "global" and target is not None:
            raise InputError("a global kill switch has no target", field="target")
        if scope != "global" and target is None:
            raise InputError(f"a {scope} kill switch needs a target (the {_TARGET_WORD[scope]})", field="target")
        if run_id is not None and scope != "agent":
            raise InputError("only an agent kill switch can be limited to one run", field="run_id")
        return target, run_id

    def set_kill(self, scope: str, target: str | None, mode: str, reason: str,
                 run_id: str | None = None) -> dict[str, Any]:
        """Set a kill switch (kill: stop now; drain: finish in-flight calls, start nothing new; pause: hold at the
        next step). An identical active switch is returned as is (`already_active` True), never duplicated."""
        scope = _choice(scope, KILL_SCOPES, "scope")
        mode = _choice(mode, KILL_MODES, "mode")
        reason = _text(reason, "reason")
        target, run_id = self._kill_target(scope, target, run_id)
        now = self.now()
        with self._tx() as conn:
            existing = _one(conn, "SELECT * FROM kill_switches WHERE released IS NULL AND scope = ? AND target IS ? "
                                  "AND run_id IS ? AND mode = ? ORDER BY id LIMIT 1", (scope, target, run_id, mode))
            if existing is not None:
                return {**existing, "already_active": True}
            cursor = conn.execute(
                "INSERT INTO kill_switches (scope, target, run_id, mode, reason, operator, created) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)", (scope, target, run_id, mode, reason, self.operator, now))
            row = _one(conn, "SELECT * FROM kill_switches WHERE id = ?", (cursor.lastrowid,))
            assert row is not None
            bind(conn, "kill_switches", row["id"],
                 audit.append(conn, ts=now, actor=self.operator, action="kill", target=switch_label(row), after=row,
                              reason=reason))
        return {**row, "already_active": False}

    def release(self, switch_id: int | None = None, *, scope: str | None = None, target: str | None = None,
                run_id: str | None = None, reason: str) -> list[dict[str, Any]]:
        """Release one switch by id, or every active switch of a scope and target (any mode; for an agent
        without run_id, also those limited to a run). Each release is audited; all commit together."""
        reason = _text(reason, "reason")
        if switch_id is not None and scope is not None:
            raise InputError("give a kill switch id or a scope, not both", field="id")
        if switch_id is None and scope is None:
            raise InputError("give the id of a kill switch or a scope to release", field="id")
        now = self.now()
        with self._tx() as conn:
            if switch_id is not None:
                (switch_id,) = _ids([switch_id], "id")
                row = _one(conn, "SELECT * FROM kill_switches WHERE id = ?", (switch_id,))
                if row is None:
                    raise ControlError(f"no kill switch #{switch_id} (see `flightdeck kill --help`; active ones are "
                                       f"listed by `flightdeck engines` and the console)")
                if row["released"] is not None:
                    raise ControlError(f"kill switch #{switch_id} was already released by {row['released_by']} at "
                                       f"{clock_text(row['released'], now)}")
                rows = [row]
            else:
                scope = _choice(scope, KILL_SCOPES, "scope")
                target, run_id = self._kill_target(scope, target, run_id)
                sql = "SELECT * FROM kill_switches WHERE released IS NULL AND scope = ? AND target IS ?"
                params: list[Any] = [scope, target]
                if run_id is not None:
                    sql += " AND run_id = ?"
                    params.append(run_id)
                rows = _fetch(conn, sql + " ORDER BY id", params)
                if not rows:
                    label = switch_label({"scope": scope, "target": target, "run_id": run_id})
                    raise ControlError(f"no active kill switch for {label}")
            released = []
            for row in rows:
                conn.execute("UPDATE kill_switches SET released = ?, released_by = ?, release_reason = ? "
                             "WHERE id = ? AND released IS NULL", (now, self.operator, reason, row["id"]))
                after = _one(conn, "SELECT * FROM kill_switches WHERE id = ?", (row["id"],))
                assert after is not None
                bind(conn, "kill_switches", row["id"],
                     audit.append(conn, ts=now, actor=self.operator, action="release", target=switch_label(row),
                                  before=row, after=after, reason=reason))
                released.append(after)
        return released

    def active_kill_switches(self) -> list[dict[str, Any]]:
        return self._query("kill_switches", SNAPSHOT_QUERIES["kill_switches"])

    def kill_switch(self, switch_id: int) -> dict[str, Any]:
        rows = self._query("kill_switches", "SELECT * FROM kill_switches WHERE id = ?", _ids([switch_id], "id"))
        if not rows:
            raise ControlError(f"no kill switch #{switch_id}")
        return rows[0]

    # -- safe-mode flags ---------------------------------------------------------------------------------------

    @staticmethod
    def _flag_target(scope: str, target: Any) -> str | None:
        text = _optional_text(target, "target")
        if scope == "global" and text is not None:
            raise InputError("a global flag has no target", field="target")
        if scope != "global" and text is None:
            raise InputError(f"a {scope} flag needs a target (the {_TARGET_WORD[scope]})", field="target")
        return text

    def set_flag(self, name: str, value: Any, scope: str = "global", target: str | None = None, *,
                 reason: str, source: str = "operator") -> dict[str, Any]:
        """Set a safe-mode flag. A flag already active at the same name, scope and target is cleared
        (cleared_by 'superseded') in the same transaction; the new row's previous_value is its value."""
        scope = _choice(scope, FLAG_SCOPES, "scope")
        name, value = validate_flag(name, value, scope)
        target = self._flag_target(scope, target)
        reason = _text(reason, "reason")
        source = self._source(source)
        now = self.now()
        with self._tx() as conn:
            return self._set_flag_in(conn, name, value, scope, target, reason, source, now)

    def _set_flag_in(self, conn: sqlite3.Connection, name: str, value: str, scope: str, target: str | None,
                     reason: str, source: str, now: float) -> dict[str, Any]:
        old = _one(conn, "SELECT * FROM flags WHERE cleared IS NULL AND name = ? AND scope = ? AND target IS ?",
                   (name, scope, target))
        if old is not None:
            # Cleared before the insert: the unique partial index allows one active row per flag.
            conn.execute("UPDATE flags SET cleared = ?, cleared_by = ?, clear_reason = ? WHERE id = ?",
                         (now, SUPERSEDED, reason, old["id"]))
        cursor = conn.execute(
            "INSERT INTO flags (name, value, scope, target, previous_value, source, reason, operator, created) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (name, value, scope, target, old["value"] if old else None, source, reason, self.operator, now))
        row = _one(conn, "SELECT * FROM flags WHERE id = ?", (cursor.lastrowid,))
        assert row is not None
        entry = audit.append(conn, ts=now, actor=self._actor_for(source), action="flag_set",
                             target=f"{name}@{flag_scope_label(scope, target)}",
                             before=None if old is None else {"id": old["id"], "value": old["value"]}, after=row,
                             reason=reason)
        bind(conn, "flags", row["id"], entry)
        if old is not None:  # the superseded row's record is its successor's flag_set (binding.py checks that)
            bind(conn, "flags", old["id"], entry)
        return row

    def clear_flag(self, name: str, scope: str = "global", target: str | None = None, *, reason: str,
                   source: str = "operator") -> dict[str, Any]:
        """Clear an active flag; returns the cleared row (its `value` is what it was)."""
        scope = _choice(scope, FLAG_SCOPES, "scope")
        name = validate_flag_name(name, scope)
        target = self._flag_target(scope, target)
        reason = _text(reason, "reason")
        source = self._source(source)
        now = self.now()
        with self._tx() as conn:
            old = _one(conn, "SELECT * FROM flags WHERE cleared IS NULL AND name = ? AND scope = ? AND target IS ?",
                       (name, scope, target))
            if old is None:
                raise ControlError(f"flag {name} is not set at {flag_scope_label(scope, target)} scope "
                                   f"(see `flightdeck safe-mode list`)")
            return self._clear_flag_in(conn, old, reason, source, now)

    def _clear_flag_in(self, conn: sqlite3.Connection, old: dict[str, Any], reason: str, source: str,
                       now: float) -> dict[str, Any]:
        actor = self._actor_for(source)
        conn.execute("UPDATE flags SET cleared = ?, cleared_by = ?, clear_reason = ? WHERE id = ? AND cleared IS NULL",
                     (now, actor, reason, old["id"]))
        row = _one(conn, "SELECT * FROM flags WHERE id = ?", (old["id"],))
        assert row is not None
        bind(conn, "flags", old["id"],
             audit.append(conn, ts=now, actor=actor, action="flag_cleared",
                          target=f"{old['name']}@{flag_scope_label(old['scope'], old['target'])}", before=old,
                          after={"id": old["id"], "value": None}, reason=reason))
        return row

    def rollback_flag(self, flag_id: int, *, reason: str, source: str = "operator") -> dict[str, Any] | None:
        """Undo one flag setting exactly: restore its previous_value (or clear it when there was none). Only while
        that row is still the active one; if someone has changed the flag since, nothing is touched and None is
        returned, because rolling back would overwrite their newer decision."""
        (flag_id,) = _ids([flag_id], "flag_id")
        reason = _text(reason, "reason")
        source = self._source(source)
        now = self.now()
        with self._tx() as conn:
            row = _one(conn, "SELECT * FROM flags WHERE id = ?", (flag_id,))
            if row is None:
                raise ControlError(f"no flag #{flag_id}")
            if row["cleared"] is not None:
                return None
            if row["previous_value"] is None:
                return self._clear_flag_in(conn, row, reason, source, now)
            return self._set_flag_in(conn, row["name"], row["previous_value"], row["scope"], row["target"], reason,
                                     source, now)

    def active_flags(self) -> list[dict[str, Any]]:
        return self._query("flags", "SELECT * FROM flags WHERE cleared IS NULL ORDER BY name, scope, target")

    # -- approvals: operator side ------------------------------------------------------------------------------

    def approve(self, approval_id: str, reason: str, *, edited_arguments: dict[str, Any] | None = None,
                expected_args_hash: str | None = None) -> dict[str, Any]:
        """Approve a pending request, optionally with edited arguments (a JSON object; the engine re-validates it
        against the tool's schema). See _decide for what binds the decision to the request."""
        return self._decide(approval_id, "approved", reason, edited_arguments, expected_args_hash)

    def deny(self, approval_id: str, reason: str, *, expected_args_hash: str | None = None) -> dict[str, Any]:
        return self._decide(approval_id, "denied", reason, None, expected_args_hash)

    def _decide(self, approval_id: str, status: str, reason: str, edited: dict[str, Any] | None,
                expected_hash: str | None) -> dict[str, Any]:
        """A decision binds to exactly one request: it must still be pending, before its deadline (the engine may
        not have expired it yet, so `now` is compared here), and, with expected_args_hash (the full sha256 or a
        prefix of at least 8 hex digits), for the arguments the operator saw."""
        approval_id = _text(approval_id, "approval")
        reason = _text(reason, "reason")
        edited_json = None if edited is None else _json_object(edited, "edited_arguments")
        expected = self._expected_hash(expected_hash)
        now = self.now()
        with self._tx() as conn:
            row = _one(conn, "SELECT * FROM approvals WHERE id = ?", (approval_id,))
            if row is None:
                raise ControlError(f"no approval {approval_id} (see `flightdeck approvals --all`)")
            if row["status"] != "pending":
                raise ControlError(_settled_message(row, now))
            if now >= row["deadline"]:
                raise ControlError(f"approval {approval_id} expired at {clock_text(row['deadline'], now)}; it is "
                                   f"too late to decide (on timeout the engine will {row['on_timeout']})")
            if expected is not None and not row["args_hash"].startswith(expected):
                raise ControlError(f"approval {approval_id}: arguments changed since you looked (hash "
                                   f"{row['args_hash'][:12]}, you expected {expected[:12]}); review it again "
                                   f"with `flightdeck approvals`")
            seq = self._next_decided_seq(conn)
            cursor = conn.execute(
                "UPDATE approvals SET status = ?, decided = ?, decided_by = ?, decision_reason = ?, "
                "edited_arguments = ?, decided_seq = ? WHERE id = ? AND status = 'pending'",
                (status, now, self.operator, reason, edited_json, seq, approval_id))
            if cursor.rowcount != 1:  # cannot happen under the write lock; kept so the rule never depends on it
                settled = _one(conn, "SELECT * FROM approvals WHERE id = ?", (approval_id,))
                raise ControlError(_settled_message(settled or row, now))
            after = _decode("approvals", _one(conn, "SELECT * FROM approvals WHERE id = ?", (approval_id,)) or {})
            action = "edit_approve" if edited_json is not None else ("approve" if status == "approved" else "deny")
            audit_after: dict[str, Any] = {"status": status, "args_hash": row["args_hash"]}
            if edited_json is not None:
                audit_after["edited_arguments"] = after["edited_arguments"]
                audit_after["edited_args_hash"] = _hash(edited_json)
            bind(conn, "approvals", approval_id,
                 audit.append(conn, ts=now, actor=self.operator, action=action, target=approval_id,
                              before={"status": "pending", "run_id": row["run_id"], "agent": row["agent"],
                                      "tool": row["tool"], "args_hash": row["args_hash"], "level": row["level"]},
                              after=audit_after, reason=reason))
        return after

    @staticmethod
    def _expected_hash(value: str | None) -> str | None:
        if value is None:
            return None
        text = value.strip().lower() if isinstance(value, str) else ""
        if len(text) < MIN_HASH_PREFIX or len(text) > 64 or not _HEX.fullmatch(text):
            raise InputError(f"expected the sha256 of the arguments (at least {MIN_HASH_PREFIX} hex digits), got "
                             f"{value!r}", field="expected_args_hash")
        return text

    @staticmethod
    def _next_decided_seq(conn: sqlite3.Connection) -> int:
        last = conn.execute(_LAST_DECIDED_SEQ).fetchone()
        return (last[0] if last else 0) + 1

    def pending_approvals(self) -> list[dict[str, Any]]:
        """Oldest first: the one waiting longest is the one closest to its deadline policy."""
        return self._query("approvals", SNAPSHOT_QUERIES["pending_approvals"])

    def list_approvals(self, limit: int = 100) -> list[dict[str, Any]]:
        """All approvals, whatever their status, newest request first."""
        return self._query("approvals", "SELECT * FROM approvals ORDER BY requested DESC, rowid DESC LIMIT ?",
                           (int(limit),))

    def approval(self, approval_id: str) -> dict[str, Any]:
        rows = self._query("approvals", "SELECT * FROM approvals WHERE id = ?", (approval_id,))
        if not rows:
            raise ControlError(f"no approval {approval_id} (see `flightdeck approvals --all`)")
        return rows[0]

    # -- approvals: engine side --------------------------------------------------------------------------------

    def request_approval(self, run_id: str, span_id: str | None, agent: str, tool: str, arguments: Mapping[str, Any],
                         risk: str | None, reason: str | None, deadline_s: float, on_timeout: str,
                         engine_id: str, *, actor: str | None = None) -> dict[str, Any]:
        """Record a tool call waiting for an operator. Returns the row (id 'ap-' + 8 hex digits, args_hash)."""
        run_id = _text(run_id, "run_id")
        agent = _text(agent, "agent")
        tool = _text(tool, "tool")
        engine_id = _text(engine_id, "engine_id")
        args_json = _json_object(arguments, "arguments")
        on_timeout = _choice(on_timeout, ON_TIMEOUT_POLICIES, "on_timeout")
        if isinstance(deadline_s, bool) or not isinstance(deadline_s, (int, float)) or not math.isfinite(deadline_s) \
                or deadline_s <= 0:
            raise InputError(f"must be a positive number of seconds, got {deadline_s!r}", field="deadline_s")
        risk = _optional_text(risk, "risk")
        if isinstance(reason, str) and len(reason) > MAX_TEXT:
            # The model wrote this, not an operator: a long reason must not fail the tool call, so it is cut.
            reason = reason[:MAX_TEXT] + " …[truncated]"
        actor = actor or f"engine:{engine_id}"
        now = self.now()
        args_hash = _hash(args_json)
        with self._tx() as conn:
            approval_id = self._new_approval_id(conn)
            conn.execute(
                "INSERT INTO approvals (id, run_id, span_id, agent, tool, arguments, args_hash, risk, reason, "
                "requested, deadline, window_s, level, on_timeout, status, engine_id) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, 'pending', ?)",
                (approval_id, run_id, span_id, agent, tool, args_json, args_hash, risk, reason, now,
                 now + float(deadline_s), float(deadline_s), on_timeout, engine_id))
            row = _decode("approvals", _one(conn, "SELECT * FROM approvals WHERE id = ?", (approval_id,)) or {})
            bind(conn, "approvals", approval_id,
                 audit.append(conn, ts=now, actor=actor, action="approval_requested", target=approval_id,
                              after={"run_id": run_id, "span_id": span_id, "agent": agent, "tool": tool,
                                     "args_hash": args_hash, "risk": risk, "deadline": row["deadline"],
                                     "on_timeout": on_timeout},
                              reason=reason))
        return row

    @staticmethod
    def _new_approval_id(conn: sqlite3.Connection) -> str:
        # 32 random bits keep ids typeable; a collision is checked for under the write lock, not assumed away.
        for _ in range(20):
            candidate = "ap-" + secrets.token_hex(4)
            if conn.execute("SELECT 1 FROM approvals WHERE id = ?", (candidate,)).fetchone() is None:
                return candidate
        raise StoreError("could not find a free approval id after 20 tries; is control.db full of approvals?")

    def expire_approval(self, approval_id: str, *, now: float | None = None, actor: str | None = None,
                        max_escalations: int | None = None) -> dict[str, Any]:
        """Apply the request's on_timeout policy once its deadline has passed. Returns the row plus `outcome`:
        'timed_out' (deny policy: status timed_out, a timeout, not a human denial), 'approved' (decided_by
        'timeout-policy'), 'escalated' (level + 1, deadline = now + twice the original window, still pending;
        page someone with what the row holds; once `max_escalations` levels are used up the request times out as
        with 'deny') or 'unchanged' (already decided, or not due yet). Idempotent, and
        safe against a human decision arriving at the same moment: whichever commits first wins."""
        now = self.now() if now is None else float(now)
        with self._tx() as conn:
            row = _one(conn, "SELECT * FROM approvals WHERE id = ?", (approval_id,))
            if row is None:
                raise ControlError(f"no approval {approval_id}")
            if row["status"] != "pending" or now < row["deadline"]:
                return {**_decode("approvals", row), "outcome": "unchanged"}
            who = actor or (f"engine:{row['engine_id']}" if row["engine_id"] else self.operator)
            guard = "WHERE id = ? AND status = 'pending' AND level = ? AND deadline <= ?"
            guard_params = (approval_id, row["level"], now)
            policy = row["on_timeout"]
            if policy == "escalate" and max_escalations is not None and row["level"] >= max_escalations:
                policy = "deny"  # nobody answered at any level: a timeout, recorded as such
            if policy == "escalate":
                deadline = now + 2 * row["window_s"]
                cursor = conn.execute(f"UPDATE approvals SET level = level + 1, deadline = ? {guard}",
                                      (deadline, *guard_params))
                outcome, action = "escalated", "approval_escalated"
                audit_after: dict[str, Any] = {"status": "pending", "level": row["level"] + 1, "deadline": deadline}
            else:
                status = "timed_out" if policy == "deny" else "approved"
                cursor = conn.execute(
                    f"UPDATE approvals SET status = ?, decided = ?, decided_by = ?, decision_reason = ?, "
                    f"decided_seq = ? {guard}",
                    (status, now, TIMEOUT_POLICY_ACTOR,
                     f"no decision within {row['deadline'] - row['requested']:g}s (on_timeout: {policy})",
                     self._next_decided_seq(conn), *guard_params))
                outcome, action = status, "approval_timeout"
                audit_after = {"status": status, "decided_by": TIMEOUT_POLICY_ACTOR, "policy": policy}
            if cursor.rowcount != 1:
                return {**_decode("approvals", row), "outcome": "unchanged"}
            bind(conn, "approvals", approval_id,
                 audit.append(conn, ts=now, actor=who, action=action, target=approval_id,
                              before={"status": "pending", "level": row["level"], "deadline": row["deadline"]},
                              after=audit_after, reason=f"deadline passed (on_timeout: {policy})"))
            after = _decode("approvals", _one(conn, "SELECT * FROM approvals WHERE id = ?", (approval_id,)) or {})
        return {**after, "outcome": outcome}

    def cancel_approvals_for_run(self, run_id: str, reason: str, *, actor: str | None = None) -> list[dict[str, Any]]:
        """A killed (or ended) run's pending requests become cancelled; returns them."""
        run_id = _text(run_id, "run_id")
        reason = _text(reason, "reason")
        who = actor or self.operator
        now = self.now()
        cancelled = []
        with self._tx() as conn:
            for row in _fetch(conn, "SELECT * FROM approvals WHERE run_id = ? AND status = 'pending' ORDER BY "
                                    "requested, rowid", (run_id,)):
                cursor = conn.execute(
                    "UPDATE approvals SET status = 'cancelled', decided = ?, decided_by = ?, decision_reason = ?, "
                    "decided_seq = ? WHERE id = ? AND status = 'pending'",
                    (now, who, reason, self._next_decided_seq(conn), row["id"]))
                if cursor.rowcount != 1:
                    continue
                bind(conn, "approvals", row["id"],
                     audit.append(conn, ts=now, actor=who, action="approval_cancelled", target=row["id"],
                                  before={"status": "pending", "run_id": run_id}, after={"status": "cancelled"},
                                  reason=reason))
                cancelled.append(_decode("approvals", _one(conn, "SELECT * FROM approvals WHERE id = ?",
                                                           (row["id"],)) or {}))
        return cancelled

    # -- engine acknowledgements (bookkeeping, not audited) ----------------------------------------------------

    def _mark(self, sql: str, ids: Iterable[int], *params: Any) -> int:
        id_list = _ids(ids)
        if not id_list:
            return 0
        with self._tx() as conn:
            cursor = conn.execute(sql.format(ids=", ".join("?" * len(id_list))), (*params, *id_list))
            return cursor.rowcount

    def ack_kill_switches(self, ids: Iterable[int], engine_id: str) -> int:
        """The engine applied these switches. Returns how many were newly acknowledged."""
        return self._mark("UPDATE kill_switches SET acked = ?, acked_by = ? WHERE id IN ({ids}) AND acked IS NULL",
                          ids, self.now(), engine_id)

    def ack_flags(self, ids: Iterable[int]) -> int:
        return self._mark("UPDATE flags SET acked = ? WHERE id IN ({ids}) AND acked IS NULL", ids, self.now())

    def mark_breaker_overrides_applied(self, ids: Iterable[int], engine_id: str) -> int:
        return self._mark("UPDATE breaker_overrides SET applied = ?, applied_by = ? WHERE id IN ({ids}) "
                          "AND applied IS NULL", ids, self.now(), engine_id)

    def mark_budget_overrides_applied(self, ids: Iterable[int]) -> int:
        return self._mark("UPDATE budget_overrides SET applied = ? WHERE id IN ({ids}) AND applied IS NULL", ids,
                          self.now())

    # -- breakers and budgets ----------------------------------------------------------------------------------

    def override_breaker(self, key: str, action: str, reason: str, *, source: str = "operator") -> dict[str, Any]:
        """Ask the engine to force a breaker open, reset it to closed, or disable it (calls always pass).
        key is 'tool:NAME', 'model:NAME' or 'delegation:NAME'."""
        key = _text(key, "key")
        kind, _, name = key.partition(":")
        if kind not in BREAKER_KINDS or not name:
            raise InputError(f"expected KIND:NAME with KIND one of {', '.join(BREAKER_KINDS)} (e.g. tool:crm_lookup),"
                             f" got {key!r}", field="key")
        action = _choice(action, BREAKER_ACTIONS, "action")
        reason = _text(reason, "reason")
        source = self._source(source)
        now = self.now()
        with self._tx() as conn:
            cursor = conn.execute("INSERT INTO breaker_overrides (key, action, reason, operator, source, created) "
                                  "VALUES (?, ?, ?, ?, ?, ?)", (key, action, reason, self.operator, source, now))
            row = _one(conn, "SELECT * FROM breaker_overrides WHERE id = ?", (cursor.lastrowid,))
            assert row is not None
            bind(conn, "breaker_overrides", row["id"],
                 audit.append(conn, ts=now, actor=self._actor_for(source), action="breaker_override", target=key,
                              after=row, reason=reason))
        assert row is not None
        return row

    def breaker_overrides(self, limit: int = 100) -> list[dict[str, Any]]:
        """Breaker overrides, newest first (applied or not)."""
        return self._query("breaker_overrides", "SELECT * FROM breaker_overrides ORDER BY id DESC LIMIT ?",
                           (int(limit),))

    def budget_change(self, run_id: str, limits: Mapping[str, Any], reason: str, *,
                      source: str = "operator") -> dict[str, Any]:
        """New limits for a running run: {dimension: number}; None lifts that limit. Dimensions are those of
        engine.guardrails.budget.Dimension; counts must be whole numbers; nothing may be negative."""
        run_id = _text(run_id, "run_id")
        clean = self._limits(limits)
        reason = _text(reason, "reason")
        source = self._source(source)
        now = self.now()
        with self._tx() as conn:
            cursor = conn.execute(
                "INSERT INTO budget_overrides (run_id, limits, reason, operator, source, created) "
                "VALUES (?, ?, ?, ?, ?, ?)", (run_id, canonical_json(clean), reason, self.operator, source, now))
            row = _decode("budget_overrides",
                          _one(conn, "SELECT * FROM budget_overrides WHERE id = ?", (cursor.lastrowid,)) or {})
            bind(conn, "budget_overrides", row["id"],
                 audit.append(conn, ts=now, actor=self._actor_for(source), action="budget_change",
                              target=f"run:{run_id}", after=row, reason=reason))
        return row

    @staticmethod
    def _limits(limits: Any) -> dict[str, Any]:
        if not isinstance(limits, Mapping) or not limits:
            raise InputError("must be a non-empty object of dimension -> number", field="limits")
        clean: dict[str, Any] = {}
        for key, value in limits.items():
            if key not in BUDGET_DIMENSIONS:
                raise InputError(f"unknown budget dimension (known: {', '.join(BUDGET_DIMENSIONS)})",
                                 field=f"limits.{key}")
            if value is None:
                clean[key] = None
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value < 0:
                raise InputError(f"expected a non-negative number or null, got {value!r}", field=f"limits.{key}")
            if key in _WHOLE_DIMENSIONS:
                if float(value) != int(value):
                    raise InputError(f"expected a whole number, got {value!r}", field=f"limits.{key}")
                value = int(value)
            clean[key] = value
        return clean

    # -- audit and engines -------------------------------------------------------------------------------------

    def audit_log(self, limit: int = 100, before_id: int | None = None) -> list[dict[str, Any]]:
        """Newest first; page with before_id (the smallest id you have seen)."""
        if before_id is None:
            rows = self._db.query("SELECT * FROM audit ORDER BY id DESC LIMIT ?", (int(limit),))
        else:
            rows = self._db.query("SELECT * FROM audit WHERE id < ? ORDER BY id DESC LIMIT ?",
                                  (int(before_id), int(limit)))
        return [audit.decode_row(row) for row in rows]

    def verify_audit(self, anchor: AuditAnchor | None = None) -> AuditVerification:
        """The hash chain, then (when given) the engine's anchor from traces.db: a log that was cut short, wiped or
        rewritten with recomputed hashes verifies as a chain but not against the anchor."""
        # One read transaction: the walk and the sqlite_sequence check must see the same log, or an append
        # landing between them would look like rows deleted at the end.
        with self._read_tx() as conn:
            result = audit.verify_chain(conn)
            if anchor is None:
                return result
            if not result.ok:
                return replace(result, anchored_seq=anchor.seq)
            problem = anchor_problem(conn, anchor)
        if problem is not None:
            return AuditVerification(False, result.rows, anchor.seq, problem, anchored_seq=anchor.seq)
        return replace(result, anchored_seq=anchor.seq)

    def engines(self) -> list[dict[str, Any]]:
        """Engines recorded in control.db, newest first, with `alive` and `stale` (no heartbeat for 5 s)."""
        return self._db.list_engines()

    def record_action(self, action: str, target: str | None, *, before: Any = None, after: Any = None,
                      reason: str | None = None, actor: str | None = None) -> dict[str, Any]:
        """An audit row for an action that is not a control.db change (a signal sent to an engine, a page)."""
        action = _text(action, "action")
        with self._tx() as conn:
            return audit.append(conn, ts=self.now(), actor=actor or self.operator, action=action, target=target,
                                before=before, after=after, reason=reason)

    def transaction(self) -> Any:
        """The raw write transaction, for callers (terminate.py) that must commit their own change with an audit
        row via audit.append()."""
        return self._tx()

    # -- the engine's watcher ----------------------------------------------------------------------------------

    def data_version(self) -> int:
        """PRAGMA data_version on a connection kept for it: changes whenever another connection commits."""
        with self._watch_lock:
            try:
                return int(self._watch_conn().execute("PRAGMA data_version").fetchone()[0])
            except sqlite3.Error as exc:
                raise translate_sqlite_error(exc, self._db.path, "read") from exc

    def snapshot(self, decided_after: int | None = None) -> ControlSnapshot:
        """Everything the engine must obey, in one read transaction of a few indexed queries. decided_after: the
        previous snapshot's decided_cursor; None (the first call) returns no decided approvals, only the cursor."""
        parts: dict[str, tuple[dict[str, Any], ...]] = {"decided_approvals": ()}
        with self._read_tx() as conn:
            taken = self.now()
            for name, sql in SNAPSHOT_QUERIES.items():
                if name == "decided_approvals":
                    if decided_after is None:
                        continue
                    params: tuple[Any, ...] = (int(decided_after),)
                else:
                    params = ()
                parts[name] = tuple(_decode(_SNAPSHOT_TABLE[name], row) for row in _fetch(conn, sql, params))
            last = conn.execute(_LAST_DECIDED_SEQ).fetchone()
            head = conn.execute("SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1").fetchone()
        return ControlSnapshot(kill_switches=parts["kill_switches"], flags=parts["flags"],
                               pending_approvals=parts["pending_approvals"],
                               decided_approvals=parts["decided_approvals"],
                               breaker_overrides=parts["breaker_overrides"],
                               budget_overrides=parts["budget_overrides"],
                               decided_cursor=last[0] if last else 0, taken=taken,
                               audit_head=(int(head[0]), str(head[1])) if head else None)

    # -- binding checks (engine.controls.binding) ---------------------------------------------------------------

    def binding_problems(self, table: str, rows: Iterable[Mapping[str, Any]]) -> list[str | None]:
        """For each row of `table`: None if it is bound to an intact audit row recording its state, else what is
        wrong. One read transaction."""
        with self._read_tx() as conn:
            return [binding.problem(conn, table, row) for row in rows]

    def control_rows(self, table: str, ids: Iterable[Any]) -> dict[Any, dict[str, Any]]:
        """Rows of a bound table by id (those that exist), decoded like snapshot rows."""
        if table not in _BOUND:
            raise ValueError(f"not a control table: {table}")
        wanted = list(ids)
        if not wanted:
            return {}
        with self._read_tx() as conn:
            rows = _fetch(conn, f"SELECT * FROM {table} WHERE id IN ({', '.join('?' * len(wanted))})", wanted)
        return {row["id"]: _decode(table, row) for row in rows}


_SNAPSHOT_TABLE = {"kill_switches": "kill_switches", "flags": "flags", "pending_approvals": "approvals",
                   "decided_approvals": "approvals", "breaker_overrides": "breaker_overrides",
                   "budget_overrides": "budget_overrides"}

_BOUND = frozenset(_SNAPSHOT_TABLE.values())

_TARGET_WORD = {"run": "run id", "agent": "agent name", "tool": "tool name", "hierarchy": "hierarchy name"}


def _settled_message(row: Mapping[str, Any], now: float) -> str:
    when = clock_text(row["decided"], now)
    status = row["status"]
    if status == "timed_out":
        return f"approval {row['id']} expired at {when} and was denied by its timeout policy"
    if status == "cancelled":
        return f"approval {row['id']} was cancelled at {when} ({row['decision_reason']})"
    return f"approval {row['id']} was already {status} by {row['decided_by']} at {when}"
