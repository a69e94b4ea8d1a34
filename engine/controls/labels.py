"""How control rows read in the audit log, in errors and on screen (their times: engine.timefmt.clock_text)."""

from __future__ import annotations

# The word for a scope's target, in "a run kill switch needs a target (the run id)".
TARGET_WORD = {"run": "run id", "agent": "agent name", "tool": "tool name", "hierarchy": "hierarchy name"}


def switch_label(scope: str, target: str | None, run_id: str | None = None) -> str:
    """How a kill switch's scope reads in the audit log and on screen: `run:abc`, `agent:planner in run:abc`."""
    if scope == "global":
        return "global"
    label = f"{scope}:{target}"
    return f"{label} in run:{run_id}" if run_id else label


def flag_scope_label(scope: str, target: str | None) -> str:
    return "global" if scope == "global" else f"{scope}:{target}"
