"""ApprovalActions: ControlAPI's approval methods, the operator's decisions and the engine's requests.

A mixin of ControlAPI (engine/controls/api.py; callers use them there): each checks its arguments and runs one
transaction over engine.controls.approvals, which writes the change and its audit row.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from engine.controls import approvals
from engine.controls.api_base import ControlBase
from engine.controls.errors import ControlError
from engine.controls.schema import ON_TIMEOUT_POLICIES
from engine.controls.validate import MAX_TEXT, choice, json_object, optional_text, required_text
from engine.errors import InputError
from engine.store.control_rows import Approval, ApprovalExpiry


class ApprovalActions(ControlBase):
    """Approvals: decided by operators (approve, deny), requested, cancelled and expired by engines."""

    # -- approvals: operator side ------------------------------------------------------------------------------

    def approve(self, approval_id: str, reason: str, *, edited_arguments: dict[str, Any] | None = None,
                expected_args_hash: str | None = None) -> Approval:
        """Approve a pending request, optionally with edited arguments (a JSON object; the engine re-validates it
        against the tool's schema). See approvals.decide for what binds the decision to the request."""
        return self._decide(approval_id, "approved", reason, edited_arguments, expected_args_hash)

    def deny(self, approval_id: str, reason: str, *, expected_args_hash: str | None = None) -> Approval:
        return self._decide(approval_id, "denied", reason, None, expected_args_hash)

    def _decide(self, approval_id: str, status: str, reason: str, edited: dict[str, Any] | None,
                expected_hash: str | None) -> Approval:
        approval_id = required_text(approval_id, "approval")
        reason = required_text(reason, "reason")
        edited_json = None if edited is None else json_object(edited, "edited_arguments")
        expected = approvals.checked_hash_prefix(expected_hash)
        now = self.now()
        with self.transaction() as conn:
            return approvals.decide(conn, approval_id, status, reason=reason, edited_json=edited_json,
                                    expected_hash=expected, operator=self.operator, now=now)

    def pending_approvals(self) -> list[Approval]:
        """Oldest first: the one waiting longest is the one closest to its deadline policy."""
        with self.read() as conn:
            return approvals.pending(conn)

    def list_approvals(self, limit: int = 100) -> list[Approval]:
        """All approvals, whatever their status, newest request first."""
        with self.read() as conn:
            return approvals.newest(conn, limit)

    def approval(self, approval_id: str) -> Approval:
        with self.read() as conn:
            row = approvals.get(conn, approval_id)
        if row is None:
            raise ControlError(f"no approval {approval_id} (see `flightdeck approvals --all`)")
        return row

    # -- approvals: engine side --------------------------------------------------------------------------------

    def request_approval(self, run_id: str, span_id: str | None, agent: str, tool: str, arguments: Mapping[str, Any],
                         risk: str | None, reason: str | None, deadline_s: float, on_timeout: str,
                         engine_id: str, *, actor: str | None = None, call_key: str | None = None) -> Approval:
        """Record a tool call waiting for an operator. Returns the row (id 'ap-' + 8 hex digits, args_hash).
        `call_key`: a durable run's call (`<run>:<call path>`), by which its resume finds this request."""
        run_id = required_text(run_id, "run_id")
        agent = required_text(agent, "agent")
        tool = required_text(tool, "tool")
        engine_id = required_text(engine_id, "engine_id")
        args_json = json_object(arguments, "arguments")
        on_timeout = choice(on_timeout, ON_TIMEOUT_POLICIES, "on_timeout")
        if isinstance(deadline_s, bool) or not isinstance(deadline_s, (int, float)) or not math.isfinite(deadline_s) \
                or deadline_s <= 0:
            raise InputError(f"must be a positive number of seconds, got {deadline_s!r}", field="deadline_s")
        risk = optional_text(risk, "risk")
        if isinstance(reason, str) and len(reason) > MAX_TEXT:
            # The model wrote this, not an operator: a long reason must not fail the tool call, so it is cut.
            reason = reason[:MAX_TEXT] + " …[truncated]"
        now = self.now()
        with self.transaction() as conn:
            return approvals.request(conn, run_id=run_id, span_id=span_id, agent=agent, tool=tool, args_json=args_json,
                                     risk=risk, reason=reason, deadline_s=deadline_s, on_timeout=on_timeout,
                                     engine_id=engine_id, actor=actor or f"engine:{engine_id}", now=now,
                                     call_key=call_key)

    def approval_for_call(self, call_key: str) -> Approval | None:
        """The newest request for a durable run's call (see request_approval), or None."""
        with self.read() as conn:
            return approvals.for_call(conn, call_key)

    def cancel_approval(self, row: Approval, reason: str, *, actor: str | None = None) -> Approval | None:
        """Cancel one pending request (audited); None when it was no longer pending."""
        reason = required_text(reason, "reason")
        now = self.now()
        with self.transaction() as conn:
            return approvals.cancel(conn, row, reason=reason, actor=actor or self.operator, now=now)

    def expire_approval(self, approval_id: str, *, now: float | None = None, actor: str | None = None,
                        max_escalations: int | None = None) -> ApprovalExpiry:
        """Apply the request's on_timeout policy once its deadline has passed. Returns the row plus `outcome`:
        'timed_out' (deny policy: status timed_out, a timeout, not a human denial), 'approved' (decided_by
        'timeout-policy'), 'escalated' (level + 1, deadline = now + twice the original window, still pending;
        page someone with what the row holds; once `max_escalations` levels are used up the request times out as
        with 'deny') or 'unchanged' (already decided, or not due yet). Idempotent, and
        safe against a human decision arriving at the same moment: whichever commits first wins."""
        when = self.now() if now is None else float(now)
        with self.transaction() as conn:
            return approvals.expire(conn, approval_id, actor=actor, operator=self.operator,
                                    max_escalations=max_escalations, now=when)

    def cancel_approvals_for_run(self, run_id: str, reason: str, *, actor: str | None = None) -> list[Approval]:
        """A killed (or ended) run's pending requests become cancelled; returns them."""
        run_id = required_text(run_id, "run_id")
        reason = required_text(reason, "reason")
        now = self.now()
        with self.transaction() as conn:
            return approvals.cancel_for_run(conn, run_id, reason=reason, actor=actor or self.operator, now=now)
