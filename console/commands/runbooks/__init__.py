"""Runbooks and incidents on the command line.

    flightdeck runbooks list | show ID | check [DIR] | apply ID --scope S [--dry-run] | rollback ID
    flightdeck incidents [--all] [--json]
    flightdeck incident show | ack | resolve | note ID
    flightdeck postmortem INCIDENT_ID [--out FILE]

Acting commands take --reason (recorded in the audit log) and --operator NAME (default $FLIGHTDECK_OPERATOR, else the
OS user). Bad input exits 2 naming the file, line and field (runbooks) or the argument.

JSON shapes (stable; a documented interface):
- `runbooks list --json`: a list of runbooks: id, title, severity, owner, apply, rollback, origin, path, detect (list
  of signal, op, threshold, for_s, scope, target, params), actions (list of one-key objects as in the file).
- `incidents --json`: a list of incidents, newest first: id, runbook, title, severity, scope, apply_mode, status,
  firing, fired, opened, updated, cleared, signals, last_signals, context, suggested, acknowledged, acknowledged_by,
  resolved, resolved_by, resolution, paged_targets, then state (firing, clearing, quiet, resolved: docs/runbooks.md).
- `incident show ID --json`: one incident object as above plus `timeline` (list of id, ts, kind, actor, text, data)
  and `applications` (list of id, runbook, scope, actor, reason, applied, actions, rollback, rollback_due,
  rolled_back, rolled_back_by, rollback_report).

One module per command group: runbooks.py (runbooks list, show, check, apply, rollback), incidents.py (incidents,
incident), postmortem.py; common.py holds what they share; where a runbook applies (scopes, placeholders, the runs
it reaches) is console/runbook_scopes.py, shared with the runbooks view. All control.db access goes through
engine.controls and engine.runbooks.
"""

from __future__ import annotations

import argparse

from console.commands.runbooks.incidents import APPLICATION_FIELDS, INCIDENT_FIELDS, add_incidents
from console.commands.runbooks.postmortem import add_postmortem
from console.commands.runbooks.runbooks import add_runbooks

__all__ = ["APPLICATION_FIELDS", "INCIDENT_FIELDS", "add_parsers"]


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The four command groups, in the order `flightdeck --help` lists them."""
    add_runbooks(commands)
    add_incidents(commands)
    add_postmortem(commands)
