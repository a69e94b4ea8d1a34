"""Running a tool under its idempotency key, and, in a durable engine, side-effecting tools exactly once.

A side-effecting call (`side_effects: true`) of a durable run is a DBOS workflow keyed `<run>:<call path>`
(engine/durable/host.py): its start is committed before the tool runs, its outcome after. On a resumed run:
- outcome recorded: the call is not run again; its recorded result goes back to the model (the span says
  `replayed`);
- started, outcome unknown (the engine died during it): a tool declared `idempotent: true` runs again under the
  same `ctx.idempotency_key`; any other tool is not retried blindly: the run ends `needs_reconcile` and an operator
  decides (engine/controls/reconcile.py): `done` replays the operator's confirmation, `again` runs the next attempt
  under the same `ctx.idempotency_key`, `fail` ends the run failed.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

import anyio

from engine.durable.keys import side_effect_key
from engine.runtime.deadline import Deadline
from engine.tool_context import CURRENT, ToolContext

if TYPE_CHECKING:
    from engine.hierarchy.loader import LoadedTool
    from engine.runtime.context import RunContext

MAX_ATTEMPTS = 100  # an idempotent tool's runs of one call (each crash during it adds one)


class RecordedFailure(Exception):
    """A side effect whose recorded outcome (from before a resume) is a failure: its text, replayed."""


class NeedsReconcile(Exception):
    """A side effect's outcome is unknown and its tool is not idempotent: the run stops and waits for an operator.
    `key`: the durable key of the attempt whose outcome is unknown; `call`: the call's path."""

    def __init__(self, message: str, key: str, call: str) -> None:
        super().__init__(message)
        self.key = key
        self.call = call


class ReconcileFailed(Exception):
    """An operator reconciled an unknown side effect with `fail`: the run ends failed, the note as its error."""


def confirmed_done(decision: Any) -> tuple[str, Any]:
    """The outcome the model sees for a side effect an operator confirmed done (engine/controls/reconcile.py)."""
    return "ok", {"status": "confirmed done by the operator", "operator": decision.operator, "note": decision.note}


def durable_side_effect(ctx: RunContext, tool: LoadedTool) -> bool:
    return tool.spec.side_effects and ctx.engine.durable is not None and ctx.engine.durable.host is not None


async def recorded_outcome(ctx: RunContext, tool: LoadedTool, path: str) -> tuple[str, Any, int]:
    """For a durable side effect about to run: ("new", None, attempt) to run it (attempt 0 normally; n > 0 when an
    idempotent tool, or an operator's `again`, runs it again after an unknown outcome), ("done", value, n) to replay
    it, ("confirmed", ("ok", confirmation), n) for an operator's `done`. Raises NeedsReconcile, or ReconcileFailed
    when an operator decided `fail`."""
    durable = ctx.engine.durable
    assert durable is not None and durable.host is not None
    if ctx.attributes.get("resume") is None:
        # A run executing for the first time (not resumed, not started again by an operator) has recorded nothing:
        # its side effects' keys start with its run id and only its own workflow creates them. Reading durable.db
        # first cost a thread hop and a query per side effect (~0.7 ms). perform() still finds a key that exists.
        return "new", None, 0
    for attempt in range(MAX_ATTEMPTS):
        key = side_effect_key(ctx.run_id, path, attempt)
        found = await durable.host.recorded(key)
        if found.state == "new":
            return "new", None, attempt
        if found.state == "done":
            return "done", found.value, attempt
        if tool.spec.idempotent:
            continue
        decision = await durable.decision(ctx.run_id, key)
        if decision is None:
            raise NeedsReconcile(f"side effect {key} ({tool.spec.function}) started but its outcome is unknown (the "
                                 "engine died during it) and the tool is not declared idempotent: an operator must "
                                 f"reconcile it (flightdeck reconcile {ctx.run_id})", key, path)
        if decision.decision == "done":
            return "confirmed", confirmed_done(decision), attempt
        if decision.decision == "fail":
            raise ReconcileFailed(decision.note)
        # again: the next attempt (key `#n`) runs it, under the same ctx.idempotency_key
    raise NeedsReconcile(f"side effect {side_effect_key(ctx.run_id, path)} was attempted {MAX_ATTEMPTS} times",
                         side_effect_key(ctx.run_id, path, MAX_ATTEMPTS - 1), path)


async def invoke(ctx: RunContext, agent: str, name: str, tool: LoadedTool, args: dict[str, Any], span: str,
                 path: str, attempt: int = 0) -> Any:
    """Run the tool once with its deadline and its ToolContext; a durable side effect under its DBOS key."""
    key = side_effect_key(ctx.run_id, path)
    token = CURRENT.set(ToolContext(ctx.run_id, path, key, attempt))
    try:
        if not durable_side_effect(ctx, tool):
            return await _call(ctx, agent, name, tool, args, span)
        host = ctx.engine.durable.host  # type: ignore[union-attr]
        assert host is not None

        async def once() -> tuple[str, Any]:
            try:
                return "ok", await _call(ctx, agent, name, tool, args, span)
            except (TimeoutError, anyio.get_cancelled_exc_class()):
                raise
            except Exception as exc:  # the tool's own failure is its outcome: recorded, not retried
                return "raised", f"{type(exc).__name__}: {exc}"

        _ran, outcome = await host.perform(side_effect_key(ctx.run_id, path, attempt), once)
        return unwrap(outcome)
    finally:
        CURRENT.reset(token)


def unwrap(outcome: Any) -> Any:
    kind, value = outcome
    if kind == "raised":
        raise RecordedFailure(value)
    return value


async def _call(ctx: RunContext, agent: str, name: str, tool: LoadedTool, args: dict[str, Any], span: str) -> Any:
    async with Deadline(tool.spec.timeout) as handle:
        ctx.active.calls[span] = (agent, name, handle)  # a tool kill switch cancels through this handle
        if tool.is_async:
            return await tool.func(**args)
        # Sync tools run on a worker thread so a slow one never stalls the event loop.
        return await anyio.to_thread.run_sync(partial(tool.func, **args), abandon_on_cancel=True)
