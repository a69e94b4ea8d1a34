"""The approvals alert, on every view: a notification for each new pending approval request, and the terminal bell
when configured (FLIGHTDECK_CONSOLE_BELL, else `[console] bell` in STORE/config.toml). Started by the approvals view
(console/screens/approvals.py), which is built right after the console's first paint."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from console.polling import Poller
from console.views_data.approvals_data import pending_approvals
from console.widgets.safe import printable

if TYPE_CHECKING:
    from pathlib import Path

    from console.screens.base import ConsoleContext
    from engine.store.control_rows import ApprovalAlert

BELL_ENV = "FLIGHTDECK_CONSOLE_BELL"


def time_left(deadline: float, now: float) -> str:
    left = deadline - now
    if left <= 0:
        return "expired"
    seconds = int(left)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


def configured_bell(store_dir: Path | None) -> bool:
    """[console] bell in STORE/config.toml; off when the file cannot be read (the console reports a bad config
    where it reads its keys), and on a Postgres store (None: no directory, no config.toml)."""
    if store_dir is None:
        return False
    from engine.errors import FlightdeckError
    from engine.store.config import load_config

    try:
        return load_config(store_dir).console.bell
    except FlightdeckError:
        return False


class ApprovalAlerts:
    """Always on (every view): a notification for each new pending request, and the terminal bell when
    FLIGHTDECK_CONSOLE_BELL=1 or `[console] bell = true` in config.toml. Requests already pending when the console
    starts are announced once, together."""

    INTERVAL_S = 1.0

    def __init__(self, owner: Any, ctx: ConsoleContext) -> None:
        self.owner = owner
        self.ctx = ctx
        self.seen: set[str] | None = None
        # FLIGHTDECK_CONSOLE_BELL when set, else [console] bell in config.toml (read on the poller's thread).
        given = os.environ.get(BELL_ENV)
        self.bell: bool | None = None if given is None else given.strip().lower() in ("1", "true", "yes", "on")
        self.poller: Poller[list[ApprovalAlert]] = Poller(
            owner, name="approval-alerts", fetch=self._fetch, render=self._render,
            interval=max(self.INTERVAL_S, ctx.poll_interval), report_error=ctx.report_error,
            busy_interval=max(self.INTERVAL_S, ctx.poll_interval))
        self.notified = 0

    def start(self) -> None:
        self.poller.start()

    def stop(self) -> None:
        self.poller.stop()

    def _fetch(self) -> list[ApprovalAlert] | None:
        if self.bell is None:
            # A Postgres store has no config.toml: the bell keeps its default there.
            self.bell = configured_bell(None if self.ctx.postgres else self.ctx.store_dir)
        control = self.ctx.source.control()
        if control is None:
            return None
        return pending_approvals(control)

    def _render(self, rows: list[ApprovalAlert]) -> None:
        ids = {row.id for row in rows}
        first = self.seen is None
        new = [row for row in rows if first or row.id not in (self.seen or set())]
        self.seen = ids
        if not new:
            return
        now = self.ctx.clock()
        if len(new) == 1:
            row = new[0]
            message = (f"{printable(row.agent, limit=40)} wants to call {printable(row.tool, limit=40)} "
                       f"(risk {printable(row.risk or '-')}, {time_left(float(row.deadline), now)} left): "
                       f"press 3 to decide.")
        else:
            message = f"{len(new)} tool calls wait for approval: press 3 to decide."
        self.notified += 1
        self.owner.notify(message, title="Approval requested", severity="warning", timeout=10, markup=False)
        if self.bell:
            self.owner.app.bell()
