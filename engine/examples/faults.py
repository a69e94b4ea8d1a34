"""Fault injection for the example tools: make a named tool fail at a given rate, reproducibly, or hang.

By default nothing fails. The demo scenario calls `set_fault_rate("competitor_research", 0.5, seed=7)` to show
retries and breakers on a flaky dependency; drills (engine/drills/) use `set_fault_delay` for a slow tool and
`set_fault_hang` for one that never returns; tests call `clear()` afterwards.
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
_hanging: set[str] = set()
_hung_now: dict[str, int] = {}  # calls hanging right now, by tool: what a test waits on before acting
# What hung calls wait on: set by clear(), so a hung worker thread never outlives the drill or test that hung it.
_release = threading.Event()
_lock = threading.Lock()


class HungCallReleased(InjectedFault):
    """A hung call let go by clear(): it fails rather than carrying on, so a side effect never lands late."""


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


def set_fault_hang(tool_name: str, hang: bool = True) -> None:
    """Make every call of ``tool_name`` hang: it never returns until ``clear()`` lets it go (then it fails)."""
    with _lock:
        if hang:
            _hanging.add(tool_name)
        else:
            _hanging.discard(tool_name)


def hung_calls(tool_name: str) -> int:
    """How many calls of ``tool_name`` are hanging right now."""
    with _lock:
        return _hung_now.get(tool_name, 0)


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
    global _release
    with _lock:
        _rates.clear()
        _delays.clear()
        _injections.clear()
        _hanging.clear()
        released, _release = _release, threading.Event()
    released.set()


def maybe_fail(tool_name: str) -> None:
    """Hang if told to, wait out a configured delay, then raise InjectedFault if a fault rate is configured for
    ``tool_name`` and this call draws it. Tools call it first thing, on their worker thread."""
    with _lock:
        delay = _delays.get(tool_name, 0.0)
        hang = _release if tool_name in _hanging else None
    if hang is not None:
        with _lock:
            _hung_now[tool_name] = _hung_now.get(tool_name, 0) + 1
        try:
            hang.wait()  # no timeout: a hung upstream; only the runtime's deadline (or clear()) ends the wait for it
        finally:
            with _lock:
                _hung_now[tool_name] -= 1
        raise HungCallReleased(f"{tool_name}: a hung call was released (injected hang)")
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
