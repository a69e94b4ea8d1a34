"""How a durable run goes on in its workflow body (runtime/durable_runs.py): a fresh run runs its submitted request; a
run resumed, taken or dequeued here is rebuilt from its spec, carries on from its record (runtime/durable_resume.py)
when it has one, and in serve mode first passes the queue's gate."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

from engine.durable.keys import LEGACY_PATH_FORMAT, PATH_FORMAT
from engine.runtime.call_paths import legacy_paths_refusal
from engine.runtime.durable_limits import carried_budget

if TYPE_CHECKING:
    from engine.hierarchy.loader import Hierarchy
    from engine.runtime.durable_resume import ResumeInfo
    from engine.runtime.durable_runs import DurableRuns
    from engine.runtime.engine import Engine, RunRequest
    from engine.runtime.results import RunResult

RETRY_KEYS = ("retry_of", "retry_from", "retry_from_path")  # a retry's run attributes, kept in its spec


class NotStarted(Exception):
    """Raised by a serve-mode gate: a queued run that must not start (cancelled while it waited)."""


# Serve mode's hold on a dequeued run (engine/serve/): `async with gate(run_id, spec):` returns when the run may
# start (raises NotStarted when it never may) and counts it running until the block ends.
QueueGate = Callable[[str, dict[str, Any]], AbstractAsyncContextManager[None]]


async def carry_on(runs: DurableRuns, run_id: str, spec: dict[str, Any]) -> RunResult:
    """A run resumed, taken or dequeued here: rebuilt from its spec."""
    queued = spec.get("queue") is not None
    carries_on = not queued or run_id in runs.resumed or run_id in runs.again
    info = await runs.records().info(runs.host, run_id, spec) if carries_on else None
    if queued and info is not None and not info.started:
        info = None  # dequeued (or held) but never recorded as started: nothing to carry on from
    if info is not None:
        spec = await carried_budget(runs.engine, run_id, spec)
    from engine.runtime.engine import RunRequest

    # A run carrying on from a record keeps the call-path format it was recorded with (a spec written
    # before formats were recorded: 1); one that never started takes today's.
    paths = PATH_FORMAT if info is None else int(spec.get("paths") or LEGACY_PATH_FORMAT)
    request = RunRequest(input=spec.get("input"), seed=spec.get("seed") or 0, tenant=spec.get("tenant"),
                         budget=spec.get("budget"), idempotency_key=spec.get("key"), path_format=paths)
    if queued and runs.gate is not None:
        return await _run_queued(runs, spec, request, run_id, info, runs.gate)
    return await run_spec(runs, spec, request, run_id, info)


async def _run_queued(runs: DurableRuns, spec: dict[str, Any], request: RunRequest, run_id: str,
                      info: ResumeInfo | None, gate: QueueGate) -> RunResult:
    from engine.runtime.results import RunResult

    try:
        async with gate(run_id, spec):
            if runs.handing_back is not None:
                raise asyncio.CancelledError(runs.handing_back)  # not started: left PENDING for the next engine
            result = await run_spec(runs, spec, request, run_id, info)
            if runs.handing_back is not None and result.status == "killed":
                # Stopped by a drain whose grace ran out: raised past DBOS (which records only Exceptions),
                # the workflow stays PENDING and the next engine on the store resumes the run; its row says
                # killed until then.
                raise asyncio.CancelledError(runs.handing_back)
    except NotStarted as exc:
        now = time.time()
        # Its traces.db row (written by whoever cancelled it) says `cancelled`; this is the workflow's outcome.
        return RunResult(run_id=run_id, hierarchy=str(spec.get("name")), status="killed", output=None,
                         error=str(exc), tokens_in=0, tokens_out=0, cost_usd=0.0, model_calls=0, tool_calls=0,
                         started=now, ended=now)
    return result


async def run_spec(runs: DurableRuns, spec: dict[str, Any], request: RunRequest, run_id: str,
                   info: ResumeInfo | None, submitted: Hierarchy | None = None) -> RunResult:
    """Run `request` under `run_id` on the engine: on the hierarchy it was `submitted` with (a fresh run), else the
    one its spec names; `info`: what it carries on from (None: it starts from the beginning)."""
    hierarchy, why = (submitted, None) if submitted is not None else runs.hierarchies.load(spec)
    if hierarchy is None:
        return _fail_unloadable(runs.engine, run_id, spec, why or "cannot resume")
    refusal = None if info is None else legacy_paths_refusal(hierarchy, request.path_format, run_id)
    if refusal is not None:  # its record's keys are ambiguous: carrying on could skip or replay the wrong call
        return _fail_unloadable(runs.engine, run_id, spec, refusal)
    served = {key: spec[key] for key in ("queue", "source", "submitted", "budget_through", "budget_seen", *RETRY_KEYS)
              if spec.get(key) is not None}
    if served:  # a serve-mode run: its row says where it came from (GET /runs/ID once it started)
        from dataclasses import replace

        request = replace(request, attributes={**(request.attributes or {}), **served})
    return await runs.engine.run_compiled(runs.engine.compile(hierarchy), request, run_id=run_id, resume=info)


def _fail_unloadable(engine: Engine, run_id: str, spec: dict[str, Any], why: str) -> RunResult:
    from engine.runtime.results import RunResult

    now = time.time()
    engine.tracer.event(run_id, None, "run.not_resumed", data={"reason": why})
    engine.writer.run_ended(run_id, "failed", now, None, why)
    return RunResult(run_id=run_id, hierarchy=str(spec.get("name") or spec["path"]), status="failed",
                     output=None, error=why, tokens_in=0, tokens_out=0, cost_usd=0.0, model_calls=0,
                     tool_calls=0, started=now, ended=now)
