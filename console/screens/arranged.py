"""Sort and filter for views whose tables are DataTables filled whole from a snapshot (the audit page, the runbooks
view's incidents and runbooks), with the table views' keys (console/screens/table_view.py, which does the same on
VirtualTables): `s` cycles the sort, `S` reverses it, `/` opens a filter box (a case-insensitive substring of a
row's words; Enter keeps it, Esc clears it), and `esc` without a filter goes back to view 1 (runs).

A view keeps one Arrangement per table (its sort, and the filter every table of the view shares) and re-renders
its rows through `arrange` whenever the sort, the filter or the data change. Rows are keyed (DataTable row keys),
so the selection is found by key, never by position: a sort or a refresh does not move it to another row.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from textual import on
from textual.binding import Binding, BindingType
from textual.coordinate import Coordinate
from textual.widgets import DataTable, Input

from console.screens.base import ShowView, View, focus_now
from console.widgets.safe import printable

Row = TypeVar("Row")


@dataclass(frozen=True, slots=True)
class Sort:
    """One step of a table's sort cycle: its words for the title, the row's key, and its natural direction."""

    words: str
    key: Callable[[Any], Any]
    descending: bool = False


class Arrangement:
    """The sort cycle of one table and the filter text: which rows it shows, in which order."""

    def __init__(self, sorts: Sequence[Sort], words: Callable[[Any], str]) -> None:
        self.sorts = tuple(sorts)
        self.words = words  # the words of a row the filter looks in
        self.index = 0
        self.reverse = False
        self.filter_text = ""

    def arrange(self, rows: Sequence[Row]) -> list[Row]:
        text = self.filter_text
        shown = [row for row in rows if text in self.words(row).lower()] if text else list(rows)
        sort = self.sorts[self.index]
        return sorted(shown, key=sort.key, reverse=sort.descending != self.reverse)

    def next_sort(self) -> None:
        self.index = (self.index + 1) % len(self.sorts)
        self.reverse = False

    def reverse_sort(self) -> None:
        self.reverse = not self.reverse

    def sort_words(self) -> str:
        return self.sorts[self.index].words + (", reversed" if self.reverse else "")

    def title_words(self, shown: int, total: int, *, filter_first: bool = False) -> str:
        """`sorted by …` and, while filtering, `filter "…" (n of m)` (first, for a narrow label: it says why rows
        are missing, which matters more than their order)."""
        words = [f"sorted by {self.sort_words()}"]
        if self.filter_text:
            shown_words = f'filter "{printable(self.filter_text, limit=40)}" ({shown} of {total})'
            words.insert(0 if filter_first else 1, shown_words)
        return " · ".join(words)


def words_of(*values: Any) -> str:
    return " ".join(str(v) for v in values if v is not None).lower()


def selected_key(table: DataTable[Any]) -> str | None:
    """The row key under the cursor (None on an empty table)."""
    if table.row_count == 0:
        return None
    row = min(max(table.cursor_row, 0), table.row_count - 1)
    key = table.coordinate_to_cell_key(Coordinate(row, 0)).row_key.value
    return str(key) if key is not None else None


def refill(table: DataTable[Any], rows: Sequence[tuple[str, tuple[Any, ...]]], keep: str | None) -> None:
    """Replace the table's rows with `rows` (key, cells), the cursor on the row keyed `keep` when it is still
    there, else at the same position (the row that took the place of one that went away)."""
    position = table.cursor_row
    table.clear()
    for key, cells in rows:
        table.add_row(*cells, key=key)
    if not rows:
        return
    keys = [key for key, _ in rows]
    target = keys.index(keep) if keep in keys else min(max(position, 0), len(rows) - 1)
    table.move_cursor(row=target)


ARRANGE_BINDINGS = [
    Binding("slash", "start_filter", "Filter", id="filter_table", priority=True,
            tooltip="Filter: rows whose words contain what you type (Enter keeps it, Esc clears it)"),
    Binding("s", "next_sort", "Sort", id="sort_table", tooltip="Sort by the next column"),
    Binding("S", "reverse_sort", "Reverse", id="reverse_table_sort", show=False,
            tooltip="Reverse the current sort order"),
    Binding("escape", "clear_filter", "Clear filter", id="table_back", show=False,
            tooltip="Clear the filter; without one, back to the runs view"),
]


class ArrangedView(View):
    """A View with the filter box and the sort keys. A subclass composes `filter_box()`, says which arrangement `s`
    acts on (`sorted_arrangement`), lists every arrangement the filter applies to (`arrangements`), and re-renders
    in `rearrange`."""

    DEFAULT_CSS = """
    ArrangedView > .arranged-filter {
        height: 1;
        border: none;
        padding: 0 1;
        background: $boost;
    }
    ArrangedView > .arranged-filter:focus {
        border: none;
        background-tint: $foreground 5%;
    }
    """

    BINDINGS: ClassVar[list[BindingType]] = []  # subclasses list ARRANGE_BINDINGS after their own (footer order)

    filter_text = ""

    # -- what a subclass provides -------------------------------------------------------------------------------

    def arrangements(self) -> list[Arrangement]:
        raise NotImplementedError

    def sorted_arrangement(self) -> Arrangement:
        """The arrangement `s` and `S` act on (the table with the focus)."""
        raise NotImplementedError

    def arranged_table(self) -> DataTable[Any]:
        """The table the focus goes back to when the filter box closes."""
        raise NotImplementedError

    def rearrange(self) -> None:
        raise NotImplementedError

    # -- shared ---------------------------------------------------------------------------------------------------

    def filter_box(self) -> Input:
        box = Input(placeholder="filter: words of a row (Enter keeps, Esc clears)", id=f"{self.view_id}-filter",
                    classes="arranged-filter", compact=True)
        box.display = False
        return box

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "start_filter" and isinstance(self.screen.focused, Input):
            return False  # "/" typed into a text box is a character (priority binding)
        return True

    def action_start_filter(self) -> None:
        box = self.query_one(f"#{self.view_id}-filter", Input)
        box.display = True
        box.value = self.filter_text
        focus_now(box)

    def action_clear_filter(self) -> None:
        box = self.query_one(f"#{self.view_id}-filter", Input)
        if not self.filter_text and not box.display:
            self.post_message(ShowView("runs"))
            return
        box.value = ""
        box.display = False
        self._set_filter("")
        focus_now(self.arranged_table())

    def action_next_sort(self) -> None:
        self.sorted_arrangement().next_sort()
        self.rearrange()

    def action_reverse_sort(self) -> None:
        self.sorted_arrangement().reverse_sort()
        self.rearrange()

    def _set_filter(self, text: str) -> None:
        self.filter_text = text
        for arrangement in self.arrangements():
            arrangement.filter_text = text
        self.rearrange()

    @on(Input.Changed, ".arranged-filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        event.stop()
        self._set_filter(event.value.strip().lower())

    @on(Input.Submitted, ".arranged-filter")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if not event.value.strip():
            event.input.display = False
        focus_now(self.arranged_table())


class OneTableView(ArrangedView):
    """An ArrangedView of one table: its `arrangement` is what `s`, `S` and `/` act on, and `table` where the focus
    goes back. A subclass sets `arrangement` and provides `table` and `rearrange`."""

    arrangement: Arrangement

    @property
    def table(self) -> DataTable[Any]:
        raise NotImplementedError

    def arrangements(self) -> list[Arrangement]:
        return [self.arrangement]

    def sorted_arrangement(self) -> Arrangement:
        return self.arrangement

    def arranged_table(self) -> DataTable[Any]:
        return self.table
