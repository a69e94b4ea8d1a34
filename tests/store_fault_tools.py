"""Tools for the store-fault tests (tests/engine/test_store_faults.py): a side effect outside the store that a test can
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


def witness(note: str) -> str:
    """A side effect that first checks the store already knows about it: its tool span's start (with this note as
    its argument and a call id) must be committed to traces.db ($FLIGHTDECK_TEST_STORE) before it runs.

    Args:
        note: A note unique to this call.
    """
    import sqlite3

    path = os.path.join(os.environ["FLIGHTDECK_TEST_STORE"], "traces.db")
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        found = conn.execute("SELECT count(*) FROM spans WHERE name = 'witness' AND "
                             "json_extract(attributes, '$.args.note') = ? AND "
                             "json_extract(attributes, '$.call_id') IS NOT NULL", (note,)).fetchone()[0]
    finally:
        conn.close()
    if found != 1:
        raise RuntimeError(f"side effect {note} is running before its start was committed")
    return "witnessed"
