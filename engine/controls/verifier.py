"""The engine's check of every control row before it obeys it (see binding.py for what a binding proves).

The control watcher runs `ControlVerifier.check()` on each snapshot it reads, before anything in it is staged or
applied:

- a kill switch, flag or breaker/budget override that is not bound to a matching audit row is left out: the engine
  does not obey it (and does not acknowledge it, so the operator sees it never took effect);
- an approval decision that is not bound is turned into a denial (fail closed: the waiting tool call does not run);
- a switch or flag the engine was obeying that disappears (released, cleared or deleted) is checked too: if its
  release is not bound to a matching audit row, or the row is gone, the engine keeps obeying what it had;
- an engine that starts has obeyed nothing yet, so on its first check it also reads the switches and flags already
  released or cleared: one whose release is not bound to its audit row (lifted with SQL while no engine ran) is
  obeyed as if still in force, exactly as if this engine had been obeying it;
- each finding opens (or updates) a sev1 `control-tampered` incident, one per row, and is traced as a
  `control.tampered` event, once per row and problem.

Results are cached per row state (acknowledgement columns excluded), so the watcher's frequent snapshots cost one
dictionary lookup per row once a row has been checked.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar

from engine.controls.audit import canonical_json
from engine.controls.binding import Tampered
from engine.store.control_rows import BOUND_ROW_TYPES, Approval, ControlRow

if TYPE_CHECKING:
    from engine.controls.api import ControlAPI, ControlSnapshot

log = logging.getLogger(__name__)

INCIDENT_RUNBOOK = "control-tampered"
INCIDENT_TITLE = "control.db was changed outside Flightdeck"
_WATCHED = ("kill_switches", "flags")  # what the engine obeys while it lasts: its disappearance is checked too
_CACHE_LIMIT = 50_000

EventSink = Callable[[str, dict[str, Any]], None]
RowT = TypeVar("RowT", bound=ControlRow)


# What binding.problem() reads of each row: the cache key is exactly these (plus the binding), so a cached verdict
# can never be reused for a row that differs in anything the check looks at. Acknowledgement columns, which the
# engine writes unaudited, are not among them.
_CHECKED: dict[str, tuple[str, ...]] = {
    "kill_switches": ("id", "scope", "target", "run_id", "mode", "released"),
    "flags": ("id", "name", "value", "scope", "target", "cleared", "cleared_by"),
    "approvals": ("id", "status", "decided_by", "args_hash"),
    "breaker_overrides": ("id", "key", "action"),
    "budget_overrides": ("id", "run_id"),
}
_CHECKED_JSON = {"approvals": "edited_arguments", "budget_overrides": "limits"}
# How a switch or flag was lifted, and what it looks like while in force.
_LIFTED = {"kill_switches": "released", "flags": "cleared"}
_IN_FORCE: dict[str, dict[str, Any]] = {
    "kill_switches": {"released": None, "released_by": None, "release_reason": None},
    "flags": {"cleared": None, "cleared_by": None, "clear_reason": None}}


def _state_key(table: str, row: ControlRow) -> tuple[Any, ...]:
    key = (table, row.audit_hash, *(getattr(row, name) for name in _CHECKED[table]))
    extra = _CHECKED_JSON.get(table)
    if extra is None:
        return key
    value = getattr(row, extra)
    return (*key, value if value is None or isinstance(value, str) else canonical_json(value))


class ControlVerifier:
    """One per engine; used only on the control watcher's thread."""

    def __init__(self, engine_id: str, *, emit: EventSink | None = None) -> None:
        self.engine_id = engine_id
        self._emit = emit
        self._cache: dict[tuple[Any, ...], str | None] = {}
        self._obeyed: dict[str, dict[Any, Any]] = {table: {} for table in _WATCHED}
        self._reported: set[tuple[str, str, str]] = set()
        self._started = False
        self.findings: list[Tampered] = []  # every distinct finding, in order (tests read it)

    # -- the check ------------------------------------------------------------------------------------------------

    def check(self, api: ControlAPI, snapshot: ControlSnapshot) -> ControlSnapshot:
        found: dict[tuple[str, str], Tampered] = {}
        if not self._started:
            self._started = True
            self._obey_forged_releases(api, found)
        switches = self._keep_obeyed(api, "kill_switches", self._bound(api, "kill_switches",
                                                                        snapshot.kill_switches, found), found)
        flags = self._keep_obeyed(api, "flags", self._bound(api, "flags", snapshot.flags, found), found)
        decided = [row if problem is None else self._denial(row, problem)
                   for row, problem in self._problems(api, "approvals", snapshot.decided_approvals, found)]
        breakers = self._bound(api, "breaker_overrides", snapshot.breaker_overrides, found)
        budgets = self._bound(api, "budget_overrides", snapshot.budget_overrides, found)
        for finding in found.values():
            self.report(api, finding)
        if not found:
            return snapshot
        return replace(snapshot, kill_switches=tuple(switches), flags=tuple(flags), decided_approvals=tuple(decided),
                       breaker_overrides=tuple(breakers), budget_overrides=tuple(budgets))

    def keep_bound(self, api: ControlAPI, table: str, rows: Sequence[RowT]) -> list[RowT]:
        """The rows of `table` that are bound to their audit rows; the others are reported."""
        found: dict[tuple[str, str], Tampered] = {}
        good = self._bound(api, table, rows, found)
        for finding in found.values():
            self.report(api, finding)
        return good

    def check_decision(self, api: ControlAPI, row: Approval) -> Approval:
        """An approval row read outside a snapshot (a decision racing its deadline): the row, or a denial."""
        found: dict[tuple[str, str], Tampered] = {}
        ((row, problem),) = self._problems(api, "approvals", [row], found)
        for finding in found.values():
            self.report(api, finding)
        return row if problem is None else self._denial(row, problem)

    def _problems(self, api: ControlAPI, table: str, rows: Sequence[RowT],
                  found: dict[tuple[str, str], Tampered]) -> list[tuple[RowT, str | None]]:
        keys = [_state_key(table, row) for row in rows]
        unknown = [(key, row) for key, row in zip(keys, rows) if key not in self._cache]
        if unknown:
            if len(self._cache) > _CACHE_LIMIT:
                self._cache.clear()
            problems = api.binding_problems(table, [row for _, row in unknown])
            for (key, _), problem in zip(unknown, problems):
                self._cache[key] = problem
        out = []
        for key, row in zip(keys, rows):
            problem = self._cache[key]
            if problem is not None:
                found.setdefault((table, str(row.id)), Tampered(table, str(row.id), problem))
            out.append((row, problem))
        return out

    def _bound(self, api: ControlAPI, table: str, rows: Sequence[RowT],
               found: dict[tuple[str, str], Tampered]) -> list[RowT]:
        return [row for row, problem in self._problems(api, table, rows, found) if problem is None]

    def _keep_obeyed(self, api: ControlAPI, table: str, good: list[RowT],
                     found: dict[tuple[str, str], Tampered]) -> list[RowT]:
        """`good` plus every row obeyed before whose disappearance is not bound to a matching audit row."""
        obeyed = self._obeyed[table]
        present = {row.id for row in good}
        gone = [row_id for row_id in obeyed if row_id not in present]
        kept: list[RowT] = []
        if gone:
            current = api.control_rows(table, gone)
            for row_id in gone:
                row = current.get(row_id)
                if row is None:
                    found.setdefault((table, str(row_id)), Tampered(table, str(row_id),
                                                                    "was deleted (no release was recorded)"))
                    kept.append(obeyed[row_id])
                    continue
                ((_, problem),) = self._problems(api, table, [row], found)
                if problem is not None:
                    kept.append(obeyed[row_id])  # the engine goes on obeying what it last verified
        result = good + kept
        self._obeyed[table] = {row.id: row for row in result}
        return result

    def _obey_forged_releases(self, api: ControlAPI, found: dict[tuple[str, str], Tampered]) -> None:
        """At start: switches and flags whose release or clearing no audit row records are obeyed as in force."""
        from engine.store.rows import fetch_typed

        with api.read_transaction() as conn:
            lifted = {table: fetch_typed(conn, BOUND_ROW_TYPES[table],
                                         f"SELECT * FROM {table} WHERE {column} IS NOT NULL")
                      for table, column in _LIFTED.items()}
        for table, rows in lifted.items():
            for row, problem in self._problems(api, table, rows, found):
                if problem is not None:
                    self._obeyed[table][row.id] = row.replace(**_IN_FORCE[table])

    @staticmethod
    def _denial(row: Approval, problem: str) -> Approval:
        return row.replace(status="denied", decided_by="flightdeck", edited_arguments=None,
                           decision_reason=f"control-tampered: this decision {problem}; not applied")

    # -- reporting ------------------------------------------------------------------------------------------------

    def report(self, api: ControlAPI, finding: Tampered) -> None:
        """Once per row and problem: a sev1 `control-tampered` incident (one per row) and a trace event."""
        key = (finding.table, finding.row_id, finding.problem)
        if key in self._reported:
            return
        self._reported.add(key)
        self.findings.append(finding)
        log.error("control-tampered: %s", finding.text)
        data = {"table": finding.table, "id": finding.row_id, "problem": finding.problem, "text": finding.text}
        if self._emit is not None:
            self._emit("control.tampered", data)
        from engine.controls.incidents import IncidentStore

        actor = f"engine:{self.engine_id}"
        try:
            IncidentStore(api.db).open_or_update(
                runbook=INCIDENT_RUNBOOK, title=INCIDENT_TITLE, severity="sev1", apply_mode="suggest",
                scope=f"{finding.table}:{finding.row_id}", readings=[], context=data, summary=finding.text,
                actor=actor, engine_id=self.engine_id)
        except Exception as exc:  # the refusal above already holds; a failed incident write must not undo it
            log.error("could not open the control-tampered incident for %s: %s", finding.label, exc)
