"""Which agents and routes a run went through, read from its spans: what a case's score is attributed to.

`flightdeck eval` (engine/evals/runner.py) and online sampling (sampler.py) both attribute a case to its run's path
with `run_path`, so a sampled window's per-agent and per-route figures mean what an eval's do and the two compare
(the console's evals view says which agent or route a drop is in).

A live run's spans are in the trace store only once the engine's trace writer committed them: `RunPathReader`
waits for that commit (without blocking the event loop), then reads the spans on a worker thread through one
reader it keeps open for the engine's life. A path that cannot be read (the writer stopped, a commit that does not
come in time) is `RunPath.unknown(reason)`: the score is still recorded, without a breakdown.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import anyio

from engine.errors import StoreError
from engine.store import open_trace_reads
from engine.store.location import StoreLocation
from engine.store.reader_protocol import TraceReads
from engine.store.trace_rows import SpanRow

__all__ = ["COMMIT_WAIT_S", "RunPath", "RunPathReader", "run_path"]

COMMIT_WAIT_S = 5.0  # how long a sampled run's path waits for the writer's commit before it is given up


@dataclass(frozen=True, slots=True)
class RunPath:
    agents: tuple[str, ...]  # agents the run went through, in order of first appearance
    routes: tuple[str, ...]  # `router:rule` of every route taken, in order
    problem: str | None = None  # why the path could not be read (then both are empty)

    @classmethod
    def unknown(cls, reason: str) -> RunPath:
        return cls((), (), reason)


def run_path(spans: Iterable[SpanRow]) -> RunPath:
    """The agents (`agent` spans) and routes (`route` spans: the router and the rule that matched) of a run."""
    agents: dict[str, None] = {}
    routes: dict[str, None] = {}
    for span in spans:
        if span.kind == "agent" and span.agent:
            agents.setdefault(span.agent)
        elif span.kind == "route":
            rule = span.attributes.get("rule") if isinstance(span.attributes, dict) else None
            routes.setdefault(f"{span.agent or span.name}:{rule or '?'}")
    return RunPath(tuple(agents), tuple(routes))


class RunPathReader:
    """`await reader(run_id)`: the path of a run this engine just ended. `committed()` is the engine's
    `writer.commit_now` (everything emitted so far is committed when it returns); `location` its trace store."""

    def __init__(self, committed: Callable[[float], Awaitable[None]], location: StoreLocation) -> None:
        self.committed = committed
        self.location = location
        self._reads: TraceReads | None = None
        self._lock = threading.Lock()  # worker threads of several sampled runs may open the reader at once

    async def __call__(self, run_id: str) -> RunPath:
        try:
            await self.committed(COMMIT_WAIT_S)
            return await anyio.to_thread.run_sync(self._read, run_id)
        except StoreError as exc:
            return RunPath.unknown(str(exc)[:300])

    def _read(self, run_id: str) -> RunPath:
        with self._lock:
            if self._reads is None:
                self._reads = open_trace_reads(self.location)
            reads = self._reads
        return run_path(reads.spans(run_id))

    def close(self) -> None:
        with self._lock:
            if self._reads is not None:
                self._reads.close()
                self._reads = None
