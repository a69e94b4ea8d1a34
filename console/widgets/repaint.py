"""Cheaper repaints for line-API widgets (ScrollView subclasses): two mixins, each put before the widget class in
its bases.

QuietVirtualSize: a widget whose content length changes without re-laying out the screen.

Textual declares `Widget.virtual_size` with `layout=True`, so every new line in the event tail, every span added
to the tree and every span shown in the detail pane re-arranged the WHOLE screen on the next frame. That is
needed for containers (their children move) but not for a ScrollView: its region does not depend on its content
(the compositor places it by its CSS size), only its scrollbars do. Worse, each layout makes every ScrollView on
the screen refresh its scrollbars, which then cost a frame of their own. While a run streams that was a layout
and an extra frame per poll, and the frame that answers a key press waited behind them.

Mixed into a ScrollView subclass (before it in the bases), this redeclares `virtual_size` without `layout` and
applies the new size the way a layout would have: scrollbar thumbs, scroll clamping, and scrollbar visibility.
Showing or hiding a scrollbar does change the widget's inner region, and `show_vertical_scrollbar` /
`show_horizontal_scrollbar` are themselves layout reactives, so that (rare) case still gets its layout.

PassStyle: `rich_style` (the widget's base colours, which every line is painted on) computed once per paint pass.
Textual 8 does not cache it: each access walks the widget's ancestors and blends their colours (about 60 us), and
Log, Tree and our TextLines / TextPane / VirtualTable read it for every line they paint. Styles cannot change in the
middle of painting one widget, so one value per pass is exact.
"""

from __future__ import annotations

from rich.style import Style
from textual.dom import DOMNode
from textual.geometry import Region, Size
from textual.reactive import Reactive
from textual.strip import Strip

_DOM_RICH_STYLE = DOMNode.rich_style.fget  # type: ignore[attr-defined]


class QuietVirtualSize:
    """Mixin for ScrollView subclasses (see the module docstring)."""

    # Same storage as Widget.virtual_size (`_reactive_virtual_size`): Textual's own set_reactive calls still work.
    # No repaint either: each widget refreshes the lines its change affects (a new size alone only moves the
    # scrollbar, which _scroll_update refreshes). Where a base class relied on that repaint, the subclass refreshes
    # itself (EventTail.clear).
    virtual_size: Reactive[Size] = Reactive(Size(0, 0), layout=False, repaint=False)

    def watch_virtual_size(self, size: Size) -> None:
        # What Widget._size_updated does when a layout finds a new virtual size. Before the first layout there is
        # no container size yet, and that first layout does it.
        if self.is_mounted and self.container_size:  # type: ignore[attr-defined]
            self._scroll_update(size)  # type: ignore[attr-defined]


class PassStyle:
    """Mixin for line-API widgets (see the module docstring)."""

    _pass_style: Style | None = None

    @property
    def rich_style(self) -> Style:
        style = self._pass_style
        return style if style is not None else _DOM_RICH_STYLE(self)  # type: ignore[no-any-return]

    def render_lines(self, crop: Region) -> list[Strip]:
        self._pass_style = _DOM_RICH_STYLE(self)
        try:
            return super().render_lines(crop)  # type: ignore[misc, no-any-return]
        finally:
            self._pass_style = None
