"""The approvals view's data that is not ControlAPI's: the pending requests the always-on alerts announce, and the
row the view lists (an approval with its position in the store's order, which breaks ties between equal times)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from engine.controls.approvals import pending_alerts
from engine.store.control_rows import Approval, ApprovalAlert

if TYPE_CHECKING:
    from engine.store.control import ControlStore


@dataclass(frozen=True, slots=True)
class ListedApproval(Approval):
    """A pending approval as the approvals view lists it: `pos` is its place in the store's order (oldest first)."""

    pos: int = 0


def pending_approvals(control: ControlStore) -> list[ApprovalAlert]:
    """id, agent, tool, deadline, risk of every pending request, oldest first (one indexed read a second)."""
    with control.reading() as conn:
        return pending_alerts(conn)
