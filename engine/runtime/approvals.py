"""Approval gates: a tool call that needs an operator's decision waits for it (that branch only; the rest of the
run and every other run go on), bounded by a deadline whose policy decides what a timeout means.

The request (exact arguments, their hash, risk, the model's stated reason, deadline) is written to control.db;
the decision comes back through the control watcher. A timeout is recorded as a timeout, never as a human denial.

A durable run's request names its call (`call_key`, the side-effect key of its structural path). When the run
resumes (its engine died, or an operator resumed it), the call finds the request it made before instead of asking
again: still pending, it waits on it (same id, same deadline counted from when it was asked, so a deadline that
passed while no engine ran applies its policy at once); decided meanwhile (approved, denied, timed out), the
decision is obeyed at once. A cancelled request, or one for other arguments (a model call run again may propose
different ones; that request is cancelled), is asked again.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

from engine.durable.keys import side_effect_key

if TYPE_CHECKING:
    from engine.controls.api import ControlAPI
    from engine.hierarchy.tools import LoadedTool
    from engine.runtime.context import RunContext
    from engine.runtime.control_worker import ControlWorker
    from engine.store.control_rows import Approval

DEFAULT_DEADLINE_S = 120.0


@dataclass(slots=True)
class ApprovalOutcome:
    approved: bool
    arguments: dict[str, Any]
    message: str  # what the model is told when it is not approved
    record: dict[str, Any]  # joined to the tool span: id, status, decided_by, decision_reason, edited


def needs_approval(ctx: RunContext, tool: LoadedTool, args: dict[str, Any]) -> bool:
    spec = tool.spec.approval
    if spec is not None:
        if spec.required == "always":
            return True
        if spec.required == "when" and tool.approval_condition is not None and tool.approval_condition.evaluate(args):
            return True
    return tool.spec.side_effects and ctx.engine.controls.approvals_for_all_side_effects(ctx)


def _redacted(ctx: RunContext, args: dict[str, Any]) -> dict[str, Any]:
    """Approval requests live in control.db, which operators read: no secrets there either."""
    text = ctx.engine.store.redactor.redact(json.dumps(args, default=str))
    try:
        value = json.loads(text)
    except ValueError:
        return args
    return value if isinstance(value, dict) else args


def _read_decision(worker: ControlWorker, api: ControlAPI, approval_id: str) -> Approval:
    """The approval as control.db has it now; a decision not bound to its audit row comes back as a denial."""
    row = api.approval(approval_id)
    if row.status == "pending" or worker.verifier is None:
        return row
    return worker.verifier.check_decision(api, row)


def _asked_before(worker: ControlWorker, api: ControlAPI, call_key: str, args: dict[str, Any]) -> Approval | None:
    """The request a resumed call made before its run stopped, to wait on (pending) or obey (decided; verified like
    every decision), or None to ask again: none, cancelled, or asked for other arguments (then cancelled)."""
    from engine.controls.validate import json_object, sha256_text

    row = api.approval_for_call(call_key)
    if row is None or row.status == "cancelled":
        return None
    if row.args_hash != sha256_text(json_object(args, "arguments")):
        if row.status == "pending":
            api.cancel_approval(row, "the resumed run asks again, with different arguments")
        return None
    return row if row.status == "pending" else _read_decision(worker, api, row.id)


async def await_approval(ctx: RunContext, agent: str, span: str, tool: LoadedTool, args: dict[str, Any],
                         reason: str | None, path: str | None = None) -> ApprovalOutcome:
    """`path`: the call's structural path (engine/durable/keys.py); a durable run's request is keyed by it."""
    engine = ctx.engine
    controls = engine.controls
    worker = controls.worker
    assert worker is not None, "approvals need the control watcher"
    spec = tool.spec.approval
    deadline_s = spec.deadline if spec is not None else DEFAULT_DEADLINE_S
    on_timeout = spec.on_timeout if spec is not None else "deny"
    max_escalations = spec.max_escalations if spec is not None else 1
    stored_args = _redacted(ctx, args)
    call_key = None if engine.durable is None or path is None else side_effect_key(ctx.run_id, path)
    row = None
    if call_key is not None and ctx.attributes.get("resume") is not None:
        key = call_key
        row = await worker.call(lambda api: _asked_before(worker, api, key, stored_args))
    if row is None:
        row = await worker.call(lambda api: api.request_approval(
            ctx.run_id, span, agent, tool.name, stored_args, tool.spec.risk, reason, deadline_s, on_timeout,
            engine.store.engine_id, call_key=call_key))
    approval_id = row.id
    if row.status == "pending":
        data = {"id": approval_id, "tool": tool.name, "args_hash": row.args_hash, "risk": tool.spec.risk,
                "deadline": row.deadline, "on_timeout": row.on_timeout, "reason": reason}
        if row.engine_id != engine.store.engine_id:  # asked before the run resumed: the same request, waited on
            data["resumed"] = True
        ctx.tracer.event(ctx.run_id, span, "approval.requested", agent=agent, name=tool.name, data=data)
        engine.on_approval_requested(row)
    decided = controls.approval_event(approval_id)
    try:
        while row.status == "pending":
            with anyio.move_on_after(max(0.0, row.deadline - time.time())):
                await decided.wait()
            decision = controls.decisions.get(approval_id)
            if decision is not None:
                break
            expired = await worker.call(lambda api: api.expire_approval(
                approval_id, max_escalations=max_escalations, actor=f"engine:{engine.store.engine_id}"))
            outcome = expired.outcome
            if outcome == "escalated":
                row = expired
                ctx.tracer.event(ctx.run_id, span, "approval.escalated", agent=agent, name=tool.name, data={
                    "id": approval_id, "level": expired.level, "deadline": expired.deadline})
                engine.on_approval_escalated(expired)
                continue
            if outcome == "unchanged":  # a decision raced the deadline and won: read it
                current = await worker.call(lambda api: _read_decision(worker, api, approval_id))
                if current.status == "pending":
                    row = current
                    continue
                decision = current
                break
            decision = expired
            break
        else:  # decided while the run was stopped (read and verified by _asked_before): obeyed now
            decision = row
    finally:
        controls.forget_approval(approval_id)

    status = decision.status
    record = {"id": approval_id, "status": status, "decided_by": decision.decided_by,
              "decision_reason": decision.decision_reason, "level": decision.level}
    ctx.tracer.event(ctx.run_id, span, "approval.decided", agent=agent, name=tool.name, data=record)
    if status == "approved":
        edited = decision.edited_arguments
        if edited is not None:
            if isinstance(edited, str):
                edited = json.loads(edited)
            record["edited"] = True
            try:
                return ApprovalOutcome(True, tool.validate_args(edited), "", record)
            except Exception as exc:  # the operator's edit is re-validated like any model-proposed arguments
                return ApprovalOutcome(False, args, f"approved with edited arguments that are invalid: {exc}",
                                       record)
        return ApprovalOutcome(True, args, "", record)
    if status == "timed_out":
        message = (f"no decision on approval {approval_id} within its deadline; the policy for {tool.name} is "
                   f"to deny on timeout. Do not retry the same call.")
    elif status == "cancelled":
        message = f"approval {approval_id} was cancelled: {decision.decision_reason or 'run stopped'}"
    else:
        message = (f"denied by {decision.decided_by or 'an operator'}: "
                   f"{decision.decision_reason or 'no reason given'}")
    return ApprovalOutcome(False, args, message, record)
