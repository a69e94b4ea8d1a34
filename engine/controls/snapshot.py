"""The engine's view of control.db: everything it must obey, read in one transaction of a few indexed queries."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.controls import approvals, flag_settings, kill_switches, overrides
from engine.store.control_rows import Approval, BreakerOverride, BudgetOverride, FlagSetting, KillSwitch
from engine.store.dialect import SqlConnection
from engine.store.rows import TypedRow, fetch_typed

# The snapshot's queries: each one is served by a partial index in the control.db schema
# (tests/engine/test_controls_api.py checks the query plans), because the engine's watcher runs them every time
# anyone writes to control.db.
SNAPSHOT_QUERIES: dict[str, str] = {
    "kill_switches": kill_switches.ACTIVE_SQL,
    "flags": flag_settings.ACTIVE_SQL,
    "pending_approvals": approvals.PENDING_SQL,
    "decided_approvals": approvals.DECIDED_AFTER_SQL,
    "breaker_overrides": overrides.UNAPPLIED_BREAKER_SQL,
    "budget_overrides": overrides.UNAPPLIED_BUDGET_SQL,
}


# The typed row of each part (JSON columns parsed), and so which table each part reads.
_ROW_TYPES: dict[str, type[TypedRow]] = {
    "kill_switches": KillSwitch, "flags": FlagSetting, "pending_approvals": Approval, "decided_approvals": Approval,
    "breaker_overrides": BreakerOverride, "budget_overrides": BudgetOverride,
}


@dataclass(frozen=True, slots=True)
class ControlSnapshot:
    """Everything the engine must obey, read in one transaction. Pass `decided_cursor` back as `decided_after`
    next time to get only the approvals decided (or timed out, or cancelled) since."""

    kill_switches: tuple[KillSwitch, ...]
    flags: tuple[FlagSetting, ...]
    pending_approvals: tuple[Approval, ...]
    decided_approvals: tuple[Approval, ...]
    breaker_overrides: tuple[BreakerOverride, ...]
    budget_overrides: tuple[BudgetOverride, ...]
    decided_cursor: int
    taken: float
    # The audit log's last row (id, hash) in the same read: the engine records it in traces.db as the anchor
    # `audit verify` checks the log against (engine.controls.anchor).
    audit_head: tuple[int, str] | None = None


def read_snapshot(conn: SqlConnection, decided_after: int | None, taken: float) -> ControlSnapshot:
    """Read inside the caller's read transaction. decided_after: the previous snapshot's decided_cursor; None (the
    first call) returns no decided approvals, only the cursor."""
    parts: dict[str, tuple[Any, ...]] = {"decided_approvals": ()}
    for name, sql in SNAPSHOT_QUERIES.items():
        if name == "decided_approvals":
            if decided_after is None:
                continue
            params: tuple[Any, ...] = (int(decided_after),)
        else:
            params = ()
        parts[name] = tuple(fetch_typed(conn, _ROW_TYPES[name], sql, params))
    last = conn.execute(approvals.LAST_DECIDED_SEQ_SQL).fetchone()
    head = conn.execute("SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1").fetchone()
    return ControlSnapshot(kill_switches=parts["kill_switches"], flags=parts["flags"],
                           pending_approvals=parts["pending_approvals"],
                           decided_approvals=parts["decided_approvals"],
                           breaker_overrides=parts["breaker_overrides"],
                           budget_overrides=parts["budget_overrides"],
                           decided_cursor=last[0] if last else 0, taken=taken,
                           audit_head=(int(head[0]), str(head[1])) if head else None)
