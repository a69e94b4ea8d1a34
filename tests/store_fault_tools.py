"""Tools for the store-fault tests (tests/test_store_faults.py): a side effect outside the store that a test can
count (a line appended to the file named by $FLIGHTDECK_TEST_JOURNAL), and a slow read-only step."""

from __future__ import annotations

import os
import time

import anyio


def record(note: str) -> str:
    """Append a line to the side-effect journal (a real write outside the store).

    Args:
        note: What to write.
    """
    path = os.environ["FLIGHTDECK_TEST_JOURNAL"]
    with open(path, "a", encoding="utf-8") as journal:
        journal.write(f"{time.time():.6f} {note}\n")
    return "recorded"


async def pause(seconds: float, step: int = 0) -> str:
    """Wait a while, like a slow read-only lookup.

    Args:
        seconds: How long.
        step: Which step this is (calls with different steps are not a loop).
    """
    await anyio.sleep(seconds)
    return "waited"


def read_journal(path: str) -> list[tuple[float, str]]:
    """The journal's lines as (time written, note)."""
    try:
        with open(path, encoding="utf-8") as journal:
            lines = journal.read().splitlines()
    except FileNotFoundError:
        return []
    return [(float(line.split(" ", 1)[0]), line.split(" ", 1)[1]) for line in lines if line]
