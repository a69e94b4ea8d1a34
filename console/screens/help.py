"""The `?` screen: every key that works where the operator was, with what it does; and the `:` commands."""

from __future__ import annotations

from dataclasses import dataclass

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from console.screens.registry import VIEWS

GROUPS = ("this view", "moving around", "everywhere")


@dataclass(frozen=True, slots=True)
class KeyHelp:
    group: str  # one of GROUPS
    key: str  # as displayed ("/", "⏎", "^p")
    description: str
    help: str
    binding_id: str


def _table(rows: list[KeyHelp]) -> Table:
    table = Table(box=None, show_header=False, padding=(0, 1), expand=True)
    table.add_column("key", style="bold", no_wrap=True, width=10)
    table.add_column("action", no_wrap=True)
    table.add_column("what it does", ratio=1)
    table.add_column("id", style="dim", no_wrap=True)
    for row in rows:
        table.add_row(Text(row.key), Text(row.description), Text(row.help), Text(row.binding_id))
    return table


def help_renderable(rows: list[KeyHelp]) -> Group:
    parts: list[object] = []
    for group in GROUPS:
        members = [r for r in rows if r.group == group]
        if not members:
            continue
        parts.append(Text(f"KEYS: {group.upper()}", style="bold underline"))
        parts.append(_table(members))
        parts.append(Text(""))
    parts.append(Text("COMMANDS (press : and type; Enter runs, Esc cancels)", style="bold underline"))
    commands = Table(box=None, show_header=False, padding=(0, 1), expand=True)
    commands.add_column("command", style="bold", no_wrap=True)
    commands.add_column("what", ratio=1)
    for spec in VIEWS:
        words = "  ".join(f":{c}" for c in spec.commands)
        arg = f" {spec.arg}" if spec.arg else ""
        commands.add_row(Text(words + arg), Text(f"{spec.title} (key {spec.key}): {spec.description}"))
    commands.add_row(Text(":help  :keys"), Text("this screen"))
    commands.add_row(Text(":q  :quit"), Text("leave the console (nothing running is affected)"))
    parts.append(commands)
    parts.append(Text(""))
    parts.append(Text("Remap a key in STORE/config.toml:  [console.keys]  <id from the last column> = \"key\"",
                      style="dim"))
    parts.append(Text("Esc, ? or q closes this screen.", style="dim"))
    return Group(*parts)  # type: ignore[arg-type]


class HelpScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    HelpScreen {
        align: center middle;
    }
    HelpScreen > Vertical {
        width: 96%;
        max-width: 140;
        height: 94%;
        border: round $accent;
        border-title-style: bold;
        background: $panel;
    }
    HelpScreen VerticalScroll {
        padding: 0 1;
    }
    """

    BINDINGS = [
        Binding("escape,question_mark,q", "close", "Close", id="close_help", tooltip="Close the key help"),
    ]

    def __init__(self, rows: list[KeyHelp]) -> None:
        super().__init__()
        self.rows = rows

    def compose(self) -> ComposeResult:
        with Vertical() as box:
            box.border_title = "Keys and commands"
            with VerticalScroll():
                yield Static(help_renderable(self.rows), id="help-text")

    @property
    def plain(self) -> str:
        """Everything the screen says, as text (for tests)."""
        out = []
        for row in self.rows:
            out.append(f"{row.key} {row.description} {row.help} [{row.binding_id}]")
        for spec in VIEWS:
            out.append(" ".join(f":{c}" for c in spec.commands) + (f" {spec.arg}" if spec.arg else ""))
        return "\n".join(out)

    def action_close(self) -> None:
        self.dismiss(None)
