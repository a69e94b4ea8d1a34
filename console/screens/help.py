"""The `?` screen: every key that works where the operator was, with what it does; and the `:` commands."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from console.screens.registry import VIEWS


def help_text(rows: list[tuple[str, str, str, str]]) -> Text:
    """rows: (key display, description, help sentence, binding id)."""
    out = Text(end="")
    out.append("KEYS THAT WORK HERE\n", style="bold")
    key_width = max([len(r[0]) for r in rows] + [5])
    desc_width = max([len(r[1]) for r in rows] + [6])
    for key, description, help_sentence, binding_id in rows:
        out.append(f"  {key:<{key_width}}  ", style="bold")
        out.append(f"{description:<{desc_width}}  ")
        out.append(help_sentence or "", style="")
        if binding_id:
            out.append(f"  [{binding_id}]", style="dim")
        out.append("\n")
    out.append("\nCOMMANDS (press : then type)\n", style="bold")
    for spec in VIEWS:
        words = ", ".join(f":{c}" for c in spec.commands)
        arg = f" {spec.arg}" if spec.arg else ""
        out.append(f"  {words}{arg}", style="bold")
        out.append(f"  {spec.title} ({spec.key}): {spec.description}\n")
    out.append("  :help, :keys", style="bold")
    out.append("  this screen\n")
    out.append("  :q, :quit", style="bold")
    out.append("  leave the console\n")
    out.append("\nRemap keys in STORE/config.toml:  [console.keys]  <id in brackets> = \"key\"\n", style="dim")
    out.append("Esc, ? or q closes this screen.", style="dim")
    return out


class HelpScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    HelpScreen {
        align: center middle;
    }
    HelpScreen > Vertical {
        width: 90%;
        max-width: 130;
        height: 90%;
        border: round $accent;
        background: $panel;
    }
    HelpScreen VerticalScroll {
        padding: 0 1;
    }
    """

    BINDINGS = [
        Binding("escape,question_mark,q", "close", "Close", id="close_help", tooltip="Close the key help"),
    ]

    def __init__(self, rows: list[tuple[str, str, str, str]]) -> None:
        super().__init__()
        self.rows = rows

    def compose(self) -> ComposeResult:
        with Vertical():
            with VerticalScroll():
                yield Static(help_text(self.rows), id="help-text", markup=False)

    def action_close(self) -> None:
        self.dismiss(None)
