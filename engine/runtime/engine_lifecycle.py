"""An Engine's open and close: what `async with Engine(store)` starts on the way in and stops on the way out.

Plain functions taking the engine (engine/runtime/engine.py's `__aenter__` and `__aexit__` call them): runbooks and
live export are prepared first (their bad settings are InputErrors before anything starts), then the task group, the
store gate, the control worker (and the durable controls it replays), the state publisher, and the durable runs; the
close stops them in the reverse order, flushing what should still be recorded before the writer goes.
"""

from __future__ import annotations

import sys
import time
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio

if TYPE_CHECKING:
    from engine.runtime.engine import Engine

SWITCH_INTERVAL_S = 0.0005


async def open_engine(engine: Engine) -> None:
    """Start everything the engine's runs rely on; returns once what is already in force is obeyed."""
    # The engine's helper threads (the control watcher, the trace shipper) need the GIL briefly and often; with
    # the default 5 ms switch interval each would wait up to that long for a busy event loop to let go, which
    # shows up directly in kill-switch latency. 0.5 ms keeps them prompt at no measurable cost to the loop.
    if sys.getswitchinterval() > SWITCH_INTERVAL_S:
        sys.setswitchinterval(SWITCH_INTERVAL_S)
    if engine.runbooks_option is not False:  # (on Postgres: the shipped runbooks, control plane in the database)
        # Loaded first: an invalid runbook in STORE/runbooks is an InputError before anything starts.
        from engine.runbooks.runtime import RunbookEngine

        chosen = None if engine.runbooks_option is True else engine.runbooks_option
        engine.runbooks = RunbookEngine.for_store(engine.store, tracer_event=engine.tracer.event, clock=engine.clock,
                                                  runbooks=chosen)
    from engine.export.live import prepare_live_export  # bad [otel] settings: an InputError before anything starts

    engine.otel = prepare_live_export(engine.store, engine.tracer.event)  # (traces.db or Postgres: it reads either)
    if engine.traces_on_postgres:  # daily cost caps shared by every engine on that Postgres store (issue 16)
        engine.guards.share_daily_caps(engine.store.trace_location, engine.store.engine_id)
    engine.task_group = anyio.create_task_group()
    await engine.task_group.__aenter__()
    engine.gate.attach()
    engine.writer.on_health(engine.gate.on_writer_health)
    from engine.controls.api import ControlAPI
    from engine.controls.verifier import ControlVerifier
    from engine.runtime.control_worker import ControlWorker

    store = engine.store
    verifier = ControlVerifier(store.engine_id, emit=lambda kind, data: engine.tracer.event(None, None, kind,
                                                                                             data=data))
    from engine.runtime.control_link import control_listener, control_location

    where = control_location(store)  # control.db in the store directory, or the Postgres store
    worker = ControlWorker(lambda: ControlAPI(where, f"engine:{store.engine_id}"), engine.controls.apply,
                           on_read=partial(engine.controls.stage, from_watcher=True), verifier=verifier,
                           listen=control_listener(where), kills=engine.controls)
    engine.controls.attach(worker)
    if engine.durable is None:  # a dead engine's runs end here for good: switches limited to them are spent
        for run_id in engine.store.abandoned_runs:
            engine.controls.run_ended(run_id)
    worker.start()
    await replay_durable_controls(engine, worker)
    from engine.runtime.publisher import StatePublisher

    engine.publisher = StatePublisher(engine)
    engine.task_group.start_soon(engine.publisher.run)
    # Obey what is already in force (a global halt survives restarts) before the first run starts.
    assert engine.controls.first_applied is not None
    with anyio.fail_after(30):
        await engine.controls.first_applied.wait()
    if engine.runbooks is not None:
        engine.runbooks.start(engine.store.abandoned_runs)
        await seed_sampling_windows(engine)
        engine.writer.on_commit(engine.runbooks.on_commit)
        engine.escalation_listeners.append(engine.runbooks.page_escalation)
    if engine.otel is not None:
        from engine.export.live import start_live_export

        start_live_export(engine.otel, engine.writer)
    if engine.durable is not None:
        await engine.durable.open()


async def seed_sampling_windows(engine: Engine) -> None:
    """A runbook reading `sampled_score` starts from the sampling windows the evals store holds (the ones scored in
    its `for`), not from nothing: engine/scoring/window_seed.py."""
    horizon = max((c.window for rb in engine.runbooks.watchdog.runbooks for c in rb.spec.detect
                   if c.signal == "sampled_score"), default=None)
    if horizon is None or engine.evals_at is None:
        return
    from engine.scoring.window_seed import recent_window_events

    events = await anyio.to_thread.run_sync(recent_window_events, engine.evals_at, time.time() - horizon)
    if events:
        engine.runbooks.on_commit(events)


async def close_engine(engine: Engine) -> None:
    """Stop what open_engine started, the runs' own work (durable runs, sampled scores) first."""
    assert engine.task_group is not None
    if engine.durable is not None:
        await engine.durable.close()  # runs resumed on start end first (stop_all() kills them on a shutdown)
    if engine.sampler is not None:  # scores of runs that ended are recorded before the writer closes
        await engine.sampler.drain()
    engine.task_group.cancel_scope.cancel()
    await engine.task_group.__aexit__(None, None, None)
    if engine.sampler is not None:  # no write starts after the task group: close its evals store connection
        await anyio.to_thread.run_sync(engine.sampler.close)
    await anyio.to_thread.run_sync(engine.guards.close)  # unspent slices of shared daily caps go back
    if engine.otel is not None:
        from engine.export.live import stop_live_export

        await anyio.to_thread.run_sync(stop_live_export, engine.otel, engine.writer)
    if engine.runbooks is not None:  # the last batch first: a short run ends right after what should fire
        await anyio.to_thread.run_sync(flush_quietly, engine)
        await anyio.to_thread.run_sync(engine.runbooks.stop)
    if engine.controls.worker is not None:
        await anyio.to_thread.run_sync(engine.controls.worker.stop)
    for provider in engine.providers.values():
        with anyio.CancelScope(shield=True):
            await provider.aclose()
    engine.providers.clear()


async def replay_durable_controls(engine: Engine, worker: Any) -> None:
    """What snapshots show only while new, re-applied after a restart: operator breaker overrides (oldest first,
    so the latest per key wins), and approvals left pending by runs of a dead engine (cancelled: nobody is
    waiting for them any more, so they must not be approvable; a durable engine cancels only those of runs that
    cannot resume, runtime/durable_runs.py: a resumed run waits on its request)."""
    overrides = await worker.call(lambda api: api.breaker_overrides(limit=10_000))
    if worker.verifier is not None:  # replayed overrides are obeyed too: only those the audit log records
        overrides = await worker.call(lambda api: worker.verifier.keep_bound(api, "breaker_overrides", overrides))
    for row in reversed(overrides):
        if row.applied is not None:
            engine.guards.apply_operator_override(row.key, row.action)
    abandoned = list(engine.store.abandoned_runs)
    if abandoned and engine.durable is None:  # a durable engine keeps those of runs that resume (DurableRuns.open)
        await worker.call(lambda api: [api.cancel_approvals_for_run(run_id, "its engine died; the run is abandoned")
                                       for run_id in abandoned])


def flush_quietly(engine: Engine) -> None:
    """Flush the trace writer for up to 2 s, unless the store is failing (then nothing will commit soon)."""
    from engine.errors import StoreError

    if engine.gate.blocked:  # the store is failing or gone: nothing more will commit soon, do not wait on it
        return
    try:
        engine.writer.flush(timeout=2.0)
    except StoreError:  # a failing store is reported by the gate; stop what runs regardless
        pass
