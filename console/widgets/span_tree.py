"""SpanTree: a run's spans as a Textual Tree that grows live.

Spans are added by id under their parent as they appear and relabelled in place when they change; nothing is
rebuilt, so what the operator expanded or collapsed stays that way, and the cursor stays on its span (and at the
same place on screen) while new spans arrive above it. Labels are rich Text built from untrusted names with
Text(...), never markup.
"""

from __future__ import annotations

from typing import Any, Iterator

from rich.cells import cell_len
from rich.text import Text
from textual.widgets import Tree
from textual.widgets.tree import TreeNode

from console.widgets.fmt import duration, tokens, usd
from console.widgets.safe import printable
from console.widgets.status import PROBLEM_SPAN_STATUSES, span_look

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
        figures.append(f"{tokens(tin)}→{tokens(tout)} tok")
    if span.get("cost_usd"):
        figures.append(usd(span["cost_usd"]))
    if figures:
        text.append("  " + " · ".join(figures), style="dim")
    return text


class SpanTree(Tree[Span]):
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
        super()._invalidate()

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
                super()._invalidate()
        if cursor is not None and screen_line is not None and added:
            self._tree_lines  # noqa: B018 - builds the lines so node.line is current
            if cursor.line >= 0:
                self.move_cursor(cursor)
                target = max(0, cursor.line - screen_line)
                if target != int(self.scroll_offset.y):
                    self.scroll_to(y=target, animate=False, immediate=True, force=True)
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
        if parent_id is None or span.get("kind") == "run" and self.root.data is None:
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
