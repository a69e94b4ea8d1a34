"""Operator controls on the command line: kill / release, approvals, safe-mode flags, breakers, the audit log and
engines. Every acting command takes --reason (required, recorded in the audit log) and --operator NAME (default
$FLIGHTDECK_OPERATOR, else the OS user); each action and its audit row are one control.db transaction.

JSON shapes (stable; a documented interface):
- `kill --list --json`: a list of kill switches: id, scope, target, run_id, mode, reason, operator, created, acked,
  acked_by (active ones only, so released fields are omitted).
- `approvals --json`: a list of approvals, oldest request first (with --all: every status, newest first): id, status,
  run_id, span_id, agent, tool, arguments (object), args_hash (sha256 of the canonical arguments: pass it to
  `approve/deny --expect-hash`), risk, reason (the model's), requested, deadline, level, on_timeout, decided,
  decided_by, decision_reason, edited_arguments (object or null).
- `safe-mode list --json`: a list of active flags: id, name, value, scope, target, previous_value, source, reason,
  operator, created, acked.
- `breakers list --json`: a list with one object per breaker key known from the engine's report or from overrides:
  key, state (null until the engine reports breaker states), reported (the engine's row or null), overrides (list
  of id, action, reason, operator, created, applied, applied_by; newest first).
- `audit --json`: a list of audit rows, newest first: id, ts, actor, action, target, before, after, reason,
  prev_hash, hash. `audit verify --json`: one object: ok, rows, first_bad_id, problem, anchored_seq (the audit row
  the engine's newest anchor in traces.db names, or null).
- `engines --json`: a list of engines, newest first: id, pid, host, user, version, started, heartbeat, stopped,
  alive, stale, holds_lock.

Times are Unix seconds (floats) in JSON and local wall-clock times on screen.

One module per command group: kill.py (kill, release), approvals.py (approvals, approve, deny), safe_mode.py,
breakers.py, audit.py, engines.py, durable.py (reconcile, resume), queues.py (serve mode: `queues`, its JSON shape
documented there); common.py holds what they share. All control.db
access goes through engine.controls.
"""

from __future__ import annotations

import argparse

from console.commands.controls.approvals import APPROVAL_FIELDS, add_approvals
from console.commands.controls.audit import AUDIT_FIELDS, add_audit
from console.commands.controls.breakers import OVERRIDE_FIELDS, add_breakers
from console.commands.controls.common import OPERATOR_ENV, operator_name, wrap_handlers
from console.commands.controls.durable import add_reconcile, add_resume
from console.commands.controls.engines import ENGINE_FIELDS, add_engines
from console.commands.controls.kill import KILL_FIELDS, add_kill, add_release
from console.commands.controls.queues import add_queues
from console.commands.controls.retry import add_retry
from console.commands.controls.safe_mode import FLAG_FIELDS, add_safe_mode, parse_scope

__all__ = ["APPROVAL_FIELDS", "AUDIT_FIELDS", "ENGINE_FIELDS", "FLAG_FIELDS", "KILL_FIELDS", "OPERATOR_ENV",
           "OVERRIDE_FIELDS", "add_parsers", "operator_name", "parse_scope"]


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The control commands, in the order `flightdeck --help` lists them."""
    before = set(commands.choices)
    add_kill(commands)
    add_release(commands)
    add_approvals(commands)
    add_safe_mode(commands)
    add_breakers(commands)
    add_audit(commands)
    add_engines(commands)
    add_reconcile(commands)
    add_resume(commands)
    add_retry(commands)
    add_queues(commands)
    for name, parser in commands.choices.items():
        if name not in before:
            wrap_handlers(parser)
