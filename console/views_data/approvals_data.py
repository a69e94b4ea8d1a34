"""The approvals view's data that is not ControlAPI's: the pending requests the always-on alerts announce."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.store.control import ControlDB


def pending_approvals(control: "ControlDB") -> list[dict[str, Any]]:
    """id, agent, tool, deadline, risk of every pending request, oldest first (one indexed read a second)."""
    rows = control.query("SELECT id, agent, tool, deadline, risk FROM approvals WHERE status = 'pending' "
                         "ORDER BY requested, rowid", ())
    return [dict(row) if not isinstance(row, dict) else row for row in rows]
