"""Tools for the serve-mode tests (tests/serve_support.py): `wait_gate` (no side effect) holds its run until the file
named by $FLIGHTDECK_TEST_GATE exists (when set); `charge` writes a ledger line with its call's idempotency key to
$FLIGHTDECK_TEST_LEDGER (a side effect outside the store, counted to prove exactly once)."""

from __future__ import annotations

import json
import os

import anyio

from engine.tool_context import current_tool_context


async def wait_gate() -> dict[str, object]:
    """Wait until the test opens the gate.
    """
    gate = os.environ.get("FLIGHTDECK_TEST_GATE")
    while gate and not await anyio.Path(gate).exists():
        await anyio.sleep(0.02)
    return {"open": True}


def charge(amount: int) -> dict[str, object]:
    """Charge the customer.

    Args:
        amount: How much.
    """
    ctx = current_tool_context()
    line = {"amount": amount, "idempotency_key": None if ctx is None else ctx.idempotency_key, "pid": os.getpid()}
    with open(os.environ["FLIGHTDECK_TEST_LEDGER"], "a", encoding="utf-8") as ledger:
        ledger.write(json.dumps(line) + "\n")
    return {"charged": amount}
