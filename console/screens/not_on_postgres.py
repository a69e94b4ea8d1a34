"""What a view that needs the store directory shows on a Postgres store (issue 16, in progress): one paragraph saying
so and what to use instead, in place of the view. Nothing polls, nothing fails: an operator pressing its number key
reads why it is empty instead of a notification storm from a feed that cannot read files that are not there."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult

from console.screens.base import ConsoleContext, View
from console.widgets.safe import printable
from console.widgets.text_pane import TextPane


class NotOnPostgresView(View):
    DEFAULT_CSS = """
    NotOnPostgresView > TextPane {
        padding: 1 2;
    }
    """

    def __init__(self, ctx: ConsoleContext, *, view_id: str, title: str, why: str) -> None:
        super().__init__(ctx, view_id=view_id)
        self.title = title
        self.why = why
        self.hint = f"{title}: not on a Postgres store yet (issue 16). {why}"

    def compose(self) -> ComposeResult:
        text = Text(end="")
        text.append(f"{self.title.upper()}", style="bold")
        text.append(" · not on a Postgres store yet (issue 16)\n\n", style="bold yellow")
        text.append(f"This console reads {printable(str(self.ctx.location), limit=120)}. ")
        text.append(self.why)
        yield TextPane(text, id=f"{self.view_id}-not-on-postgres")
