"""What the parts of serve mode agree on: a submission from any source (API, webhook, schedule, CLI), what admission
answers, and the FleetService protocol that the
HTTP layer (http_api.py) calls and the engine side (service.py) implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from engine.store.trace_rows import QueueRow, ScheduleRow

if TYPE_CHECKING:
    from engine.serve.fleet import WebhookSpec

# Where a submission came from: "api", "cli", "webhook:NAME", "schedule:NAME".
Source = str
RunState = Literal["queued", "running", "completed", "failed", "killed", "cancelled", "needs_reconcile", "refused",
                   "unknown"]
Admission = Literal["open", "paused", "draining"]


@dataclass(frozen=True, slots=True)
class Submission:
    """One request for a run. `hierarchy` is a name the fleet loaded (fleet.yaml `hierarchies:` or --hierarchy).
    `priority`: 0 (highest) .. 1000; default 500. `idempotency_key`: the same key never starts a second run (for a
    webhook, the event's own id; for a schedule, `schedule:NAME:<fire time>`)."""

    hierarchy: str
    input: Any
    source: Source = "api"
    tenant: str | None = None
    priority: int = 500
    idempotency_key: str | None = None
    seed: int = 0


@dataclass(frozen=True, slots=True)
class Admitted:
    """A submission that is queued (or was already: `created` False, the original run is returned)."""

    run_id: str
    queue: str
    created: bool
    state: RunState = "queued"


class Refused(Exception):
    """A submission not admitted. `status`: 429 (a bound is full: retry after `retry_after_s`), 503 (admission is
    paused or draining, or the engine is stopping), 404 (unknown hierarchy), 422 (bad input for the hierarchy).
    `reason` is a sentence for the caller; nothing was queued."""

    def __init__(self, status: int, reason: str, *, retry_after_s: float | None = None,
                 field: str | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.retry_after_s = retry_after_s
        self.field = field


@dataclass(frozen=True, slots=True)
class RunView:
    """A run as the API reports it: queued runs exist only in DBOS until they start; started ones in traces.db."""

    run_id: str
    hierarchy: str
    state: RunState
    queue: str | None = None
    tenant: str | None = None
    source: Source | None = None
    submitted: float | None = None
    started: float | None = None
    ended: float | None = None
    output: Any = None
    error: str | None = None
    cost_usd: float = 0.0


@dataclass(frozen=True, slots=True)
class Health:
    """GET /health: "ok", "degraded" (the store's writer is failing, runs wait) or "stopping" (draining on
    SIGTERM); with the engine id, the store's state and total queued."""

    status: Literal["ok", "degraded", "stopping"]
    engine_id: str
    store: str
    queued: int
    running: int
    version: str


class FleetService(Protocol):
    """The engine side of serve mode, as the HTTP layer sees it. Every method is called on the engine's loop."""

    async def submit(self, submission: Submission) -> Admitted:
        """Queue a run, or return the run its idempotency key already named. Raises Refused."""
        ...

    async def get_run(self, run_id: str) -> RunView | None: ...

    async def list_runs(self, *, state: str | None = None, hierarchy: str | None = None,
                        tenant: str | None = None, limit: int = 100) -> list[RunView]: ...

    async def cancel(self, run_id: str, *, reason: str, actor: str) -> RunView:
        """Cancel a queued run (it never starts) or kill a running one (an audited kill switch). KeyError: no such
        run."""
        ...

    async def resume(self, run_id: str, *, actor: str) -> RunView:
        """Start an ended durable run again (as `flightdeck resume`). KeyError: no such run; Refused(409): it
        cannot resume (still running, or needs a reconcile decision first)."""
        ...

    def hierarchies(self) -> list[str]: ...

    def queues(self) -> list[QueueRow]:
        """Each queue's state now (the rows the engine also publishes to traces.db `queues`)."""
        ...

    def schedules(self) -> list[ScheduleRow]: ...

    def health(self) -> Health: ...

    def webhook(self, name: str) -> WebhookSpec | None:
        """The fleet.yaml webhook called `name` (POST /hooks/NAME), or None."""
        ...
