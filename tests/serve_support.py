"""Serve-mode test scaffolding: a hierarchy whose runs wait at a gate file, then charge once (tests/serve_tools.py),
a fleet.yaml around it, and an `open_fleet` run on a fresh event loop."""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio

from engine.serve.fleet import load_fleet
from engine.serve.service import FleetEngine, open_fleet

T = TypeVar("T")

SERVING = """
name: serving
entry: clerk
models:
  m: {model: m, tier: standard, price_in: 0.5, price_out: 1.5, latency: 0, latency_per_token: 0}
tools:
  wait_gate: {function: "tests.serve_tools:wait_gate"}
  charge: {function: "tests.serve_tools:charge", side_effects: true}
agents:
  clerk: {contract: Charges customers., model: m, tools: [wait_gate, charge], max_steps: 10}
scripts:
  clerk:
    - tool: {name: wait_gate, args: {}}
    - tool: {name: charge, args: {amount: 5}}
    - final: charged
"""


class Serving:
    """A store, ledger, gate file and fleet for one test (in tmp_path)."""

    def __init__(self, tmp_path: Path, queue: str = "{}", extra: str = "") -> None:
        self.dir = tmp_path
        self.store = tmp_path / "store"
        self.ledger = tmp_path / "ledger.jsonl"
        self.gate = tmp_path / "gate-open"
        (tmp_path / "serving.yaml").write_text(SERVING)
        self.fleet_path = tmp_path / "fleet.yaml"
        self.fleet_path.write_text(f"hierarchies:\n  - file: serving.yaml\n    queue: {queue}\n{extra}")
        self.env = {"FLIGHTDECK_TEST_LEDGER": str(self.ledger), "FLIGHTDECK_TEST_GATE": str(self.gate)}
        os.environ.update(self.env)

    def fleet(self) -> Any:
        return load_fleet(self.fleet_path)

    def open_gate(self) -> None:
        self.gate.write_text("open")

    def lines(self) -> list[dict[str, Any]]:
        if not self.ledger.exists():
            return []
        return [json.loads(line) for line in self.ledger.read_text().splitlines() if line.strip()]

    def serve(self, body: Callable[[FleetEngine], Awaitable[T]], **options: Any) -> T:
        async def go() -> T:
            async with open_fleet(self.store, self.fleet(), latency_scale=0.0, **options) as fleet:
                return await body(fleet)

        return anyio.run(go)


async def until(condition: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    """Wait (on the event loop) until condition() is truthy, checking every 20 ms; fails after `timeout`."""
    with anyio.move_on_after(timeout):
        while True:
            value = condition()
            if value:
                return value
            await anyio.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


async def until_async(condition: Callable[[], Awaitable[Any]], timeout: float = 20.0, what: str = "condition") -> Any:
    with anyio.move_on_after(timeout):
        while True:
            value = await condition()
            if value:
                return value
            await anyio.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
