"""How VirtualTable lays out and paints a row, without the widget: its columns, the widths they get at a given
table width, one cell cut or padded to its width, and one row's Strip. Pure functions (the row cache and the
cursor are the widget's, in virtual_table.py)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from rich.console import Console
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.strip import Strip

__all__ = ["GAP", "Column", "column_widths", "compose_line", "fit_cell"]

GAP = 1  # blank cells before, between and after the columns


@dataclass(frozen=True, slots=True)
class Column:
    """A column. `width` is the minimum; `flex` columns share what is left; `drop` > 0 columns are hidden, highest
    first, when the table is too narrow for all of them."""

    key: str
    label: str
    width: int
    flex: int = 0
    align: str = "left"
    drop: int = 0
    max_width: int = 0  # 0: a flex column takes any width it is given


def column_widths(all_columns: Iterable[Column], width: int) -> list[tuple[Column, int]]:
    """(column, width) for the columns that fit in `width` cells: `drop` columns hidden highest first, spare cells
    handed to flex columns."""
    columns = list(all_columns)

    def needed(cols: list[Column]) -> int:
        return sum(c.width for c in cols) + GAP * (len(cols) + 1)

    while needed(columns) > width and any(c.drop for c in columns):
        victim = max((c for c in columns if c.drop), key=lambda c: c.drop)
        columns.remove(victim)
    spare = max(0, width - needed(columns))
    extra = {c.key: 0 for c in columns}
    # Hand out spare columns to flex columns by weight, respecting max_width; what nobody can take stays blank
    # at the right (numbers stay next to their labels instead of drifting apart).
    while spare > 0:
        open_cols = [c for c in columns if c.flex and (not c.max_width or c.width + extra[c.key] < c.max_width)]
        if not open_cols:
            break
        total = sum(c.flex for c in open_cols)
        handed = 0
        for c in open_cols:
            share = max(1, spare * c.flex // total)
            if c.max_width:
                share = min(share, c.max_width - c.width - extra[c.key])
            share = min(share, spare - handed)
            extra[c.key] += share
            handed += share
        if handed == 0:
            break
        spare -= handed
    return [(c, c.width + extra[c.key]) for c in columns]


def fit_cell(text: Text | str, width: int, align: str) -> Text:
    """Cut (with …) or pad a cell to `width`. `cell()` returns a new Text each call, so it is changed in
    place."""
    if isinstance(text, str):
        text = Text(text, no_wrap=True, end="")
    if text.cell_len > width:
        text.truncate(width, overflow="ellipsis")
    if align == "right":
        text.pad_left(width - text.cell_len)
    elif text.cell_len < width:
        text.pad_right(width - text.cell_len)
    return text


def compose_line(console: Console, cells: list[Text], base: Style, width: int) -> Strip:
    """One Strip for a row: cells rendered once, the row style under each segment, padded to `width`."""
    gap = Segment(" " * GAP, base)
    segments: list[Segment] = [gap]
    used = GAP
    for text in cells:
        for segment in text.render(console, end=""):
            style = segment.style
            segments.append(Segment(segment.text, base + style if style else base))
        segments.append(gap)
        used += text.cell_len + GAP
    if used < width:
        segments.append(Segment(" " * (width - used), base))
        used = width
    strip = Strip(segments, used)
    return strip.crop(0, width) if used > width else strip
