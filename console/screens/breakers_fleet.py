"""The breakers view on a fleet (a Postgres store): each engine keeps its own breakers (its own view of a dependency)
and publishes them under its engine id; the table shows one row per breaker (the worst view of it, pg/reader.py) and
ENGINES says how many of the engines publishing it see it open: `2/3 open`. A breaker one engine sees open while the
others still call through is one engine's trouble (its network, its region); all of them: the dependency's."""

from __future__ import annotations

from dataclasses import replace

from rich.text import Text

from console.widgets.virtual_table import Column
from engine.store.trace_rows import BreakerFleetRow

# Beside STATE, the fleet's column. On a narrow terminal SINCE goes first (the selected breaker's story under the
# table says when it opened), so at 100 columns the fleet's count stays.
ENGINES_COLUMN = Column("engines", "ENGINES", 9, align="right", drop=1)

FleetCounts = dict[tuple[str, str], BreakerFleetRow]


def with_fleet_column(columns: tuple[Column, ...]) -> tuple[Column, ...]:
    columns = tuple(replace(c, drop=2) if c.key == "since" else c for c in columns)
    at = next(i for i, c in enumerate(columns) if c.key == "state") + 1
    return (*columns[:at], ENGINES_COLUMN, *columns[at:])


def fleet_cell(counts: BreakerFleetRow | None) -> Text:
    if counts is None or not counts.engines:
        return Text("-", style="dim", end="")
    if counts.open:
        style = "bold white on red" if counts.open == counts.engines else "bold red"
        return Text(f"{counts.open}/{counts.engines} open", style=style, end="")
    return Text(f"0/{counts.engines} open", style="green", end="")


def fleet_words(counts: BreakerFleetRow | None) -> str:
    """For the selected breaker's story: who sees it open."""
    if counts is None or not counts.engines:
        return ""
    if counts.open == counts.engines:
        return f" · every engine ({counts.engines}) sees it open"
    if counts.open:
        return f" · {counts.open} of {counts.engines} engines see it open"
    return f" · closed on all {counts.engines} engines"
