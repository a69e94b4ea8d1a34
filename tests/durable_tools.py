"""Tools for the durable-run tests (tests/durable_support.py): a side effect that writes a ledger line (the file named
by $FLIGHTDECK_TEST_LEDGER) with its call's idempotency key, and, once, kills its own process while it runs (when
$FLIGHTDECK_TEST_CRASH_MARKER names a file that does not exist yet): the crash that leaves its outcome unknown. With
$FLIGHTDECK_TEST_CRASH_BEFORE_AMOUNT it dies instead as the charge of that amount starts, before writing its line."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from engine.tool_context import current_tool_context


def charge(amount: int) -> dict[str, object]:
    """Charge the customer (a side effect outside the store).

    Args:
        amount: How much.
    """
    ctx = current_tool_context()
    before = os.environ.get("FLIGHTDECK_TEST_CRASH_BEFORE_AMOUNT")
    marker = os.environ.get("FLIGHTDECK_TEST_CRASH_MARKER")
    if before and int(before) == amount and marker and not Path(marker).exists():
        Path(marker).write_text("crashed")
        os.kill(os.getpid(), signal.SIGKILL)  # the engine dies as this charge starts: nothing charged yet
    line = {"amount": amount, "idempotency_key": None if ctx is None else ctx.idempotency_key,
            "attempt": None if ctx is None else ctx.attempt, "pid": os.getpid()}
    with open(os.environ["FLIGHTDECK_TEST_LEDGER"], "a", encoding="utf-8") as ledger:
        ledger.write(json.dumps(line) + "\n")
    if marker and not before and not Path(marker).exists():
        Path(marker).write_text("crashed")
        os.kill(os.getpid(), signal.SIGKILL)  # the engine dies during the side effect
    return {"charged": amount}


def lookup(id: int) -> dict[str, object]:
    """Look a customer up (no side effect; the ledger line only counts how often it ran).

    Args:
        id: The customer.
    """
    with open(os.environ["FLIGHTDECK_TEST_LEDGER"], "a", encoding="utf-8") as ledger:
        ledger.write(json.dumps({"lookup": id, "pid": os.getpid()}) + "\n")
    return {"id": id, "name": f"customer {id}", "tier": "gold"}
