"""A modal that asks for one line of text (a reason, a note) under a body saying what it is for: the runbooks
view's confirmations (ack, resolve, note, apply, roll back)."""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Input, Static

from console.screens.base import focus_now


class TextPrompt(ModalScreen[str | None]):
    """Ask for one line of text (a reason, a note), showing what it is for; Enter confirms, Esc cancels."""

    DEFAULT_CSS = """
    TextPrompt {
        align: center middle;
    }
    TextPrompt > #prompt-box {
        width: 90;
        max-width: 95%;
        height: auto;
        max-height: 90%;
        border: thick $warning;
        background: $surface;
        padding: 1 2;
    }
    TextPrompt #prompt-body {
        height: auto;
        max-height: 24;
    }
    TextPrompt #prompt-input {
        margin-top: 1;
    }
    TextPrompt #prompt-help {
        color: $text-muted;
    }
    """

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="prompt_cancel", tooltip="Close without doing anything")]

    def __init__(self, title: str, body: Text, *, placeholder: str, required: bool, confirm: str) -> None:
        super().__init__()
        self.title_text = title
        self.body = body
        self.placeholder = placeholder
        self.required = required
        self.confirm = confirm

    def compose(self) -> ComposeResult:
        with Vertical(id="prompt-box"):
            yield Static(Text(self.title_text, style="bold"), markup=False)
            with VerticalScroll(id="prompt-body"):
                yield Static(self.body, markup=False)
            yield Input(placeholder=self.placeholder, id="prompt-input")
            yield Static(Text(f"Enter {self.confirm} · Esc cancels" + (" · text required" if self.required else "")),
                         id="prompt-help", markup=False)

    def on_mount(self) -> None:
        focus_now(self.query_one("#prompt-input", Input))

    @on(Input.Submitted, "#prompt-input")
    def _submitted(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        if self.required and not text:
            self.notify("Type a reason first (it goes to the audit log), or Esc to cancel.", severity="warning",
                        markup=False)
            return
        self.dismiss(text)

    def action_cancel(self) -> None:
        self.dismiss(None)

