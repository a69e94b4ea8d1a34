"""Span and event recording on the engine's hot path.

Everything here only hands tuples to the store's TraceWriter (a deque append); JSON, redaction and SQLite happen on
the writer's thread. Span ids are an engine-unique prefix plus a counter: cheaper than uuid4 and still unique across
engines sharing a store over time.
"""

from __future__ import annotations

import itertools
import os
import time
from typing import Any, Protocol


class SpanSink(Protocol):
    """The subset of engine.store.writer.TraceWriter the tracer needs."""

    def span_started(self, span_id: str, run_id: str, parent_id: str | None, kind: str, agent: str | None,
                     name: str, started: float, attrs: dict[str, Any] | None) -> None: ...

    def span_ended(self, span_id: str, run_id: str, status: str, ended: float, tokens_in: int, tokens_out: int,
                   cost_usd: float, model: str | None, attrs: dict[str, Any] | None) -> None: ...

    def event(self, run_id: str | None, span_id: str | None, kind: str, agent: str | None, name: str | None,
              data: dict[str, Any] | None, ts: float) -> None: ...


class Tracer:
    __slots__ = ("_counter", "_prefix", "_sink")

    def __init__(self, sink: SpanSink) -> None:
        self._sink = sink
        self._prefix = os.urandom(4).hex() + "-"  # the dash keeps prefix and counter apart: ids stay unique
        self._counter = itertools.count(1)

    def new_id(self) -> str:
        return self._prefix + str(next(self._counter))

    def start(self, run_id: str, parent_id: str | None, kind: str, agent: str | None, name: str,
              attrs: dict[str, Any] | None = None) -> str:
        span_id = self._prefix + str(next(self._counter))  # cheaper than a formatted hex counter
        self._sink.span_started(span_id, run_id, parent_id, kind, agent, name, time.time(), attrs)
        return span_id

    def end(self, span_id: str, run_id: str, status: str, *, tokens_in: int = 0, tokens_out: int = 0,
            cost_usd: float = 0.0, model: str | None = None, attrs: dict[str, Any] | None = None) -> None:
        self._sink.span_ended(span_id, run_id, status, time.time(), tokens_in, tokens_out, cost_usd, model, attrs)

    def event(self, run_id: str | None, span_id: str | None, kind: str, *, agent: str | None = None,
              name: str | None = None, data: dict[str, Any] | None = None) -> None:
        self._sink.event(run_id, span_id, kind, agent, name, data, time.time())
