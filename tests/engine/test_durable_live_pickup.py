"""Live pickup (issue 13): a durable engine that is RUNNING takes a reconcile decision or a resume request within a
control poll, instead of waiting for the next engine start; exactly once (the `resume_taken` audit row). Real
stores, a real SIGKILLed engine subprocess to leave the run behind (tests/durable_support.py), then a durable
Engine in this process that stays open while the test records the operator's action from another thread (as the
CLI and the console do, on their own connection to control.db)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from engine.controls import run_requests
from engine.controls.api import ControlAPI
from engine.runtime.engine import Engine
from engine.store import open_engine_store
from tests.durable_support import CHARGING, Charging
from tests.engine_helpers import events, get_run

pytestmark = pytest.mark.slow

# The charge is idempotent here: a resumed run whose charge was cut off runs it again under the same key.
IDEMPOTENT = CHARGING.replace('side_effects: true}', 'side_effects: true, idempotent: true}')


async def until(condition: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll `condition` on the loop (the engine works meanwhile) until it is truthy."""
    with anyio.fail_after(timeout):
        while True:
            value = condition()
            if value:
                return value
            await anyio.sleep(0.005)


def with_engine(charging: Charging, body: Callable[[Engine], Awaitable[Any]], *, auto_resume: bool = True) -> Any:
    """A durable engine on the store, open while `body(engine)` runs; then until the runs it took have ended."""
    os.environ["FLIGHTDECK_TEST_LEDGER"] = str(charging.ledger)

    async def go() -> Any:
        with open_engine_store(charging.store) as store:
            async with Engine(store, latency_scale=0.0, runbooks=False, durable=True,
                              auto_resume=auto_resume) as engine:
                result = await body(engine)
                assert engine.durable is not None
                await engine.durable.wait_resumed()
                return result

    return anyio.run(go)


def operator(store: Path, action: Callable[[ControlAPI], Any], name: str = "alice") -> Any:
    """An operator's action on its own control.db connection (like the CLI), off the engine's loop."""
    with ControlAPI(store, name) as api:
        return action(api)


def ended_status(store: Path, run_id: str, since: float) -> str | None:
    row = get_run(store, run_id)
    return row.status if row.status != "running" and (row.ended or 0) > since else None


def takes(api: ControlAPI, run_id: str) -> list[run_requests.Taken]:
    with api.read() as conn:
        return run_requests.takes(conn, run_id)


def picked_up(store: Path, run_id: str) -> int:
    return len(events(store, run_id, ["run.picked_up"]))


def test_reconcile_again_is_taken_by_the_running_engine_within_a_second(tmp_path: Path) -> None:
    charging = Charging(tmp_path)
    run_id = charging.needs_reconcile()
    assert [line["amount"] for line in charging.lines()] == [5]

    async def body(engine: Engine) -> float:
        decided = await anyio.to_thread.run_sync(operator, charging.store, lambda api: api.reconcile_side_effect(
            run_id, None, "again", "no charge at the PSP"))
        assert engine.durable is not None and engine.durable.pickups is not None
        await until(lambda: engine.durable.pickups.taken, what="the engine to take the run")  # type: ignore[union-attr]
        return time.time() - decided.ts

    delay = with_engine(charging, body)
    assert delay < 1.0, delay
    run = get_run(charging.store, run_id)
    assert run.status == "completed", run.error
    # The decided side effect ran once more (attempt 1, same key), the next one once: nothing twice.
    assert [(line["amount"], line["attempt"]) for line in charging.lines()] == [(5, 0), (5, 1), (7, 0)]
    taken = operator(charging.store, lambda api: takes(api, run_id))
    assert [(t.kind, t.engine_id) for t in taken] == [("reconcile", get_run(charging.store, run_id).engine_id)]
    # The next engine start does not take it again: that ending was taken, the run has ended since.
    assert charging.restart() == []
    assert len(charging.lines()) == 3


def test_a_resume_request_for_an_abandoned_run_is_taken_live(tmp_path: Path) -> None:
    charging = Charging(tmp_path, IDEMPOTENT)
    crashed = charging.run(crash=True)
    assert crashed.returncode == -9, crashed.stderr[-2000:]

    async def body(engine: Engine) -> str:
        assert engine.durable is not None and engine.durable.pickups is not None
        run_id = engine.store.abandoned_runs[0]  # --no-resume: it stays abandoned until someone asks
        status = get_run(charging.store, run_id).status
        entry, _released = await anyio.to_thread.run_sync(operator, charging.store, lambda api: api.record_resume(
            run_id, status, {"cost_usd": 3.0}, "customer still waiting"))
        await until(lambda: engine.durable.pickups.taken, what="the engine to take the run")  # type: ignore[union-attr]
        assert time.time() - entry.ts < 1.0
        await until(lambda: ended_status(charging.store, run_id, entry.ts), what="the resumed run to end")
        return run_id

    run_id = with_engine(charging, body, auto_resume=False)
    assert get_run(charging.store, run_id).status == "completed"
    assert get_run(charging.store, run_id).resumed == 1
    # The charge the crash cut off ran again under its key (idempotent), the second charge once.
    assert [(line["amount"], line["idempotency_key"]) for line in charging.lines()] == [
        (5, f"{run_id}:clerk.0.0"), (5, f"{run_id}:clerk.0.0"), (7, f"{run_id}:clerk.1.0")]
    assert picked_up(charging.store, run_id) == 1


def test_several_requests_for_one_ending_start_it_once(tmp_path: Path) -> None:
    """A reconcile decision and two operators' resumes, racing each other and the engine's polls: one start."""
    charging = Charging(tmp_path)
    run_id = charging.needs_reconcile()

    async def body(engine: Engine) -> None:
        assert engine.durable is not None and engine.durable.pickups is not None
        status = get_run(charging.store, run_id).status

        def resume(n: int) -> None:
            operator(charging.store, lambda api: api.record_resume(run_id, status, None, f"resume {n}"), f"op{n}")

        def decide_and_resume() -> None:
            operator(charging.store, lambda api: api.reconcile_side_effect(run_id, None, "again", "redo it"))
            threads = [threading.Thread(target=resume, args=(n,)) for n in range(2)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()

        await anyio.to_thread.run_sync(decide_and_resume)
        head = operator(charging.store, lambda api: api.audit_log(limit=1)[0].id)
        # The run taken and carried to its end before the engine closes (a closing engine takes nothing), and the
        # watcher past every request (the last row may be its own take), so a second start would have happened.
        await until(lambda: engine.durable.pickups.taken, what="the engine to take the run")  # type: ignore[union-attr]
        await until(lambda: get_run(charging.store, run_id).status == "completed", what="the resumed run to end")
        await until(lambda: engine.durable.pickups.cursor >= head, what="the watcher")  # type: ignore[union-attr]

    with_engine(charging, body)
    assert get_run(charging.store, run_id).status == "completed"
    assert picked_up(charging.store, run_id) == 1
    assert [line["amount"] for line in charging.lines()] == [5, 5, 7]
    taken = operator(charging.store, lambda api: takes(api, run_id))
    assert len(taken) == 1


def test_a_run_another_engine_took_is_not_started_here(tmp_path: Path) -> None:
    """The decision and another engine's take land in one transaction (that engine won the race): the running
    engine sees both and leaves the run alone."""
    charging = Charging(tmp_path)
    run_id = charging.needs_reconcile()
    ended = get_run(charging.store, run_id).ended

    async def body(engine: Engine) -> None:
        assert engine.durable is not None and engine.durable.pickups is not None

        def decide_taken_elsewhere(api: ControlAPI) -> int:
            from engine.controls import reconcile

            calls = api.reconcile_calls(run_id)
            with api.transaction() as conn:
                decision = reconcile.record(conn, calls[0], "again", "redo it", operator="alice", now=api.now())
                entry = run_requests.take(conn, run_id, request=decision.audit_id, kind="reconcile", ended=ended,
                                          engine_id="other-engine", now=api.now())
            assert entry is not None
            return entry.id

        head = await anyio.to_thread.run_sync(operator, charging.store, decide_taken_elsewhere)
        await until(lambda: engine.durable.pickups.cursor >= head, what="the watcher")  # type: ignore[union-attr]
        assert engine.durable.pickups.taken == []

    with_engine(charging, body)
    assert get_run(charging.store, run_id).status == "needs_reconcile"
    assert len(charging.lines()) == 1
    assert picked_up(charging.store, run_id) == 0


def test_two_takers_racing_for_one_ending_take_it_once(tmp_path: Path) -> None:
    """Two engines' takes (separate connections, separate threads) for the same ending, many times: one wins."""
    store = tmp_path / "store"
    with ControlAPI(store, "setup"):
        pass
    for round_ in range(20):
        barrier = threading.Barrier(2)
        won: list[str] = []
        threads = [threading.Thread(target=_contend, args=(store, name, float(round_), barrier, won))
                   for name in ("a", "b")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(won) == 1, (round_, won)
    with ControlAPI(store, "reader") as api:
        assert len(takes(api, "r1")) == 20
        assert api.verify_audit().ok


def _contend(store: Path, engine_id: str, ended: float, barrier: threading.Barrier, won: list[str]) -> None:
    """One engine's take of the run's ending `ended`, started at the same moment as the other's."""
    with ControlAPI(store, f"engine:{engine_id}") as api:
        barrier.wait()
        with api.transaction() as conn:
            if run_requests.take(conn, "r1", request=1, kind="resume", ended=ended, engine_id=engine_id,
                                 now=api.now()) is not None:
                won.append(engine_id)
