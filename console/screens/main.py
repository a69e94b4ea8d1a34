"""The main screen: header strip, halt banner, the view switcher, the `:` command line, the hint line, the footer.

It owns view switching (number keys and `:` commands go through `show_view`), the header's poller (always on),
and the help screen.

Views are built on first use: the first screen composes only the view it shows; `view(id)` (and so `show_view`)
builds and mounts any other one the first time it is asked for, and `first_screen_painted` builds the views that
work while hidden (ViewSpec.background). Building all seven at start cost 70-140 ms of the start on a 2-core machine.
"""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import ContentSwitcher, Input

from console.polling import Poller, ReaderState
from console.screens.actions import GLOBAL_HALT, start_kill
from console.screens.base import ConsoleContext, HintChanged, ShowView, View
from console.screens.help import GROUPS, HelpScreen, KeyHelp
from console.screens.registry import VIEWS, ViewSpec, find_command, view_by_id
from console.widgets.command_line import CommandLine
from console.widgets.footer import KeysFooter
from console.widgets.header import HeaderSnapshot, collect
from console.widgets.header_widgets import HaltBanner, HeaderStrip, HintLine
from console.widgets.safe import printable

HEADER_INTERVAL_S = 1.0


def view_bindings(views: list[ViewSpec]) -> list[Binding]:
    """The number keys that switch views, one per registry entry (priority: see MainScreen.BINDINGS)."""
    return [Binding(spec.key, f"show_view('{spec.id}')", spec.title, show=False, id=f"view_{spec.id}", priority=True,
                    tooltip=f"Show {spec.title}: {spec.description}") for spec in views]


class HeaderFeed:
    """Thread side of the header: every slot's fetch, once a second (ages and heartbeats move with time even when
    nothing is written, so there is no data_version shortcut here)."""

    def __init__(self, ctx: ConsoleContext) -> None:
        self.ctx = ctx
        self.state = ReaderState(ctx.source)

    def poll(self) -> HeaderSnapshot:
        try:
            reader = self.state.reader
            control = self.ctx.source.control()
            return collect(reader, control, self.ctx.clock(), None if self.ctx.postgres else self.ctx.store_dir)
        except Exception:
            self.state.reset()
            raise

    def close(self) -> None:
        self.state.close()


class MainScreen(Screen[None]):
    DEFAULT_CSS = """
    MainScreen {
        layout: vertical;
    }
    MainScreen > #views {
        height: 1fr;
    }
    """

    # Priority bindings are handled before the key is passed on, so the keys typed right after them (":run ID"
    # typed fast, or pasted) already go to what they opened; check_action lets them through to text boxes.
    BINDINGS = [
        Binding("question_mark", "show_help", "Keys", id="show_help", priority=True,
                tooltip="Show every key that works here, with what it does"),
        Binding("colon", "command_line", "Command", id="command_line", priority=True,
                tooltip="Type a command: :runs, :run ID, :approvals, :breakers, :controls, :runbooks, :audit, :q"),
        GLOBAL_HALT,
        *view_bindings(VIEWS),
    ]

    def __init__(self, ctx: ConsoleContext) -> None:
        super().__init__(id="main")
        self.ctx = ctx
        self.active_id = VIEWS[0].id if VIEWS else ""
        self.header_alarm: HeaderSnapshot | None = None  # the last header read: its alarm follows the active view
        self._views: dict[str, View] = {}  # the views built so far, by id
        self._pending: dict[str, str | None] = {}  # views shown before their widgets existed: the arg to activate
        self.header_feed = HeaderFeed(ctx)
        self.header_poller: Poller[HeaderSnapshot] = Poller(
            self, name="header", fetch=self.header_feed.poll, render=self._render_header,
            interval=max(HEADER_INTERVAL_S, ctx.poll_interval), report_error=ctx.report_error,
            busy_interval=max(HEADER_INTERVAL_S, ctx.poll_interval))

    def compose(self) -> ComposeResult:
        yield HeaderStrip(operator=self.ctx.operator, read_only=self.ctx.read_only, clock=self.ctx.clock,
                          id="header")
        yield HaltBanner(id="halt-banner", markup=False)
        with ContentSwitcher(initial=f"view-{self.active_id}", id="views"):
            spec = view_by_id(self.active_id)
            if spec is not None:
                yield self._build(spec)
        yield CommandLine(id="command-line")
        yield HintLine(id="hint")
        yield KeysFooter(id="footer", compact=True, show_command_palette=False)

    @property
    def header(self) -> HeaderStrip:
        return self.query_one("#header", HeaderStrip)

    @property
    def hint_line(self) -> HintLine:
        return self.query_one("#hint", HintLine)

    @property
    def active_view(self) -> View | None:
        return self._views.get(self.active_id)

    def view(self, view_id: str) -> View:
        """The view `view_id`, built (and mounted, hidden) the first time it is asked for. Its widgets exist once it
        is mounted (`View.when_mounted`); its attributes right away."""
        view = self._views.get(view_id)
        if view is not None:
            return view
        spec = view_by_id(view_id)
        if spec is None:
            raise KeyError(f"no view {view_id!r}")
        view = self._build(spec)
        view.display = False  # as ContentSwitcher.add_content does: shown only when it becomes current
        self.query_one("#views", ContentSwitcher).mount(view)
        return view

    def _build(self, spec: ViewSpec) -> View:
        view: View = spec.factory(self.ctx)
        self._views[spec.id] = view
        return view

    def first_screen_painted(self) -> None:
        """Called by the app once the first screen is up: build the views that work while hidden."""
        if self.app.return_code is not None or not self.is_attached:
            return  # the console is quitting already
        for spec in VIEWS:
            if spec.background:
                self.view(spec.id)

    def on_mount(self) -> None:
        self.header.set_views([(s.key, s.id, s.title) for s in VIEWS if self.ctx.postgres or not s.fleet],
                              self.active_id)
        self.header_poller.start()
        self.show_view(self.active_id)

    def on_unmount(self) -> None:
        self.header_poller.stop()
        self.header_feed.close()

    # -- views --------------------------------------------------------------------------------------------------

    def show_view(self, view_id: str, arg: str | None = None) -> None:
        spec = view_by_id(view_id)
        if spec is None:
            self.notify(f"No view {printable(view_id, limit=30)!r}.", severity="warning", markup=False)
            return
        view = self.view(view_id)
        previous = self.active_view
        if previous is not None and previous is not view and previous.active:
            previous.deactivate()
        self.active_id = view_id
        self.query_one("#views", ContentSwitcher).current = f"view-{view_id}"
        self.header.set_active(view_id)
        if self.header_alarm is not None and self.header.store_problem is None:
            self.hint_line.set_alarm(self.header_alarm.alarm_on(view_id))
        first = view_id not in self._pending
        self._pending[view_id] = arg  # the latest arg wins when it is shown twice while being built
        if first:
            view.when_mounted(lambda: self._activate(view))

    def _activate(self, view: View) -> None:
        arg = self._pending.pop(view.view_id, None)
        if view.view_id != self.active_id:  # another view was chosen while this one was being built
            return
        view.activate(arg)
        self.hint_line.set_view_hint(view.hint)
        view.focus_default()
        self.refresh_bindings()

    def action_show_view(self, view_id: str) -> None:
        self.show_view(view_id)

    def action_global_halt(self) -> None:
        start_kill(self, self.ctx, "global", None)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # The priority keys above are characters a text box needs (":" in a filter, "3" in a run id).
        if action in ("show_help", "command_line", "show_view") and isinstance(self.focused, Input):
            return False
        return True

    @on(ShowView)
    def _show_view_message(self, message: ShowView) -> None:
        message.stop()
        self.show_view(message.view_id, message.arg)

    @on(HintChanged)
    def _hint_changed(self, message: HintChanged) -> None:
        message.stop()
        if message.view.view_id == self.active_id:
            self.hint_line.set_view_hint(message.hint)

    # -- header -------------------------------------------------------------------------------------------------

    def _render_header(self, snapshot: HeaderSnapshot) -> None:
        recovered = getattr(self.ctx.report_error, "recovered", None)
        if recovered is not None:
            recovered()
        self.header.set_store_problem(None)
        self.header.update_snapshot(snapshot)
        self.query_one("#halt-banner", HaltBanner).show_halt(snapshot.halt)
        self.header_alarm = snapshot
        self.hint_line.set_alarm(snapshot.alarm_on(self.active_id))
        if snapshot.error:
            self.ctx.report_error(RuntimeError(snapshot.error), "header")

    def store_problem(self, problem: str | None) -> None:
        """Called by the app's error handler when the store cannot be read (and with None when it can again)."""
        self.header.set_store_problem(problem)
        if problem:
            self.hint_line.set_alarm(f"The store cannot be read: {problem} Fix it (or press q to quit); the console "
                                     f"retries by itself.")

    # -- command line and help ----------------------------------------------------------------------------------

    def action_command_line(self) -> None:
        self.query_one("#command-line", CommandLine).open()

    @on(CommandLine.Run)
    def _run_command(self, message: CommandLine.Run) -> None:
        message.stop()
        self.run_command(message.text)

    def run_command(self, text: str) -> None:
        text = text.strip()
        if not text or text == ":":
            self._refocus()
            return
        word, _, rest = text.lstrip(":").partition(" ")
        word = word.lower()
        arg = rest.strip() or None
        if word in ("q", "quit", "exit"):
            self.app.action_quit()  # type: ignore[attr-defined]
            return
        if word in ("help", "keys", "?", "h"):
            self._refocus()
            self.action_show_help()
            return
        spec = find_command(word)
        if spec is None:
            known = " ".join(f":{s.commands[0]}" for s in VIEWS)
            self.notify(f"Unknown command :{printable(word, limit=30)}. Try {known}, :help or :q.",
                        title="Command", severity="warning", markup=False)
            self._refocus()
            return
        if arg and not spec.arg:
            self.notify(f":{spec.commands[0]} takes no argument; showing {spec.title}.", severity="warning",
                        markup=False)
            arg = None
        self.show_view(spec.id, arg)

    def _refocus(self) -> None:
        view = self.active_view
        if view is not None and view.active:  # not while it is being built: it focuses itself when shown
            view.focus_default()

    def action_show_help(self) -> None:
        rows: list[KeyHelp] = []
        view_keys = {spec.key for spec in VIEWS}  # shown as one "1-7 Views" row below
        for key, active in self.active_bindings.items():
            binding = active.binding
            if binding.system or key in view_keys:
                continue
            namespace = active.node
            if isinstance(namespace, View):
                group = "this view"
            elif namespace is self or namespace is self.app:
                group = "everywhere"
            else:
                group = "moving around"
            rows.append(KeyHelp(group, self.app.get_key_display(binding), binding.description or binding.action,
                                binding.tooltip or active.tooltip or "", binding.id or ""))
        first, last = VIEWS[0], VIEWS[-1]
        rows.append(KeyHelp("everywhere", f"{first.key}-{last.key}", "Views",
                            " · ".join(f"{s.key} {s.title}" for s in VIEWS),
                            f"view_{first.id} … view_{last.id}"))
        rows.sort(key=lambda r: (GROUPS.index(r.group), r.description.lower()))
        self.app.push_screen(HelpScreen(rows))


def binding_ids() -> set[str]:
    """Every binding id an operator can remap (for validating [console.keys] in config.toml): the BINDINGS of
    every widget class loaded (with every view's module), plus the view-switching bindings made from the
    registry."""
    import importlib

    from textual.binding import Binding as _Binding
    from textual.dom import DOMNode

    for spec in VIEWS:  # views not built yet may not be imported yet either
        if spec.module:
            importlib.import_module(spec.module)
    ids = {f"view_{spec.id}" for spec in VIEWS}
    pending: list[type] = [DOMNode]
    seen: set[type] = set()
    while pending:
        cls = pending.pop()
        if cls in seen:
            continue
        seen.add(cls)
        pending.extend(cls.__subclasses__())
        for binding in cls.__dict__.get("BINDINGS", ()):
            if isinstance(binding, _Binding) and binding.id:
                ids.add(binding.id)
    return ids
