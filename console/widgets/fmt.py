"""A cost against its budget as a text bar, for tables and gauges. Figures are console.output's (tokens, usd), times
and durations engine.timefmt's."""

from __future__ import annotations

from rich.text import Text

from console.output import usd


def cost_bar(cost: float, budget: float | None, width: int = 6) -> Text:
    """A text bar against a budget, with the percentage as the word (never colour alone); the figure when there
    is no budget."""
    if not budget or budget <= 0:
        return Text(usd(cost), end="")
    share = cost / budget
    filled = max(0, min(width, round(share * width)))
    style = "green" if share < 0.7 else "bold yellow" if share < 1.0 else "bold red"
    text = Text("█" * filled + "░" * (width - filled), style=style, end="")
    text.append(f" {share * 100:.0f}%", style=style)
    return text


__all__ = ["cost_bar"]
