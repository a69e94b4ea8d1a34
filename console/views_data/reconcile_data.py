"""The approvals view's RECONCILE rows: side effects of durable runs whose outcome is unknown after a crash (the run
waits in `needs_reconcile` until an operator decides: done, again or fail; engine/controls/reconcile.py).

Thread side (the approvals view's poller): ReconcileFeed reads the runs waiting in needs_reconcile and their tool
spans from traces.db only when traces.db changed (PRAGMA data_version), keeps what awaits a decision per run, and
drops, on every poll, the calls control.db says were decided (ControlAPI.reconcile_decisions: one indexed read per
waiting run). The decision itself goes through ControlAPI.reconcile_side_effect, the call `flightdeck reconcile`
makes.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from console.polling import ReaderState, StoreSource
from engine.controls.reconcile import AwaitingCall, awaiting_calls

if TYPE_CHECKING:
    from engine.controls.api import ControlAPI

WAITING_LISTED = 100  # runs waiting in needs_reconcile read per poll (the header counts "100+" past this)
ROW_PREFIX = "reconcile:"  # a RECONCILE row's key in the approvals table (approval ids never start with it)


@dataclass(frozen=True, slots=True)
class ReconcileItem:
    """One side effect awaiting an operator's decision, as the approvals view lists it beside approval requests.
    `since` is when its run stopped (it waits from then on, with no deadline)."""

    id: str  # the table's row key: ROW_PREFIX + key
    run_id: str
    key: str  # the durable idempotency key of the attempt whose outcome is unknown
    call: str  # its call path in the run (pricing/price_quote)
    span_id: str
    agent: str | None
    tool: str
    arguments: Any
    error: str | None
    hierarchy: str
    since: float
    pos: int = 0  # its place in the list (oldest run first), which breaks ties

    @classmethod
    def of(cls, call: AwaitingCall, hierarchy: str, since: float, pos: int) -> ReconcileItem:
        return cls(id=ROW_PREFIX + call.key, run_id=call.run_id, key=call.key, call=call.call, span_id=call.span_id,
                   agent=call.agent, tool=call.tool, arguments=call.args, error=call.error, hierarchy=hierarchy,
                   since=since, pos=pos)


@dataclass(slots=True)
class ReconcileFeed:
    """What awaits a reconcile decision, read on the approvals view's poller thread (one call at a time)."""

    source: StoreSource
    state: ReaderState = field(init=False)
    waiting: list[tuple[str, float, list[AwaitingCall]]] = field(default_factory=list)  # (hierarchy, since, calls)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.state = ReaderState(self.source)

    def read(self, api: ControlAPI | None) -> list[ReconcileItem]:
        if not self.source.has_traces():
            return []
        with self.lock:
            try:
                if self.state.changed():
                    self.waiting = self._waiting()
            except Exception:
                self.state.reset()
                raise
            items: list[ReconcileItem] = []
            for hierarchy, since, calls in self.waiting:
                decided = api.reconcile_decisions(calls[0].run_id) if api is not None else {}
                items.extend(ReconcileItem.of(call, hierarchy, since, len(items)) for call in calls
                             if call.key not in decided)
            return items

    def _waiting(self) -> list[tuple[str, float, list[AwaitingCall]]]:
        reader = self.state.reader
        runs = reader.list_runs(status="needs_reconcile", limit=WAITING_LISTED)  # newest first
        found = []
        for run in reversed(runs):  # the run that has waited longest first
            calls = awaiting_calls(reader.spans(run.id), {})
            if calls:
                found.append((run.hierarchy, float(run.ended or run.started), calls))
        return found

    def invalidate(self) -> None:
        self.state.invalidate()

    def close(self) -> None:
        self.state.close()
