"""Which per-run budget limits a run carries into its next execution (`flightdeck resume`, the console's R, an
engine resuming it after a crash) and a retry of it starts with, and where each came from (issue 13).

A run starts with its own overrides (`flightdeck run --budget`, recorded as the run attribute `budget`); while it
runs, an operator's `flightdeck budget` (a `budget_overrides` row, audited as `budget_change`) changes them, and the
engine applies it (its `applied` time set). Those changes were the limits the run was under when it stopped: a run
stopped by its limit and resumed without them would stop again at once, or (a raised limit lowered back) overspend
what the operator allowed. So the next execution starts with the run's own overrides, then every change applied to
it, oldest first (a change's non-null values win, as the engine applied them: engine/runtime/engine.py).

Cutoff: the execution that carries them records the newest change it folded in as the run attribute (and DBOS spec
key) `budget_through`, and its `budget` attribute is the merged result; the execution after it folds in only newer
changes, so a change is never applied twice over a later one. An operator's `--budget` on a resume replaces all of
it: `budget_through` is then the run's newest change, whatever came before is not carried.

Changes that were never applied (made after the run ended, or while no engine ran it) are not carried: they never
were the run's limits.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.store.control_rows import BudgetOverride
from engine.store.dialect import SqlConnection
from engine.store.rows import fetch_typed

BUDGET_THROUGH = "budget_through"  # run attribute and durable spec key: the newest budget change folded in
# Run attribute and durable spec key: the newest budget change of the run, applied or not, when this execution
# started. The engine applies live only changes newer than it: one made while the run was not running (after it
# ended, before a resume) was deliberately not carried (above), and must not slip in once the run runs again.
BUDGET_SEEN = "budget_seen"


@dataclass(frozen=True, slots=True)
class CarriedLimits:
    """The per-run overrides an execution starts with: `base` (the run's own, or an operator's --budget on the
    resume: `replaced`), then `changes` (budget changes applied while it ran, oldest first). `limits` is the merge
    (None: the hierarchy's run limits apply); `through` the newest change id folded in (0: none)."""

    limits: dict[str, Any] | None
    base: dict[str, Any] | None = None
    changes: tuple[BudgetOverride, ...] = field(default_factory=tuple)
    through: int = 0
    replaced: bool = False  # base is an operator's --budget given on the resume (earlier changes dropped)

    def describe(self) -> str:
        """One line for a preview: which limits apply and where they came from."""
        if self.limits is None:
            return "the hierarchy's run limits (no --budget, no budget change while it ran)"
        parts = []
        if self.base:
            parts.append(f"{limits_text(self.base)} from " + ("--budget on this resume (replaces the run's own and "
                                                              "its budget changes)" if self.replaced else
                                                              "the run's own --budget"))
        for change in self.changes:
            parts.append(f"{limits_text(change_limits(change))} from budget change #{change.id} by "
                         f"{change.operator} ({change.reason})")
        return f"{limits_text(self.limits)}: " + "; then ".join(parts)

    def sources(self) -> dict[str, Any]:
        """What an audit row records: the limits, and where they came from."""
        return {"limits": None if self.limits is None else dict(self.limits),
                "base": None if self.base is None else dict(self.base),
                "base_source": "operator" if self.replaced else "run",
                "budget_changes": [{"id": c.id, "operator": c.operator, "reason": c.reason,
                                    "limits": change_limits(c)} for c in self.changes]}


def limits_text(limits: Mapping[str, Any]) -> str:
    return ",".join(f"{key}={'none' if value is None else value}" for key, value in limits.items())


def change_limits(change: BudgetOverride) -> dict[str, Any]:
    """The values a change set (a null in a change is not applied by the engine, so it is not carried either)."""
    limits = change.limits if isinstance(change.limits, Mapping) else {}
    return {str(key): value for key, value in limits.items() if value is not None}


def applied_changes(conn: SqlConnection, run_id: str, after_id: int = 0) -> list[BudgetOverride]:
    """Budget changes of `run_id` newer than `after_id` that an engine applied, oldest first."""
    return fetch_typed(conn, BudgetOverride, "SELECT * FROM budget_overrides WHERE run_id = ? AND id > ? AND "
                                             "applied IS NOT NULL ORDER BY id", (run_id, int(after_id)))


def newest_change(conn: SqlConnection, run_id: str) -> int:
    row = conn.execute("SELECT MAX(id) FROM budget_overrides WHERE run_id = ?", (run_id,)).fetchone()
    return int(row[0] or 0) if row is not None else 0


def carry(conn: SqlConnection, run_id: str, base: Mapping[str, Any] | None, after_id: int = 0) -> CarriedLimits:
    """`base` (the run's own overrides, as the run attribute `budget` holds them) then every change applied after
    change `after_id`."""
    changes = applied_changes(conn, run_id, after_id)
    merged: dict[str, Any] | None = None if not base else dict(base)
    for change in changes:
        merged = {**(merged or {}), **change_limits(change)}
    return CarriedLimits(limits=merged or None, base=None if not base else dict(base), changes=tuple(changes),
                         through=changes[-1].id if changes else int(after_id))


def replaced(conn: SqlConnection, run_id: str, limits: Mapping[str, Any]) -> CarriedLimits:
    """An operator's limits given on a resume: they replace the run's own and every change so far."""
    return CarriedLimits(limits=dict(limits), base=dict(limits), through=newest_change(conn, run_id), replaced=True)


def of_run(conn: SqlConnection, run_id: str, attributes: Any) -> CarriedLimits:
    """What the run's next execution (or a retry of it) carries, from its row's attributes (`budget`,
    `budget_through`)."""
    attrs = attributes if isinstance(attributes, Mapping) else {}
    base = attrs.get("budget")
    through = attrs.get(BUDGET_THROUGH)
    return carry(conn, run_id, base if isinstance(base, Mapping) else None,
                 int(through) if isinstance(through, int) and not isinstance(through, bool) else 0)
