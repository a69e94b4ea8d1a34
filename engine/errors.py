"""Error types shared by the engine. Every error an operator can cause names where it came from."""

from __future__ import annotations


class FlightdeckError(Exception):
    """Base for errors the CLI turns into a message and an exit code instead of a traceback."""

    exit_code: int = 1


class InputError(FlightdeckError):
    """Bad input from a person: a hierarchy, runbook or config file, a CLI argument.

    Rendered as ``file:line: field: message`` so an operator can jump straight to the problem.
    """

    exit_code = 2

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 field: str | None = None) -> None:
        self.message = message
        self.file = file
        self.line = line
        self.field = field
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ""
        if self.file:
            where = self.file + (f":{self.line}" if self.line else "") + ": "
        elif self.line:
            where = f"line {self.line}: "
        what = f"{self.field}: " if self.field else ""
        return f"{where}{what}{self.message}"


class InputErrors(InputError):
    """Several input problems found in one pass; all are reported, not just the first."""

    def __init__(self, errors: list[InputError]) -> None:
        self.errors = errors
        first = errors[0]
        super().__init__(first.message, file=first.file, line=first.line, field=first.field)

    def __str__(self) -> str:
        return "\n".join(str(e) for e in getattr(self, "errors", [])) or super().__str__()


class StoreError(FlightdeckError):
    """The store directory cannot be used as asked."""

    exit_code = 3


class StoreLocked(StoreError):
    """Another engine process holds the store's lock."""


class StoreDamaged(StoreError):
    """A store file is not a usable SQLite database (corrupt, truncated, or not ours)."""


class EngineFenced(StoreError):
    """Another engine on the shared Postgres store took this engine's runs while it stalled: it must stop (issue 16,
    engine/runtime/durable_fence.py). A StoreError: exit code 3, like a trace store that failed."""


class StoreTooNew(StoreError):
    """The store was written by a newer Flightdeck whose schema this version does not know."""
