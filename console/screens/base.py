"""What every view shares: the console context and the View base class.

A View is a widget inside the main screen's view switcher (only the active one is displayed). The main screen
builds it on first use, calls `activate(arg)` when it is shown (once its widgets exist) and `deactivate()` when
another view replaces it; views start their Poller in `on_activate` and stop it in `on_deactivate`, so hidden views
never poll.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from textual.containers import Vertical
from textual.message import Message
from textual.reactive import reactive
from textual.timer import Timer
from textual.widget import Widget

from console.polling import ErrorReporter, StoreSource
from engine.store.location import StoreLocation


def focus_now(widget: Widget) -> None:
    """Focus `widget` now. Widget.focus() defers the change behind the messages already queued; together with the
    priority bindings of `:`, `/` and the view keys this makes keys typed fast (or pasted) after them land in what
    they opened."""
    try:
        widget.screen.set_focus(widget)
    except Exception:  # not mounted yet: the deferred way is all there is
        widget.focus()
    if widget.screen.focused is not widget:
        widget.focus()


@dataclass(slots=True)
class ConsoleContext:
    """Everything a view needs from the app, passed at construction (views do not reach into the app)."""

    source: StoreSource
    operator: str
    read_only: bool
    clock: Callable[[], float]
    poll_interval: float
    report_error: ErrorReporter

    @property
    def location(self) -> StoreLocation:
        """Where the store is: a directory or a Postgres store (what ControlAPI takes)."""
        return self.source.location

    @property
    def postgres(self) -> bool:
        return self.source.postgres

    @property
    def store_dir(self) -> Path:
        """The store directory, for features that read its files (config.toml, runbooks, engine.lock); on a
        Postgres store a FlightdeckError saying what the console does there so far, which the one error handler
        shows as a notification (never a traceback)."""
        return self.source.store_dir


@dataclass(frozen=True, slots=True)
class PaletteCommand:
    """A command the ctrl+p palette offers while this view is shown."""

    title: str
    help: str
    callback: Callable[[], object]


class View(Vertical):
    """Base class for the console's views."""

    DEFAULT_CSS = """
    View {
        height: 1fr;
    }
    """

    hint: reactive[str] = reactive("")  # one sentence for the hint line; the main screen shows the active view's

    def __init__(self, ctx: ConsoleContext, *, view_id: str, **kwargs: object) -> None:
        super().__init__(id=f"view-{view_id}", **kwargs)  # type: ignore[arg-type]
        self.ctx = ctx
        self.view_id = view_id
        self.active = False
        self._composed = False  # its on_mount ran: its widgets exist
        self._when_mounted: list[Callable[[], None]] = []
        self._clock: Timer | None = None  # the once-a-second repaint of ages and countdowns (see resume_clock)

    def when_mounted(self, callback: Callable[[], None]) -> None:
        """Call `callback` once this view's widgets exist: now, or right after its `on_mount` when it was built
        moments ago (views are built on first use and mounted asynchronously)."""
        if self._composed:
            callback()
        else:
            self._when_mounted.append(callback)

    def _on_mount(self) -> None:
        # Textual calls this after the subclass's own on_mount (handlers run from the most derived class up). The
        # view's own children exist now, but widgets nested deeper (the span tree inside the run view's panes) are
        # composed by their parents' mounts, which are still queued: run the callbacks after the next refresh,
        # when every pending mount has been processed.
        self.call_after_refresh(self._run_when_mounted)

    def widgets_ready(self) -> bool:
        """Do the widgets the view's callbacks use exist? Views with nested panes check their deepest widget."""
        return True

    def _run_when_mounted(self) -> None:
        if not self.widgets_ready():
            self.call_after_refresh(self._run_when_mounted)
            return
        self._composed = True
        callbacks, self._when_mounted = self._when_mounted, []
        for callback in callbacks:
            callback()

    def resume_clock(self, tick: Callable[[], None]) -> None:
        """Call `tick` every second while the view is shown (ages and countdowns move with the clock): started the
        first time, resumed after that. Pair with pause_clock() when the view is hidden."""
        if self._clock is None:
            self._clock = self.set_interval(1.0, tick)
        else:
            self._clock.resume()

    def pause_clock(self) -> None:
        if self._clock is not None:
            self._clock.pause()

    def activate(self, arg: str | None = None) -> None:
        self.active = True
        self.on_activate(arg)

    def deactivate(self) -> None:
        self.active = False
        self.on_deactivate()

    def on_activate(self, arg: str | None) -> None:
        """Shown (arg: the `:command ARG` argument, if any). Start polling here."""

    def on_deactivate(self) -> None:
        """Hidden. Stop polling here."""

    def palette_commands(self) -> list[PaletteCommand]:
        return []

    def focus_default(self) -> None:
        """Put the focus where the operator's keys should go when this view is shown."""
        self.screen.set_focus(None)

    def watch_hint(self, hint: str) -> None:
        if self.active:
            self.post_message(HintChanged(self, hint))


class HintChanged(Message):
    def __init__(self, view: View, hint: str) -> None:
        super().__init__()
        self.view = view
        self.hint = hint


class ShowView(Message):
    """Ask the main screen to show a view (`arg` as with `:view ARG`)."""

    def __init__(self, view_id: str, arg: str | None = None) -> None:
        super().__init__()
        self.view_id = view_id
        self.arg = arg
