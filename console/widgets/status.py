"""Status words, glyphs and colours. Colour is never the only signal: every status is also a word (and a glyph),
so the console reads the same on a monochrome terminal, to a colour-blind operator, and in a screenshot."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text

from console.widgets.safe import printable


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
    "running": StatusLook("▶", "running", "bold cyan", 6),
    "completed": StatusLook("✔", "completed", "green", 7),
}

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


def run_look(status: str | None) -> StatusLook:
    look = RUN_STATUS.get(status or "")
    return look if look is not None else StatusLook(_UNKNOWN.glyph, printable(status or "unknown", limit=16),
                                                    _UNKNOWN.style, _UNKNOWN.severity)


def span_look(status: str | None) -> StatusLook:
    look = SPAN_STATUS.get(status or "")
    return look if look is not None else StatusLook(_UNKNOWN.glyph, printable(status or "unknown", limit=16),
                                                    _UNKNOWN.style, _UNKNOWN.severity)


def run_status_text(status: str | None) -> Text:
    look = run_look(status)
    return Text(f"{look.glyph} {look.word}", style=look.style, no_wrap=True, end="")


def span_status_text(status: str | None) -> Text:
    look = span_look(status)
    return Text(f"{look.glyph} {look.word}", style=look.style, no_wrap=True, end="")
