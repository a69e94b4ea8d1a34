"""Fault injection for the example tools: make a named tool fail at a given rate, reproducibly.

By default nothing fails. The demo scenario calls `set_fault_rate("competitor_research", 0.5, seed=7)` to show
retries and breakers on a flaky dependency; tests call `clear()` afterwards.
"""

from __future__ import annotations

import random
import threading


class InjectedFault(RuntimeError):
    """The failure an example tool raises when the injector says so. Looks like a flaky upstream to the runtime."""


_rates: dict[str, tuple[float, random.Random]] = {}
_lock = threading.Lock()


def set_fault_rate(tool_name: str, rate: float, seed: int | None = None) -> None:
    """Make ``tool_name`` fail on about ``rate`` of its calls (0 never, 1 always); ``seed`` fixes the sequence."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"fault rate must be between 0 and 1, got {rate}")
    with _lock:
        if rate == 0.0:
            _rates.pop(tool_name, None)
        else:
            _rates[tool_name] = (rate, random.Random(seed))


def fault_rate(tool_name: str) -> float:
    with _lock:
        entry = _rates.get(tool_name)
        return entry[0] if entry else 0.0


def clear() -> None:
    with _lock:
        _rates.clear()


def maybe_fail(tool_name: str) -> None:
    """Raise InjectedFault if a fault is configured for ``tool_name`` and this call draws it."""
    with _lock:
        entry = _rates.get(tool_name)
        if entry is None:
            return
        rate, rng = entry
        failed = rng.random() < rate
    if failed:
        raise InjectedFault(f"{tool_name}: upstream service unavailable (injected fault, rate {rate:g})")
