"""What a budget limits and how operators write limits: the dimensions, BudgetLimits and the CLI override parser.

Pydantic is used here for parsing operator input only; the ledger compiles limits to tuples for its hot path
(see vectors.CompiledLimits).
"""

from __future__ import annotations

import math
from enum import Enum
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engine.durations import Duration, parse_duration

__all__ = [
    "MAX_LIMIT_AMOUNT",
    "MAX_LIMIT_USD",
    "SCOPE_KINDS",
    "BudgetLimits",
    "Dimension",
    "ScopeKind",
    "merge_limits",
    "parse_budget_overrides",
]


class Dimension(str, Enum):  # noqa: UP042 -- pickled into the writer's frames; a move to StrEnum is its own change
    """What a budget can limit. Member names equal their values so plain strings work as dict keys too."""

    input_tokens = "input_tokens"
    output_tokens = "output_tokens"
    total_tokens = "total_tokens"
    cost_usd = "cost_usd"
    model_calls = "model_calls"
    tool_calls = "tool_calls"
    retries = "retries"
    wall_time_s = "wall_time_s"  # elapsed since the scope opened, checked on reserve()/check()
    max_context_tokens = "max_context_tokens"  # per-call ceiling on the context sent, not a sum

    def __str__(self) -> str:
        return self.value


ScopeKind = Literal["run", "agent", "hierarchy_daily"]
SCOPE_KINDS: frozenset[str] = frozenset(get_args(ScopeKind))

# Upper bounds of one limit: far above any workload, far below what a field of a packed vector holds (2**64 per
# amount, see vectors.MAX_AMOUNT).
MAX_LIMIT_AMOUNT = 10 ** 15  # tokens or calls in one limit
MAX_LIMIT_USD = 1e9


class BudgetLimits(BaseModel):
    """Optional limit per dimension (None = unlimited) plus the fraction at which a soft warning is emitted."""

    # Upper bounds keep a typo (1e40 tokens, $1e300) from overflowing the packed vectors or the float soft levels
    # on every reserve(): refused when the file or override is read, not at the first call of every run.
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True, allow_inf_nan=False)

    input_tokens: int | None = Field(default=None, ge=0, le=MAX_LIMIT_AMOUNT)
    output_tokens: int | None = Field(default=None, ge=0, le=MAX_LIMIT_AMOUNT)
    total_tokens: int | None = Field(default=None, ge=0, le=MAX_LIMIT_AMOUNT)
    cost_usd: float | None = Field(default=None, ge=0, le=MAX_LIMIT_USD)
    model_calls: int | None = Field(default=None, ge=0, le=MAX_LIMIT_AMOUNT)
    tool_calls: int | None = Field(default=None, ge=0, le=MAX_LIMIT_AMOUNT)
    retries: int | None = Field(default=None, ge=0, le=MAX_LIMIT_AMOUNT)
    wall_time_s: Duration | None = Field(default=None, ge=0)
    max_context_tokens: int | None = Field(default=None, ge=0, le=MAX_LIMIT_AMOUNT)
    soft_threshold: float = Field(default=0.8, gt=0, le=1)


_ALIASES: dict[str, str] = {
    "cost": "cost_usd",
    "tokens": "total_tokens",
    "wall": "wall_time_s",
    "calls": "model_calls",
    "context": "max_context_tokens",
    "soft": "soft_threshold",
    **{dim.value: dim.value for dim in Dimension},
    "soft_threshold": "soft_threshold",
}
_INT_FIELDS = frozenset(
    {"input_tokens", "output_tokens", "total_tokens", "model_calls", "tool_calls", "retries", "max_context_tokens"}
)
_UNLIMITED_WORDS = frozenset({"none", "unlimited", "off"})


def _parse_override_value(key: str, field: str, raw: str) -> float | int | None:
    text = raw.strip()
    if not text:
        raise ValueError(f"budget override '{key}': missing value")
    if text.lower() in _UNLIMITED_WORDS and field != "soft_threshold":
        return None  # explicit None lets an override lift a limit inherited from the hierarchy file
    if field == "wall_time_s":
        try:
            return parse_duration(text)
        except ValueError as exc:
            raise ValueError(f"budget override '{key}': {exc}") from None
    if field == "cost_usd" and text.startswith("$"):
        text = text[1:]
    try:
        number = float(text.replace("_", ""))
    except ValueError:
        raise ValueError(f"budget override '{key}': expected a number, got {raw.strip()!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"budget override '{key}': expected a finite number, got {raw.strip()!r}")
    if number < 0:
        raise ValueError(f"budget override '{key}': cannot be negative, got {raw.strip()!r}")
    if field in _INT_FIELDS:
        if not number.is_integer():
            raise ValueError(f"budget override '{key}': expected a whole number, got {raw.strip()!r}")
        return int(number)
    if field == "soft_threshold" and not 0 < number <= 1:
        raise ValueError(f"budget override '{key}': must be a fraction in (0, 1], got {raw.strip()!r}")
    return number


def parse_budget_overrides(text: str) -> BudgetLimits:
    """Parse a CLI override like ``"cost=2.50,tool_calls=40,wall=300s,tokens=20000"``.

    Aliases: cost, tokens (total), wall (a duration), calls (model calls), context (max context), soft (threshold),
    plus every full dimension name. ``key=none`` lifts a limit when merged over a base. Only keys that appear are set,
    so merge_limits() keeps everything else from the base. Errors are ValueErrors naming the offending key.
    """
    values: dict[str, Any] = {}
    given_as: dict[str, str] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep:
            raise ValueError(f"budget override '{key}': expected key=value")
        field = _ALIASES.get(key.lower())
        if field is None:
            known = ", ".join(sorted(_ALIASES))
            raise ValueError(f"budget override '{key}': unknown budget key (known: {known})")
        if field in given_as:
            raise ValueError(f"budget override '{key}': {field} given twice (also as '{given_as[field]}')")
        given_as[field] = key
        values[field] = _parse_override_value(key, field, raw)
    try:
        return BudgetLimits(**values)
    except ValidationError as exc:  # a bound of the model (an absurd amount): one line naming the key, like above
        error = exc.errors(include_url=False)[0]
        field = str(error["loc"][0]) if error["loc"] else ""
        raise ValueError(f"budget override '{given_as.get(field, field)}': {error['msg']}") from None


def merge_limits(base: BudgetLimits, override: BudgetLimits) -> BudgetLimits:
    """Fields explicitly set on `override` (including an explicit None, which lifts a limit) win over `base`."""
    merged = base.model_dump()
    for name in override.model_fields_set:
        merged[name] = getattr(override, name)
    return BudgetLimits(**merged)


def limits_attribute(limits: BudgetLimits) -> dict[str, Any]:
    """Per-run overrides as a run attribute (JSON): only the fields that were given, an explicit None included (it
    lifts a limit of the hierarchy's), so limits_from_attribute gives back overrides that merge the same way."""
    return limits.model_dump(mode="json", exclude_unset=True)


def limits_from_attribute(value: Any) -> BudgetLimits | None:
    """The overrides a run attribute recorded (limits_attribute), or None when it holds none (or nothing valid:
    a row from an older engine, or edited by hand)."""
    if not isinstance(value, dict) or not value:
        return None
    try:
        return BudgetLimits(**value)
    except (ValidationError, TypeError):
        return None
