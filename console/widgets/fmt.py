"""Compact figures for tables and labels (the CLI's longer forms live in console/output.py)."""

from __future__ import annotations

import time

from rich.text import Text

from console.output import tokens, usd


def compact_age(seconds: float | None) -> str:
    """12s, 4m, 3h, 2d: fits a 4-column cell."""
    if seconds is None:
        return "-"
    s = max(0.0, seconds)
    if s < 60:
        return f"{int(s)}s"
    if s < 3600:
        return f"{int(s // 60)}m"
    if s < 86400:
        return f"{int(s // 3600)}h"
    return f"{int(s // 86400)}d"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


def clock_time(ts: float | None, with_date: bool = False) -> str:
    if not ts:
        return "-"
    fmt = "%Y-%m-%d %H:%M:%S" if with_date else "%H:%M:%S"
    return time.strftime(fmt, time.localtime(ts)) + f".{int((ts % 1) * 1000):03d}"


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


__all__ = ["compact_age", "duration", "clock_time", "cost_bar", "tokens", "usd"]
