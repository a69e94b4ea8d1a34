"""SpanTree: a run's spans as a Textual Tree that grows live.

Spans are added by id under their parent as they appear and relabelled in place when they change; nothing is
rebuilt, so what the operator expanded or collapsed stays that way, and the cursor stays on its span (and at the
same place on screen) while new spans arrive above it. Labels are rich Text built from untrusted names with
Text(...), never markup.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from rich.cells import cell_len
from rich.style import Style
from rich.text import Text
from textual.cache import LRUCache
from textual.geometry import Region
from textual.strip import Strip
from textual.widgets import Tree
from textual.widgets.tree import TreeNode

from console.output import tokens, usd
from console.widgets.repaint import PassStyle, QuietVirtualSize
from console.widgets.safe import printable
from console.widgets.status import PROBLEM_SPAN_STATUSES, span_look
from engine.timefmt import duration

Span = dict[str, Any]

KIND_STYLE = {
    "run": "bold",
    "agent": "bold",
    "llm": "cyan",
    "tool": "magenta",
    "delegation": "blue",
    "route": "yellow",
    "stage": "bold",
}
# Kinds whose children matter: shown expanded when they first appear.
CONTAINER_KINDS = frozenset({"run", "agent", "delegation", "route", "stage"})
# Textual's Tree re-lays out every visible line on each change: past this many spans a live tree costs more than
# it tells. Further spans are left out of the tree (counted in `left_out`); the event tail keeps streaming.
MAX_TREE_SPANS = 10_000


def span_label(span: Span) -> Text:
    kind = span.get("kind") or "?"
    attrs = span.get("attributes") if isinstance(span.get("attributes"), dict) else {}
    name = printable(span.get("name"), limit=60)
    text = Text(end="", no_wrap=True)
    if kind == "delegation":
        text.append("delegate → ", style=KIND_STYLE["delegation"])
        text.append(printable(attrs.get("to") or name, limit=60), style="bold")
    elif kind == "route":
        text.append("route ", style=KIND_STYLE["route"])
        text.append(name, style="bold")
        target = attrs.get("to")
        if target:
            text.append(f" → {printable(target, limit=40)}")
        rule = attrs.get("rule")
        if rule:
            text.append(f" ({printable(rule, limit=40)})", style="dim")
    elif kind == "stage":
        text.append("stage ", style=KIND_STYLE["stage"])
        text.append(name, style="bold")
        if span.get("agent") and span.get("agent") != span.get("name"):
            text.append(f" ({printable(span.get('agent'), limit=40)})", style="dim")
    else:
        text.append(f"{kind} ", style=KIND_STYLE.get(kind, ""))
        text.append(name, style="bold" if kind in ("run", "agent") else "")
    look = span_look(span.get("status"))
    text.append("  ")
    text.append(f"{look.glyph} {look.word}", style=look.style)
    figures = []
    if span.get("ended") and span.get("started"):
        figures.append(duration(span["ended"] - span["started"]))
    tin, tout = span.get("tokens_in") or 0, span.get("tokens_out") or 0
    if tin or tout:
        # `~`: the server reported no usage and these counts are the engine's estimate, not the provider's bill.
        approx = "~" if attrs.get("tokens_estimated") is True else ""
        figures.append(f"{approx}{tokens(tin)}→{tokens(tout)} tok")
    if span.get("cost_usd"):
        figures.append(usd(span["cost_usd"]))
    if figures:
        text.append("  " + " · ".join(figures), style="dim")
    return text


class SpanTree(PassStyle, QuietVirtualSize, Tree[Span]):
    DEFAULT_CSS = """
    SpanTree {
        background: $surface;
        scrollbar-gutter: stable;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(Text("waiting for the run's spans…", style="dim"), id=id)
        self.nodes: dict[str, TreeNode[Span]] = {}
        self.problems: set[str] = set()  # ids of spans whose status needs attention
        self.left_out = 0  # spans not added because the tree holds MAX_TREE_SPANS
        self._label_widths: dict[int, int] = {}  # node id -> label width (Tree re-measures every label otherwise)
        self._batching = False
        self._batch_dirty = False
        self._strips: LRUCache[tuple[Any, ...], Strip] = LRUCache(256)  # see _render_line
        self._label_versions: dict[int, tuple[Text, int]] = {}  # node id -> (its label, version): _label_version
        self._label_count = 0
        self.auto_expand = False  # Enter selects (shows detail); space / click on the arrow toggles

    def get_label_width(self, node: TreeNode[Span]) -> int:
        """Tree rebuilds its lines on every change and measures every label to size its scroll area (by
        rendering it). Widths are computed without rendering, cached per node, and dropped when a label changes."""
        width = self._label_widths.get(node.id)
        if width is None:
            icon = cell_len(self.ICON_NODE_EXPANDED if node.is_expanded else self.ICON_NODE) \
                if node.allow_expand else 0
            width = self._label_widths[node.id] = node.label.cell_len + icon  # type: ignore[union-attr]
        return width

    def process_label(self, label: str | Text) -> Text:
        """Labels here are single-line Text already (built with Text(...), never markup): skip Tree's copy/split.
        A str (never passed here) would still go through Tree's own processing."""
        if isinstance(label, Text) and "\n" not in label.plain:
            return label
        return super().process_label(label)

    def _invalidate(self) -> None:
        # Tree re-lays itself out after EVERY node added; inside `apply` that happens once, at the end.
        if self._batching:
            self._batch_dirty = True
            return
        self._drop_lines()
        self.refresh()

    def _drop_lines(self) -> None:
        """Tree._invalidate without its screen layout (the tree's region is fixed by CSS; the new line count
        reaches the scrollbar through QuietVirtualSize when the lines are rebuilt) and without its refresh (the
        caller repaints what changed). Nor does it reset the root's hover/selected flags as Tree does: that would
        change the root's version, which every line's key below includes, and the cursor keeps those flags right
        (watch_cursor_line)."""
        self._clear_line_cache()
        self._updates += 1

    # -- painting: lines are cached by what they show, not by the tree's version ---------------------------------

    def _line_state(self, y: int) -> tuple[Any, ...] | None:
        """Everything tree line `y` depends on, or None past the end: for each node on its path, its label,
        expansion, hover and selection (the guides' colours), and whether it is the last child (├ or └, which a new
        sibling changes). Not TreeNode._updates: adding a child bumps the parent's, so every span added under an
        agent would have changed every line under it."""
        lines = self._tree_lines
        if y < 0 or y >= len(lines):
            return None
        return (self.cursor_line == y, self.hover_line == y,
                tuple((node._id, self._label_version(node), node.is_expanded, node.allow_expand, node._hover,
                       node._selected, node.is_last) for node in lines[y].path))

    def _label_version(self, node: TreeNode[Span]) -> int:
        """A number that changes whenever the node's label object does (set_label always sets a new one). The
        label is kept alongside, so the identity test cannot be fooled by a freed object's reused id."""
        known = self._label_versions.get(node._id)
        if known is None or known[0] is not node._label:
            self._label_count += 1
            known = self._label_versions[node._id] = (node._label, self._label_count)
        return known[1]

    def _render_line(self, y: int, x1: int, x2: int, base_style: Style) -> Strip:
        """Tree's line cache is keyed by the tree's version, which every added span bumps: each update re-rendered
        every visible line. This cache survives updates: a line is rendered again only when what it shows
        changed (and Tree renders it then, with its own code)."""
        state = self._line_state(y)
        if state is None:
            return super()._render_line(y, x1, x2, base_style)
        key = (y, x1, x2, base_style, self._pseudo_class_state, self.show_guides, self.guide_depth,
               self.virtual_size.width, state)
        strip = self._strips.get(key)
        if strip is None:
            strip = self._strips[key] = super()._render_line(y, x1, x2, base_style)
        return strip

    def clear(self) -> SpanTree:
        self._strips.clear()  # Tree.clear numbers nodes from 0 again: old keys would match the new tree's lines
        self._label_versions.clear()
        super().clear()
        return self

    def notify_style_update(self) -> None:
        self._strips.clear()  # colours (theme, focus) are not all in the key
        super().notify_style_update()

    def _window(self) -> list[tuple[Any, ...] | None]:
        top = int(self.scroll_offset.y)
        return [self._line_state(y) for y in range(top, top + self.size.height)]

    def _refresh_changed(self, before: list[tuple[Any, ...] | None], top: int) -> None:
        """Repaint the rows of the window whose line changed since `before` (taken at scroll offset `top`)."""
        if int(self.scroll_offset.y) != top:
            return  # the tree scrolled: the scroll repaints the whole window
        for row, state in enumerate(self._window()):
            if row >= len(before) or before[row] != state:
                self.refresh(Region(0, row, self.size.width, 1))

    def _relabel(self, node: TreeNode[Span], span: Span) -> None:
        self._label_widths.pop(node.id, None)
        node.set_label(span_label(span))

    def reset(self, label: Text | str) -> None:
        self.clear()
        self._label_widths.clear()
        self.left_out = 0
        self.nodes.clear()
        self.problems.clear()
        self.root.data = None
        self.root.set_label(label if isinstance(label, Text) else Text(label, style="dim"))
        self.root.expand()

    def apply(self, spans: list[Span]) -> list[TreeNode[Span]]:
        """Add new spans and relabel changed ones (by id). Returns the nodes added."""
        if not spans:
            return []
        cursor = self.cursor_node
        screen_line = (cursor.line - int(self.scroll_offset.y)) if cursor is not None and cursor.line >= 0 else None
        added: list[TreeNode[Span]] = []
        pending: list[Span] = []
        top, before = int(self.scroll_offset.y), self._window()
        self._batching, self._batch_dirty = True, False
        try:
            for span in sorted(spans, key=lambda s: (s.get("started") or 0.0, str(s.get("id")))):
                if not self._place(span, added):
                    pending.append(span)
            # Children whose parents came later in this batch (same start instant), then orphans under the root.
            progress = True
            while pending and progress:
                progress = False
                for span in list(pending):
                    if self._place(span, added):
                        pending.remove(span)
                        progress = True
            for span in pending:
                self._add(self.root, span, added)
        finally:
            self._batching = False
            if self._batch_dirty:
                self._drop_lines()
        # Build the lines now (not while painting): node.line is current for the cursor below, and the new size
        # reaches the scrollbar before this frame instead of in a frame of its own.
        self._tree_lines  # noqa: B018
        if cursor is not None and screen_line is not None and added and cursor.line >= 0:
            self.move_cursor(cursor)
            target = max(0, cursor.line - screen_line)
            if target != int(self.scroll_offset.y):
                self.scroll_to(y=target, animate=False, immediate=True, force=True)
        # Spans usually arrive below the window (or only relabel a few lines): repaint only the rows that changed.
        self._refresh_changed(before, top)
        return added

    def _track(self, span: Span) -> None:
        if span.get("status") in PROBLEM_SPAN_STATUSES:
            self.problems.add(span["id"])
        else:
            self.problems.discard(span["id"])

    def _place(self, span: Span, added: list[TreeNode[Span]]) -> bool:
        span_id = span.get("id")
        node = self.nodes.get(span_id)  # type: ignore[arg-type]
        if node is not None:
            if span.get("_partial") and node.data is not None:
                if (span.get("last_seq") or 0) < (node.data.get("last_seq") or 0):
                    return True  # older news than what the node shows
                span = {**node.data, **span}
            node.data = span
            self._relabel(node, span)
            self._track(span)
            return True
        if span.get("_partial") and span.get("kind") is None:
            return True  # the end of a span whose start is not known here: nothing to hang it on
        parent_id = span.get("parent_id")
        if parent_id is None or (span.get("kind") == "run" and self.root.data is None):
            if self.root.data is None:
                self.root.data = span
                self._relabel(self.root, span)
                self.nodes[span_id] = self.root  # type: ignore[index]
                self._track(span)
                self.root.expand()
                return True
            self._add(self.root, span, added)
            return True
        parent = self.nodes.get(parent_id)
        if parent is None:
            return False
        self._add(parent, span, added)
        return True

    def _add(self, parent: TreeNode[Span], span: Span, added: list[TreeNode[Span]]) -> None:
        if len(self.nodes) >= MAX_TREE_SPANS:
            self.left_out += 1
            return
        kind = span.get("kind")
        if kind in CONTAINER_KINDS:
            node = parent.add(span_label(span), data=span, expand=True)
        else:
            node = parent.add_leaf(span_label(span), data=span)
        self.nodes[span["id"]] = node
        self._track(span)
        added.append(node)

    def walk(self) -> Iterator[TreeNode[Span]]:
        """Every node, depth first in display order (collapsed subtrees included)."""
        stack = [self.root]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(reversed(node.children))

    def next_problem(self) -> TreeNode[Span] | None:
        """The next span (after the cursor, wrapping) whose status needs attention."""
        nodes = list(self.walk())
        cursor = self.cursor_node
        start = nodes.index(cursor) + 1 if cursor in nodes else 0
        for node in nodes[start:] + nodes[:start]:
            data = node.data
            if data and data.get("status") in PROBLEM_SPAN_STATUSES:
                return node
        return None

    def root_cause(self) -> TreeNode[Span] | None:
        """The first failing span none of whose descendants failed: where the trouble started (a tool error
        rather than the agents it bubbled up through)."""

        def is_problem(node: TreeNode[Span]) -> bool:
            return bool(node.data) and node.data.get("status") in PROBLEM_SPAN_STATUSES  # type: ignore[union-attr]

        def search(node: TreeNode[Span]) -> TreeNode[Span] | None:
            for child in node.children:
                found = search(child)
                if found is not None:
                    return found
            return node if is_problem(node) else None

        return search(self.root)

    def reveal(self, node: TreeNode[Span]) -> None:
        parent = node.parent
        while parent is not None:
            if not parent.is_expanded:
                parent.expand()
            parent = parent.parent
        self._tree_lines  # noqa: B018
        self.move_cursor(node)
        self.scroll_to_node(node, animate=False)
