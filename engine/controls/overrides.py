"""Breaker and budget overrides in control.db: an operator or a runbook asks the running engine to force a breaker
open / reset / disable it, or to change a running run's budget; the engine marks what it applied. Every function
takes the caller's connection; each override gets its bound audit row in that transaction."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from engine.controls import audit
from engine.controls.binding import bind
from engine.errors import InputError
from engine.store.control_rows import BreakerOverride, BudgetOverride
from engine.store.dialect import SqlConnection, insert_id
from engine.store.rows import fetch_one_typed, fetch_typed

# Mirrors engine.guardrails.breaker.BREAKER_KINDS and engine.guardrails.budget.Dimension (a test pins both): imported
# from there, every `flightdeck approvals` would pay for loading pydantic models it never uses.
BREAKER_KINDS: tuple[str, ...] = ("tool", "model", "delegation")
BUDGET_DIMENSIONS: tuple[str, ...] = ("input_tokens", "output_tokens", "total_tokens", "cost_usd", "model_calls",
                                      "tool_calls", "retries", "wall_time_s", "max_context_tokens")
_WHOLE_DIMENSIONS = frozenset(BUDGET_DIMENSIONS) - {"cost_usd", "wall_time_s"}

UNAPPLIED_BREAKER_SQL = "SELECT * FROM breaker_overrides WHERE applied IS NULL ORDER BY id"
UNAPPLIED_BUDGET_SQL = "SELECT * FROM budget_overrides WHERE applied IS NULL ORDER BY id"


def checked_breaker_key(key: str) -> str:
    kind, _, name = key.partition(":")
    if kind not in BREAKER_KINDS or not name:
        raise InputError(f"expected KIND:NAME with KIND one of {', '.join(BREAKER_KINDS)} (e.g. tool:crm_lookup),"
                         f" got {key!r}", field="key")
    return key


def checked_limits(limits: Any) -> dict[str, Any]:
    """{dimension: number or None}: known dimensions, finite and non-negative, whole numbers for counts."""
    if not isinstance(limits, Mapping) or not limits:
        raise InputError("must be a non-empty object of dimension -> number", field="limits")
    clean: dict[str, Any] = {}
    for key, value in limits.items():
        if key not in BUDGET_DIMENSIONS:
            raise InputError(f"unknown budget dimension (known: {', '.join(BUDGET_DIMENSIONS)})",
                             field=f"limits.{key}")
        if value is None:
            clean[key] = None
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or value < 0:
            raise InputError(f"expected a non-negative number or null, got {value!r}", field=f"limits.{key}")
        if key in _WHOLE_DIMENSIONS:
            if float(value) != int(value):
                raise InputError(f"expected a whole number, got {value!r}", field=f"limits.{key}")
            value = int(value)
        clean[key] = value
    return clean


def create_breaker_override(conn: SqlConnection, key: str, action: str, *, reason: str, operator: str,
                            source: str, actor: str, now: float) -> BreakerOverride:
    override_id = insert_id(conn, "INSERT INTO breaker_overrides (key, action, reason, operator, source, created) "
                                  "VALUES (?, ?, ?, ?, ?, ?)", (key, action, reason, operator, source, now))
    row = fetch_one_typed(conn, BreakerOverride, "SELECT * FROM breaker_overrides WHERE id = ?", (override_id,))
    assert row is not None
    bind(conn, "breaker_overrides", row.id,
         audit.append(conn, ts=now, actor=actor, action="breaker_override", target=key, after=row, reason=reason))
    return row


def later_breaker_override(conn: SqlConnection, key: str, after_id: int) -> BreakerOverride | None:
    """The newest override of `key` made after override `after_id`, if any."""
    return fetch_one_typed(conn, BreakerOverride, "SELECT * FROM breaker_overrides WHERE key = ? AND id > ? "
                                                  "ORDER BY id DESC LIMIT 1", (key, after_id))


def newest_breaker_overrides(conn: SqlConnection, limit: int) -> list[BreakerOverride]:
    return fetch_typed(conn, BreakerOverride, "SELECT * FROM breaker_overrides ORDER BY id DESC LIMIT ?", (int(limit),))


def create_budget_override(conn: SqlConnection, run_id: str, limits: Mapping[str, Any], *, reason: str,
                           operator: str, source: str, actor: str, now: float) -> BudgetOverride:
    """Insert `limits` (stored as canonical JSON, exactly as given) with its bound audit row; returns the row."""
    override_id = insert_id(
        conn, "INSERT INTO budget_overrides (run_id, limits, reason, operator, source, created) "
              "VALUES (?, ?, ?, ?, ?, ?)",
        (run_id, audit.canonical_json(dict(limits)), reason, operator, source, now))
    row = fetch_one_typed(conn, BudgetOverride, "SELECT * FROM budget_overrides WHERE id = ?", (override_id,))
    assert row is not None
    bind(conn, "budget_overrides", row.id,
         audit.append(conn, ts=now, actor=actor, action="budget_change", target=f"run:{run_id}", after=row,
                      reason=reason))
    return row


def _mark(conn: SqlConnection, sql: str, ids: Iterable[int], *params: Any) -> int:
    id_list = list(ids)
    return conn.execute(sql.format(ids=", ".join("?" * len(id_list))), (*params, *id_list)).rowcount


def mark_breaker_overrides_applied(conn: SqlConnection, ids: Iterable[int], engine_id: str, now: float) -> int:
    return _mark(conn, "UPDATE breaker_overrides SET applied = ?, applied_by = ? WHERE id IN ({ids}) "
                       "AND applied IS NULL", ids, now, engine_id)


def mark_budget_overrides_applied(conn: SqlConnection, ids: Iterable[int], now: float) -> int:
    return _mark(conn, "UPDATE budget_overrides SET applied = ? WHERE id IN ({ids}) AND applied IS NULL", ids, now)


def latest_breaker_override(conn: SqlConnection, key: str) -> BreakerOverride | None:
    """The newest override of `key` (applied or not), if any."""
    return fetch_one_typed(conn, BreakerOverride, "SELECT * FROM breaker_overrides WHERE key = ? "
                                                  "ORDER BY id DESC LIMIT 1", (key,))
