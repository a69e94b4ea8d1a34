"""Status words, glyphs and colours. Colour is never the only signal: every status is also a word (and a glyph),
so the console reads the same on a monochrome terminal, to a colour-blind operator, and in a screenshot."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.text import Text

from console.widgets.safe import printable
from engine.store.trace_rows import DegradedCall


@dataclass(frozen=True, slots=True)
class StatusLook:
    glyph: str
    word: str
    style: str
    severity: int  # sort order when sorting by status: 0 = needs attention first


RUN_STATUS: dict[str, StatusLook] = {
    # A durable run whose side effect's outcome is unknown: it waits for an operator (`flightdeck reconcile RUN`).
    # First when sorting by status: nothing else happens to it until someone decides.
    "needs_reconcile": StatusLook("⚠", "reconcile", "bold black on yellow", -1),
    "failed": StatusLook("✖", "failed", "bold red", 0),
    "killed": StatusLook("■", "killed", "bold red", 1),
    "budget_exceeded": StatusLook("$", "over budget", "bold magenta", 2),
    "loop_detected": StatusLook("↻", "loop", "bold magenta", 3),
    "abandoned": StatusLook("?", "abandoned", "yellow", 4),
    "refused": StatusLook("⊘", "refused", "yellow", 5),
    "running": StatusLook("▶", "running", "bold cyan", 7),
    "completed": StatusLook("✔", "completed", "green", 8),
}
# A completed run that went without a tool call the engine withheld or an operator denied (safe mode, an open
# breaker, a kill switch on the tool, a denied approval): not a plain green "completed". Its own word and glyph, so
# it never rests on colour alone; a problem (the `p` filter lists it).
DEGRADED_WORD = "completed (degraded)"
DEGRADED_LOOK = StatusLook("◐", DEGRADED_WORD, "bold yellow", 6)

SPAN_STATUS: dict[str, StatusLook] = {
    "error": StatusLook("✖", "error", "bold red", 0),
    "timeout": StatusLook("✖", "timeout", "bold red", 1),
    "validation_failed": StatusLook("✖", "invalid", "bold red", 2),
    "denied": StatusLook("⊘", "denied", "bold red", 3),
    "budget_exceeded": StatusLook("$", "over budget", "bold magenta", 4),
    "loop_detected": StatusLook("↻", "loop", "bold magenta", 5),
    "outcome_unknown": StatusLook("?", "unknown outcome", "yellow", 6),
    "cancelled": StatusLook("■", "cancelled", "yellow", 7),
    "abandoned": StatusLook("?", "abandoned", "yellow", 8),
    "running": StatusLook("▶", "running", "bold cyan", 9),
    "skipped": StatusLook("-", "skipped", "dim", 10),
    "ok": StatusLook("✔", "ok", "green", 11),
}

_UNKNOWN = StatusLook("?", "", "yellow", 50)

# How the hint line says what happened to a run ("This run failed").
RUN_OUTCOME = {
    "failed": "failed",
    "killed": "was killed",
    "budget_exceeded": "went over budget",
    "loop_detected": "was stopped in a loop",
    "abandoned": "was abandoned by a dead engine",
    "refused": "was refused",
    "completed": "completed",
    "running": "is running",
    "needs_reconcile": "waits for an operator to reconcile a side effect",
}

PROBLEM_RUN_STATUSES = frozenset({"failed", "killed", "budget_exceeded", "loop_detected", "abandoned", "refused",
                                  "needs_reconcile"})
PROBLEM_SPAN_STATUSES = frozenset({"error", "timeout", "validation_failed", "denied", "budget_exceeded",
                                   "loop_detected", "outcome_unknown", "abandoned"})


def run_look(status: str | None, degraded: bool = False) -> StatusLook:
    if degraded and status == "completed":
        return DEGRADED_LOOK
    look = RUN_STATUS.get(status or "")
    return look if look is not None else StatusLook(_UNKNOWN.glyph, printable(status or "unknown", limit=16),
                                                    _UNKNOWN.style, _UNKNOWN.severity)


def span_look(status: str | None) -> StatusLook:
    look = SPAN_STATUS.get(status or "")
    return look if look is not None else StatusLook(_UNKNOWN.glyph, printable(status or "unknown", limit=16),
                                                    _UNKNOWN.style, _UNKNOWN.severity)


def run_status_text(status: str | None, degraded: bool = False) -> Text:
    look = run_look(status, degraded)
    return Text(f"{look.glyph} {look.word}", style=look.style, no_wrap=True, end="")


def span_status_text(status: str | None) -> Text:
    look = span_look(status)
    return Text(f"{look.glyph} {look.word}", style=look.style, no_wrap=True, end="")


def degraded_summary(calls: Sequence[DegradedCall]) -> str:
    """What a degraded run went without, one clause per distinct (tool, reason), repeats counted."""
    counts: dict[tuple[str, str], int] = {}
    for call in calls:
        key = (call.tool, call.reason or f"{call.tool}: {call.kind}")
        counts[key] = counts.get(key, 0) + 1
    return "; ".join(printable(reason, limit=120) + (f" (×{n})" if n > 1 else "")
                     for (_, reason), n in counts.items())
