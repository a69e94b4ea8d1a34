"""TextPane: a scrollable block of rich Text on the line API (ScrollView + render_line).

Why not Static in a VerticalScroll: replacing a Static's content re-measures its height, which re-lays out the
screen, and Textual then wraps and renders the whole content; for a span's detail (raw JSON can be hundreds of
lines) that took 20-50 ms per key press. A TextPane wraps the text once per change (or width), keeps a fixed size,
and paints only the lines on screen, from a cache.
"""

from __future__ import annotations

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.cache import LRUCache
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widget import Widget

from console.widgets.repaint import PassStyle, QuietVirtualSize

_MARGIN = 1


class TextPane(PassStyle, QuietVirtualSize, ScrollView, can_focus=True, inherit_bindings=False):
    DEFAULT_CSS = """
    TextPane {
        height: 1fr;
        background: $surface;
        overflow-x: hidden;
    }
    """

    BINDINGS = [
        Binding("up", "scroll_up", "Up", show=False, id="pane_up", tooltip="Scroll up one line"),
        Binding("down", "scroll_down", "Down", show=False, id="pane_down", tooltip="Scroll down one line"),
        Binding("pageup", "page_up", "Page up", show=False, id="pane_page_up", tooltip="Scroll up one screen"),
        Binding("pagedown", "page_down", "Page down", show=False, id="pane_page_down",
                tooltip="Scroll down one screen"),
        Binding("home", "scroll_home", "Top", show=False, id="pane_top", tooltip="Scroll to the top"),
        Binding("end", "scroll_end", "Bottom", show=False, id="pane_bottom", tooltip="Scroll to the bottom"),
    ]

    def __init__(self, text: Text | None = None, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._text = text if text is not None else Text()
        self._lines: list[Text] = []
        self._wrapped_width = -1
        self._cache: LRUCache[tuple[int, int], Strip] = LRUCache(256)

    @property
    def text(self) -> Text:
        return self._text

    @property
    def plain(self) -> str:
        return self._text.plain

    def set_text(self, text: Text, *, keep_scroll: bool = False) -> None:
        self._text = text
        self._wrapped_width = -1
        self._cache.clear()
        self._wrap()
        if not keep_scroll:
            self.scroll_to(y=0, animate=False, immediate=True, force=True)
        self.refresh()

    def _wrap(self) -> None:
        width = max(1, self.scrollable_content_region.width - _MARGIN)
        if width == self._wrapped_width or not self.is_mounted:
            return
        self._wrapped_width = width
        text = self._text.copy()
        text.overflow = "fold"
        text.no_wrap = False
        self._lines = list(text.wrap(self.app.console, width, overflow="fold"))
        self._cache.clear()
        self.virtual_size = Size(width, len(self._lines))

    def on_mount(self) -> None:
        self._wrap()

    def on_resize(self, event: events.Resize) -> None:
        self._wrap()

    def render_line(self, y: int) -> Strip:
        self._wrap()
        width = self.scrollable_content_region.width
        index = int(self.scroll_offset.y) + y
        base = self.rich_style
        if index >= len(self._lines):
            return Strip.blank(width, base)
        key = (index, width)
        strip = self._cache.get(key)
        if strip is None:
            segments = [Segment(" " * _MARGIN, base)]
            for segment in self._lines[index].render(self.app.console, end=""):
                segments.append(Segment(segment.text, base + segment.style if segment.style else base))
            strip = Strip(segments).crop_extend(0, width, base)
            self._cache[key] = strip
        return strip

    def action_page_up(self) -> None:
        self.scroll_page_up(animate=False)

    def action_page_down(self) -> None:
        self.scroll_page_down(animate=False)


class TextLines(PassStyle, Widget):
    """A few fixed lines of rich Text (titles, status and hint lines), painted directly.

    A Static converts its content to a Visual and re-measures it on every update (about 1 ms per line each
    time); these lines change on every poll while a run streams, so they are painted from the Text, cropped to
    the width, and only when the text actually changed."""

    DEFAULT_CSS = """
    TextLines {
        height: 1;
    }
    """

    def __init__(self, text: Text | str = "", *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._text = text if isinstance(text, Text) else Text(text)
        self._lines: list[Text] | None = None
        self._cache: dict[tuple[int, int, Style], Strip] = {}

    @property
    def text(self) -> Text:
        return self._text

    @property
    def plain(self) -> str:
        return self._text.plain

    def update(self, text: Text | str) -> None:
        text = text if isinstance(text, Text) else Text(text)
        if text.plain == self._text.plain and text.spans == self._text.spans and text.style == self._text.style:
            return
        self._text = text
        self._lines = None
        self._cache.clear()
        self.refresh()

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        base = self.rich_style
        if self._lines is None:
            self._lines = list(self._text.split("\n", allow_blank=True))
        if y >= len(self._lines):
            return Strip.blank(width, base)
        key = (y, width, base)
        strip = self._cache.get(key)
        if strip is None:
            line = self._lines[y]
            own = Style.parse(line.style) if isinstance(line.style, str) else line.style
            line_style = base + own if own else base
            segments = [Segment(segment.text, line_style + segment.style if segment.style else line_style)
                        for segment in line.render(self.app.console, end="")]
            strip = self._cache[key] = Strip(segments).crop_extend(0, width, base)
        return strip
