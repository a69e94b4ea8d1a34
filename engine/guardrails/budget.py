"""Budgets enforced by reservation: a pure, clock-injected ledger the runtime calls around every model and tool call.

Before a call the runtime *reserves* its worst case (estimated input, max output tokens, estimated cost, one call)
against the scope it runs in and every enclosing scope; after the call it *settles* the actual usage, which releases
the rest, or *releases* everything if the call never happened. Reservations count against limits exactly like spend,
so any number of concurrent callers can never jointly overshoot a budget: each one only starts if its worst case fits.

Scopes nest (agent invocation inside run inside a hierarchy's rolling 24 h cap). A reservation is atomic across the
whole chain: either every scope records it or none does.

Hot path notes: reserve()/settle() run twice per model call, so amounts are *packed vectors* (every summed dimension
in one int, one fixed-width field each: adding two vectors is one int addition), limits are pre-compiled tuples that
skip unlimited dimensions, there is one lock, and event objects are built only when someone listens. A chain with no
limit at all (the common case) skips every check and only accounts (see _Scope.free).
Cost is kept in integer nano-dollars so that sums are exact: with floats, ten reservations of $0.10 can add up to
$1.0000000000000002 and spuriously breach a $1 cap (or, worse, an epsilon fudge lets real overshoot through).
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from operator import itemgetter
from types import MappingProxyType
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engine.clock import Clock, SystemClock
from engine.durations import Duration, parse_duration

__all__ = [
    "ATTRIBUTION_KEYS",
    "Actual",
    "Breach",
    "BudgetEvent",
    "BudgetLedger",
    "BudgetLimits",
    "Demand",
    "Dimension",
    "DimensionUsage",
    "Reservation",
    "ScopeKind",
    "ScopeUsage",
    "merge_limits",
    "parse_budget_overrides",
]


class Dimension(str, Enum):
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
_SCOPE_KINDS: frozenset[str] = frozenset(get_args(ScopeKind))

ATTRIBUTION_KEYS: tuple[str, ...] = ("agent", "model", "tool", "run", "tenant", "hierarchy")
"""Label keys spend is attributed by. Other labels (a span id, say) travel on events but are not aggregated: their
cardinality is unbounded and the table lives as long as the engine."""

# Internal vector layout: the dimensions that accumulate. wall_time_s and max_context_tokens are not sums.
_SUMMED: tuple[Dimension, ...] = (
    Dimension.input_tokens,
    Dimension.output_tokens,
    Dimension.total_tokens,
    Dimension.cost_usd,
    Dimension.model_calls,
    Dimension.tool_calls,
    Dimension.retries,
)
_N = len(_SUMMED)
_OUT, _TOTAL, _COST = 1, 2, 3
_WALL = _N  # index used only for soft-threshold bookkeeping of wall time
_NANO = 1_000_000_000
_DAY_S = 86_400.0
_DAY_BUCKET_S = 60.0  # rolling-window granularity: bounds memory at 1440 buckets per daily scope, whatever the traffic
_BURN_WINDOW_S = 60.0


# Packed vectors: field i of a vector `v` is `(v >> _SHIFT[i]) & _MASK[i]`. Every field is a non-negative sum (a
# hold is only ever taken off the total it was added to), so fields never borrow from each other; each int amount is
# below 2**64 (Demand checks; a total is below 2**65) and a field has 96 bits, so a scope could sum 2**30 maximal
# demands before a field carried into the next.
# Cost sits in the top field: nano-dollars are unbounded, and the top field has nothing above it to carry into.
_FIELD_BITS = 96
_MAX_AMOUNT = 1 << 64
MAX_LIMIT_AMOUNT = 10 ** 15  # tokens or calls in one limit: far above any workload, far below _MAX_AMOUNT
MAX_LIMIT_USD = 1e9
_SHIFT: tuple[int, ...] = tuple(_FIELD_BITS * position for position in (0, 1, 2, 6, 3, 4, 5))
_MASK: tuple[int, ...] = tuple(-1 if i == 3 else (1 << _FIELD_BITS) - 1 for i in range(7))  # -1: cost, unmasked


def _cost_to_nano(cost: float) -> int:
    return round(cost * _NANO)


def _field(packed: int, index: int) -> int:
    return (packed >> _SHIFT[index]) & _MASK[index]


def _unpack(packed: int) -> list[int]:
    return [(packed >> shift) & mask for shift, mask in zip(_SHIFT, _MASK)]


def _external(index: int, value: float) -> float:
    """Internal units (nano-dollars for cost) back to what operators read."""
    return value / _NANO if index == _COST else float(value)


# --------------------------------------------------------------------------------------------------------------------
# Limits: pydantic for parsing operator input only; compiled to tuples for the hot path.
# --------------------------------------------------------------------------------------------------------------------


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


class _Compiled:
    """BudgetLimits flattened for the hot path: only limited dimensions, in internal units, with soft levels."""

    __slots__ = ("checks", "limits", "soft_levels", "wall", "wall_level", "context", "threshold", "limited",
                 "token_capped")

    def __init__(self, limits: BudgetLimits) -> None:
        threshold = limits.soft_threshold
        checks: list[tuple[int, int, float]] = []
        for index, dim in enumerate(_SUMMED):
            value = getattr(limits, dim.value)
            if value is not None:
                internal = _cost_to_nano(value) if index == _COST else int(value)
                checks.append((index, internal, threshold * internal))
        # (index, limit, soft level): the hot loop compares against the soft level first, which is <= the limit, so
        # the common "far from both" case costs one comparison per limited dimension.
        self.checks: tuple[tuple[int, int, float], ...] = tuple(checks)
        self.limits: dict[int, int] = {i: limit for i, limit, _ in checks}
        self.wall: float | None = limits.wall_time_s
        self.wall_level: float = threshold * self.wall if self.wall is not None else math.inf
        self.context: int | None = limits.max_context_tokens
        self.threshold = threshold
        self.soft_levels: dict[int, float] = {i: level for i, _, level in checks}
        if self.wall is not None:
            self.soft_levels[_WALL] = self.wall_level
        # Whether anything at all is limited: most agent scopes are not, and a chain of such scopes takes the
        # ledger's fast paths (see _Scope.free).
        self.limited = bool(checks) or self.wall is not None or self.context is not None
        # Whether step_output_cap() has anything to compute here: only output and total tokens bound max_tokens.
        self.token_capped = any(i == _OUT or i == _TOTAL for i, _, _ in checks)


# --------------------------------------------------------------------------------------------------------------------
# Value types crossing the API.
# --------------------------------------------------------------------------------------------------------------------


_S1, _S2, _S3, _S4, _S5, _S6 = _SHIFT[1:]
_BELOW_COST = (1 << _S3) - 1  # every field but cost, which is on top
_GUARDS = sum(1 << (shift + _FIELD_BITS - 1) for i, shift in enumerate(_SHIFT) if i != 3)


class Demand:
    """The worst case a call may consume, reserved before it starts. `context_tokens` is checked, not summed."""

    __slots__ = ("input_tokens", "output_tokens", "cost_usd", "model_calls", "tool_calls", "retries",
                 "context_tokens", "_vec")

    def __init__(self, input_tokens: int = 0, output_tokens: int = 0, cost_usd: float = 0.0, model_calls: int = 0,
                 tool_calls: int = 0, retries: int = 0, context_tokens: int = 0) -> None:
        # Validated here, not in reserve(): a negative demand would silently hand budget back, and an absurdly
        # large one could overflow its field of a packed vector.
        if not (0 <= input_tokens < _MAX_AMOUNT and 0 <= output_tokens < _MAX_AMOUNT and 0 <= model_calls < _MAX_AMOUNT
                and 0 <= tool_calls < _MAX_AMOUNT and 0 <= retries < _MAX_AMOUNT and 0 <= context_tokens
                and 0 <= cost_usd < math.inf):
            raise ValueError(f"a budget demand must be non-negative and finite (and amounts below 2**64): "
                             f"{self._fields(locals())}")
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens
        self.cost_usd = cost_usd
        self.model_calls = model_calls
        self.tool_calls = tool_calls
        self.retries = retries
        self.context_tokens = context_tokens
        # The ledger's packed vector (internal units: nano-dollars), computed once here so reserve()/settle() read
        # one int instead of seven attributes. Demands are values: do not mutate one after construction. Unrolled:
        # this runs on every model call.
        self._vec: int = (input_tokens | output_tokens << _S1 | (input_tokens + output_tokens) << _S2
                          | round(cost_usd * _NANO) << _S3 | model_calls << _S4 | tool_calls << _S5 | retries << _S6)

    @staticmethod
    def _fields(values: Mapping[str, Any]) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in values.items() if k != "self")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._fields({k: getattr(self, k) for k in Demand.__slots__[:-1]})})"


class Actual(Demand):
    """What a call really consumed, reported by the provider (or counted by the runtime for tool calls)."""

    __slots__ = ()

    def __init__(self, input_tokens: int = 0, output_tokens: int = 0, cost_usd: float = 0.0, model_calls: int = 0,
                 tool_calls: int = 0, retries: int = 0) -> None:
        super().__init__(input_tokens, output_tokens, cost_usd, model_calls, tool_calls, retries, 0)

    def __repr__(self) -> str:
        fields = {k: getattr(self, k) for k in Demand.__slots__ if k not in ("context_tokens", "_vec")}
        return f"Actual({self._fields(fields)})"


@dataclass(frozen=True, slots=True)
class Breach:
    """Why a reserve()/check() refused: the first scope (innermost first) and dimension that would be exceeded.

    Amounts are in the dimension's own units (USD for cost, seconds for wall time). For wall time `used` is the
    elapsed time; for max_context_tokens `requested` is the context the call wanted to send.
    """

    scope_id: str
    scope_kind: str
    dimension: Dimension
    limit: float
    used: float
    reserved: float
    requested: float
    message: str

    ok = False  # a class attribute, not a field: callers test `.ok` after every reserve()


class Reservation:
    """Budget held for one in-flight call. Settle or release it exactly once."""

    __slots__ = ("id", "scope_id", "demand", "_vec", "_chain", "_state", "_ledger")

    def __init__(self, rid: int, scope_id: str, demand: Demand, vec: int, chain: tuple[_Scope, ...],
                 ledger: BudgetLedger) -> None:
        self.id = rid
        self.scope_id = scope_id
        self.demand = demand
        self._vec = vec
        self._chain = chain
        self._state = "open"
        self._ledger = ledger

    ok = True  # a class attribute: cheaper than a property, and callers test it after every reserve()

    @property
    def state(self) -> Literal["open", "settled", "released"]:
        return self._state  # type: ignore[return-value]

    def __repr__(self) -> str:
        return f"Reservation(id={self.id}, scope_id={self.scope_id!r}, state={self._state!r}, demand={self.demand!r})"


@dataclass(frozen=True, slots=True)
class BudgetEvent:
    """Small payload the engine turns into a store event. `labels` are the scope's labels merged with its ancestors'."""

    kind: Literal["budget.reserved", "budget.settled", "budget.released", "budget.breach", "budget.soft_threshold"]
    scope_id: str
    scope_kind: str
    labels: Mapping[str, str]
    dimension: Dimension | None
    data: dict[str, float | int | str]


@dataclass(frozen=True, slots=True)
class DimensionUsage:
    used: float
    reserved: float
    limit: float | None
    fraction: float | None  # (used + reserved) / limit; None when unlimited
    burn_rate_per_min: float | None  # settled over the last 60 s (or since opening, if younger), per minute
    time_to_exhaustion_s: float | None  # remaining headroom at that burn rate; None when unlimited or not burning


@dataclass(frozen=True, slots=True)
class ScopeUsage:
    scope_id: str
    kind: str
    labels: Mapping[str, str]
    elapsed_s: float
    dimensions: dict[Dimension, DimensionUsage]

    def __getitem__(self, dimension: Dimension | str) -> DimensionUsage:
        return self.dimensions[Dimension(dimension)]


# --------------------------------------------------------------------------------------------------------------------
# The ledger.
# --------------------------------------------------------------------------------------------------------------------


class _Scope:
    __slots__ = ("scope_id", "kind", "parent", "children", "labels", "_attr_key", "chain", "compiled", "used",
                 "reserved", "opened_at", "max_context", "soft_pending", "spend", "dailies", "recent", "free",
                 "token_capped")

    def __init__(self, scope_id: str, kind: str, compiled: _Compiled, parent: _Scope | None,
                 labels: Mapping[str, str], opened_at: float) -> None:
        self.scope_id = scope_id
        self.kind = kind
        self.parent = parent
        self.children: set[str] = set()
        merged = dict(parent.labels) if parent is not None else {}
        merged.update(labels)  # a child's own labels win over inherited ones (agent in run in tenant)
        self.labels: Mapping[str, str] = MappingProxyType(merged)
        self._attr_key: tuple[tuple[str, str], ...] | None = None  # built on first use: the engine never needs it
        self.chain: tuple[_Scope, ...] = (self,) + (parent.chain if parent is not None else ())
        self.compiled = compiled
        self.used = 0  # packed vectors
        self.reserved = 0
        self.opened_at = opened_at
        self.max_context = 0
        self.soft_pending: set[int] = set(compiled.soft_levels)  # dimension indices whose warning has not fired
        # A rolling 24 h scope remembers when its spend happened; its `used` is the sum still inside the window.
        self.spend: _RollingDay | None = _RollingDay() if kind == "hierarchy_daily" else None
        self.dailies: tuple[_Scope, ...] = tuple(s for s in self.chain if s.spend is not None)
        # Settles of the last minute (time, packed amounts), for the burn rate. Per scope, so reading one scope's
        # rate never scans the whole engine's traffic, and pruned on append so it stays bounded by one minute of
        # this scope's calls.
        self.recent: deque[tuple[float, int]] = deque()
        self.free = False
        self.token_capped = True
        self.derive_flags()

    def derive_flags(self) -> None:
        """Summaries of the whole chain's limits, for the fast paths. Derived from the parent's, so re-derive the
        subtree (parents first) whenever a limit in it changes (BudgetLedger.set_limits does).

        `free`: no scope up the chain limits anything, so nothing can be exceeded or warned about and reserve()
        only has to account. `token_capped`: some scope limits output or total tokens (step_output_cap's concern).
        """
        compiled, parent = self.compiled, self.parent
        self.free = not compiled.limited and (parent is None or parent.free)
        self.token_capped = compiled.token_capped or (parent is not None and parent.token_capped)

    @property
    def attr_key(self) -> tuple[tuple[str, str], ...]:
        key = self._attr_key
        if key is None:
            key = self._attr_key = _attribution_key(self.labels)
        return key


class _RollingDay:
    """Spend of a hierarchy_daily scope in one-minute buckets, so the 24 h window costs bounded memory.

    A bucket leaves the window once its *newest possible* entry is 24 h old: spend stops counting between 24 h and
    24 h + 60 s after it happened. Erring late keeps the cap safe; the minute of slack is invisible at daily scale.
    """

    __slots__ = ("buckets",)

    def __init__(self) -> None:
        self.buckets: deque[list[Any]] = deque()  # [bucket start, packed amounts], oldest first

    def add(self, ts: float, amounts: int) -> bool:
        """Count `amounts` at `ts`. True when that started a new bucket (about once a minute)."""
        start = ts - ts % _DAY_BUCKET_S
        buckets = self.buckets
        if buckets and start <= buckets[-1][0]:
            # Same minute, or the wall clock stepped back: fold into the newest bucket rather than reorder.
            buckets[-1][1] += amounts
            return False
        buckets.append([start, amounts])
        return True

    def expire(self, now: float) -> int | None:
        """Drop buckets wholly older than 24 h. Their packed total, to take off `used`; None if none expired."""
        buckets = self.buckets
        cutoff = now - _DAY_S - _DAY_BUCKET_S
        if not buckets or buckets[0][0] > cutoff:
            return None
        dropped = 0
        while buckets and buckets[0][0] <= cutoff:
            dropped += buckets.popleft()[1]
        return dropped


def _prune_recent(recent: deque[tuple[float, int]], cutoff: float) -> None:
    """Drop burn-rate entries that left the one-minute window (the newest one never has)."""
    while recent[0][0] <= cutoff:
        recent.popleft()


def _attribution_key(labels: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple((k, str(labels[k])) for k in ATTRIBUTION_KEYS if k in labels)


class BudgetLedger:
    """Thread-safe reservation ledger over nested scopes. All methods are O(depth of the scope chain).

    `on_event` is called outside the lock (so it may call back into the ledger). Set `call_events=False` to keep
    only breach and soft-threshold events and drop the per-call reserved/settled/released ones.
    """

    def __init__(self, clock: Clock, on_event: Callable[[BudgetEvent], None] | None = None, *,
                 call_events: bool = True, attribution: bool = True) -> None:
        self._clock = clock
        # Bound once: the hot path reads the clock on every settle. The system clock's methods only wrap these.
        self._monotonic: Callable[[], float] = time.monotonic if type(clock) is SystemClock else clock.monotonic
        self._wall_time: Callable[[], float] = time.time if type(clock) is SystemClock else clock.time
        self._on_event = on_event
        self.call_events = call_events
        # The engine turns this off: the store already attributes every span's spend (agent, model, tool, run,
        # tenant), and an in-memory table keyed by run would grow for as long as the engine lives.
        self.track_attribution = attribution
        self._lock = threading.Lock()
        self._compiled: dict[BudgetLimits | None, _Compiled] = {}
        self._scopes: dict[str, _Scope] = {}
        self._ids = itertools.count(1)
        self._attribution: dict[tuple[tuple[str, str], ...], int] = {}  # packed totals

    # -- scopes ------------------------------------------------------------------------------------------------------

    def open_scope(self, scope_id: str, kind: ScopeKind, limits: BudgetLimits | None = None,
                   parent: str | None = None, labels: Mapping[str, str] | None = None) -> None:
        if kind not in _SCOPE_KINDS:
            raise ValueError(f"budget scope '{scope_id}': kind must be one of {sorted(_SCOPE_KINDS)}, got {kind!r}")
        compiled = self._compiled.get(limits)
        if compiled is None:  # limits are frozen and repeat (the same per-agent defaults every invocation)
            compiled = _Compiled(limits if limits is not None else BudgetLimits())
            if len(self._compiled) < 1024:
                self._compiled[limits] = compiled
        with self._lock:
            if scope_id in self._scopes:
                raise ValueError(f"budget scope '{scope_id}' is already open")
            parent_scope = self._get(parent) if parent is not None else None
            scope = _Scope(scope_id, kind, compiled, parent_scope, labels or {}, self._clock.monotonic())
            self._scopes[scope_id] = scope
            if parent_scope is not None:
                parent_scope.children.add(scope_id)

    def close_scope(self, scope_id: str, *, report: bool = True) -> ScopeUsage | None:
        """Close a scope and, with it, every scope opened inside it. Returns the scope's final usage (None with
        report=False: the runtime closes a scope per agent invocation and does not need the report).

        Spend already settled stays counted in the ancestors. Reservations still open keep their hold on the
        ancestors until settled or released (the runtime does that in a `finally`).
        """
        with self._lock:
            scope = self._get(scope_id)
            final = self._usage_locked(scope) if report else None
            stack = [scope]
            while stack:
                current = stack.pop()
                stack.extend(self._scopes[c] for c in current.children if c in self._scopes)
                del self._scopes[current.scope_id]
            if scope.parent is not None:
                scope.parent.children.discard(scope_id)
            return final

    def set_limits(self, scope_id: str, limits: BudgetLimits) -> None:
        """Replace a running scope's limits (operator action). Lowering below use makes the next reserve breach.

        A soft warning whose level changed is re-armed, so raising a budget warns again at the new threshold.
        A limit set on a scope whose chain had none takes it (and every scope inside it) off the fast paths from
        the next call on; reservations already held keep counting against it, since every path accounts them.
        """
        compiled = _Compiled(limits)
        with self._lock:
            scope = self._get(scope_id)
            old_levels = scope.compiled.soft_levels
            scope.soft_pending = {i for i, level in compiled.soft_levels.items()
                                  if i in scope.soft_pending or old_levels.get(i) != level}
            scope.compiled = compiled
            self._derive_subtree(scope)

    def _derive_subtree(self, scope: _Scope) -> None:
        """Re-derive the chain summaries of `scope` and everything opened inside it, parents before children."""
        stack = [scope]
        while stack:
            current = stack.pop()
            current.derive_flags()
            stack.extend(self._scopes[c] for c in current.children if c in self._scopes)

    def seed_daily_spend(self, scope_id: str, entries: Iterable[tuple[float, float]]) -> None:
        """Load past spend, as (wall-clock ts, cost_usd) pairs, into a hierarchy_daily scope's rolling window."""
        seeded: list[tuple[float, int]] = []
        for ts, cost in entries:
            if not (math.isfinite(ts) and math.isfinite(cost) and cost >= 0):
                raise ValueError(f"budget scope '{scope_id}': bad daily spend entry ({ts!r}, {cost!r})")
            seeded.append((float(ts), _cost_to_nano(cost) << _S3))
        seeded.sort(key=lambda entry: entry[0])
        events: list[BudgetEvent] = []
        with self._lock:
            scope = self._get(scope_id)
            if scope.spend is None:
                raise ValueError(f"budget scope '{scope_id}' is a {scope.kind} scope; only hierarchy_daily is seeded")
            # Rebuild in time order: seeding normally happens at open, but may follow live spend.
            merged = [(start, totals) for start, totals in scope.spend.buckets] + seeded
            merged.sort(key=lambda entry: entry[0])
            scope.spend = _RollingDay()
            for ts, amounts in merged:
                scope.spend.add(ts, amounts)
            for _, amounts in seeded:
                scope.used += amounts
            self._prune_daily(scope, self._clock.time())
            self._soft_sweep(scope, self._clock.monotonic(), events)
        self._emit(events)

    # -- the hot path ------------------------------------------------------------------------------------------------

    def reserve(self, scope_id: str, demand: Demand) -> Reservation | Breach:
        """Hold `demand` in the scope and every ancestor, or nothing at all if any of them would exceed a limit."""
        vec = demand._vec
        context = demand.context_tokens
        lock = self._lock
        lock.acquire()  # acquire/try/finally rather than `with`: measurably cheaper on this per-call path
        try:
            scope = self._scopes.get(scope_id)
            if scope is None:
                raise KeyError(f"no open budget scope '{scope_id}'")
            if scope.free and not (self.call_events and self._on_event is not None):
                # Fast path: nothing up the chain is limited, so nothing can breach or warn. Only account, so gauges
                # and a limit an operator sets later see every call in flight. Checked under the lock, so a
                # concurrent set_limits() either precedes this (slow path) or sees this reservation held.
                for s in scope.chain:
                    s.reserved += vec
                    if context > s.max_context:
                        s.max_context = context
                return Reservation(next(self._ids), scope_id, demand, vec, scope.chain, self)
            outcome, events = self._reserve_checked_locked(scope, demand, vec, context)
        finally:
            lock.release()
        if events:
            self._emit(events)  # outside the lock, so a listener may call back into the ledger
        return outcome

    def _reserve_checked_locked(self, scope: _Scope, demand: Demand, vec: int, context: int
                                ) -> tuple[Reservation | Breach, list[BudgetEvent] | None]:
        """reserve() for a chain with limits (lock held): check every scope, then commit to all or none. Returns
        the outcome and the events to emit once the lock is released."""
        crossed: list[tuple[_Scope, int]] | None = None
        breach: Breach | None = None
        chain = scope.chain
        now = self._monotonic()
        if scope.dailies:
            self._prune_chain(scope.dailies)
        # Pass 1: check every scope before touching any, so a refusal leaves nothing behind (atomicity).
        for s in chain:
            compiled = s.compiled
            if compiled.wall is not None:
                elapsed = now - s.opened_at
                if elapsed >= compiled.wall_level:
                    if elapsed >= compiled.wall:
                        breach = self._wall_breach(s, elapsed)
                        break
                    if _WALL in s.soft_pending and elapsed > 0:
                        crossed = (crossed or []) + [(s, _WALL)]
            if compiled.context is not None and context > compiled.context:
                breach = self._context_breach(s, context)
                break
            if compiled.checks:
                total = s.used + s.reserved + vec  # packed: every dimension's "after" in one addition
                for i, limit, level in compiled.checks:
                    after = (total >> _SHIFT[i]) & _MASK[i]
                    if after >= level:  # soft level <= limit, so this one comparison gates breach and warning
                        if after > limit:
                            breach = self._sum_breach(s, i, limit, _field(vec, i))
                            break
                        if i in s.soft_pending and after > 0:
                            crossed = (crossed or []) + [(s, i)]
            if breach is not None:
                break
        else:
            # Pass 2: commit.
            for s in chain:
                s.reserved += vec
                if context > s.max_context:
                    s.max_context = context
            result = Reservation(next(self._ids), scope.scope_id, demand, vec, chain, self)
        events: list[BudgetEvent] | None = None
        if breach is None and crossed:
            events = self._fire(crossed, now)  # marks them fired even when nobody listens
        if self._on_event is not None and (breach is not None or events or self.call_events):
            events = self._reserve_events(scope, breach, events, result if breach is None else None, vec, context)
        return (breach if breach is not None else result), events

    def settle(self, reservation: Reservation, actual: Actual, labels: Mapping[str, str] | None = None) -> None:
        """Replace the reservation with what was really used. Actual above the reservation is recorded as is."""
        act = actual._vec
        hold = reservation._vec
        crossed: list[tuple[_Scope, int]] | None = None
        events: list[BudgetEvent] | None = None
        grew: bool | None = None  # whether actual exceeds the hold anywhere: computed once, if a scope asks
        lock = self._lock
        lock.acquire()  # acquire/try/finally rather than `with`: measurably cheaper on this per-call path
        try:
            if reservation._state != "open" or reservation._ledger is not self:
                self._close_reservation(reservation, "settled")  # raises, naming what is wrong
            reservation._state = "settled"
            chain = reservation._chain
            now = self._monotonic()
            cutoff = now - _BURN_WINDOW_S
            entry = (now, act)  # one tuple shared by every scope's burn-rate window
            for s in chain:
                s.reserved -= hold
                s.used += act
                recent = s.recent
                recent.append(entry)
                if recent[0][0] <= cutoff:
                    _prune_recent(recent, cutoff)
                # used+reserved only grows (and a soft level can only be newly crossed) where actual exceeds the
                # hold. A free chain has nothing pending, so it never gets past the first test.
                if s.soft_pending:
                    if grew is None:
                        grew = _exceeds(act, hold)
                    if grew:
                        crossed = self._crossed(s, crossed)
            dailies = chain[0].dailies
            if dailies:
                wall_now = self._wall_time()
                start = wall_now - wall_now % _DAY_BUCKET_S
                for s in dailies:
                    buckets = s.spend.buckets  # type: ignore[union-attr]  # dailies all have one
                    if buckets and start <= buckets[-1][0]:  # _RollingDay.add(), inlined: it runs on every settle
                        buckets[-1][1] += act
                    else:
                        buckets.append([start, act])
                        # A new minute: expire what left the window here too, since a chain without limits
                        # never prunes on reserve() and the buckets must stay bounded at a day's worth.
                        self._prune_daily(s, wall_now)
            if self.track_attribution:
                self._attribute(chain[0], labels, act)
            if crossed:
                events = self._fire(crossed, now)
            if self.call_events and self._on_event is not None:
                data: dict[str, float | int | str] = {"reservation": reservation.id}
                data.update(_amounts(act))
                scope = chain[0]
                event_labels = scope.labels if not labels else MappingProxyType({**scope.labels, **labels})
                events = events or []
                events.append(BudgetEvent("budget.settled", reservation.scope_id, scope.kind, event_labels, None,
                                          data))
        finally:
            lock.release()
        if events and self._on_event is not None:
            self._emit(events)

    @staticmethod
    def _crossed(s: _Scope, crossed: list[tuple[_Scope, int]] | None) -> list[tuple[_Scope, int]] | None:
        """Add the soft levels of `s` that used+reserved now reaches and whose warning has not fired (lock held)."""
        total = s.used + s.reserved
        for i, _, level in s.compiled.checks:
            value = _field(total, i)
            if value >= level and value > 0 and i in s.soft_pending:
                crossed = (crossed or []) + [(s, i)]
        return crossed

    def _attribute(self, scope: _Scope, labels: Mapping[str, str] | None, act: int) -> None:
        """Add settled spend to the attribution table (lock held)."""
        key = scope.attr_key
        if labels:
            merged = dict(key)
            merged.update((k, str(v)) for k, v in labels.items())
            key = _attribution_key(merged)
        self._attribution[key] = self._attribution.get(key, 0) + act

    @property
    def labels_used(self) -> bool:
        """Whether settle() looks at its `labels` at all. Callers on the hot path may test the cheaper
        `track_attribution or call_events` (true whenever this is) and skip building labels otherwise."""
        return self.track_attribution or (self.call_events and self._on_event is not None)

    def release(self, reservation: Reservation) -> None:
        """Give the whole reservation back: the call failed before using anything, or was cancelled."""
        hold = reservation._vec
        with self._lock:
            self._close_reservation(reservation, "released")
            for s in reservation._chain:
                s.reserved -= hold
        if self._on_event is not None and self.call_events:
            scope = reservation._chain[0]
            self._emit([BudgetEvent("budget.released", reservation.scope_id, scope.kind, scope.labels, None,
                                    {"reservation": reservation.id})])

    # -- queries -----------------------------------------------------------------------------------------------------

    def check(self, scope_id: str) -> Breach | None:
        """Would a zero-sized reserve() be refused? For the wall-time check between steps; reserves nothing.

        Also fires soft warnings that are due (a wall-time warning has no other moment to fire between calls).
        """
        scope = self._scopes.get(scope_id)
        if scope is not None and scope.free:
            return None  # nothing limited anywhere up the chain: nothing can be exceeded or warned about
        events: list[BudgetEvent] = []
        with self._lock:
            scope = self._get(scope_id)
            now = self._monotonic()
            if scope.dailies:
                self._prune_chain(scope.dailies)
            breach = None
            for s in scope.chain:
                compiled = s.compiled
                if compiled.wall is not None and now - s.opened_at >= compiled.wall:
                    breach = self._wall_breach(s, now - s.opened_at)
                    break
                total = s.used + s.reserved
                for i, limit, _ in compiled.checks:
                    if _field(total, i) > limit:
                        breach = self._sum_breach(s, i, limit, 0)
                        break
                if breach is not None:
                    break
                self._soft_sweep(s, now, events)
            if breach is not None:
                events.append(self._breach_event(breach))
        self._emit(events)
        return breach

    def step_output_cap(self, scope_id: str, *, input_tokens: int = 0) -> int | None:
        """Most output tokens one call may still ask for: the smallest output/total headroom across the chain.

        `input_tokens` (the prompt about to be sent) is taken off the total-token headroom. None = no token limit,
        0 = nothing left. The runtime lowers max_tokens to this instead of failing while a little budget remains.
        """
        cap: int | None = None
        scope = self._scopes.get(scope_id)
        if scope is not None and not scope.token_capped:
            return None  # no output or total token limit anywhere up the chain
        with self._lock:
            scope = self._get(scope_id)
            if scope.dailies:
                self._prune_chain(scope.dailies)
            for s in scope.chain:
                for i, limit, _ in s.compiled.checks:
                    if i == _OUT:
                        room = limit - _field(s.used + s.reserved, _OUT)
                    elif i == _TOTAL:
                        room = limit - _field(s.used + s.reserved, _TOTAL) - input_tokens
                    else:
                        continue
                    cap = room if cap is None else min(cap, room)
        return None if cap is None else max(cap, 0)

    def limited(self, scope_id: str) -> bool:
        """Does any scope up this one's chain limit anything? (False for an unknown scope.)"""
        scope = self._scopes.get(scope_id)
        return scope is not None and not scope.free

    def wall_time_left(self, scope_id: str) -> float | None:
        """Seconds until the first wall_time_s limit up the chain runs out (0 once one has); None = no wall limit.
        The runtime asks before it sleeps a retry backoff, so no wait outlasts the time the run has left."""
        scope = self._scopes.get(scope_id)
        if scope is None or scope.free:
            return None
        with self._lock:
            now = self._monotonic()
            left: float | None = None
            for s in scope.chain:
                wall = s.compiled.wall
                if wall is not None:
                    remaining = max(wall - (now - s.opened_at), 0.0)
                    left = remaining if left is None else min(left, remaining)
        return left

    def usage(self, scope_id: str) -> ScopeUsage:
        with self._lock:
            return self._usage_locked(self._get(scope_id))

    def attribution(self) -> dict[str, dict[str, dict[Dimension, float]]]:
        """Settled spend per label: ``attribution()["agent"]["pricing"][Dimension.cost_usd]``."""
        with self._lock:
            groups = [(key, _unpack(totals)) for key, totals in self._attribution.items()]
        sums: dict[str, dict[str, list[int]]] = {}
        for key, totals in groups:
            for label, value in key:
                bucket = sums.setdefault(label, {}).setdefault(value, [0] * _N)
                for i in range(_N):
                    bucket[i] += totals[i]  # summed in internal units, converted once: cents stay exact
        return {label: {value: {dim: _external(i, bucket[i]) for i, dim in enumerate(_SUMMED)}
                        for value, bucket in values.items()}
                for label, values in sums.items()}

    # -- internals (call with the lock held) -------------------------------------------------------------------------

    def _get(self, scope_id: str) -> _Scope:
        scope = self._scopes.get(scope_id)
        if scope is None:
            raise KeyError(f"no open budget scope '{scope_id}'")
        return scope

    def _close_reservation(self, reservation: Reservation, state: str) -> None:
        if reservation._ledger is not self:
            raise ValueError(f"reservation {reservation.id} belongs to another ledger")
        if reservation._state != "open":
            raise RuntimeError(f"reservation {reservation.id} was already {reservation._state}")
        reservation._state = state

    def _wall_breach(self, s: _Scope, elapsed: float) -> Breach:
        wall = s.compiled.wall
        assert wall is not None
        return Breach(s.scope_id, s.kind, Dimension.wall_time_s, wall, elapsed, 0.0, 0.0,
                      f"{s.kind} budget '{s.scope_id}': wall time {elapsed:.1f}s reached the limit of {wall:g}s")

    def _context_breach(self, s: _Scope, context: int) -> Breach:
        ceiling = s.compiled.context
        assert ceiling is not None
        return Breach(s.scope_id, s.kind, Dimension.max_context_tokens, float(ceiling), float(s.max_context), 0.0,
                      float(context), f"{s.kind} budget '{s.scope_id}': a context of {context} tokens exceeds the "
                                      f"per-call ceiling of {ceiling}")

    def _sum_breach(self, s: _Scope, i: int, limit: int, requested: int) -> Breach:
        dim = _SUMMED[i]
        lim, used, reserved, req = (_external(i, x) for x in (limit, _field(s.used, i), _field(s.reserved, i),
                                                               requested))
        return Breach(s.scope_id, s.kind, dim, lim, used, reserved, req,
                      f"{s.kind} budget '{s.scope_id}' exhausted on {dim.value}: used {used:g} + reserved "
                      f"{reserved:g} + requested {req:g} > limit {lim:g}")

    def _prune_chain(self, dailies: tuple[_Scope, ...]) -> None:
        wall_now = self._wall_time()
        cutoff = wall_now - _DAY_S - _DAY_BUCKET_S
        for s in dailies:
            buckets = s.spend.buckets  # type: ignore[union-attr]  # dailies all have one
            if buckets and buckets[0][0] <= cutoff:  # the usual answer is "nothing expired": skip the call
                self._prune_daily(s, wall_now)

    def _prune_daily(self, s: _Scope, wall_now: float) -> None:
        """Drop spend older than 24 h from a rolling scope; re-arm soft warnings the window fell back under."""
        spend = s.spend
        assert spend is not None
        dropped = spend.expire(wall_now)
        if dropped is None:
            return
        s.used -= dropped
        total = s.used + s.reserved
        for i, _, level in s.compiled.checks:
            if _field(total, i) < level:
                s.soft_pending.add(i)

    def _soft_sweep(self, s: _Scope, now: float, events: list[BudgetEvent]) -> None:
        """Fire every due soft warning of one scope (off the hot path: check() and seeding)."""
        due: list[tuple[_Scope, int]] = self._crossed(s, None) or []
        elapsed = now - s.opened_at
        if _WALL in s.soft_pending and elapsed >= s.compiled.wall_level and elapsed > 0:
            due.append((s, _WALL))
        if due:
            events.extend(self._fire(due, now))

    def _fire(self, crossed: list[tuple[_Scope, int]], now: float) -> list[BudgetEvent]:
        """Mark soft warnings as fired (even with no listener, so a late listener is not flooded) and describe them."""
        events: list[BudgetEvent] = []
        for s, i in crossed:
            s.soft_pending.discard(i)
            compiled = s.compiled
            data: dict[str, float | int | str]
            if i == _WALL:
                dim = Dimension.wall_time_s
                data = {"used": now - s.opened_at, "limit": compiled.wall or 0.0}
            else:
                dim = _SUMMED[i]
                data = {"used": _external(i, _field(s.used, i)), "reserved": _external(i, _field(s.reserved, i)),
                        "limit": _external(i, compiled.limits[i])}
            data["threshold"] = compiled.threshold
            events.append(BudgetEvent("budget.soft_threshold", s.scope_id, s.kind, s.labels, dim, data))
        return events

    def _reserve_events(self, scope: _Scope, breach: Breach | None, fired: list[BudgetEvent] | None,
                        result: Reservation | None, vec: int, context: int) -> list[BudgetEvent]:
        if breach is not None:
            return [self._breach_event(breach)]  # nothing was reserved, so no soft warning either
        events = fired or []
        if self.call_events and result is not None:
            data: dict[str, float | int | str] = {"reservation": result.id}
            data.update(_amounts(vec))
            if context:
                data["context_tokens"] = context
            events.append(BudgetEvent("budget.reserved", scope.scope_id, scope.kind, scope.labels, None, data))
        return events

    def _breach_event(self, breach: Breach) -> BudgetEvent:
        scope = self._scopes.get(breach.scope_id)
        labels: Mapping[str, str] = scope.labels if scope is not None else MappingProxyType({})
        return BudgetEvent("budget.breach", breach.scope_id, breach.scope_kind, labels, breach.dimension,
                           {"limit": breach.limit, "used": breach.used, "reserved": breach.reserved,
                            "requested": breach.requested})

    def _usage_locked(self, s: _Scope) -> ScopeUsage:
        now = self._monotonic()
        if s.spend is not None:
            self._prune_daily(s, self._wall_time())
        elapsed = now - s.opened_at
        cutoff = now - _BURN_WINDOW_S
        window = s.recent
        while window and window[0][0] <= cutoff:  # may empty it: nothing settled within the last minute
            window.popleft()
        recent = _unpack(sum(map(itemgetter(1), window)))  # what is left is the window: summed in C
        used_all, reserved_all = _unpack(s.used), _unpack(s.reserved)
        # A scope younger than the window burns over its age (at least 1 s, so one early call is not infinite).
        minutes = min(_BURN_WINDOW_S, max(elapsed, 1.0)) / 60.0
        limits = s.compiled.limits
        dims: dict[Dimension, DimensionUsage] = {}
        for i, dim in enumerate(_SUMMED):
            used, reserved = _external(i, used_all[i]), _external(i, reserved_all[i])
            rate = _external(i, recent[i]) / minutes
            raw_limit = limits.get(i)
            if raw_limit is None:
                dims[dim] = DimensionUsage(used, reserved, None, None, rate, None)
                continue
            limit = _external(i, raw_limit)
            fraction = (used + reserved) / limit if limit > 0 else 1.0
            remaining = max(limit - used - reserved, 0.0)
            tte = remaining / rate * 60.0 if rate > 0 else None
            dims[dim] = DimensionUsage(used, reserved, limit, fraction, rate, tte)
        wall = s.compiled.wall
        dims[Dimension.wall_time_s] = DimensionUsage(
            elapsed, 0.0, wall, None if wall is None else (elapsed / wall if wall > 0 else 1.0), 60.0,
            None if wall is None else max(wall - elapsed, 0.0))
        context = s.compiled.context
        dims[Dimension.max_context_tokens] = DimensionUsage(
            float(s.max_context), 0.0, None if context is None else float(context),
            None if context is None else (s.max_context / context if context > 0 else 1.0), None, None)
        return ScopeUsage(s.scope_id, s.kind, s.labels, elapsed, dims)

    def _emit(self, events: list[BudgetEvent] | None) -> None:
        if events:
            on_event = self._on_event
            if on_event is not None:
                for event in events:
                    on_event(event)


def _amounts(packed: int) -> dict[str, float | int]:
    """Non-zero amounts of a packed vector, in external units: events stay small."""
    return {_SUMMED[i].value: (v / _NANO if i == _COST else v) for i, v in enumerate(_unpack(packed)) if v}


def _exceeds(act: int, hold: int) -> bool:
    """Whether any dimension of the packed `act` is above the same dimension of `hold`, without unpacking.

    Below the cost field every amount of one Demand is under 2**66, so setting each field's top bit (a guard) in
    `hold` and subtracting `act` borrows from no neighbour, and leaves a field's guard set exactly when h >= a."""
    if act >> _S3 > hold >> _S3:  # cost, the unbounded top field, compared directly
        return True
    return (((hold & _BELOW_COST) | _GUARDS) - (act & _BELOW_COST)) & _GUARDS != _GUARDS


if __name__ == "__main__":
    # Micro-benchmark (not a test): reserve+settle through a 3-deep chain, as the runtime does per model call.
    def _bench(label: str, ledger: BudgetLedger, rounds: int = 100_000) -> None:
        ledger.open_scope("daily", "hierarchy_daily", BudgetLimits(cost_usd=1e9), labels={"tenant": "acme"})
        ledger.open_scope("run", "run", BudgetLimits(cost_usd=1e9, total_tokens=10**15, model_calls=10**9,
                                                     wall_time_s=1e9), parent="daily", labels={"run": "r1"})
        ledger.open_scope("agent", "agent", BudgetLimits(output_tokens=10**15, max_context_tokens=200_000),
                          parent="run", labels={"agent": "pricing", "model": "m"})
        demand = Demand(input_tokens=1200, output_tokens=800, cost_usd=0.01, model_calls=1, context_tokens=1200)
        actual = Actual(input_tokens=1200, output_tokens=300, cost_usd=0.004, model_calls=1)
        reserve, settle = ledger.reserve, ledger.settle
        batches: list[float] = []
        for _ in range(5):  # best batch of five: shared CI machines are noisy, the minimum is the honest cost
            start = time.perf_counter()
            for _ in range(rounds // 5):
                settle(reserve("agent", demand), actual)  # type: ignore[arg-type]
            batches.append((time.perf_counter() - start) / (rounds // 5) * 1e6)
        print(f"{label}: {min(batches):.2f} us per reserve+settle (best batch; median {sorted(batches)[2]:.2f} us; "
              f"3-deep chain)")

    _bench("no listener", BudgetLedger(SystemClock()))
    _bench("listener, call events off", BudgetLedger(SystemClock(), lambda e: None, call_events=False))
    _bench("listener, call events on", BudgetLedger(SystemClock(), lambda e: None))
