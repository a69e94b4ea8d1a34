"""The k9s-style `:` command line: `:runs`, `:run ID`, `:approvals`, ... (see console/screens/registry.py)."""

from __future__ import annotations

from textual.binding import Binding
from textual.message import Message
from textual.suggester import SuggestFromList
from textual.widgets import Input

from console.screens.registry import command_words


class CommandLine(Input):
    DEFAULT_CSS = """
    CommandLine {
        height: 1;
        border: none;
        padding: 0 1;
        background: $accent 20%;
    }
    CommandLine:focus {
        border: none;
    }
    """

    BINDINGS = [
        Binding("escape", "cancel", "Cancel", id="cancel_command", tooltip="Close the command line"),
    ]

    class Run(Message):
        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    def __init__(self, id: str | None = None) -> None:
        words = [w.split()[0] for w in command_words()]
        super().__init__(placeholder="command: " + "  ".join(words[:8]) + " … (Enter runs, Esc cancels)",
                         suggester=SuggestFromList(words, case_sensitive=False), id=id, compact=True,
                         select_on_focus=False)
        self.display = False

    def open(self) -> None:
        from console.screens.base import focus_now

        self.value = ":"
        self.display = True  # inline, not a CSS class: it must be focusable before the next key arrives
        focus_now(self)
        self.cursor_position = len(self.value)

    def close(self) -> None:
        self.value = ""
        self.display = False

    def action_cancel(self) -> None:
        self.close()
        self.post_message(self.Run(""))

    async def action_submit(self) -> None:
        text = self.value.strip()
        self.close()
        self.post_message(self.Run(text))
