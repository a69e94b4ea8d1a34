"""The selected span's detail (inputs, outputs, tokens, cost, latency, the model's stated reason, errors; raw JSON on
a key), the run's usage so far (the budget gauges' place until budgets land), and the event tail.

Everything shown here is untrusted (model output, tool arguments and results, run inputs): it is put on screen as
Text(...) or through Log, escaped by `printable`, never parsed as markup.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Self

from rich.style import Style
from rich.text import Text
from textual.cache import LRUCache
from textual.geometry import Size
from textual.strip import Strip
from textual.widgets import Log

from console.output import tokens, usd
from console.widgets.repaint import PassStyle, QuietVirtualSize
from console.widgets.safe import compact_json, pretty_json, printable
from console.widgets.status import degraded_summary, run_look, run_status_text, span_look
from console.widgets.text_pane import TextLines, TextPane
from engine.store.trace_rows import DegradedCall, EventRow, RunRow
from engine.timefmt import clock_ms, duration

FIELD_LIMIT = 6000  # characters per field in the detail pane (the raw JSON view has more)

# Per kind: which attributes are inputs, which are outputs (the rest is shown under OTHER).
INPUT_KEYS: dict[str, tuple[str, ...]] = {
    "run": ("input", "tenant"),
    "agent": ("task", "context", "contract", "pipeline"),
    "llm": ("input_tail", "step", "messages", "tier"),
    "tool": ("args", "risk", "side_effects"),
    "delegation": ("to", "task", "context"),
    "route": ("rule", "to", "matched"),
    "stage": ("after",),
}
OUTPUT_KEYS: dict[str, tuple[str, ...]] = {
    "run": ("output",),
    "agent": ("output",),
    "llm": ("content", "tool_calls", "finish_reason", "latency_ms", "cached"),
    "tool": ("result",),
    "delegation": ("status",),
    "route": (),
    "stage": (),
}
SPECIAL_KEYS = ("reason", "error", "error_kind")
KIND_TITLE = {"run": "RUN", "agent": "AGENT", "llm": "MODEL CALL", "tool": "TOOL CALL", "delegation": "DELEGATION",
              "route": "ROUTING DECISION", "stage": "PIPELINE STAGE"}


def _value_text(value: Any) -> str:
    if isinstance(value, str):
        return printable(value, single_line=False, limit=FIELD_LIMIT)
    return pretty_json(value, limit=FIELD_LIMIT)


def _section(out: Text, title: str, attrs: dict[str, Any], keys: tuple[str, ...]) -> None:
    present = [k for k in keys if k in attrs and attrs[k] not in (None, "", [], {})]
    if not present:
        return
    out.append(f"\n{title}\n", style="bold underline")
    for key in present:
        value = _value_text(attrs[key])
        if "\n" in value or len(value) > 60:
            out.append(f"{key}:\n", style="bold")
            out.append(value + "\n")
        else:
            out.append(f"{key}: ", style="bold")
            out.append(value + "\n")


def span_detail(span: dict[str, Any] | None, *, raw: bool, now: float) -> Text:
    if span is None:
        return Text("Select a span in the tree (↑/↓, Enter) to see its inputs, outputs, tokens, cost and errors.",
                    style="dim")
    if raw:
        out = Text("RAW JSON  (j: back to the summary)\n", style="bold")
        out.append(pretty_json({k: v for k, v in span.items() if not k.startswith("_")}, limit=60_000))
        return out
    kind = span.get("kind") or "?"
    attrs = span.get("attributes") if isinstance(span.get("attributes"), dict) else {}
    look = span_look(span.get("status"))
    out = Text(end="")
    out.append(f"{KIND_TITLE.get(kind, kind.upper())}  ", style="bold")
    out.append(printable(span.get("name"), limit=120), style="bold")
    out.append("  ")
    out.append(f"{look.glyph} {look.word}", style=look.style)
    out.append("\n")
    rows: list[tuple[str, str]] = []
    if span.get("agent"):
        rows.append(("agent", printable(span.get("agent"), limit=120)))
    if span.get("model"):
        rows.append(("model", printable(span.get("model"), limit=120)))
    started, ended = span.get("started"), span.get("ended")
    if started:
        timing = f"started {clock_ms(started)}"
        if ended:
            timing += f" · latency {duration(ended - started)}"
        else:
            # No duration here: the detail is drawn when the span is selected or changes, so it would go stale
            # while the span runs (the run's header line has the live clock).
            timing += " · still running"
        rows.append(("time", timing))
    tin, tout, cost = span.get("tokens_in") or 0, span.get("tokens_out") or 0, span.get("cost_usd") or 0.0
    if tin or tout or cost:
        if attrs.get("tokens_estimated") is True:  # no usage from the server: counts (and cost) are estimates
            rows.append(("usage", f"~{tokens(tin)} in → ~{tokens(tout)} out · ~{usd(cost)} "
                                  "(estimated: the server reported no usage)"))
        else:
            rows.append(("usage", f"{tokens(tin)} in → {tokens(tout)} out · {usd(cost)}"))
    rows.append(("span", f"{printable(span.get('id'))}" + (f" · parent {printable(span.get('parent_id'))}"
                                                             if span.get("parent_id") else "")))
    for label, value in rows:
        out.append(f"{label:<6} ", style="dim")
        out.append(value + "\n")
    if attrs.get("error"):
        out.append("\nERROR", style="bold red")
        if attrs.get("error_kind"):
            out.append(f" ({printable(attrs['error_kind'], limit=40)})", style="red")
        out.append("\n")
        out.append(_value_text(attrs["error"]) + "\n", style="red")
    if attrs.get("reason"):
        out.append("\nREASON", style="bold")
        out.append(" (the model's own words)\n", style="dim")
        out.append(_value_text(attrs["reason"]) + "\n")
    _section(out, "INPUT", attrs, INPUT_KEYS.get(kind, ()))
    _section(out, "OUTPUT", attrs, OUTPUT_KEYS.get(kind, ()))
    known = set(INPUT_KEYS.get(kind, ())) | set(OUTPUT_KEYS.get(kind, ())) | set(SPECIAL_KEYS)
    other = tuple(k for k in attrs if k not in known)
    _section(out, "OTHER", attrs, other)
    out.append("\nj: raw JSON", style="dim")
    return out


def span_crumb(span: dict[str, Any] | None) -> str | None:
    """The run view's breadcrumb for the selected span below the run: `llm planner`, `tool crm_lookup`."""
    if not span or not span.get("name") or span.get("kind") == "run":
        return None
    return f"{span.get('kind') or 'span'} {printable(span.get('name'), limit=40)}"


def run_summary(run: RunRow | None, run_id: str, now: float, width: int = 160,
                degraded: Sequence[DegradedCall] = (), crumb: str | None = None) -> Text:
    """The run view's title: identity, status (word and colour), timing, resumes; the error on a second line (for
    a completed (degraded) run: what was withheld). The first line fits `width`: the start time goes first, then
    the tenant (never a cut word). It starts with where the operator is (`Runs › RUN id`: esc goes back one level,
    to the runs table), and the selected span's `crumb` after it when one is selected (`› llm planner`)."""
    out = Text(end="")
    out.append("Runs › ", style="dim")
    if run is None:
        out.append(f"RUN {printable(run_id, limit=40)}", style="bold")
        return out
    out.append("RUN ", style="bold")
    out.append(printable(run.id), style="bold")
    if crumb:  # the status that follows is the run's, not the span's: say so
        out.append(" › ", style="dim")
        out.append(crumb)
        out.append("   run", style="dim")
    out.append("  ")
    degraded = degraded if run.status == "completed" else ()
    out.append_text(run_status_text(run.status, bool(degraded)))
    out.append(f"  {printable(run.hierarchy, limit=40)}")
    extras: list[tuple[int, Text]] = []  # (keep priority: higher stays longer, piece) in the order shown
    if run.tenant:
        extras.append((2, Text(f" · tenant {printable(run.tenant, limit=30)}")))
    started, ended = run.started, run.ended
    if started:
        extras.append((1, Text(f" · started {clock_ms(started, with_date=False)}")))
        extras.append((3, Text(f" · took {duration(ended - started)}" if ended else
                               f" · running {duration(now - started)}")))
    if run.resumed:  # a durable run that came back after its engine died
        piece = Text(" · ")
        piece.append(f"resumed {run.resumed}× · {run.replayed_steps} steps replayed", style="bold cyan")
        extras.append((4, piece))
    room = width - 2  # the title's padding
    for drop in sorted({p for p, _ in extras}):
        if out.cell_len + sum(t.cell_len for _, t in extras) <= room:
            break
        extras = [(p, t) for p, t in extras if p != drop]
    for _, piece in extras:
        out.append_text(piece)
    out.append("\n")
    if run.status == "needs_reconcile":
        out.append("decide: ", style="bold")
        out.append(f"flightdeck reconcile {printable(run.id)}", style="bold black on yellow")
        out.append(" · ")
        out.append(printable(run.error or "a side effect's outcome is unknown", limit=width * 2), style="yellow")
    elif degraded:
        out.append("withheld: ", style="bold yellow")
        out.append(printable(degraded_summary(degraded), limit=width * 2), style="yellow")
    elif run.error:
        out.append("error: ", style="bold red")
        out.append(printable(run.error, limit=width * 2), style="red")
    elif run.status == "completed" and run.output is not None:
        out.append("output: ", style="dim")
        out.append(compact_json(run.output, limit=width * 2))
    return out


class SpanDetail(TextPane):
    """The selected span's detail. A TextPane: showing another span repaints only this pane's visible lines."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(span_detail(None, raw=False, now=0.0), id=id)
        self.span: dict[str, Any] | None = None
        self.raw = False

    def show(self, span: dict[str, Any] | None, now: float) -> None:
        same = span is not None and self.span is not None and span.get("id") == self.span.get("id")
        self.span = span
        self.set_text(span_detail(span, raw=self.raw, now=now), keep_scroll=same)


class UsagePanel(TextLines):
    """Per-run tokens and cost so far. Budget gauges take this place when the budgets issue lands."""

    DEFAULT_CSS = """
    UsagePanel {
        height: 3;
        padding: 0 1;
        background: $boost;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("", id=id)

    def show(self, run: RunRow | None) -> None:
        if run is None:
            self.update(Text("usage: -", style="dim"))
            return
        out = Text(end="")
        out.append("used   ", style="dim")
        out.append(f"{tokens(run.tokens_in)} in · {tokens(run.tokens_out)} out tokens · ", style="bold")
        out.append(usd(run.cost_usd), style="bold")
        out.append("\ncalls  ", style="dim")
        out.append(f"{run.model_calls or 0} model · {run.tool_calls or 0} tool")
        if run.status == "running":
            out.append(f" · {run.agents_active or 0} agents active")
        out.append("\nbudget ", style="dim")
        out.append("gauges above: limits, burn rate and time to exhaustion", style="dim")
        self.update(out)


def _span_event_text(event: EventRow, data: dict[str, Any]) -> str:
    parts = [printable(data.get("kind") or "span", limit=12), printable(event.name or data.get("name"),
                                                                         limit=48)]
    if event.kind == "span.ended":
        look = span_look(data.get("status"))
        parts.append(f"{look.glyph} {look.word}")
        tin, tout = data.get("tokens_in") or 0, data.get("tokens_out") or 0
        if tin or tout:
            parts.append(f"{tokens(tin)}→{tokens(tout)} tok")
        if data.get("cost_usd"):
            parts.append(usd(data["cost_usd"]))
        if data.get("model") and data.get("kind") == "llm" and data.get("model") != event.name:
            parts.append(printable(data["model"], limit=40))
    return "  ".join(parts)


def event_line(event: EventRow) -> str:
    """One log line per event: time, kind, agent, then what happened. Plain text (Log never parses markup) with
    control characters escaped."""
    data = event.data
    kind = event.kind or ""
    if kind in ("span.started", "span.ended") and isinstance(data, dict):
        what = _span_event_text(event, data)
    elif kind == "run.ended" and isinstance(data, dict):
        look = run_look(data.get("status"))
        what = f"run {look.glyph} {look.word}"
        if data.get("cost_usd") is not None:
            what += f"  {tokens((data.get('tokens_in') or 0) + (data.get('tokens_out') or 0))} tok  " \
                    f"{usd(data.get('cost_usd'))}"
        if data.get("error"):
            what += f"  error: {printable(data['error'], limit=200)}"
    else:
        name = printable(event.name or "", limit=48)
        rest = "" if data in (None, {}, "") else compact_json(data, limit=240)
        what = f"{name}  {rest}".strip()
    agent = printable(event.agent or "-", limit=20)
    return f"{clock_ms(event.ts)}  {printable(kind, limit=20):<13} {agent:<18} {what}".rstrip()


class EventTail(PassStyle, QuietVirtualSize, Log):
    """The run's events as they are committed. Log (not RichLog): plain lines, cheap enough for 1,000 lines/s.
    New lines do not re-lay out the screen (QuietVirtualSize), and a paint reads the base style once (PassStyle)."""

    DEFAULT_CSS = """
    EventTail {
        background: $surface;
        overflow-x: hidden;
    }
    """

    MAX_LINES = 3000

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(max_lines=self.MAX_LINES, auto_scroll=True, id=id)
        self.count = 0
        # Rendered lines by (text, base style), and cropped ones by (index, text, ...): keyed by the text itself, a
        # line never comes back stale, whatever was dropped or written since. Log has a cache for this but
        # (Textual 8.2) only fills it while text is selected, so every visible line was re-rendered every frame.
        self._strips: LRUCache[tuple[str, Style], Strip] = LRUCache(256)
        self._cropped: LRUCache[tuple[int, str, int, int, Style], Strip] = LRUCache(128)

    def _render_line_strip(self, y: int, rich_style: Style) -> Strip:
        if self.text_selection is not None:  # selected text is highlighted: Log's own path
            return super()._render_line_strip(y, rich_style)
        key = (self._lines[y], rich_style)
        strip = self._strips.get(key)
        if strip is None:
            strip = self._strips[key] = super()._render_line_strip(y, rich_style)
        return strip

    def _render_line(self, y: int, scroll_x: int, width: int) -> Strip:
        # The cropped strip too (Log crops it and tags it with its offsets on every paint): lines that only moved
        # up are then nearly free. `y` is in the key because the offsets are (text selection uses them).
        if self.text_selection is not None or y >= len(self._lines):
            return super()._render_line(y, scroll_x, width)
        key = (y, self._lines[y], scroll_x, width, self.rich_style)
        strip = self._cropped.get(key)
        if strip is None:
            strip = self._cropped[key] = super()._render_line(y, scroll_x, width)
        return strip

    def clear(self) -> Self:
        self._strips.clear()
        self._cropped.clear()
        super().clear()
        self.refresh()  # Log.clear relied on its new (empty) virtual size to repaint: see QuietVirtualSize
        return self

    def write_lines(self, lines: Iterable[str], scroll_end: bool | None = None) -> Self:
        """Log.write_lines, minus what it cost on every poll and plus what it got wrong at the line limit:

        - no thread worker measuring the new lines' width (overflow-x is hidden: the tail never scrolls sideways,
          so the virtual width is never used), hence no message and no second refresh per write;
        - once the tail holds MAX_LINES, Log drops the oldest lines but refreshes only the rows below the bottom
          edge (the scroll position does not change), so the screen kept showing old lines: repaint when lines
          were dropped;
        - while the operator reads (not following), dropped lines would slide the text up under them: the view
          moves up by as many lines, so what they read stays put (until it is itself dropped);
        - lines arriving below a paused reader's view only move the scrollbar (no repaint of the text)."""
        follow = (self.auto_scroll if scroll_end is None else scroll_end) and \
            not self.is_vertical_scrollbar_grabbed and self.is_vertical_scroll_end
        new_lines = [part for line in lines for part in line.splitlines()]
        if not new_lines:
            return self
        top = int(self.scroll_offset.y)
        first_new = len(self._lines)
        self._lines.extend(new_lines)
        dropped = max(0, len(self._lines) - (self.max_lines or len(self._lines)))
        if dropped:
            self._prune_max_lines()
        self.virtual_size = Size(self._width, len(self._lines))
        if follow:
            self.scroll_end(animate=False, immediate=True, x_axis=False)
            self.refresh()
        elif dropped:
            self.scroll_to(y=max(0, top - dropped), animate=False, immediate=True, force=True)
            self.refresh()
        elif first_new < top + self.size.height:
            self.refresh()
        return self

    def add_events(self, events: list[EventRow], skipped: int = 0) -> None:
        lines = []
        if skipped:
            count = f"{skipped:,} " if skipped > 0 else ""
            lines.append(f"… {count}earlier events not shown here (`flightdeck trace RUN` has everything)")
        lines.extend(event_line(e) for e in events[-self.MAX_LINES:])
        if lines:
            self.write_lines(lines)
            self.count += len(events)
