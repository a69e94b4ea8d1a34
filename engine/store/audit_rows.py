"""The audit log's row format: how a row of control.db's `audit` table is hashed and decoded.

The store owns it (not engine.controls.audit, which appends and verifies rows) because schema v4's data step
(engine.store.control_binding.bind_existing) must read audit rows while control.db is being migrated, and the store
imports no feature package. hash = sha256(prev_hash + canonical JSON of the hashed fields); see engine.controls.audit.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

__all__ = ["HASHED_FIELDS", "canonical_json", "decode_row", "row_hash"]

HASHED_FIELDS = ("id", "ts", "actor", "action", "target", "before", "after", "reason")


def canonical_json(value: Any) -> str:
    """Sorted keys, no whitespace, non-ASCII kept: the one spelling of a value that hashes are taken over."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def row_hash(prev_hash: str, fields: dict[str, Any]) -> str:
    payload = {name: fields.get(name) for name in HASHED_FIELDS}
    return hashlib.sha256((prev_hash + canonical_json(payload)).encode("utf-8")).hexdigest()


def decode_row(row: dict[str, Any]) -> dict[str, Any]:
    """An audit row for callers: `before` / `after` parsed from JSON."""
    out = dict(row)
    for name in ("before", "after"):
        if isinstance(out.get(name), str):
            try:
                out[name] = json.loads(out[name])
            except ValueError:  # a tampered row must still be listable; verify_chain reports it
                pass
    return out
