"""What a breaker is configured with: the kinds of breaker, the operator actions, BreakerConfig and the states."""

from __future__ import annotations

import enum
from typing import Annotated, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

from engine.durations import Duration

__all__ = ["BREAKER_KINDS", "MAX_WINDOW_CALLS", "OVERRIDE_ACTIONS", "BreakerConfig", "BreakerKind", "BreakerState",
           "OverrideAction", "Percent"]


BreakerKind = Literal["tool", "model", "delegation"]
# Tuples in this order: engine.controls mirrors both (BREAKER_KINDS, BREAKER_ACTIONS) without importing this module.
BREAKER_KINDS: tuple[str, ...] = get_args(BreakerKind)
OverrideAction = Literal["force_open", "reset", "disable"]
OVERRIDE_ACTIONS: tuple[str, ...] = get_args(OverrideAction)

Percent = Annotated[float, Field(gt=0, le=100)]
MAX_WINDOW_CALLS = 100_000


class BreakerConfig(BaseModel):
    """How one breaker trips and recovers. Durations accept seconds or strings like "30s"; rates are percent."""

    # Bounded and finite: a window of 1e40 calls cannot be allocated, and would fail the first call of every run.
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True, allow_inf_nan=False)

    sliding_window_size: int = Field(20, ge=1, le=MAX_WINDOW_CALLS)
    minimum_calls: int = Field(10, ge=1, le=MAX_WINDOW_CALLS)
    failure_rate_threshold: Percent = 50.0
    slow_call_duration: Annotated[Duration, Field(gt=0)] = 10.0
    slow_call_rate_threshold: Percent = 100.0
    wait_in_open: Annotated[Duration, Field(gt=0)] = 30.0
    permitted_calls_in_half_open: int = Field(3, ge=1, le=MAX_WINDOW_CALLS)
    max_wait_in_half_open: Duration = 0.0
    # None means every error kind is a failure; tuples keep the frozen model truly immutable (lists are accepted).
    record_errors: tuple[str, ...] | None = None
    ignore_errors: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _kinds_do_not_overlap(self) -> BreakerConfig:
        both = sorted(set(self.record_errors or ()) & set(self.ignore_errors))
        if both:
            raise ValueError(f"error kinds both recorded and ignored: {', '.join(both)}")
        return self


class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
    FORCED_OPEN = "forced_open"
    DISABLED = "disabled"
