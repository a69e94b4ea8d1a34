"""Human durations ("300ms", "5s", "2m", "1h", "1d") as float seconds, shared by hierarchy, runbook and CLI parsing."""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import BeforeValidator

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
# Longer than any timeout, window or deadline means anything; beyond it, timers and sleeps overflow.
MAX_DURATION_S = 366 * 86400.0


def parse_duration(value: Any) -> float:
    """Seconds from a number (seconds) or a string like '250ms', '30s', '2m'. Raises ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like '30s' or '2m', got {value!r}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return _bounded(float(value), value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return _bounded(float(match.group(1)) * _UNIT_SECONDS[match.group(2)], value)
    raise ValueError(f"expected a duration like '30s', '2m' or '250ms', got {value!r}")


def _bounded(seconds: float, given: Any) -> float:
    if not math.isfinite(seconds):
        raise ValueError(f"a duration must be a finite number, got {given!r}")
    if seconds > MAX_DURATION_S:
        raise ValueError(f"a duration must be at most 366 days, got {given!r}")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]
