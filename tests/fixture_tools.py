"""Small real tools for the fixture hierarchies in tests/fixtures/hierarchies/.

They do real work on their arguments (so a test can check a tool result end to end) and keep any side effect in
a process-local journal that tests read and reset.
"""

from __future__ import annotations

import itertools
import threading
from typing import Any

import anyio

_INVENTORY: dict[str, dict[str, Any]] = {
    "apple": {"sku": "apple", "price": 0.5, "stock": 120},
    "pear": {"sku": "pear", "price": 0.75, "stock": 40},
    "plum": {"sku": "plum", "price": 1.25, "stock": 0},
}

_journal: list[dict[str, Any]] = []
_journal_lock = threading.Lock()
_journal_ids = itertools.count(1)


def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: The first addend.
        b: The second addend.
    """
    return a + b


def echo(text: str, times: int = 1) -> str:
    """Repeat a text.

    Args:
        text: What to repeat.
        times: How many times.
    """
    if times < 0:
        raise ValueError("times cannot be negative")
    return text * times


def lookup(sku: str) -> dict[str, Any]:
    """Look up an inventory item by SKU.

    Args:
        sku: One of the known SKUs.
    """
    try:
        return dict(_INVENTORY[sku])
    except KeyError:
        raise ValueError(f"unknown sku {sku!r}; known: {', '.join(sorted(_INVENTORY))}") from None


async def fetch_status(service: str) -> dict[str, Any]:
    """Report a service's status (an async tool).

    Args:
        service: The service name.
    """
    await anyio.sleep(0)  # a real suspension point, so the runtime really awaits this tool
    healthy = not service.startswith("broken")
    return {"service": service, "healthy": healthy}


def record(note: str, amount: float = 0.0) -> dict[str, Any]:
    """Write a note to the journal (a side effect).

    Args:
        note: What to write.
        amount: An amount attached to the note.
    """
    with _journal_lock:
        entry = {"id": f"J-{next(_journal_ids):04d}", "note": note, "amount": amount}
        _journal.append(entry)
    return dict(entry)


def fail(reason: str = "fixture failure") -> None:
    """Always raise (a tool that fails).

    Args:
        reason: The error message.
    """
    raise RuntimeError(reason)


def journal() -> list[dict[str, Any]]:
    with _journal_lock:
        return [dict(entry) for entry in _journal]


def clear_journal() -> None:
    with _journal_lock:
        _journal.clear()


NOT_CALLABLE = {"this": "is data"}


HOLD: list[anyio.Event] = []  # a test puts an event here: `held` waits for it


async def held(note: str) -> str:
    """Wait until the test lets it go (an event in HOLD), then echo the note.

    Args:
        note: Anything.
    """
    if HOLD:
        await HOLD[0].wait()
    return note
