"""RunbookEngine: runbooks inside the engine process.

    writer thread ── on_commit(events) ──► queue ──► runbook thread: Watchdog.feed / evaluate
    event loop ──── page_escalation(row) ─┘                │ fire: open/update the incident, apply (auto) or
                                                           │       suggest, page the owners
                                                           │ clear: note it on the incident
                                                           │ housekeeping: timed rollbacks, expiring actions,
                                                           │       acknowledge/resolve pages that follow incidents
    pager thread (asyncio + httpx) ◄── pages ──────────────┘   ──► attempts back through the queue

The writer's callback and the escalation hook only append to a queue: the engine's hot path never waits for
detection, SQLite or HTTP. Everything that writes control.db happens on the runbook thread (attempt outcomes
included), so there is one writer of incidents per engine. Trace events it emits (runbook.*, incident.*) are
ignored by its own watchdog. What each page says (owners, escalations, follow-ups, the time line text of an
attempt) is composed in pages.py; this module decides when to send them. What a detection does is
incident_response.py, the housekeeping timed_undo.py (mixins of RunbookEngine on runtime_base.py).
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.clock import SYSTEM_CLOCK, Clock
from engine.controls.incidents import IncidentStore
from engine.runbooks import actions
from engine.runbooks.incident_response import IncidentResponse
from engine.runbooks.model import Runbook
from engine.runbooks.pager import Attempt, Pager
from engine.runbooks.pages import approval_decided_page, attempt_text, escalation_pages
from engine.runbooks.runtime_base import TracerEvent
from engine.runbooks.timed_undo import TimedUndo
from engine.runbooks.trace_lookups import SpanDurations, run_hierarchies
from engine.runbooks.watchdog import DurationSource, Watchdog
from engine.store.location import StoreDirectory, StoreLocation

if TYPE_CHECKING:
    from engine.controls.api import ControlAPI
    from engine.store.config import StoreConfig
    from engine.store.control_rows import Approval, RunbookApplication
    from engine.store.engine_store import EngineStore

log = logging.getLogger(__name__)
_STOP = object()


class RunbookEngine(IncidentResponse, TimedUndo):
    def __init__(self, store_dir: Path | None, *, engine_id: str, tracer_event: TracerEvent, config: StoreConfig,
                 runbooks: Iterable[Runbook], clock: Clock = SYSTEM_CLOCK, environ: Mapping[str, str] | None = None,
                 tick: float = 1.0, durations: DurationSource | None = None,
                 escalation_targets: list[str] | None = None,
                 pager_options: Mapping[str, Any] | None = None, control_at: StoreLocation | None = None,
                 traces_at: StoreLocation | None = None) -> None:
        """`store_dir`: the store directory; None for an engine wholly on a Postgres store, which then names where
        its control plane (`control_at`) and traces (`traces_at`) are (both default to the directory)."""
        self.store_dir = Path(store_dir) if store_dir is not None else None
        here = StoreDirectory(self.store_dir) if self.store_dir is not None else None
        control, traces = control_at or here, traces_at or here
        if control is None or traces is None:
            raise ValueError("a runbook engine without a store directory needs control_at and traces_at")
        self.control_at: StoreLocation = control
        self.traces_at: StoreLocation = traces
        self.engine_id = engine_id
        self.runbooks = {rb.id: rb for rb in runbooks}
        self.clock = clock
        self.tick = tick
        self._tracer_event = tracer_event
        self._durations = durations if durations is not None else SpanDurations(self.traces_at)
        self.watchdog = Watchdog(self.runbooks.values(), durations=self._durations)
        self.pager = Pager(config.notifiers, self._attempt_reported, environ=environ, **dict(pager_options or {}))
        self.escalation_targets = escalation_targets if escalation_targets is not None else self._default_escalation(
            config)
        self.source = f"flightdeck engine {engine_id[:12]} on {socket.gethostname()}"
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._db: Any = None
        self._apis: dict[str, ControlAPI] = {}
        self.incidents: IncidentStore | None = None
        self._applications: list[RunbookApplication] = []
        self._version: int | None = None
        self._escalated: dict[str, list[str]] = {}
        self._postponed: set[int] = set()
        self._late_attempts: list[Attempt] = []
        self.errors: list[str] = []

    @classmethod
    def for_store(cls, store: EngineStore, *, tracer_event: TracerEvent, clock: Clock = SYSTEM_CLOCK,
                  runbooks: Iterable[Runbook] | None = None, **options: Any) -> RunbookEngine:
        """The shipped runbooks, the config's [runbooks] dir and STORE/runbooks (InputError naming file and line if
        one is invalid), on the engine's store and config."""
        if runbooks is None:
            from engine.runbooks.loader import load_runbooks

            # On Postgres (no directory): the shipped runbooks and the config's.
            runbooks = load_runbooks(store.store_dir, project_dir=store.config.runbooks_dir)
        return cls(store.store_dir, engine_id=store.engine_id, tracer_event=tracer_event, config=store.config,
                   runbooks=runbooks, clock=clock, control_at=store.control_location,
                   traces_at=store.trace_location, **options)

    def _default_escalation(self, config: StoreConfig) -> list[str]:
        # Escalated approvals go to whoever owns the approval backlog; without such a runbook, to every target.
        owners: list[str] = []
        for runbook in self.runbooks.values():
            if any(c.signal == "approval_backlog" for c in runbook.spec.detect):
                owners += [o for o in runbook.spec.owner if o not in owners]
        return owners or list(config.notifiers)

    # -- lifecycle ----------------------------------------------------------------------------------------------

    def start(self, abandoned_runs: Iterable[str] = ()) -> None:
        from engine.controls.api import ControlAPI

        # control.db, or the Postgres control plane: this API owns the connection every other one here shares.
        api = ControlAPI(self.control_at, f"engine:{self.engine_id}", clock=self.clock)
        self._apis[api.operator] = api
        self._db = api.db
        self.incidents = IncidentStore(self._db, clock=self.clock)
        self.watchdog.seed_pending_approvals(api.pending_approvals(), self.clock.time())
        abandoned = self._abandoned_events(list(abandoned_runs))
        if abandoned:
            self._queue.put(abandoned)
        self.pager.start()
        self._thread = threading.Thread(target=self._run, name="flightdeck-runbooks", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Finish what is queued, let pages in flight complete (bounded), close everything. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout)
        self.pager.stop(min(timeout, 5.0))
        if self._thread is not None:
            self._drain_attempts()
        for api in self._apis.values():  # the engine's own API closes the shared connection
            api.close()
        if isinstance(self._durations, SpanDurations):
            self._durations.close()

    # -- hooks (other threads: append and return) ---------------------------------------------------------------

    def on_commit(self, events: list[Any]) -> None:
        """TraceWriter.on_commit callback: runs on the writer thread, so it only hands the batch over."""
        if not self._stopped:
            self._queue.put(events)

    def page_escalation(self, approval: Approval) -> None:
        """Engine.escalation_listeners hook: an approval passed its deadline with on_timeout escalate."""
        if not self._stopped:
            self._queue.put(("escalation", approval.as_dict()))

    def drain(self, timeout: float = 10.0) -> bool:
        """Block until everything queued before this call has been processed and evaluated (True), or timeout."""
        marker = threading.Event()
        self._queue.put(("marker", marker))
        return marker.wait(timeout)

    def settle(self, timeout: float = 10.0) -> bool:
        """drain(), then wait for the pager to deliver (or give up on) every page, then record the outcomes."""
        return self.drain(timeout) and self.pager.wait_idle(timeout) and self.drain(timeout)

    # -- the runbook thread -------------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=self.tick)
            except queue.Empty:
                item = None
            items = [] if item is None else [item]
            while True:  # take everything already waiting: one evaluation per burst, not per batch
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            markers: list[threading.Event] = []
            stop = False
            for entry in items:
                if entry is _STOP:
                    stop = True
                elif isinstance(entry, tuple) and entry and entry[0] == "marker":
                    markers.append(entry[1])
                else:
                    self._guarded(self._handle, entry)
            self._guarded(self._evaluate)
            self._guarded(self._housekeeping)
            for marker in markers:
                marker.set()
            if stop:
                return

    def _guarded(self, job: Callable[..., None], *args: Any) -> None:
        try:
            job(*args)
        except Exception as exc:  # a locked control.db or a bug must not stop detection
            log.exception("runbook engine: %s failed", getattr(job, "__name__", job))
            self.errors.append(f"{type(exc).__name__}: {exc}")
            self._emit("runbook.error", None, {"error": f"{type(exc).__name__}: {exc}"[:500]})

    def _handle(self, entry: Any) -> None:
        if isinstance(entry, list):
            self.watchdog.feed(entry, self.clock.time())
            self._after_events(entry)
        elif isinstance(entry, tuple) and entry[0] == "escalation":
            self._escalate(entry[1])
        elif isinstance(entry, tuple) and entry[0] == "attempt":
            self._record_attempt(entry[1])

    def _after_events(self, events: list[Any]) -> None:
        for _, kind, run_id, _, _, name, data in events:
            if kind == "run.started" and run_id:
                hierarchy = (data or {}).get("hierarchy") or name
                for application in self._applications:
                    self._extend_budget(application, run_id, hierarchy)
            elif kind == "approval.decided" and data and str(data.get("id")) in self._escalated:
                approval_id = str(data["id"])
                for target in self._escalated.pop(approval_id):
                    self.pager.send(approval_decided_page(target, approval_id, data.get("status"), self.source))

    def _extend_budget(self, application: RunbookApplication, run_id: str, hierarchy: str | None) -> None:
        for entry in application.actions:
            if entry["kind"] == "budget" and entry.get("hierarchy") in (None, hierarchy):
                runbook = self.runbooks.get(application.runbook)
                source = runbook.actor if runbook else "engine"
                api = self._api(runbook.actor if runbook else f"engine:{self.engine_id}")
                if actions.extend_budget(api, application.id, run_id, hierarchy, source=source) is not None:
                    self._emit("runbook.budget_lowered", application.runbook,
                               {"application": application.id, "run_id": run_id, "limits": entry["limits"]})

    # -- pages ----------------------------------------------------------------------------------------------------

    def _escalate(self, approval: dict[str, Any]) -> None:
        approval_id = str(approval.get("id"))
        self._escalated[approval_id] = list(self.escalation_targets)
        self._emit("runbook.escalation", approval_id, {"approval": approval_id, "level": approval.get("level"),
                                                       "targets": self.escalation_targets})
        for page in escalation_pages(approval, self.escalation_targets, self.source):
            self.pager.send(page)

    def _attempt_reported(self, attempt: Attempt) -> None:
        # Pager thread: the trace event is a deque append; the time line write waits for the runbook thread.
        self._emit("runbook.page", attempt.page.incident_id or attempt.page.dedup_key, attempt.as_data())
        if attempt.final and attempt.page.incident_id and not self._stopped:
            self._queue.put(("attempt", attempt))
        elif attempt.final and attempt.page.incident_id:
            self._late_attempts.append(attempt)

    def _drain_attempts(self) -> None:
        """Outcomes reported while stopping: recorded here, after the runbook thread has ended."""
        while True:
            try:
                entry = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(entry, tuple) and entry[0] == "attempt":
                self._guarded(self._record_attempt, entry[1])
        late, self._late_attempts = self._late_attempts, []
        for attempt in late:
            self._guarded(self._record_attempt, attempt)

    def _record_attempt(self, attempt: Attempt) -> None:
        assert self.incidents is not None
        page = attempt.page
        if page.incident_id is None:
            return
        self.incidents.record_page(page.incident_id, target=page.target, action=page.action,
                                   ok=attempt.outcome == "sent", text=attempt_text(attempt), data=attempt.as_data(),
                                   actor="engine")

    def _abandoned_events(self, run_ids: list[str]) -> list[Any]:
        """run.ended events for the runs the store's recovery marked abandoned before this engine started (that
        recovery writes the trace store directly, so those events never pass the writer's on_commit)."""
        if not run_ids:
            return []
        hierarchies = run_hierarchies(self.traces_at, run_ids)
        return [(0, "run.ended", run_id, None, None, hierarchies.get(run_id), {"status": "abandoned"})
                for run_id in run_ids]
