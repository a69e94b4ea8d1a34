"""Plain-text output helpers for the command line (no Rich: `flightdeck --version` must start in well under 0.5 s).
Times and durations are engine.timefmt's."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["pick", "print_json", "table", "tokens", "usd"]


def print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def pick(row: Any, fields: tuple[str, ...]) -> dict[str, Any]:
    """The JSON a `--json` listing prints of a row: `fields` of a typed row (engine.store.control_rows) or dict."""
    if isinstance(row, Mapping):
        return {name: row.get(name) for name in fields}
    return {name: getattr(row, name, None) for name in fields}


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], right: set[int] | None = None) -> str:
    right = right or set()
    text_rows = [[("" if c is None else str(c)) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in text_rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def fmt(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(widths[i]) if i in right else c.ljust(widths[i])
                         for i, c in enumerate(cells)).rstrip()

    return "\n".join([fmt(list(headers))] + [fmt(r) for r in text_rows])


def tokens(n: int | None) -> str:
    n = n or 0
    return f"{n / 1000:.1f}k" if n >= 10_000 else f"{n:,}"


def usd(value: float | None) -> str:
    value = value or 0.0
    return f"${value:.4f}" if value < 1 else f"${value:,.2f}"
