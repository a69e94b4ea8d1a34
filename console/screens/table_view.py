"""A live view over one table with the runs table's habits (k9s's): `s` cycles the sort, `S` reverses it, `/` opens
a filter box (a case-insensitive substring of the row's words; Enter keeps it, Esc clears it), and `esc` goes back
one level: it clears the filter when one is set, else returns to view 1 (runs). The approvals, breakers and controls
views are TableView subclasses; each says its sort cycle (SORTS) and the words a row is filtered on (filter_words).
A view with two tables (controls) sorts the one that has the focus (`table`) and filters both (`filtered_tables`).
"""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual import on
from textual.binding import Binding
from textual.widgets import Input

from console.screens.base import ShowView, focus_now
from console.screens.live_view import LiveView
from console.widgets.safe import printable
from console.widgets.virtual_table import VirtualTable

# A sort: (column, reverse, words for the title).
Sort = tuple[str, bool, str]


class TableView(LiveView):
    DEFAULT_CSS = """
    TableView > .table-filter {
        height: 1;
        border: none;
        padding: 0 1;
        background: $boost;
        display: none;
    }
    TableView > .table-filter:focus {
        border: none;
        background-tint: $foreground 5%;
    }
    """

    BINDINGS = [
        Binding("slash", "start_filter", "Filter", id="filter_table", priority=True,
                tooltip="Filter the table: rows whose words contain what you type (Enter keeps it, Esc clears it)"),
        Binding("s", "next_sort", "Sort", id="sort_table", tooltip="Sort by the next column"),
        Binding("S", "reverse_sort", "Reverse", id="reverse_table_sort", show=False,
                tooltip="Reverse the current sort order"),
        Binding("escape", "back", "Back", id="table_back", show=False,
                tooltip="Clear the filter; without one, back to the runs view"),
    ]

    SORTS: ClassVar[tuple[Sort, ...]] = ()

    def __init__(self, ctx: Any, *, view_id: str) -> None:
        super().__init__(ctx, view_id=view_id)
        self.filter_text = ""
        self.sort_index = 0

    # -- what a subclass provides -------------------------------------------------------------------------------

    @property
    def table(self) -> VirtualTable:
        raise NotImplementedError

    def filtered_tables(self) -> list[VirtualTable]:
        """The tables the filter applies to: the one table, or every table of a view with several."""
        return [self.table]

    def filter_words(self, row: Any) -> str:
        """The words of a row the filter looks in (lower case)."""
        raise NotImplementedError

    def refresh_title(self) -> None:
        """Repaint the view's title (it shows the sort and the filter: sort_words(), filter_words_shown())."""

    # -- shared ---------------------------------------------------------------------------------------------------

    def filter_box(self) -> Input:
        return Input(placeholder="filter: words of a row (Enter keeps, Esc clears)", id=f"{self.view_id}-filter",
                     classes="table-filter", compact=True)

    def matches(self, row: Any, text: str) -> bool:
        return text in self.filter_words(row)

    def sort_words(self) -> str:
        if not self.SORTS:
            return ""
        column, reverse, words = self.SORTS[self.sort_index]
        if self.table.reverse != reverse:
            words = words.split(",")[0] + ", reversed"
        return words

    def title_suffix(self) -> Text:
        """` · sorted by …  · filter "…" (n of m)` for the title."""
        text = Text(end="")
        text.append(f"  sorted by {self.sort_words()}", style="dim")
        if self.filter_text:
            table = self.table
            text.append(" · filter ", style="dim")
            text.append(f'"{printable(self.filter_text, limit=40)}"', style="bold")
            text.append(f" ({table.row_count} of {table.total_count})", style="dim")
        return text

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "start_filter" and isinstance(self.screen.focused, Input):
            return False  # "/" typed into a text box is a character (priority binding)
        return super().check_action(action, parameters)

    def action_start_filter(self) -> None:
        box = self.query_one(f"#{self.view_id}-filter", Input)
        box.display = True
        box.value = self.filter_text
        focus_now(box)

    def action_back(self) -> None:
        box = self.query_one(f"#{self.view_id}-filter", Input)
        if self.filter_text or box.display:
            box.value = ""
            box.display = False
            self._set_filter("")
            focus_now(self.table)
            return
        self.post_message(ShowView("runs"))

    def action_next_sort(self) -> None:
        if not self.SORTS:
            return
        self.sort_index = (self.sort_index + 1) % len(self.SORTS)
        column, reverse, _ = self.SORTS[self.sort_index]
        self.table.set_sort(column, reverse)
        self.refresh_title()

    def action_reverse_sort(self) -> None:
        self.table.set_sort(self.table.sort_column, not self.table.reverse)
        self.refresh_title()

    def _set_filter(self, text: str) -> None:
        self.filter_text = text
        for table in self.filtered_tables():
            table.set_filter(text or None)
        self.refresh_title()

    @on(Input.Changed, ".table-filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        event.stop()
        self._set_filter(event.value.strip().lower())

    @on(Input.Submitted, ".table-filter")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if not event.value.strip():
            event.input.display = False
        focus_now(self.table)
