"""One run's lifecycle inside an Engine: its start (context, run row, seeding a resumed run, budget scopes), its
agent, its end (status, root span, run row, spent switches) and the hand-off of an ended run to online sampling.

Plain functions taking the engine (engine/runtime/engine.py's `run_compiled` calls `refuse` or `run_admitted`); the
admission check and the run slots stay on the Engine, where the operator's controls are.
"""

from __future__ import annotations

import os
import time
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio

import engine as engine_package
from engine.runtime.context import RunContext
from engine.runtime.results import RUN_STATUS_FOR_AGENT, AgentResult, RunResult, split_input

if TYPE_CHECKING:
    from engine.runtime.compiled import CompiledHierarchy
    from engine.runtime.durable_resume import ResumeInfo
    from engine.runtime.engine import Engine, RunRequest


class BadRunInput(Exception):
    """The run's input does not match its entry agent's input contract: the run ends `error`, saying why."""


def new_context(engine: Engine, compiled: CompiledHierarchy, request: RunRequest, run_id: str | None = None,
                resume: ResumeInfo | None = None) -> RunContext:
    """The run's context, with its run row written (and `request.on_started` told its id)."""
    ctx = RunContext(run_id=run_id or os.urandom(6).hex(), seed=request.seed, tenant=request.tenant,
                     compiled=compiled, engine=engine, tracer=engine.tracer)
    hierarchy = compiled.hierarchy
    # The file it ran (and its scenario): what `flightdeck retry` loads to run it again.
    attrs: dict[str, Any] = {**(request.attributes or {}), "entry": compiled.spec.entry, "pid": os.getpid(),
                             "durable": engine.durable is not None, "hierarchy_path": str(hierarchy.path),
                             "paths": request.path_format}
    if request.budget is not None:  # the limits it started with: what a retry of it starts with too
        from engine.guardrails.budget import limits_attribute

        attrs["budget"] = limits_attribute(request.budget)
    if hierarchy.scenario_path is not None:
        attrs["scenario"] = str(hierarchy.scenario_path)
    ctx.replay = request.replay
    ctx.path_format = request.path_format
    if attrs.get("budget_seen"):  # budget changes up to this one were not for this execution (Engine.apply_overrides)
        ctx.attributes["budget_seen"] = attrs["budget_seen"]
    if resume is not None:  # the same run again: its row is rewritten with its first start and totals so far
        from engine.runtime.durable_resume import seed_resumed

        attrs.update(seed_resumed(ctx, resume))
    engine.writer.run_started(ctx.run_id, compiled.name, compiled.source_hash, engine.store.engine_id,
                              engine_package.__version__, request.input, request.seed, request.tenant,
                              resume.started if resume is not None and resume.started else time.time(), attrs)
    if request.on_started is not None:
        request.on_started(ctx.run_id)
    return ctx


def refuse(engine: Engine, compiled: CompiledHierarchy, request: RunRequest, reason: str,
           run_id: str | None = None) -> RunResult:
    """Record a run that admission refused (a kill switch or the engine shutting down): it ends `refused`. Nothing
    is recorded once the engine is fenced: the run may be one another engine took (it owns its row now)."""
    if engine.gate.fenced is not None:
        now = time.time()
        return RunResult(run_id=run_id or os.urandom(6).hex(), hierarchy=compiled.name, status="refused",
                         output=None, error=reason, tokens_in=0, tokens_out=0, cost_usd=0.0, model_calls=0,
                         tool_calls=0, started=now, ended=now)
    ctx = new_context(engine, compiled, request, run_id)
    now = time.time()
    engine.tracer.event(ctx.run_id, None, "run.refused", name=compiled.name, data={"reason": reason})
    engine.writer.run_ended(ctx.run_id, "refused", now, None, reason)
    return RunResult(run_id=ctx.run_id, hierarchy=compiled.name, status="refused", output=None, error=reason,
                     tokens_in=0, tokens_out=0, cost_usd=0.0, model_calls=0, tool_calls=0, started=now,
                     ended=now)


async def run_admitted(engine: Engine, compiled: CompiledHierarchy, request: RunRequest, run_id: str | None,
                       resume: ResumeInfo | None) -> RunResult:
    """Run an admitted run to its end. Failures become the run's status; only outside cancellation propagates."""
    ctx = new_context(engine, compiled, request, run_id, resume)
    started = time.time()
    ledger = engine.guards.ledger
    ctx.attributes["budget_override"] = request.budget
    ledger.open_scope(ctx.budget_scope, "run", engine.guards.run_limits(compiled, request.budget),
                      parent=engine.guards.daily_scope(compiled, partial(daily_spend, engine)),
                      labels={"run": ctx.run_id, "tenant": request.tenant or "", "hierarchy": compiled.name})
    if resume is not None:
        from engine.runtime.durable_resume import seed_budget

        seed_budget(ctx)
    task, context = split_input(request.input)
    ctx.root_span = engine.tracer.start(ctx.run_id, None, "run", None, compiled.name,
                                        {"input": request.input, "tenant": request.tenant})
    entry = compiled.spec.entry
    result: AgentResult | None = None
    scope = anyio.CancelScope()
    ctx.active = engine.controls.register_run(ctx, scope)
    try:
        with scope:  # a kill switch covering this run cancels it here
            try:
                context = validated_entry_input(compiled, context)
                from engine.runtime.agent import run_agent

                result = await run_agent(ctx, entry, task, context, ctx.root_span)
            except BadRunInput as exc:
                result = AgentResult(entry, "error", error=str(exc))
            except Exception as exc:  # one failing run must never disturb the others in this engine
                result = AgentResult(entry, "error", error=f"{type(exc).__name__}: {exc}")
    finally:
        active = engine.controls.unregister_run(ctx.run_id)
        if active is not None and engine.publisher is not None:
            engine.publisher.publish_final(active)  # final gauges: what the run used, nothing still reserved
        ledger.close_scope(ctx.budget_scope, report=False)
        if result is None:  # cancelled: by an operator's kill switch, or the engine is shutting down
            reason = ctx.active.stop_reason or "cancelled: the engine stopped"
            result = AgentResult(entry, "killed", error=reason)
            if engine.gate.fenced is None:  # fenced: the run is the taker's now, and it waits on its approvals
                engine.background(lambda api: api.cancel_approvals_for_run(ctx.run_id, reason),
                                  "cancelling approvals of a killed run")
            if not scope.cancelled_caught:
                finish(engine, ctx, started, result)
    run_result = finish(engine, ctx, started, result)
    if engine.sampling and compiled.spec.evals.sample > 0:
        sample(engine, compiled, request, run_result)
    return run_result


def sample(engine: Engine, compiled: CompiledHierarchy, request: RunRequest, result: RunResult) -> None:
    """Online sampling, after the run ended: the Sampler scores it in the background if it is in the share."""
    if engine.sampler is None:
        if engine.task_group is None:
            return
        from engine.scoring.run_path import RunPathReader
        from engine.scoring.sampler import Sampler

        group = engine.task_group
        engine.sampler = Sampler(engine.evals_at, lambda run_id, kind, name, data: engine.tracer.event(
            run_id, None, kind, name=name, data=data), lambda job: group.start_soon(job),
            RunPathReader(engine.writer.commit_now, engine.store.trace_location))
    engine.sampler.after_run(compiled.name, compiled.source_hash, compiled.spec, result.run_id, result.status,
                             request.input, result.output, result.cost_usd, result.duration_s, result.ended)


def validated_entry_input(compiled: CompiledHierarchy, context: dict[str, Any]) -> dict[str, Any]:
    """The run's context checked against the entry agent's input contract (BadRunInput when it does not match)."""
    entry = compiled.agents[compiled.spec.entry]
    if entry.input_contract is None:
        return context
    from engine.runtime.contracts import ContractViolation

    try:
        return entry.input_contract.validate(context)
    except ContractViolation as exc:
        raise BadRunInput(f"run input does not match {entry.name}'s input contract: {exc}") from None


def finish(engine: Engine, ctx: RunContext, started: float, result: AgentResult) -> RunResult:
    """End the run: its status, its root span, its run row, and the kill switches that covered only it."""
    status = RUN_STATUS_FOR_AGENT[result.status]
    if status == "killed":  # stopped for a side effect: needs_reconcile or failed (runtime/side_effects.py)
        status = ctx.attributes.get("stop_status", status)
    exhausted = ctx.attributes.get("run_budget_exhausted")
    if exhausted and status == "completed":
        # The parent finished with what it had, but the run's budget ran out: that is what the run's status
        # says; its (partial) output is kept.
        status = "budget_exceeded"
        result = AgentResult(result.agent, "budget_exceeded", result.output, exhausted)
    ended = time.time()
    ctx.report_progress()
    engine.tracer.end(ctx.root_span, ctx.run_id, "ok" if status == "completed" else status if status in (
        "budget_exceeded", "loop_detected") else "cancelled" if status == "killed" else "error",
        tokens_in=ctx.tokens_in, tokens_out=ctx.tokens_out, cost_usd=ctx.cost_usd,
        attrs=ctx.run_span_attrs(result.output, result.error))
    if engine.gate.fenced is None:
        engine.writer.run_ended(ctx.run_id, status, ended, result.output, result.error)
    # else: this engine was fenced (runtime/durable_fence.py): another engine carries the run on and owns its row
    # A switch on this run alone is spent: released (audited) so nothing shows it as in force. Not for a durable
    # run that can still go on (resume, reconcile): there the switch is the operator's word until `resume`.
    if (engine.durable is None or status == "completed") and engine.controls.run_ended(ctx.run_id):
        engine.release_spent_switches(ctx.run_id)
    return RunResult(run_id=ctx.run_id, hierarchy=ctx.compiled.name, status=status, output=result.output,
                     error=result.error, tokens_in=ctx.tokens_in, tokens_out=ctx.tokens_out,
                     cost_usd=ctx.cost_usd, model_calls=ctx.model_calls, tool_calls=ctx.tool_calls,
                     started=started, ended=ended)


def daily_spend(engine: Engine, hierarchy: str) -> list[tuple[float, float]]:
    """This hierarchy's spend over the last 24 hours, from the store: the daily cap holds across restarts."""
    from engine.errors import StoreError
    from engine.store import open_trace_reads
    from engine.store.location import StoreDirectory
    from engine.store.trace_rows import RunSpend

    try:  # traces.db, or the Postgres store the traces go to (test doubles of the store have only `dir`)
        reader = open_trace_reads(getattr(engine.store, "trace_location", None) or StoreDirectory(engine.store.dir))
    except StoreError:
        return []
    try:
        rows = reader.query_rows(RunSpend, "SELECT started, cost_usd FROM runs WHERE hierarchy = ? "
                                           "AND started >= ? AND cost_usd > 0", (hierarchy, time.time() - 86_400))
    finally:
        reader.close()
    return [(row.started, row.cost_usd) for row in rows]
