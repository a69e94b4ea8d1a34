"""Tools for runtime guardrail tests, with switches a test flips to make them fail or hang."""

from __future__ import annotations

import threading

import anyio

FAILING: set[str] = set()
CALLS: list[str] = []
_lock = threading.Lock()
release_slow = threading.Event()


def flaky(key: str) -> str:
    """Fails while `key` is in FAILING.

    Args:
        key: Which switch to consult.
    """
    with _lock:
        CALLS.append(key)
    if key in FAILING:
        raise RuntimeError(f"{key} is down")
    return f"{key} ok"


async def slow(key: str) -> str:
    """Waits until the test releases it (bounded), so a call is in flight when the test acts.

    Args:
        key: A label.
    """
    with _lock:
        CALLS.append(key)
    await anyio.to_thread.run_sync(release_slow.wait, 30, abandon_on_cancel=True)
    return f"{key} done"


def lookup(key: str) -> dict[str, object] | None:
    """Rows on file for a key: `none` has no rows, `gone` no record at all (None), anything else one row.

    Args:
        key: What to look up.
    """
    if key == "gone":
        return None
    return {"key": key, "rows": [] if key == "none" else [{"id": 1}]}


def reset() -> None:
    FAILING.clear()
    CALLS.clear()
    release_slow.clear()
