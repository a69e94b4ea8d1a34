"""What a resumed durable run carries on from (runtime/durable_runs.py): its row's start and totals, and the calls it
recorded, which replay instead of running again (runtime/replay.py), read from the trace store the engine writes to:
the store directory's traces.db or a Postgres store (the same reads, engine/store/trace_queries.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.runtime.replay import ReplayTable, load_table

if TYPE_CHECKING:
    from engine.durable.host import DurableHost
    from engine.store.location import StoreLocation
    from engine.store.reader_protocol import TraceReads


@dataclass(frozen=True, slots=True)
class ResumeInfo:
    """How a resumed run starts again: its earlier row's start and totals, how many times it resumed before, and
    how many of its side effects are recorded (they replay instead of running)."""

    started: float
    resumed: int
    replayed_steps: int
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    model_calls: int = 0
    tool_calls: int = 0
    replay: ReplayTable | None = None  # the calls it recorded, which replay instead of running again



class ResumeRecords:
    """The trace store's records of runs resumed on one engine; one reader for all of them (opening one costs
    ~2 ms on traces.db)."""

    def __init__(self, location: StoreLocation) -> None:
        self.location = location
        self._reader: TraceReads | None = None

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    async def info(self, host: DurableHost | None, run_id: str, spec: dict[str, Any]) -> ResumeInfo:
        """What a resumed run carries on from: its row's totals, and (read once, here) the calls it recorded,
        which replay instead of running again (engine/runtime/replay.py). A retry's resume also replays what its
        original recorded before the retried step, as the retry's first execution did."""
        from engine.errors import StoreError
        from engine.store import open_trace_reads

        assert host is not None
        replayed = await host.recorded_effects(run_id)
        location = self.location
        table = load_table(location, run_id)
        if spec.get("retry_of") and spec.get("retry_from_path"):
            table = table.merged_over(load_table(location, spec["retry_of"], before=spec["retry_from_path"],
                                                 side_effects="all"))
        # Side effects recorded by DBOS are `replayed` already; those a retry replayed from its original are not.
        replayed += len(table.models) + sum(1 for call in table.tools.values() if not call.side_effects)
        if self._reader is None:  # one for every run this engine resumes: opening one costs ~2 ms
            try:
                self._reader = open_trace_reads(location)
            except StoreError:
                return ResumeInfo(started=0.0, resumed=1, replayed_steps=replayed, replay=table)
        row = self._reader.get_run(run_id)
        if row is None or row.id != run_id:
            return ResumeInfo(started=0.0, resumed=1, replayed_steps=replayed, replay=table)
        return ResumeInfo(started=row.started, resumed=row.resumed + 1, replayed_steps=replayed,
                          tokens_in=row.tokens_in, tokens_out=row.tokens_out, cost_usd=row.cost_usd,
                          model_calls=row.model_calls, tool_calls=row.tool_calls, replay=table)


def seed_resumed(ctx: Any, info: ResumeInfo) -> dict[str, Any]:
    """A resumed run's counters carry on from what its row recorded; returns the row attributes saying so."""
    ctx.tokens_in, ctx.tokens_out, ctx.cost_usd = info.tokens_in, info.tokens_out, info.cost_usd
    ctx.model_calls, ctx.tool_calls = info.model_calls, info.tool_calls
    ctx.attributes["resume"] = info
    ctx.replay = info.replay
    return {"resumed": info.resumed, "replayed_steps": info.replayed_steps}


def seed_budget(ctx: Any) -> None:
    """Spend a resumed run already recorded counts against its run budget (and through it the day's)."""
    info = ctx.attributes.get("resume")
    if info is None or not (info.cost_usd or info.model_calls or info.tool_calls):
        return
    from engine.guardrails.budget import Actual, Demand

    ledger = ctx.engine.guards.ledger
    spent = dict(input_tokens=info.tokens_in, output_tokens=info.tokens_out, cost_usd=info.cost_usd,
                 model_calls=info.model_calls, tool_calls=info.tool_calls)
    reservation = ledger.reserve(ctx.budget_scope, Demand(**spent))
    if not reservation.ok:
        ctx.attributes["run_budget_exhausted"] = reservation.message
        return
    ledger.settle(reservation, Actual(**spent))
