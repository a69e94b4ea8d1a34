"""A tool that hangs (never returns): the drill fault holds the call until the drill ends, the deadline abandons it
(`outcome_unknown` for a side effect: the thread may still finish it), and an operator's tool kill does the same;
a released hung call fails rather than landing its side effect late."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from engine.controls.api import ControlAPI
from engine.drills.runner import run_drills
from engine.drills.spec import load_drill
from engine.examples import faults
from engine.examples.deal_desk import tools as deal_tools
from engine.hierarchy.bundled import bundled_path
from engine.hierarchy.loader import load_hierarchy
from engine.runtime.engine import Engine, RunRequest
from engine.runtime.results import RunResult
from engine.store import open_engine_store
from tests.engine_helpers import spans, write_hierarchy

DRILL = bundled_path("deal-desk").parent / "drills" / "tool-hang.yaml"
DEAL = {"account": "INITECH-003", "product": "platform", "seats": 80, "requested_discount_pct": 10}


@pytest.fixture(autouse=True)
def _clean() -> Any:
    faults.clear()
    deal_tools.clear_ledger()
    yield
    faults.clear()


def test_a_hung_call_waits_until_cleared_then_fails() -> None:
    faults.set_fault_hang("crm_lookup")
    outcome: list[BaseException] = []
    done = threading.Event()

    def call() -> None:
        try:
            deal_tools.crm_lookup("ACME-001")
        except BaseException as exc:  # the test inspects it
            outcome.append(exc)
        done.set()

    thread = threading.Thread(target=call)
    thread.start()
    assert not done.wait(0.2)  # still hanging: no deadline of its own
    assert faults.hung_calls("crm_lookup") == 1
    faults.clear()
    assert done.wait(5)
    thread.join()
    assert isinstance(outcome[0], faults.HungCallReleased)
    assert faults.hung_calls("crm_lookup") == 0


def test_hang_drill_holds_and_no_side_effect_lands_late() -> None:
    [result] = run_drills(load_hierarchy("deal-desk"), [load_drill(DRILL)])
    assert result.held, result.evidence
    assert "span tool apply_discount outcome_unknown" in result.evidence
    assert faults.hung_calls("apply_discount") == 0  # the drill let its hung call go
    assert not [e for e in deal_tools.ledger() if e.get("kind") == "discount"]


async def _wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.005)


def test_operator_kill_of_a_hung_side_effect_is_outcome_unknown(tmp_path: Path, store_dir: Path) -> None:
    gate = '    timeout: 5s\n    approval:\n      required: when\n      when: "discount_pct > 15"'
    text = bundled_path("deal-desk").read_text()
    assert gate in text
    # a deadline the test never reaches: only the operator's kill ends the hung call
    hierarchy = write_hierarchy(tmp_path, text.replace(gate, gate.replace("5s", "1h")))
    assert hierarchy.spec.tools["apply_discount"].timeout == 3600
    faults.set_fault_hang("apply_discount")

    async def go() -> RunResult:
        with open_engine_store(store_dir) as store:
            async with Engine(store, latency_scale=0.0, runbooks=False) as engine:
                api = ControlAPI(store_dir, "alice")
                try:
                    async with anyio.create_task_group() as group:
                        results: list[RunResult] = []

                        async def one() -> None:
                            results.append(await engine.run(hierarchy, RunRequest(input=DEAL)))

                        group.start_soon(one)
                        await _wait_until(lambda: faults.hung_calls("apply_discount") == 1)
                        await anyio.to_thread.run_sync(
                            lambda: api.set_kill("tool", "apply_discount", "kill", "discount service hung"))
                    return results[0]
                finally:
                    api.close()

    result = anyio.run(go)
    assert result.status == "completed"
    [call] = [s for s in spans(store_dir, result.run_id) if s.kind == "tool" and s.name == "apply_discount"]
    assert call.status == "outcome_unknown" and "discount service hung" in call.attributes["error"]
