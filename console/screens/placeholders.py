"""Views 3-7 until their issues land: clearly labelled placeholders, never fake data."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.widgets import Static

from console.screens.base import ConsoleContext, View


class PlaceholderView(View):
    DEFAULT_CSS = """
    PlaceholderView {
        align: center middle;
    }
    PlaceholderView > .placeholder-box {
        width: auto;
        max-width: 90%;
        height: auto;
        border: round $panel-lighten-2;
        padding: 1 2;
    }
    """

    def __init__(self, ctx: ConsoleContext, *, view_id: str, title: str, what: str, issue: str) -> None:
        super().__init__(ctx, view_id=view_id)
        self.title = title
        self.what = what
        self.issue = issue
        self.hint = f"{title} is not built yet (lands with {issue}): press 1 for runs."

    def compose(self) -> ComposeResult:
        body = Text(end="")
        body.append(f"{self.title}\n", style="bold")
        body.append(f"Not built yet: lands with {self.issue}.\n\n", style="bold yellow")
        body.append(f"This view will show {self.what}.\n", style="")
        body.append("Nothing here is live data. Press 1 for runs, ? for keys.", style="dim")
        yield Static(body, classes="placeholder-box", markup=False)

    def focus_default(self) -> None:
        self.screen.set_focus(None)
