"""ControlAPI: the one way operators (CLI, console) and the engine read and change what is intended in control.db.

A thin facade over the concept modules (engine.controls.__init__ lists them): it checks its arguments, opens ONE
short BEGIN IMMEDIATE transaction per action and calls the module functions, which write the change AND its audit
row in it, so the log can never disagree with the state, and a crash leaves neither. Callers that make several
changes in one transaction (a runbook's apply) open it with `transaction()` and call those functions themselves.
control.db has many writer processes; SQLite's write lock serializes them (busy_timeout makes them queue instead of
failing), and every state change is additionally a conditional UPDATE (`... WHERE status = 'pending'`, `... WHERE
released IS NULL`) so that "exactly one decision wins" holds even if a future caller forgets the transaction.

Rows come back typed (engine.store.control_rows: frozen dataclasses, one field per column; `as_dict()` for JSON).
JSON columns come back parsed: approvals' `arguments` and `edited_arguments`, budget_overrides' `limits`, audit's
`before` and `after`.

Engine side: its ControlWorker reads `data_version()` (polled on control.db, woken by LISTEN/NOTIFY on Postgres),
calls `snapshot()` when it changes, acknowledges what it applied (acks are not audited: they are bookkeeping, not
actions) and records approval requests and expiries (audited).

Split by concern, one class each, all of them ControlAPI's methods (callers import ControlAPI from here only):
opening the store and the transactions are ControlBase (api_base.py), approvals ApprovalActions
(approval_actions.py), durable runs' reconcile, resume and retry DurableRunActions (durable_actions.py); kill
switches, flags, acknowledgements, overrides, audit, the engine's watcher and binding checks are here. The SQL and
the audit rows live in the concept modules.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any

from engine.controls import audit, binding, flag_settings, kill_switches, overrides
from engine.controls.anchor import AuditAnchor, anchor_problem
from engine.controls.approval_actions import ApprovalActions
from engine.controls.audit import AuditVerification
from engine.controls.durable_actions import DurableRunActions
from engine.controls.errors import ControlError
from engine.controls.flags import validate_flag, validate_flag_name
from engine.controls.labels import flag_scope_label, switch_label
from engine.controls.overrides import BREAKER_KINDS, BUDGET_DIMENSIONS
from engine.controls.schema import BREAKER_ACTIONS, FLAG_SCOPES, KILL_MODES, KILL_SCOPES
from engine.controls.snapshot import SNAPSHOT_QUERIES, ControlSnapshot, read_snapshot
from engine.controls.validate import action_source, choice, required_text, whole_ids
from engine.errors import InputError
from engine.store.control_rows import (
    BOUND_ROW_TYPES,
    AuditEntry,
    BreakerOverride,
    BudgetOverride,
    ControlRow,
    EngineStatus,
    FlagSetting,
    KillSwitch,
    KillSwitchAck,
    KillSwitchSet,
)
from engine.store.dialect import SqlConnection
from engine.store.rows import column_list, fetch_typed
from engine.timefmt import clock_text

# The public face: callers import these from here (the names that lived in this module before the split).
__all__ = [
    "BREAKER_KINDS",
    "BUDGET_DIMENSIONS",
    "SNAPSHOT_QUERIES",
    "ControlAPI",
    "ControlError",
    "ControlSnapshot",
    "flag_scope_label",
    "switch_label",
]

# Who releases a run's kill switches when the run has ended (the audit log's actor): Flightdeck itself.
SPENT_SWITCH_ACTOR = "flightdeck"


class ControlAPI(ApprovalActions, DurableRunActions):
    """The control plane for one actor: an operator name, or `engine:<id>` / `runbook:<id>` for engine-side actions.
    `store` is a store directory (control.db) or a Postgres store (a PostgresLocation or its postgresql:// URL:
    engine.store.pg.control_db); every method behaves the same on both.

    `create=False` refuses to create a store that does not exist (read-only CLI commands use it, so a mistyped
    --store is an error instead of a new empty store). `db` shares an already open ControlDB (the engine's).
    `read_only` opens control.db with SQLite's mode=ro and changes nothing on disk (read commands, forensics on a
    read-only store); any write through it fails with a StoreError saying the store was opened read-only."""

    # -- kill switches -----------------------------------------------------------------------------------------

    def set_kill(self, scope: str, target: str | None, mode: str, reason: str,
                 run_id: str | None = None) -> KillSwitchSet:
        """Set a kill switch (kill: stop now; drain: finish in-flight calls, start nothing new; pause: hold at the
        next step). An identical active switch is returned as is (`already_active` True), never duplicated."""
        scope = choice(scope, KILL_SCOPES, "scope")
        mode = choice(mode, KILL_MODES, "mode")
        reason = required_text(reason, "reason")
        target, run_id = kill_switches.checked_target(scope, target, run_id)
        now = self.now()
        with self.transaction() as conn:
            existing = kill_switches.find_active(conn, scope, target, run_id, mode)
            if existing is not None:
                return KillSwitchSet(**existing.as_dict(), already_active=True)
            row = kill_switches.create(conn, scope=scope, target=target, run_id=run_id, mode=mode, reason=reason,
                                       operator=self.operator, now=now)
        return KillSwitchSet(**row.as_dict(), already_active=False)

    def release(self, switch_id: int | None = None, *, scope: str | None = None, target: str | None = None,
                run_id: str | None = None, reason: str) -> list[KillSwitch]:
        """Release one switch by id, or every active switch of a scope and target (any mode; for an agent
        without run_id, also those limited to a run). Each release is audited; all commit together."""
        reason = required_text(reason, "reason")
        if switch_id is not None and scope is not None:
            raise InputError("give a kill switch id or a scope, not both", field="id")
        if switch_id is None and scope is None:
            raise InputError("give the id of a kill switch or a scope to release", field="id")
        now = self.now()
        with self.transaction() as conn:
            if switch_id is not None:
                (switch_id,) = whole_ids([switch_id], "id")
                row = kill_switches.get(conn, switch_id)
                if row is None:
                    raise ControlError(f"no kill switch #{switch_id} (see `flightdeck kill --help`; active ones are "
                                       f"listed by `flightdeck engines` and the console)")
                if row.released is not None:
                    raise ControlError(f"kill switch #{switch_id} was already released by {row.released_by} at "
                                       f"{clock_text(row.released, now)}")
                rows = [row]
            else:
                scope = choice(scope, KILL_SCOPES, "scope")
                target, run_id = kill_switches.checked_target(scope, target, run_id)
                rows = kill_switches.active_for(conn, scope, target, run_id)
                if not rows:
                    label = switch_label(scope, target, run_id)
                    raise ControlError(f"no active kill switch for {label}")
            return [kill_switches.release(conn, row, actor=self.operator, reason=reason, now=now) for row in rows]

    def expire_run_switches(self, run_id: str) -> list[KillSwitch]:
        """A run has ended: release the switches that cover only it (scope `run`, or an agent switch limited to
        it), each audited as released by `flightdeck` with reason "run ended", so nothing lists a spent switch as
        in force. The engine calls it when one of its runs ends; returns what was released."""
        run_id = required_text(run_id, "run_id")
        now = self.now()
        with self.transaction() as conn:
            return [kill_switches.release(conn, row, actor=SPENT_SWITCH_ACTOR, reason="run ended", now=now)
                    for row in kill_switches.active_on_run(conn, run_id)]

    def active_kill_switches(self) -> list[KillSwitch]:
        with self.read() as conn:
            return kill_switches.active(conn)

    def kill_switch(self, switch_id: int) -> KillSwitch:
        (switch_id,) = whole_ids([switch_id], "id")
        with self.read() as conn:
            row = kill_switches.get(conn, switch_id)
        if row is None:
            raise ControlError(f"no kill switch #{switch_id}")
        return row

    # -- safe-mode flags ---------------------------------------------------------------------------------------

    def set_flag(self, name: str, value: Any, scope: str = "global", target: str | None = None, *,
                 reason: str, source: str = "operator") -> FlagSetting:
        """Set a safe-mode flag. A flag already active at the same name, scope and target is cleared
        (cleared_by 'superseded') in the same transaction; the new row's previous_value is its value."""
        scope = choice(scope, FLAG_SCOPES, "scope")
        name, value = validate_flag(name, value, scope)
        target = flag_settings.checked_target(scope, target)
        reason = required_text(reason, "reason")
        source = action_source(source)
        now = self.now()
        with self.transaction() as conn:
            return flag_settings.set_value(conn, name, value, scope, target, reason=reason, source=source,
                                           operator=self.operator, now=now)

    def clear_flag(self, name: str, scope: str = "global", target: str | None = None, *, reason: str,
                   source: str = "operator") -> FlagSetting:
        """Clear an active flag; returns the cleared row (its `value` is what it was)."""
        scope = choice(scope, FLAG_SCOPES, "scope")
        name = validate_flag_name(name, scope)
        target = flag_settings.checked_target(scope, target)
        reason = required_text(reason, "reason")
        source = action_source(source)
        now = self.now()
        with self.transaction() as conn:
            old = flag_settings.find_active(conn, name, scope, target)
            if old is None:
                raise ControlError(f"flag {name} is not set at {flag_scope_label(scope, target)} scope "
                                   f"(see `flightdeck safe-mode list`)")
            return flag_settings.clear(conn, old, reason=reason, source=source, operator=self.operator, now=now)

    def rollback_flag(self, flag_id: int, *, reason: str, source: str = "operator") -> FlagSetting | None:
        """Undo one flag setting exactly: restore its previous_value (or clear it when there was none). Only while
        that row is still the active one; if someone has changed the flag since, nothing is touched and None is
        returned, because rolling back would overwrite their newer decision."""
        (flag_id,) = whole_ids([flag_id], "flag_id")
        reason = required_text(reason, "reason")
        source = action_source(source)
        now = self.now()
        with self.transaction() as conn:
            row = flag_settings.get(conn, flag_id)
            if row is None:
                raise ControlError(f"no flag #{flag_id}")
            if row.cleared is not None:
                return None
            if row.previous_value is None:
                return flag_settings.clear(conn, row, reason=reason, source=source, operator=self.operator, now=now)
            return flag_settings.set_value(conn, row.name, row.previous_value, row.scope, row.target,
                                           reason=reason, source=source, operator=self.operator, now=now)

    def active_flags(self) -> list[FlagSetting]:
        with self.read() as conn:
            return flag_settings.active_by_name(conn)

    # -- engine acknowledgements (bookkeeping, not audited) ----------------------------------------------------

    def _acknowledge(self, ids: Iterable[int], mark: Callable[[SqlConnection, list[int]], int]) -> int:
        id_list = whole_ids(ids)
        if not id_list:
            return 0
        with self.transaction() as conn:
            return mark(conn, id_list)

    def ack_kill_switches(self, ids: Iterable[int], engine_id: str) -> int:
        """The engine applied these switches. Returns how many were newly acknowledged."""
        return self._acknowledge(ids, lambda conn, id_list: kill_switches.acknowledge(conn, id_list, engine_id,
                                                                                      self.now()))

    def kill_switch_acks(self, ids: Iterable[int]) -> list[KillSwitchAck]:
        """Which engines acknowledged these switches, and when (one row per engine: a Postgres fleet's every one)."""
        id_list = whole_ids(ids)
        with self.read() as conn:
            return kill_switches.acks(conn, id_list)

    def ack_flags(self, ids: Iterable[int]) -> int:
        return self._acknowledge(ids, lambda conn, id_list: flag_settings.acknowledge(conn, id_list, self.now()))

    def mark_breaker_overrides_applied(self, ids: Iterable[int], engine_id: str) -> int:
        return self._acknowledge(ids, lambda conn, id_list: overrides.mark_breaker_overrides_applied(
            conn, id_list, engine_id, self.now()))

    def mark_budget_overrides_applied(self, ids: Iterable[int]) -> int:
        return self._acknowledge(ids, lambda conn, id_list: overrides.mark_budget_overrides_applied(
            conn, id_list, self.now()))

    # -- breakers and budgets ----------------------------------------------------------------------------------

    def override_breaker(self, key: str, action: str, reason: str, *, source: str = "operator") -> BreakerOverride:
        """Ask the engine to force a breaker open, reset it to closed, or disable it (calls always pass).
        key is 'tool:NAME', 'model:NAME' or 'delegation:NAME'."""
        key = overrides.checked_breaker_key(required_text(key, "key"))
        action = choice(action, BREAKER_ACTIONS, "action")
        reason = required_text(reason, "reason")
        source = action_source(source)
        now = self.now()
        with self.transaction() as conn:
            return overrides.create_breaker_override(conn, key, action, reason=reason, operator=self.operator,
                                                     source=source, actor=self.actor_for(source), now=now)

    def breaker_overrides(self, limit: int = 100) -> list[BreakerOverride]:
        """Breaker overrides, newest first (applied or not)."""
        with self.read() as conn:
            return overrides.newest_breaker_overrides(conn, limit)

    def budget_change(self, run_id: str, limits: Mapping[str, Any], reason: str, *,
                      source: str = "operator") -> BudgetOverride:
        """New limits for a running run: {dimension: number}; None lifts that limit. Dimensions are those of
        engine.guardrails.budget.Dimension; counts must be whole numbers; nothing may be negative."""
        run_id = required_text(run_id, "run_id")
        clean = overrides.checked_limits(limits)
        reason = required_text(reason, "reason")
        source = action_source(source)
        now = self.now()
        with self.transaction() as conn:
            return overrides.create_budget_override(conn, run_id, clean, reason=reason, operator=self.operator,
                                                    source=source, actor=self.actor_for(source), now=now)

    # -- audit and engines -------------------------------------------------------------------------------------

    def audit_log(self, limit: int = 100, before_id: int | None = None) -> list[AuditEntry]:
        """Newest first; page with before_id (the smallest id you have seen)."""
        with self.read() as conn:
            return audit.newest(conn, limit, before_id)

    def verify_audit(self, anchor: AuditAnchor | None = None) -> AuditVerification:
        """The hash chain, then (when given) the engine's anchor from traces.db: a log that was cut short, wiped or
        rewritten with recomputed hashes verifies as a chain but not against the anchor."""
        # One read transaction: the walk and the sqlite_sequence check must see the same log, or an append
        # landing between them would look like rows deleted at the end.
        with self.read_transaction() as conn:
            result = audit.verify_chain(conn)
            if anchor is None:
                return result
            if not result.ok:
                return replace(result, anchored_seq=anchor.seq)
            problem = anchor_problem(conn, anchor)
        if problem is not None:
            return AuditVerification(False, result.rows, anchor.seq, problem, anchored_seq=anchor.seq)
        return replace(result, anchored_seq=anchor.seq)

    def engines(self) -> list[EngineStatus]:
        """Engines recorded in control.db, newest first, with `alive` and `stale` (no heartbeat for 5 s)."""
        return self.db.list_engines()

    def record_action(self, action: str, target: str | None, *, before: Any = None, after: Any = None,
                      reason: str | None = None, actor: str | None = None) -> AuditEntry:
        """An audit row for an action that is not a control.db change (a signal sent to an engine, a page)."""
        action = required_text(action, "action")
        with self.transaction() as conn:
            return audit.append(conn, ts=self.now(), actor=actor or self.operator, action=action, target=target,
                                before=before, after=after, reason=reason)

    # -- the engine's watcher ----------------------------------------------------------------------------------

    def data_version(self) -> int:
        """Changes whenever another connection commits (PRAGMA data_version on control.db; on Postgres, a counter
        every committed control change bumps)."""
        return self.db.data_version()

    def snapshot(self, decided_after: int | None = None) -> ControlSnapshot:
        """Everything the engine must obey, in one read transaction of a few indexed queries. decided_after: the
        previous snapshot's decided_cursor; None (the first call) returns no decided approvals, only the cursor."""
        with self.read_transaction() as conn:
            return read_snapshot(conn, decided_after, self.now())

    # -- binding checks (engine.controls.binding) ---------------------------------------------------------------

    def binding_problems(self, table: str, rows: Iterable[ControlRow]) -> list[str | None]:
        """For each row of `table`: None if it is bound to an intact audit row recording its state, else what is
        wrong. One read transaction."""
        with self.read_transaction() as conn:
            return [binding.problem(conn, table, row) for row in rows]

    def control_rows(self, table: str, ids: Iterable[Any]) -> dict[Any, ControlRow]:
        """Rows of a bound table by id (those that exist), typed like snapshot rows."""
        row_type = BOUND_ROW_TYPES.get(table)
        if row_type is None:
            raise ValueError(f"not a control table: {table}")
        wanted = list(ids)
        if not wanted:
            return {}
        with self.read_transaction() as conn:
            rows = fetch_typed(conn, row_type, f"SELECT {column_list(row_type)} FROM {table} WHERE id IN "
                                               f"({', '.join('?' * len(wanted))})", wanted)
        return {row.id: row for row in rows}
