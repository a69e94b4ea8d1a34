"""The operator control plane: what operators (CLI, console) and the engine intend, kept in control.db. The only
package that reads or writes control.db's control tables; its DDL is the store's (engine.store.control_ddl).

- api.py            ControlAPI: the facade every caller uses; one action = one transaction with its audit row
- api_base.py       ControlBase: opening control.db or Postgres, the transactions ControlAPI's actions run in
- approval_actions.py, durable_actions.py   ControlAPI's approval and durable-run methods (classes it inherits)
- kill_switches.py  kill switches          } public functions that take the caller's transaction, so several
- flag_settings.py  safe-mode flag rows    } actions (a runbook's apply) can share one; each change writes its
- approvals.py      approvals              } audit row and binds the control row to it
- overrides.py      breaker and budget overrides
- incidents.py      incidents and their time line (IncidentStore)
- applications.py   runbook applications (what a runbook changed, for its rollback)
- snapshot.py       ControlSnapshot: the engine's one-transaction read of everything it must obey
- audit.py          the hash-chained audit log: append, read, verify_chain()
- binding.py        control rows bound to their audit rows; verifier.py, anchor.py check them
- validate.py       argument checks; labels.py how rows read; errors.py ControlError
- schema.py         the row vocabulary (values the CHECK constraints allow)
- flags.py          the safe-mode flag vocabulary and its validation
- preview.py        what a kill switch would stop, read from traces.db
- terminate.py      SIGTERM-then-SIGKILL for an engine whose event loop no longer answers
- reconcile.py      durable runs: operator decisions on side effects of unknown outcome (audit rows), resume audit
- resume_preview.py what `flightdeck resume` would replay, run again and release
- run_requests.py   runs operators asked to go on (resume rows, reconcile decisions); the engine's take of each

What these return are typed rows (engine.store.control_rows: frozen dataclasses, `as_dict()` for JSON), not dicts.

Exports are imported eagerly: the store no longer imports this package (schema v4's data step is the store's own,
engine.store.control_binding), so there is no import cycle to break, and the console's start imports none of it
(measured: `import engine.controls` with every export is ~50 ms, paid only by commands that use the control plane).
"""

from __future__ import annotations

from engine.controls.api import ControlAPI
from engine.controls.audit import AuditVerification, verify_chain
from engine.controls.errors import ControlError
from engine.controls.flags import FLAGS, validate_flag
from engine.controls.preview import KillPreview, preview_kill
from engine.controls.snapshot import ControlSnapshot
from engine.controls.terminate import TerminateResult, terminate_engine

__all__ = [
           "FLAGS",
           "AuditVerification",
           "ControlAPI",
           "ControlError",
           "ControlSnapshot",
           "KillPreview",
           "TerminateResult",
           "preview_kill",
           "terminate_engine",
           "validate_flag",
           "verify_chain",
]
