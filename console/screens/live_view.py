"""A live table view over control.db (approvals, breakers, controls): polls while shown, repaints once a second,
and hides its write keys in a read-only console (console/screens/read_only.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from console.polling import Poller
from console.screens.actions import ControlClient
from console.screens.base import View, focus_now
from console.screens.read_only import ReadOnlyGuard

if TYPE_CHECKING:
    from console.screens.base import ConsoleContext
    from engine.controls.api import ControlAPI


class ControlFeed:
    """Thread side of a control.db view: returns fresh rows, or None when nothing changed since the last poll."""

    def __init__(self, ctx: ConsoleContext, read: Callable[[ControlAPI], Any]) -> None:
        self.ctx = ctx
        self.read = read
        self.last: Any = object()

    def poll(self) -> Any:
        from engine.controls.api import ControlAPI

        control = self.ctx.source.control()
        if control is None:
            rows = self.read(None)
        else:
            api = ControlAPI(self.ctx.location, self.ctx.operator or "console", db=control)
            try:
                rows = self.read(api)
            finally:
                api.close()
        if rows == self.last:
            return None
        self.last = rows
        return rows

    def invalidate(self) -> None:
        self.last = object()


class LiveView(ReadOnlyGuard, View):
    """A view that polls while shown, and repaints once a second (countdowns move with the clock)."""

    def __init__(self, ctx: ConsoleContext, *, view_id: str) -> None:
        super().__init__(ctx, view_id=view_id)
        self.client = ControlClient(self, ctx)
        self.feed = ControlFeed(ctx, self.read)
        self.poller: Poller[Any] = Poller(self, name=view_id, fetch=self.feed.poll, render=self.apply,
                                          interval=max(0.25, ctx.poll_interval), report_error=ctx.report_error)
        self.loaded = False

    def read(self, api: ControlAPI | None) -> Any:
        raise NotImplementedError

    def apply(self, rows: Any) -> None:
        raise NotImplementedError

    def tick(self) -> None:
        for table in self.query("VirtualTable"):
            table.refresh()

    def on_activate(self, arg: str | None) -> None:
        self.feed.invalidate()
        self.poller.start()
        self.resume_clock(self.tick)

    def on_deactivate(self) -> None:
        self.poller.stop()
        self.pause_clock()

    def on_unmount(self) -> None:
        self.poller.stop()

    def refresh_now(self) -> None:
        """After an action: poll at once (the row changes or goes)."""
        self.feed.invalidate()
        self.poller.poke()

    def focus_default(self) -> None:
        table = next(iter(self.query("VirtualTable")), None)
        if table is not None:
            focus_now(table)
        else:
            self.screen.set_focus(None)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        state = self.read_only_state(action)
        return True if state is None else state
