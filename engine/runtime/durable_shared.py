"""A durable engine opening on a shared (Postgres) store (issue 16): several engines are executors of one DBOS
system database, so an engine takes only what is its to take, never every PENDING run as on a store directory.

Before DBOS launches (`prepare`): the takeover thread's liveness is set up and this life's DBOS executor id
(`<engine id>~<random>`, fresh at every start) is recorded beside the engine id, so a dead engine's runs are found
under every life of it (pg/liveness.py). A fresh executor id per life is what keeps DBOS's own start-up recovery
(unchecked: it would resume runs an operator killed, or with --no-resume) from finding anything.
After it launched (`start`): the store directory's dead predecessors (the seam) are taken at once, other dead
engines as their claims come (runtime/durable_takeover.py), and the runs this engine id's earlier lives left in
flight (a stable FLIGHTDECK_ENGINE_ID restarted after a crash) are carried on here, with the same checks as a
takeover: no claim is needed, this engine holds the id (pg/engine_registry.py refuses it while alive elsewhere)."""

from __future__ import annotations

import os
import time
import uuid
from typing import TYPE_CHECKING

import anyio

from engine.runtime.durable_takeover import Takeover, predecessors, takeover_after

if TYPE_CHECKING:
    from engine.runtime.durable_runs import DurableRuns
    from engine.store.location import PostgresLocation


async def prepare(durable: DurableRuns, location: PostgresLocation) -> tuple[Takeover, str, list[str]]:
    """The takeover thread (not started), this life's executor id (recorded), and the earlier lives' ids."""
    engine_id = durable.engine.store.engine_id
    stale_after = durable.stale_after if durable.stale_after is not None else takeover_after(os.environ)
    takeover = Takeover(location, engine_id, durable.take_over, willing=lambda: durable.why_not_resume() is None,
                        on_fenced=durable.engine.gate.fence,
                        **({} if stale_after is None else {"stale_after": stale_after}))
    # No call starts unless a beat confirmed this engine alive within the lease (runtime/durable_fence.py).
    durable.engine.controls.lease = takeover.lease
    executor_id = f"{engine_id}~{uuid.uuid4().hex[:12]}"
    earlier = await anyio.to_thread.run_sync(takeover.liveness.register_executor, executor_id, engine_id, time.time())
    return takeover, executor_id, earlier


async def start(durable: DurableRuns, takeover: Takeover, earlier: list[str], why_not: str | None) -> set[str]:
    """Take what is this engine's to take now; returns the runs its store directory's dead predecessors left in
    flight, whoever carries them on (their approvals stay pending)."""
    assert durable.host is not None
    engine_id = durable.engine.store.engine_id
    dead = predecessors(durable.engine.store)
    executors = await anyio.to_thread.run_sync(takeover.liveness.executors_of, dead) if dead else []
    left = {run for _wf, run in await durable.host.pending_of(executors, dead)}
    await takeover.start(dead)
    if earlier:  # this engine id's earlier lives: this engine's own (it holds the id), checked like a takeover
        await durable.take_over([engine_id], earlier, queues_of=[])
        left |= set(durable.taken_over)
    if why_not is not None:  # nothing claimed: said on each run, as on a store directory
        for run_id in sorted(left - set(durable.taken_over)):
            durable.engine.tracer.event(run_id, None, "run.not_resumed", data={"reason": why_not})
    return left
