"""The Flightdeck console app: wiring only (screens, bindings, command registration, the one error handler, the
keymap). Views live in console/screens/, widgets in console/widgets/, polling in console/polling.py.

    app = create_app(Path(".flightdeck"), operator="alice", read_only=False)
    app.run()          # the CLI: `flightdeck console`
    async with app.run_test(size=(160, 48)) as pilot: ...   # the tests
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from pathlib import Path

from textual.app import App
from textual.binding import Binding
from textual.worker import Worker, WorkerState

import console.header_slots  # noqa: F401 - registers the header's second row (header_slots.SLOTS)
from console.polling import POLL_GROUP, ErrorNotifier, StoreSource
from console.screens.base import ConsoleContext
from console.screens.main import MainScreen, binding_ids
from console.widgets.palette import ConsoleCommands
from console.widgets.safe import printable
from engine.store.location import StoreLocation

STORE_EXIT_CODE = 3  # engine.errors.StoreError.exit_code: the store could not be read when the operator quit


class FlightdeckApp(App[int]):
    TITLE = "Flightdeck"
    CSS_PATH = "theme.tcss"
    COMMANDS = App.COMMANDS | {ConsoleCommands}
    COMMAND_PALETTE_BINDING = "ctrl+p"

    BINDINGS = [
        Binding("q", "quit", "Quit", id="quit", tooltip="Leave the console (nothing running is affected)"),
        Binding("ctrl+p", "command_palette", "Palette", id="command_palette", priority=True,
                tooltip="Commands that fit this view, and every view"),
    ]

    def __init__(self, ctx: ConsoleContext, notifier: ErrorNotifier) -> None:
        super().__init__()
        self.ctx = ctx
        self.notifier = notifier
        self.keymap_problems: list[str] = []

    @property
    def main(self) -> MainScreen:
        return self.get_screen("main")  # type: ignore[return-value]

    def on_mount(self) -> None:
        self.install_screen(MainScreen(self.ctx), "main")
        self.push_screen("main")
        pending = getattr(self, "_pending_hint", None)
        if pending is not None:  # a driver's hint that arrived while the app was starting
            self.call_after_refresh(self.set_hint, pending)
        from engine.store.files import CONFIG_FILE

        # A Postgres store has no directory and so no config.toml ([console.keys] stays at the defaults there).
        if not self.ctx.postgres and (self.ctx.store_dir / CONFIG_FILE).is_file():
            # Reading it imports pydantic (a third of a second): off the UI thread, after the first screen.
            self.run_worker(self._read_keys, name="config-keys", group="flightdeck-read", thread=True,
                            exit_on_error=False)

    def on_ready(self) -> None:
        # The first screen is up: everything allocated so far (modules, classes, Textual's and our widgets, CSS)
        # lives as long as the console. Frozen, the collector stops re-scanning it: with it, each full collection
        # took 50-90 ms (a stall every few seconds while a run streams, felt as a slow key or a late event line).
        gc.freeze()
        # `flightdeck console` starts with the collector off (console/commands/ui.py: 20-70 ms of collections
        # of objects that all live on); it is on from here.
        gc.enable()
        # What the first screen does not need waits until it is painted.
        self.call_after_refresh(self.main.first_screen_painted)

    def _read_keys(self) -> None:
        from engine.store.config import load_config

        keys = dict(load_config(self.ctx.store_dir).console.keys)
        if keys:
            # binding_ids() imports the views not built yet: here, off the UI thread.
            self.call_from_thread(self._apply_keymap, keys, binding_ids())

    def _apply_keymap(self, keys: dict[str, str], known: set[str]) -> None:
        """[console.keys] in STORE/config.toml: binding id -> key(s), through Textual's keymap."""
        unknown = sorted(k for k in keys if k not in known)
        for key in unknown:
            keys.pop(key)
        if unknown:
            self.keymap_problems = unknown
            self.notify(f"config.toml [console.keys]: unknown action id(s) {', '.join(map(printable, unknown))}; "
                        f"press ? to see the ids.", title="Key remapping", severity="warning", markup=False)
        self.set_keymap(keys)

    def set_hint(self, text: str) -> None:
        """Show `text` on the hint line, above the views' own hints (alarms still come first), until the next
        call; an empty text hands the line back to the views. For drivers such as `flightdeck demo`, which call it
        from another thread with `app.call_from_thread(app.set_hint, text)`."""
        try:
            self.main.hint_line.set_guide_hint(text)
        except Exception:  # before the main screen exists: shown as soon as it does (see on_mount)
            self._pending_hint = text

    # -- the one error handler ----------------------------------------------------------------------------------

    def report_error(self, exc: BaseException, where: str = "") -> None:
        self.notifier(exc, where)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        # Poll workers report through their Poller (which backs off); every other worker's error lands here.
        if event.state == WorkerState.ERROR and event.worker.group != POLL_GROUP and event.worker.error:
            self.report_error(event.worker.error, event.worker.name)

    def _store_problem(self, problem: str | None) -> None:
        try:
            self.main.store_problem(problem)
        except Exception:  # before the main screen exists
            pass

    def on_unmount(self) -> None:
        self.ctx.source.close()
        gc.unfreeze()  # what this app froze can be collected again (tests run many apps in one process)

    async def action_quit(self) -> None:
        code = STORE_EXIT_CODE if self.notifier.store_problem else 0
        self.exit(code, return_code=code)


def create_app(store: Path | StoreLocation, *, operator: str, read_only: bool,
               clock: Callable[[], float] = time.time, poll_interval: float = 0.25) -> FlightdeckApp:
    """The console app on a store directory or a Postgres store. Shared by `flightdeck console` and the tests (which
    pass a fixed clock)."""
    source = StoreSource(Path(store) if isinstance(store, str) else store, read_only=read_only)
    app_ref: list[FlightdeckApp] = []

    def notify(message: str, **kwargs: object) -> None:
        app_ref[0].notify(message, **kwargs)  # type: ignore[arg-type]

    def store_problem(problem: str | None) -> None:
        app_ref[0]._store_problem(problem)

    def log(text: str) -> None:
        app_ref[0].log.error(text)

    notifier = ErrorNotifier(notify, store_problem, log)
    ctx = ConsoleContext(source=source, operator=operator, read_only=read_only, clock=clock,
                         poll_interval=poll_interval, report_error=notifier)
    app = FlightdeckApp(ctx, notifier)
    app_ref.append(app)
    return app
