"""Budget gauges: one line per budget dimension, as a text bar coloured by threshold PLUS the percentage in words.

    run      cost_usd  ████████████░░░░░░░░  61% of $0.50 · used $0.29 + $0.02 reserved · $0.04/min · out in 5m
    pricing  tokens    ████████████████████ 104% of 10k · OVER the limit

Rows come from TraceReader.budgets(run_id) (the `budgets` current-state table): scope `run` or `agent:SPANID`,
`agent`, `data` = {dimension: {used, reserved, limit, fraction, burn_rate_per_min, time_to_exhaustion_s}}. A
dimension is shown when it has a limit or any usage. Colour never carries meaning alone: the percentage and the
words ("near the limit", "OVER the limit") say the same thing.

A run that has ended spends nothing more: its gauges show the final spend against the limit, in the colour of the
run's status (a failed run's gauge is red even at 32%), with no burn rate, reservation or "out in":

    run      cost_usd  ████████████ 132% of $0.50 · final $0.66 · OVER the limit        (run over budget)
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from rich.text import Text

from console.output import tokens, usd
from console.widgets.safe import printable
from console.widgets.status import run_look
from console.widgets.text_pane import TextLines
from engine.timefmt import duration

if TYPE_CHECKING:
    from engine.store.trace_rows import BudgetRow

BAR_WIDTH = 12
MAX_LINES = 8
WARN_AT = 0.8
CRIT_AT = 1.0


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def amount(dimension: str, value: float | None) -> str:
    """A figure in the dimension's unit: dollars for cost, seconds for time, else a compact count."""
    if value is None:
        return "-"
    name = dimension.lower()
    if "usd" in name or "cost" in name or "dollar" in name:
        return usd(value)
    if name.endswith("_s") or name.endswith("seconds") or "time" in name:
        return duration(value)
    return tokens(int(round(value)))


def level(fraction: float | None) -> str:
    if fraction is None:
        return "none"
    if fraction >= CRIT_AT:
        return "crit"
    if fraction >= WARN_AT:
        return "warn"
    return "ok"


LEVEL_STYLE = {"ok": "green", "warn": "bold yellow", "crit": "bold red", "none": "dim"}


def bar(fraction: float | None, width: int = BAR_WIDTH) -> Text:
    style = LEVEL_STYLE[level(fraction)]
    if fraction is None:
        return Text("·" * width, style="dim", end="")
    filled = max(0, min(width, int(round(min(fraction, 1.0) * width))))
    out = Text(end="")
    out.append("█" * filled, style=style)
    out.append("░" * (width - filled), style="dim")
    return out


def decode_data(row: BudgetRow) -> dict[str, Any]:
    data = row.data
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except ValueError:
            return {}
    return data if isinstance(data, dict) else {}


# Run statuses whose gauges still move (the rest have ended: final figures).
LIVE_STATUSES = frozenset({"running", "needs_reconcile"})


def ended(status: str | None) -> bool:
    return status is not None and status not in LIVE_STATUSES


def final_gauge_line(label: str, dimension: str, used: float, limit: float, status: str,
                     label_width: int = 10) -> Text:
    """An ended run's gauge: final spend against the limit, in the run status's colour."""
    style = run_look(status).style
    fraction = used / limit
    filled = max(0, min(BAR_WIDTH, int(round(min(fraction, 1.0) * BAR_WIDTH))))
    line = Text(end="")
    line.append(f"{printable(label, limit=label_width):<{label_width}} ", style="bold")
    line.append(f"{printable(dimension, limit=12):<12} ")
    line.append("█" * filled, style=style)
    line.append("░" * (BAR_WIDTH - filled), style="dim")
    line.append(f" {fraction * 100:4.0f}% of {amount(dimension, limit)}", style=style)
    line.append(f" · final {amount(dimension, used)}")
    if fraction >= CRIT_AT:
        line.append(" · OVER the limit", style="bold red")
    return line


def gauge_line(label: str, dimension: str, figures: dict[str, Any], label_width: int = 10,
               status: str | None = None) -> Text | None:
    """One dimension's gauge, or None when it has neither a limit nor any usage. `status`: the run's; once it has
    ended, the final spend against the limit (final_gauge_line)."""
    used = _num(figures.get("used")) or 0.0
    reserved = _num(figures.get("reserved")) or 0.0
    limit = _num(figures.get("limit"))
    if not limit and not used and not reserved:
        return None
    if limit and status is not None and ended(status):
        return final_gauge_line(label, dimension, used, limit, status, label_width)
    fraction = _num(figures.get("fraction"))
    if fraction is None and limit:
        fraction = (used + reserved) / limit
    line = Text(end="")
    line.append(f"{printable(label, limit=label_width):<{label_width}} ", style="bold")
    line.append(f"{printable(dimension, limit=12):<12} ")
    line.append_text(bar(fraction if limit else None))
    lvl = level(fraction if limit else None)
    if limit:
        line.append(f" {fraction * 100:4.0f}% of {amount(dimension, limit)}", style=LEVEL_STYLE[lvl])
        if lvl == "crit":
            line.append(" OVER the limit", style="bold red")
        elif lvl == "warn":
            line.append(" near the limit", style="bold yellow")
    else:
        line.append(" no limit", style="dim")
    line.append(f" · used {amount(dimension, used)}")
    if reserved:
        line.append(f" +{amount(dimension, reserved)} reserved")
    rate = _num(figures.get("burn_rate_per_min"))
    if rate:
        line.append(f" · {amount(dimension, rate)}/min")
    left = _num(figures.get("time_to_exhaustion_s"))
    if limit and lvl != "crit":
        if left is not None:
            line.append(" · out in ", style="")
            line.append(duration(left), style="bold yellow" if left < 300 else "")
        elif rate:
            line.append(" · out in -")
    return line


def usage_words(dimension: str, figures: dict[str, Any], final: bool = False) -> str:
    """`cost_usd $0.0073 +$0.0054 res $0.44/min` for a dimension without a limit ("" when nothing is used); an
    ended run's (`final`): the final figure only."""
    used = _num(figures.get("used")) or 0.0
    reserved = _num(figures.get("reserved")) or 0.0
    if not used and not reserved:
        return ""
    text = f"{printable(dimension, limit=24)} {amount(dimension, used)}"
    if final:
        return text
    if reserved:
        text += f" +{amount(dimension, reserved)} res"
    rate = _num(figures.get("burn_rate_per_min"))
    if rate:
        text += f" {amount(dimension, rate)}/min"
    return text


def scope_label(row: BudgetRow) -> str:
    scope = str(row.scope or "")
    if scope == "run":
        return "run"
    return str(row.agent or scope.partition(":")[2] or scope)


def gauges_text(rows: list[BudgetRow], selected_span: str | None = None,
                selected_agent: str | None = None, status: str | None = None) -> Text:
    """The run's gauges, then the selected agent's (its span's scope when known, else any scope of that agent).
    `status`: the run's (final figures once it has ended)."""
    final = ended(status)
    out = Text(end="")
    lines: list[Text] = []
    run_rows = [r for r in rows if r.scope == "run"]
    agent_rows: list[BudgetRow] = []
    if selected_span:
        agent_rows = [r for r in rows if r.scope == f"agent:{selected_span}"]
    if not agent_rows and selected_agent:
        agent_rows = [r for r in rows if r.scope != "run" and r.agent == selected_agent]
    for row in run_rows + agent_rows:
        data = decode_data(row)
        unlimited: list[str] = []
        for dimension in sorted(data):
            figures = data[dimension]
            if not isinstance(figures, dict):
                continue
            if not _num(figures.get("limit")):
                part = usage_words(str(dimension), figures, final)
                if part:
                    unlimited.append(part)
                continue
            line = gauge_line(scope_label(row), str(dimension), figures, status=status)
            if line is not None:
                lines.append(line)
        if unlimited:  # dimensions with usage but no limit: one line, figures only
            line = Text(end="")
            line.append(f"{printable(scope_label(row), limit=10):<10} ", style="bold")
            line.append("no limit     ", style="dim")
            line.append(" · ".join(unlimited))
            lines.append(line)
    if not lines:
        out.append("BUDGETS ", style="bold")
        out.append("no limits recorded for this run" if not rows else "no limit or usage recorded", style="dim")
        return out
    out.append("BUDGETS", style="bold")
    worst = max((level_of_line(line) for line in lines), default=0)
    if final and status is not None:
        look = run_look(status)
        out.append("  final spend: the run ", style="dim")
        out.append(f"{look.glyph} {look.word}", style=look.style)
        if worst == 2:
            out.append(" · a limit was exceeded", style="bold red")
    elif worst == 2:
        out.append("  a limit is exhausted", style="bold red")
    elif worst == 1:
        out.append("  near a limit (>= 80%)", style="bold yellow")
    for line in lines:
        out.append("\n")
        out.append_text(line)
    return out


def level_of_line(line: Text) -> int:
    plain = line.plain
    return 2 if "OVER the limit" in plain else 1 if "near the limit" in plain else 0


class BudgetGauges(TextLines):
    """The run view's budget panel (height follows the number of gauges, at most 8 lines)."""

    DEFAULT_CSS = """
    BudgetGauges {
        height: 1;
        padding: 0 1;
        background: $boost;
    }
    """

    def __init__(self, id: str | None = None) -> None:
        super().__init__(Text("BUDGETS …", style="dim"), id=id)
        self.rows: list[BudgetRow] = []
        self.status: str | None = None  # the run's status: final figures once it has ended
        self.selected_span: str | None = None
        self.selected_agent: str | None = None

    def show(self, rows: list[BudgetRow] | None = None, *, selected_span: str | None = None,
             selected_agent: str | None = None, keep_selection: bool = False, status: str | None = None) -> None:
        if rows is not None:
            self.rows = rows
        if status is not None:
            self.status = status
        if not keep_selection:
            self.selected_span = selected_span
            self.selected_agent = selected_agent
        text = gauges_text(self.rows, self.selected_span, self.selected_agent, self.status)
        self.update(text)
        self.styles.height = min(MAX_LINES, len(text.plain.split("\n")))
