"""The header's widgets: the header strip (always on screen), the global-halt banner and the hint line. What the
slots say, and which alarm speaks, is header.py; fitting a line to the width is header_fit.py.
"""

from __future__ import annotations

from collections.abc import Callable

from rich.text import Text
from textual.widget import Widget
from textual.widgets import Static

from console.widgets.header import HEADER_SLOTS, LEVEL_STYLE, LEVELS, HeaderSnapshot, urgency
from console.widgets.header_fit import Part, fit_line, fit_sentence
from console.widgets.safe import printable
from console.widgets.text_pane import TextLines
from engine.timefmt import clock

# How short the other views' titles get, in turn, when the title line is too narrow for them (None: whole; 0: the
# key only).
SHORT_TITLE_LIMITS: tuple[int | None, ...] = (None, 5, 4, 3, 0)


class HeaderStrip(Widget):
    """Three lines: views and who is at the keyboard; then the slots on two status lines."""

    DEFAULT_CSS = """
    HeaderStrip {
        height: 3;
        background: $panel;
        color: $text;
    }
    """

    def __init__(self, *, operator: str, read_only: bool, clock: Callable[[], float],
                 id: str | None = None) -> None:
        super().__init__(id=id)
        self.operator = operator
        self.read_only = read_only
        self.clock = clock
        self.views: list[tuple[str, str, str]] = []  # (key, id, title)
        self.active_view = ""
        self.snapshot: HeaderSnapshot | None = None
        self.store_problem: str | None = None

    def set_views(self, views: list[tuple[str, str, str]], active: str) -> None:
        self.views = views
        self.active_view = active
        self.refresh()

    def set_active(self, view_id: str) -> None:
        self.active_view = view_id
        self.refresh()

    def update_snapshot(self, snapshot: HeaderSnapshot) -> None:
        self.snapshot = snapshot
        self.refresh()

    def set_store_problem(self, problem: str | None) -> None:
        self.store_problem = problem
        self.refresh()

    def slot_text(self, slot_id: str) -> str:
        """The plain text a slot shows (for tests)."""
        if self.snapshot is None or slot_id not in self.snapshot.values:
            return ""
        return self.snapshot.values[slot_id].text

    def render(self) -> Text:
        width = self.size.width or 160
        narrow = width < 120
        lines = [self._title_line(width, narrow)]
        for row in (1, 2):
            lines.append(self._slot_line(row, narrow, width))
        return Text("\n", end="").join(lines)

    def _title_line(self, width: int, narrow: bool) -> Text:
        mode = "read-only" if self.read_only else "read-write"
        # Wide labels first; when the operator's name would not fit beside them (nine views at 120 columns), the
        # compact labels of a narrow terminal, which keep it: who you act as matters more than the spacing.
        for compact in ((True,) if narrow else (False, True)):
            left = self._views_text(compact)
            for tail in (" · " + clock(self.clock(), with_seconds=not compact) + " ", " "):  # the clock goes first
                right = Text(printable(self.operator, limit=20), style="bold", end="")
                right.append(" · ")
                right.append(mode, style="bold yellow" if self.read_only else "")
                right.append(tail)
                gap = width - left.cell_len - right.cell_len
                if gap >= 1:
                    return Text.assemble(left, " " * gap, right, end="")
        # Too narrow for both: keep the views (they are what number keys do) and the operator's mode, the other
        # views' titles cut shorter until the line fits (ten views of a fleet at 100 columns): it never wraps, which
        # would push the alarm lines below out of the header.
        right = Text(f"{mode} ", style="bold yellow" if self.read_only else "", end="")
        for limit in SHORT_TITLE_LIMITS:
            left = self._views_text(True, limit)
            if width - left.cell_len - right.cell_len >= 1:
                break
        gap = max(1, width - left.cell_len - right.cell_len)
        line = Text.assemble(left, " " * gap, right, end="")
        line.truncate(width)
        return line

    def _views_text(self, compact: bool, limit: int | None = None) -> Text:
        """`limit`: cut the titles of views other than the active one to this many characters (0: the key only)."""
        left = Text(" FD " if compact else " FLIGHTDECK ", style="bold reverse", end="")
        if not compact:
            left.append(" ")
        for key, view_id, title in self.views:
            if limit is not None and view_id != self.active_view:
                title = title[:limit]
            label = (f"{key} {title}" if title else key) if compact else f" {key} {title} "
            if compact:
                left.append(" ")
            if view_id == self.active_view:
                left.append(label, style="bold reverse")
            else:
                left.append(label)
        return left

    def _slot_line(self, row: int, narrow: bool, width: int) -> Text:
        if row == 1 and self.store_problem:
            line = Text(" ", end="")
            line.append("STORE UNREADABLE ", style="bold white on red")
            line.append(printable(self.store_problem, limit=200), style="bold red")
            return line
        parts: list[Part] = []
        for slot in HEADER_SLOTS:
            if slot.row != row:
                continue
            value = self.snapshot.values.get(slot.id) if self.snapshot else None
            if value is None:
                if not slot.quiet:
                    parts.append(Part(slot.label, ("…",), "dim", 0, (0, 0)))
                continue
            if not value.text or (slot.quiet and value.level not in ("warn", "crit")):
                continue  # an empty value (a slot with nothing to say on this store) is not shown
            text = printable(value.text, limit=80)
            short = printable(value.short, limit=80) if value.short else None
            # Narrow terminals (<120 columns) start from the short form; the fit shortens or hides by urgency.
            forms = (short,) if (narrow and short) else (text, short) if short and short != text else (text,)
            level = LEVELS.index(value.level) if value.level in LEVELS else 0
            parts.append(Part(slot.label, forms, LEVEL_STYLE.get(value.level, ""), level, urgency(slot.id, value)))
        return fit_line(parts, width)


class HaltBanner(Static):
    """Hidden until a global halt (kill switch, safe mode) is active; then a red bar nobody can miss."""

    DEFAULT_CSS = """
    HaltBanner {
        display: none;
        height: auto;
        background: $error;
        color: $text;
        text-style: bold;
        padding: 0 1;
    }
    HaltBanner.-active {
        display: block;
    }
    """

    def show_halt(self, text: str | None) -> None:
        if text:
            self.update(Text(f"⛔ HALTED: {printable(text, limit=300)}", style="bold"))
            self.add_class("-active")
        else:
            self.remove_class("-active")

    @property
    def active(self) -> bool:
        return self.has_class("-active")


class HintLine(TextLines):
    """One short sentence telling the operator what to do next. An alarm from the header outranks everything; a
    guide's hint (a driver such as `flightdeck demo` narrating what to try) outranks the view's own hint."""

    DEFAULT_CSS = """
    HintLine {
        height: 1;
        background: $boost;
        color: $text;
        padding: 0 1;
    }
    HintLine.-alarm {
        background: $warning 30%;
        text-style: bold;
    }
    """

    def __init__(self, id: str | None = None) -> None:
        super().__init__("", id=id)
        self.view_hint = ""
        self.guide_hint = ""
        self.alarm: str | None = None

    def set_view_hint(self, hint: str) -> None:
        self.view_hint = hint
        self._show()

    def set_guide_hint(self, hint: str) -> None:
        self.guide_hint = hint
        self._show()

    def set_alarm(self, alarm: str | None) -> None:
        self.alarm = alarm
        self._show()

    @property
    def sentence(self) -> str:
        """What the hint line says: the alarm if there is one, else the guide's hint, else the view's."""
        return self.alarm or self.guide_hint or self.view_hint

    def on_resize(self) -> None:
        self._show()

    def _show(self) -> None:
        self.set_class(bool(self.alarm), "-alarm")
        prefix = "⚠ " if self.alarm else "→ "
        sentence = fit_sentence(printable(self.sentence, limit=400), self.size.width - len(prefix) - 1)
        self.update(Text(prefix + sentence, no_wrap=True, overflow="ellipsis"))
