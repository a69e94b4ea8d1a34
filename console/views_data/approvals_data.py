"""The approvals view's data that is not ControlAPI's: the pending requests the always-on alerts announce."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.controls.approvals import pending_alerts

if TYPE_CHECKING:
    from engine.store.control import ControlDB


def pending_approvals(control: ControlDB) -> list[dict[str, Any]]:
    """id, agent, tool, deadline, risk of every pending request, oldest first (one indexed read a second)."""
    with control.reading() as conn:
        return pending_alerts(conn)
