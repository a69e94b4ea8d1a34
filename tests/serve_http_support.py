"""HTTP-layer test helpers for serve mode: a small in-memory FleetService (the API's tests need no engine), the
API served by uvicorn on a real 127.0.0.1 socket in a thread, and webhook signing."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import anyio

from engine.serve.contracts import Admitted, Health, Refused, RunView, Submission
from engine.serve.fleet import WebhookSpec
from engine.serve.listener import api_server, bind, url_of
from engine.store.trace_rows import QueueRow, ScheduleRow


@dataclass
class FakeFleet:
    """FleetService in memory: submissions queue at once (`queued`), keys dedupe, `max_depth` bounds each queue,
    `admission` other than "open" refuses with 503, `stopping` turns health to "stopping"."""

    hierarchy_names: tuple[str, ...] = ("deal-desk",)
    max_depth: int = 100
    admission: str = "open"
    stopping: bool = False
    hooks: dict[str, WebhookSpec] = field(default_factory=dict)
    runs: dict[str, RunView] = field(default_factory=dict)
    submissions: list[Submission] = field(default_factory=list)
    keys: dict[str, str] = field(default_factory=dict)
    cancels: list[tuple[str, str, str]] = field(default_factory=list)
    # The state a run is in right after submit, and how many GETs later it reaches `ends_as` (None: never).
    ends_as: str | None = None
    polls_to_end: int = 2
    polls: int = 0
    drains: list[float] = field(default_factory=list)
    released: anyio.Event | None = None

    async def submit(self, submission: Submission) -> Admitted:
        if submission.hierarchy not in self.hierarchy_names:
            raise Refused(404, f"no hierarchy named {submission.hierarchy!r}", field="hierarchy")
        if submission.idempotency_key in self.keys:
            run_id = self.keys[submission.idempotency_key]
            return Admitted(run_id, submission.hierarchy, created=False, state=self.runs[run_id].state)
        if self.stopping or self.admission != "open":
            raise Refused(503, f"queue {submission.hierarchy} is {self.admission if not self.stopping else 'stopping'}")
        depth = sum(1 for run in self.runs.values() if run.state == "queued")
        if depth >= self.max_depth:
            raise Refused(429, f"queue {submission.hierarchy} is full ({depth}/{self.max_depth} queued)",
                          retry_after_s=2.4)
        run_id = f"run-{len(self.runs) + 1:04d}"
        self.submissions.append(submission)
        self.runs[run_id] = RunView(run_id, submission.hierarchy, "queued", queue=submission.hierarchy,
                                    tenant=submission.tenant, source=submission.source, submitted=time.time())
        if submission.idempotency_key is not None:
            self.keys[submission.idempotency_key] = run_id
        return Admitted(run_id, submission.hierarchy, created=True)

    async def get_run(self, run_id: str) -> RunView | None:
        view = self.runs.get(run_id)
        if view is not None and self.ends_as is not None and view.state == "queued":
            self.polls += 1
            if self.polls > self.polls_to_end:
                view = self.runs[run_id] = replace(view, state=self.ends_as,  # type: ignore[arg-type]
                                                   error=None if self.ends_as == "completed" else "it broke")
        return view

    async def list_runs(self, *, state: str | None = None, hierarchy: str | None = None,
                        tenant: str | None = None, limit: int = 100) -> list[RunView]:
        views = [v for v in reversed(self.runs.values()) if (state is None or v.state == state)
                 and (hierarchy is None or v.hierarchy == hierarchy) and (tenant is None or v.tenant == tenant)]
        return views[:limit]

    async def cancel(self, run_id: str, *, reason: str, actor: str) -> RunView:
        view = self.runs[run_id]  # KeyError: no such run
        self.cancels.append((run_id, reason, actor))
        self.runs[run_id] = replace(view, state="cancelled", error=f"cancelled by {actor}: {reason}")
        return self.runs[run_id]

    async def resume(self, run_id: str, *, actor: str) -> RunView:
        view = self.runs[run_id]
        if view.state in ("queued", "running"):
            raise Refused(409, f"run {run_id} is {view.state}: nothing to resume")
        self.runs[run_id] = replace(view, state="running")
        return self.runs[run_id]

    def hierarchies(self) -> list[str]:
        return list(self.hierarchy_names)

    def queues(self) -> list[QueueRow]:
        depth = sum(1 for run in self.runs.values() if run.state == "queued")
        return [QueueRow(name, "", name, depth, 0, None, 0.0, 0, self.max_depth, 4, None, self.admission, 0.0)
                for name in self.hierarchy_names]

    def schedules(self) -> list[ScheduleRow]:
        return [ScheduleRow("nightly", self.hierarchy_names[0], "0 3 * * *", "skip", 1.0e9, None, None, 0.0)]

    def health(self) -> Health:
        return Health("stopping" if self.stopping else "ok", "engine-1", "ok",
                      sum(1 for run in self.runs.values() if run.state == "queued"), 0, "test")

    def webhook(self, name: str) -> WebhookSpec | None:
        return self.hooks.get(name)

    async def drain(self, grace_s: float) -> FakeDrain:
        """Stop admitting; wait for release() or the grace period, whichever comes first."""
        self.stopping = True
        self.drains.append(grace_s)
        if self.released is None:
            self.released = anyio.Event()
        with anyio.move_on_after(grace_s):
            await self.released.wait()
        queued = [run_id for run_id, view in self.runs.items() if view.state == "queued"]
        return FakeDrain(finished=len(self.runs) - len(queued), handed_back=queued)

    def release(self) -> None:
        if self.released is None:
            self.released = anyio.Event()
        self.released.set()


@dataclass
class FakeDrain:
    finished: int
    handed_back: list[str]


@contextmanager
def served(app: Any) -> Iterator[str]:
    """`app` under uvicorn on 127.0.0.1 (a free port) in a thread; yields its base URL."""
    sock = bind("127.0.0.1", 0)
    server = api_server(app)
    failed: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(server.serve(sockets=[sock]))
        except BaseException as exc:  # reported to the test below
            failed.append(exc)

    thread = threading.Thread(target=run, name="api-under-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and not failed and time.monotonic() < deadline:
        thread.join(0.01)  # wait on the server's own start flag, bounded
    assert server.started, f"the API did not start: {failed}"
    try:
        yield url_of(sock)
    finally:
        server.should_exit = True
        thread.join(10)


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
