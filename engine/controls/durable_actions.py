"""DurableRunActions: ControlAPI's durable-run methods: reconcile a side effect, and audit a resume or a retry.

A mixin of ControlAPI (engine/controls/api.py; callers use them there) over engine.controls.reconcile, which reads
the run from the trace store and writes the decisions and audit rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.controls import reconcile
from engine.controls.api_base import ControlBase
from engine.controls.errors import ControlError
from engine.controls.reconcile import AwaitingCall, Decision
from engine.controls.validate import choice, required_text
from engine.store.control_rows import AuditEntry, KillSwitch


class DurableRunActions(ControlBase):
    """Durable runs: operator decisions on side effects of unknown outcome, and the audit rows of resume and retry."""

    # -- durable runs: reconcile and resume (engine.controls.reconcile) ----------------------------------------

    def reconcile_side_effect(self, run_id: str, call: str | None, decision: str, note: str) -> Decision:
        """Decide a side effect whose outcome is unknown in a `needs_reconcile` run (`call`: its span id, durable
        key or call path; None when it is the run's only one): `done`, `again` or `fail`, with a note (required).
        Refused (InputError/ControlError, nothing written) for an unknown run, a run not in needs_reconcile, a call
        that is not unknown or already decided. The next durable engine on the store carries the run on."""
        decision = choice(decision, reconcile.DECISIONS, "decision")
        note = required_text(note, "reason")
        row, spans = reconcile.read_run(self.location, run_id)
        if row.status != "needs_reconcile":
            raise ControlError(f"run {row.id} is {row.status}, not needs_reconcile: it has nothing to reconcile")
        with self.transaction() as conn:
            calls = reconcile.awaiting_calls(spans, reconcile.decisions(conn, row.id))
            return reconcile.record(conn, reconcile.pick(calls, call, row.id), decision, note,
                                    operator=self.operator, now=self.now())

    def reconcile_calls(self, run_id: str) -> list[AwaitingCall]:
        """The side effects that stopped `run_id` needs_reconcile, each with its decision (None: still awaited)."""
        row, spans = reconcile.read_run(self.location, run_id)
        return reconcile.awaiting_calls(spans, self.reconcile_decisions(row.id))

    def reconcile_decisions(self, run_id: str) -> dict[str, Decision]:
        with self.read() as conn:
            return reconcile.decisions(conn, run_id)

    def record_resume(self, run_id: str, status: str, limits: Mapping[str, Any] | None, reason: str,
                      attributes: Mapping[str, Any] | None = None) -> tuple[AuditEntry, list[KillSwitch]]:
        """Audit a resume (releasing the run's kill switch; `attributes`: the run row's), one transaction."""
        reason = required_text(reason, "reason")
        with self.transaction() as conn:
            return reconcile.record_resume(conn, run_id, status, limits=limits, reason=reason,
                                           operator=self.operator, now=self.now(), attributes=attributes)

    def record_retry(self, run_id: str, *, span: str, path: str, new_run_id: str, replays: int,
                     side_effects_again: list[str], reason: str, budget: Mapping[str, Any] | None = None,
                     budget_source: str = "original", budget_changes: list[Any] | None = None) -> AuditEntry:
        """Audit an operator's retry of a run from one of its steps (the new run's id in `after`, and the budget
        overrides it starts with: the original's with its budget changes, or the operator's `--budget`)."""
        reason = required_text(reason, "reason")
        with self.transaction() as conn:
            return reconcile.record_retry(conn, run_id, span=span, path=path, new_run_id=new_run_id,
                                          replays=replays, side_effects_again=side_effects_again, reason=reason,
                                          operator=self.operator, now=self.now(), budget=budget,
                                          budget_source=budget_source, budget_changes=budget_changes)
