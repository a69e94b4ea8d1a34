"""STATE_VERSION: a process-wide count of breaker transitions, for whoever caches a conclusion drawn from breaker
states (the runtime's withheld tools) and compares this number instead of asking every breaker again."""

from __future__ import annotations

import threading

__all__ = ["STATE_VERSION", "StateVersion"]


class StateVersion:
    """Counts breaker transitions, process-wide. Bumped under its own lock, inside the breaker's lock, after the new
    state is visible: a reader that sees the new number sees the new state."""

    __slots__ = ("_lock", "value")

    def __init__(self) -> None:
        self.value = 0
        self._lock = threading.Lock()

    def bump(self) -> None:
        with self._lock:
            self.value += 1


STATE_VERSION = StateVersion()
