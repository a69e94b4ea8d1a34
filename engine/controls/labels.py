"""How control rows read in the audit log, in errors and on screen."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

# The word for a scope's target, in "a run kill switch needs a target (the run id)".
TARGET_WORD = {"run": "run id", "agent": "agent name", "tool": "tool name", "hierarchy": "hierarchy name"}


def clock_text(ts: float | None, now: float | None = None) -> str:
    """12:03:04 for today-ish times (what an operator compares with the wall clock), the full date otherwise."""
    if ts is None:
        return "an unknown time"
    now = time.time() if now is None else now
    fmt = "%H:%M:%S" if abs(now - ts) < 12 * 3600 else "%Y-%m-%d %H:%M:%S"
    return time.strftime(fmt, time.localtime(ts))


def switch_label(row: Mapping[str, Any]) -> str:
    """How a kill switch's scope reads in the audit log and on screen: `run:abc`, `agent:planner in run:abc`."""
    if row["scope"] == "global":
        return "global"
    label = f"{row['scope']}:{row['target']}"
    return f"{label} in run:{row['run_id']}" if row.get("run_id") else label


def flag_scope_label(scope: str, target: str | None) -> str:
    return "global" if scope == "global" else f"{scope}:{target}"
