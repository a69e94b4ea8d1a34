"""The operator control plane: what operators (CLI, console) and the engine intend, kept in control.db.

- schema.py     the control.db tables (one migration appended to engine.store.control_schema.CONTROL_MIGRATIONS)
- api.py        ControlAPI: every operator action and its audit row in one transaction; the engine-side calls
- audit.py      the hash-chained audit log and verify_chain()
- flags.py      the safe-mode flag vocabulary and its validation
- preview.py    what a kill switch would stop, read from traces.db
- terminate.py  SIGTERM-then-SIGKILL for an engine whose event loop no longer answers

Exports are loaded lazily: engine.store.control_schema imports engine.controls.schema while engine.store is itself
being imported, and an eager `from engine.controls.api import ...` here would import engine.store.control halfway
through its own initialisation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.controls.api import ControlAPI, ControlError, ControlSnapshot
    from engine.controls.audit import AuditVerification, verify_chain
    from engine.controls.flags import FLAGS, validate_flag
    from engine.controls.preview import KillPreview, preview_kill
    from engine.controls.terminate import TerminateResult, terminate_engine

__all__ = ["ControlAPI", "ControlError", "ControlSnapshot", "AuditVerification", "verify_chain", "FLAGS",
           "validate_flag", "KillPreview", "preview_kill", "TerminateResult", "terminate_engine"]

_LAZY = {
    "ControlAPI": "engine.controls.api",
    "ControlError": "engine.controls.api",
    "ControlSnapshot": "engine.controls.api",
    "AuditVerification": "engine.controls.audit",
    "verify_chain": "engine.controls.audit",
    "FLAGS": "engine.controls.flags",
    "validate_flag": "engine.controls.flags",
    "KillPreview": "engine.controls.preview",
    "preview_kill": "engine.controls.preview",
    "TerminateResult": "engine.controls.terminate",
    "terminate_engine": "engine.controls.terminate",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'engine.controls' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
