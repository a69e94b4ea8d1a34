"""Fault injection for the example tools: make a named tool fail at a given rate, reproducibly, or hang.

By default nothing fails. The demo scenario calls `set_fault_rate("competitor_research", 0.5, seed=7)` to show
retries and breakers on a flaky dependency; drills (engine/drills/) use `set_fault_delay` for a tool that hangs;
tests call `clear()` afterwards.
"""

from __future__ import annotations

import random
import threading
import time


class InjectedFault(RuntimeError):
    """The failure an example tool raises when the injector says so. Looks like a flaky upstream to the runtime."""


_rates: dict[str, tuple[float, random.Random]] = {}
_delays: dict[str, float] = {}
_injections: dict[str, str] = {}
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


def set_fault_delay(tool_name: str, seconds: float) -> None:
    """Make every call of ``tool_name`` take ``seconds`` longer (a hanging upstream); 0 removes the delay."""
    if seconds < 0:
        raise ValueError(f"fault delay must not be negative, got {seconds}")
    with _lock:
        if seconds == 0:
            _delays.pop(tool_name, None)
        else:
            _delays[tool_name] = seconds


def set_injection(tool_name: str, text: str | None) -> None:
    """Plant ``text`` (a prompt-injection attack) in the free-text part of ``tool_name``'s results, as an outsider
    who can write to that data (a CRM note, a contract) would; None removes it."""
    with _lock:
        if text is None:
            _injections.pop(tool_name, None)
        else:
            _injections[tool_name] = text


def injection(tool_name: str) -> str | None:
    with _lock:
        return _injections.get(tool_name)


def clear() -> None:
    with _lock:
        _rates.clear()
        _delays.clear()
        _injections.clear()


def maybe_fail(tool_name: str) -> None:
    """Wait out a configured delay, then raise InjectedFault if a fault rate is configured for ``tool_name`` and
    this call draws it. Tools call it first thing, on their worker thread."""
    with _lock:
        delay = _delays.get(tool_name, 0.0)
    if delay:
        time.sleep(delay)  # a sync tool on a worker thread: blocking here is what a hung upstream looks like
    with _lock:
        entry = _rates.get(tool_name)
        if entry is None:
            return
        rate, rng = entry
        failed = rng.random() < rate
    if failed:
        raise InjectedFault(f"{tool_name}: upstream service unavailable (injected fault, rate {rate:g})")
