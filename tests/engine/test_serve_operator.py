"""Serve-mode operator actions (engine/serve/operator.py): cancelling a queued run (it never starts; audited; a
traces.db row says who and why), killing a running one through an audited kill switch, resuming it."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.controls.api import ControlAPI
from engine.serve.contracts import Refused, Submission
from engine.serve.service import FleetEngine
from engine.store import open_reader
from tests.serve_support import Serving, until, until_async

pytestmark = pytest.mark.slow


async def _state(fleet: FleetEngine, run_id: str) -> str | None:
    view = await fleet.get_run(run_id)
    return None if view is None else view.state


def test_cancel_a_queued_run_kill_a_running_one_and_resume_it(tmp_path: Path) -> None:
    serving = Serving(tmp_path, "{concurrency: 1}")

    async def body(fleet: FleetEngine) -> tuple[str, str]:
        running = (await fleet.submit(Submission("serving", {}))).run_id
        await until(lambda: fleet.counts.queues["serving"].running, what="the first run to start")
        queued = (await fleet.submit(Submission("serving", {}, tenant="acme"))).run_id
        view = await fleet.cancel(queued, reason="duplicate order", actor="alice")
        assert view.state == "cancelled" and view.error == "cancelled by alice: duplicate order"
        with pytest.raises(KeyError):
            await fleet.cancel("nosuchrun", reason="x", actor="alice")
        await fleet.cancel(running, reason="stuck on a gate", actor="alice")
        await until_async(lambda: _is(fleet, running, "killed"), what="the running run to be killed")
        durable = fleet.engine.durable
        assert durable is not None and durable.host is not None
        assert await durable.host.status(queued) == "CANCELLED"  # DBOS will never start it
        with pytest.raises(Refused) as not_now:
            await fleet.resume(queued, actor="bob")
        assert not_now.value.status == 409
        serving.open_gate()
        await fleet.resume(running, actor="bob")
        await until_async(lambda: _is(fleet, running, "completed"), what="the resumed run to complete")
        return running, queued

    running, queued = serving.serve(body)
    assert len(serving.lines()) == 1  # the resumed run charged once; the cancelled one never ran
    reader = open_reader(serving.store)
    try:
        row = reader.get_run(queued)
        resumed = reader.get_run(running)
    finally:
        reader.close()
    assert row is not None and row.status == "cancelled" and row.error == "cancelled by alice: duplicate order"
    assert row.tenant == "acme" and row.attributes["cancelled_by"] == "alice"
    assert resumed is not None and resumed.resumed == 1
    with ControlAPI(serving.store, "auditor") as api:
        log = api.audit_log(limit=50)
    actions = {(e.action, e.target, e.actor) for e in log}
    assert ("cancel", f"run:{queued}", "alice") in actions
    assert any(e.actor == "alice" and e.target and running in e.target for e in log if e.action != "cancel")
    assert any(e.actor == "bob" and e.target and running in e.target for e in log)


async def _is(fleet: FleetEngine, run_id: str, state: str) -> bool:
    return await _state(fleet, run_id) == state
