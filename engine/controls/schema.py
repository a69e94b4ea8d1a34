"""The control plane's row vocabulary: the values control.db's CHECK constraints allow (kill scopes and modes, flag
scopes, approval statuses, on_timeout policies, breaker override actions) and the tables whose rows are bound to
their audit rows. The DDL itself is the store's (engine.store.control_ddl); these names are defined there, next to the
constraints that use them, and re-exported here for the control plane and its callers."""

from __future__ import annotations

from engine.store.control_ddl import (
                                      APPROVAL_STATUSES,
                                      BOUND_TABLES,
                                      BREAKER_ACTIONS,
                                      FLAG_SCOPES,
                                      KILL_MODES,
                                      KILL_SCOPES,
                                      ON_TIMEOUT_POLICIES,
)

__all__ = ["APPROVAL_STATUSES", "BOUND_TABLES", "BREAKER_ACTIONS", "FLAG_SCOPES", "KILL_MODES", "KILL_SCOPES",
           "ON_TIMEOUT_POLICIES"]
