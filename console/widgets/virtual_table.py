"""VirtualTable: a keyed, sorted, filtered table on Textual's line API (ScrollView + render_line).

Why not DataTable: DataTable measures every new cell when a row is added (100 rows took 370-520 ms in
bench/console_bench.py's comparison), which is far over the console's budget of 50 ms for 100 new rows. This table
keeps rows as raw data and formats only the lines on screen, when they are painted (the column layout and the
line composition are table_lines.py, the sorted and filtered rows table_rows.py):

- `upsert()` of N rows into a table of M rows is O(N log M) comparisons plus list inserts (bisect), no rendering;
- painting formats the ~50 visible rows, whatever M is;
- the row under the cursor keeps its identity (the cursor follows its key through inserts and re-sorts) and stays
  at the same place on screen; a cursor parked on the first row stays on the first row, so the newest rows keep
  flowing in at the top ("follow" mode, as in k9s).

Cells are produced by a callback (`cell(data, column_key, now) -> Text`), so time-dependent columns (ages) cost
nothing until painted, and untrusted text is the caller's to wrap in `Text(...)` (never markup).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from typing import Any

from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.cache import LRUCache
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from console.widgets.repaint import PassStyle, QuietVirtualSize
from console.widgets.table_lines import Column, column_widths, compose_line, fit_cell
from console.widgets.table_rows import MatchFn, SortedRows, SortFn

# Column is defined in table_lines.py, SortFn and MatchFn in table_rows.py; callers take them from here with the table.
__all__ = ["CellFn", "Column", "MatchFn", "SortFn", "VirtualTable"]

CellFn = Callable[[Any, str, float], Text | str]


class VirtualTable(PassStyle, QuietVirtualSize, ScrollView, can_focus=True, inherit_bindings=False):
    DEFAULT_CSS = """
    VirtualTable {
        height: 1fr;
        background: $surface;
        scrollbar-gutter: stable;
        overflow-x: hidden;
    }
    VirtualTable > .virtual-table--header {
        text-style: bold;
        background: $panel;
        color: $text;
    }
    VirtualTable > .virtual-table--cursor {
        background: $block-cursor-blurred-background;
    }
    VirtualTable:focus > .virtual-table--cursor {
        background: $block-cursor-background;
        text-style: bold;
    }
    VirtualTable > .virtual-table--empty {
        color: $text-muted;
        text-style: italic;
    }
    """

    COMPONENT_CLASSES = {"virtual-table--header", "virtual-table--cursor", "virtual-table--empty"}

    BINDINGS = [
        Binding("up", "cursor_up", "Up", show=False, id="table_up", tooltip="Move the cursor up one row"),
        Binding("down", "cursor_down", "Down", show=False, id="table_down", tooltip="Move the cursor down one row"),
        Binding("pageup", "page_up", "Page up", show=False, id="table_page_up", tooltip="Up one screen"),
        Binding("pagedown", "page_down", "Page down", show=False, id="table_page_down", tooltip="Down one screen"),
        Binding("home", "first", "First", show=False, id="table_first", tooltip="Jump to the first row (and follow "
                "new rows)"),
        Binding("end", "last", "Last", show=False, id="table_last", tooltip="Jump to the last loaded row"),
    ]

    cursor: reactive[int] = reactive(0, repaint=False, always_update=False)

    class RowSelected(Message):
        """Enter (or a double click) on a row."""

        def __init__(self, table: VirtualTable, key: Hashable) -> None:
            super().__init__()
            self.table = table
            self.key = key

        @property
        def control(self) -> VirtualTable:
            return self.table

    class CursorMoved(Message):
        def __init__(self, table: VirtualTable, key: Hashable | None) -> None:
            super().__init__()
            self.table = table
            self.key = key

        @property
        def control(self) -> VirtualTable:
            return self.table

    class NearEnd(Message):
        """The cursor came within a screen of the last loaded row: a chance to page older rows in."""

        def __init__(self, table: VirtualTable) -> None:
            super().__init__()
            self.table = table

        @property
        def control(self) -> VirtualTable:
            return self.table

    def __init__(self, columns: Iterable[Column], *, cell: CellFn, sort_value: SortFn, matches: MatchFn,
                 now: Callable[[], float], sort_column: str | None = None, reverse: bool = False,
                 empty_text: str = "nothing to show", name: str | None = None, id: str | None = None,
                 classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.columns: list[Column] = list(columns)
        self._cell = cell
        self._now = now
        self._rows = SortedRows(sort_value=sort_value, matches=matches, sort_column=sort_column or self.columns[0].key,
                                reverse=reverse)
        self.empty_text = empty_text
        self._columns_cache: tuple[int, list[tuple[Column, int]]] | None = None
        self._line_cache: LRUCache[tuple[Any, ...], Strip] = LRUCache(1024)

    # -- data (kept by SortedRows) ----------------------------------------------------------------------------

    @property
    def sort_column(self) -> str:
        return self._rows.sort_column

    @property
    def reverse(self) -> bool:
        return self._rows.reverse

    @property
    def filter_value(self) -> Any:
        """None: every row is shown; else matches(data, filter_value) decides."""
        return self._rows.filter_value

    @property
    def row_count(self) -> int:
        """Rows shown (passing the filter)."""
        return len(self._rows)

    @property
    def total_count(self) -> int:
        """Rows held, shown or not."""
        return self._rows.total_count

    def __contains__(self, key: Hashable) -> bool:
        return key in self._rows

    def get(self, key: Hashable) -> Any:
        return self._rows.get(key)

    def keys(self) -> Iterable[Hashable]:
        return self._rows.keys()

    def values(self) -> Iterable[Any]:
        return self._rows.values()

    def key_at(self, index: int) -> Hashable | None:
        return self._rows.key_at(index)

    def index_of(self, key: Hashable) -> int | None:
        return self._rows.index_of(key)

    @property
    def cursor_key(self) -> Hashable | None:
        return self.key_at(self.cursor)

    def visible_keys(self) -> list[Hashable]:
        """Keys in display order (for tests and exports; O(rows))."""
        return self._rows.visible_keys()

    def upsert(self, items: Iterable[tuple[Hashable, Any]]) -> None:
        """Add or replace rows by key. The cursor stays on its row (or on the first row if it was there), and that
        row stays where it was on screen."""
        items = list(items)
        if not items:
            return
        anchor = self._anchor()
        self._rows.upsert(items)
        self._restore(anchor)

    def remove(self, keys: Iterable[Hashable]) -> None:
        anchor = self._anchor()
        self._rows.remove(keys)
        self._restore(anchor)

    def clear(self) -> None:
        self._rows.clear()
        self.cursor = 0
        self._update_size()
        self.scroll_to(y=0, animate=False, immediate=True, force=True)
        self.refresh()

    def set_sort(self, column: str, reverse: bool) -> None:
        anchor = self._anchor()
        self._rows.set_sort(column, reverse)
        self._restore(anchor, keep_follow=False)

    def set_filter(self, value: Any) -> None:
        """Show only rows for which matches(data, value) is true; None shows every row."""
        if value == self._rows.filter_value:
            return
        anchor = self._anchor()
        self._rows.set_filter(value)
        self._restore(anchor, keep_follow=False)

    def _anchor(self) -> tuple[Hashable | None, int, bool]:
        """What must stay put: the cursor's key, its line on screen, and whether it was parked on row 0."""
        return self.cursor_key, self.cursor - int(self.scroll_offset.y), self.cursor == 0

    def _restore(self, anchor: tuple[Hashable | None, int, bool], keep_follow: bool = True) -> None:
        key, screen_line, follow = anchor
        self._update_size()
        n = len(self._rows)
        if (follow and keep_follow) or key is None:
            index = 0 if follow or key is None else self.cursor
        else:
            found = self.index_of(key)
            index = found if found is not None else min(self.cursor, max(0, n - 1))
        index = max(0, min(index, n - 1)) if n else 0
        self.set_reactive(VirtualTable.cursor, index)
        if follow and keep_follow:
            scroll = int(self.scroll_offset.y)
        else:
            scroll = index - max(0, screen_line)
        self._scroll_within(scroll, index)
        self.refresh()
        self.post_message(self.CursorMoved(self, self.cursor_key))

    def _body_height(self) -> int:
        return max(1, self.scrollable_content_region.height - 1)

    def _scroll_within(self, scroll: int, index: int) -> None:
        body = self._body_height()
        scroll = min(scroll, index)
        scroll = max(scroll, index - body + 1)
        max_scroll = max(0, len(self._rows) + 1 - self.scrollable_content_region.height)
        scroll = max(0, min(scroll, max_scroll))
        if scroll != int(self.scroll_offset.y):
            self.scroll_to(y=scroll, animate=False, immediate=True, force=True)

    def _update_size(self) -> None:
        self.virtual_size = Size(self.scrollable_content_region.width, len(self._rows) + 1)

    # -- cursor -------------------------------------------------------------------------------------------------

    def move_cursor(self, index: int) -> None:
        n = len(self._rows)
        index = max(0, min(index, n - 1)) if n else 0
        old = self.cursor
        self.cursor = index
        self._scroll_within(int(self.scroll_offset.y), index)
        if old != index:
            self.refresh()
            self.post_message(self.CursorMoved(self, self.cursor_key))
        if n and index >= n - self._body_height():
            self.post_message(self.NearEnd(self))

    def select_key(self, key: Hashable) -> bool:
        index = self.index_of(key)
        if index is None:
            return False
        self.move_cursor(index)
        return True

    def action_cursor_up(self) -> None:
        self.move_cursor(self.cursor - 1)

    def action_cursor_down(self) -> None:
        self.move_cursor(self.cursor + 1)

    def action_page_up(self) -> None:
        self.move_cursor(self.cursor - self._body_height())

    def action_page_down(self) -> None:
        self.move_cursor(self.cursor + self._body_height())

    def action_first(self) -> None:
        self.move_cursor(0)

    def action_last(self) -> None:
        self.move_cursor(len(self._rows) - 1)

    def action_select_cursor(self) -> None:
        key = self.cursor_key
        if key is not None:
            self.post_message(self.RowSelected(self, key))

    def _on_click(self, event: events.Click) -> None:
        if event.y < 1:
            return
        index = int(self.scroll_offset.y) + event.y - 1
        if 0 <= index < len(self._rows):
            self.move_cursor(index)
            if event.chain >= 2:
                self.action_select_cursor()

    def set_columns(self, columns: Iterable[Column]) -> None:
        """Show these columns from now on (e.g. a column that only matters once some row needs it)."""
        self.columns = list(columns)
        self._columns_cache = None
        self._line_cache.clear()
        self.refresh()

    def on_resize(self, event: events.Resize) -> None:
        self._columns_cache = None
        self._update_size()
        self._scroll_within(int(self.scroll_offset.y), self.cursor)

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._columns_cache = None

    # -- painting -----------------------------------------------------------------------------------------------

    def column_layout(self) -> list[tuple[Column, int]]:
        """(column, width) for the columns that fit the current width."""
        width = self.scrollable_content_region.width
        if self._columns_cache is not None and self._columns_cache[0] == width:
            return self._columns_cache[1]
        widths = column_widths(self.columns, width)
        self._columns_cache = (width, widths)
        return widths

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        layout = self.column_layout()
        base = self.rich_style
        if y == 0:
            header_style = base + self.get_component_rich_style("virtual-table--header", partial=True)
            cells = []
            for column, w in layout:
                label = column.label
                if column.key == self.sort_column:
                    label = f"{label}{'▼' if self.reverse else '▲'}"
                cells.append(fit_cell(Text(label), w, column.align))
            return compose_line(self.app.console, cells, header_style, width)
        index = int(self.scroll_offset.y) + y - 1
        n = len(self._rows)
        if index >= n:
            if n == 0 and y == 2:
                empty_style = base + self.get_component_rich_style("virtual-table--empty", partial=True)
                return compose_line(self.app.console, [fit_cell(Text(self.empty_text), max(1, width - 2), "left")],
                                          empty_style, width)
            return Strip.blank(width, base)
        key = self.key_at(index)
        data = self._rows.get(key)
        now = self._now()
        is_cursor = index == self.cursor
        # Rows repaint often (every poll, every cursor move) but change rarely: cache a row's line by what it
        # depends on. Time-dependent cells (ages) are in whole seconds, hence the `int(now)` in the key.
        cache_key = (key, self._rows.revision(key), width, is_cursor, self.has_focus, int(now), base)
        strip = self._line_cache.get(cache_key)
        if strip is not None:
            return strip
        style = base
        if is_cursor:
            style = base + self.get_component_rich_style("virtual-table--cursor", partial=True)
        cells = [fit_cell(self._cell(data, column.key, now), w, column.align) for column, w in layout]
        strip = compose_line(self.app.console, cells, style, width)
        self._line_cache[cache_key] = strip
        return strip

    def watch_cursor(self, old: int, new: int) -> None:
        self.refresh()
