"""Compact figures for tables and labels. Times and durations come from engine.timefmt (re-exported here under the
names the screens import: `clock_time` is timefmt.clock_ms)."""

from __future__ import annotations

from rich.text import Text

from console.output import tokens, usd
from engine.timefmt import clock_ms as clock_time
from engine.timefmt import compact_age, duration


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


__all__ = ["clock_time", "compact_age", "cost_bar", "duration", "tokens", "usd"]
