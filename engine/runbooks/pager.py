"""The pager: sends pages asynchronously, on its own thread and event loop, so a slow or failing notifier never
blocks the engine, the trace writer or the runbook thread.

Each page is its own task on one shared httpx.AsyncClient. A page is retried with exponential back-off (1 s, 2 s,
4 s, ... capped at `max_backoff`) on network errors, timeouts, 429 and 5xx answers; a 429's (or 503's)
Retry-After (seconds or an HTTP date) is honoured when it asks for longer. Other 4xx answers (a bad routing key, a
malformed payload) and configuration problems (a missing environment variable) fail at once: retrying cannot help.

Every attempt is reported to `on_attempt` (the runbook engine turns it into a trace event and, for the final
outcome, an incident time line entry). Reports never contain a secret: the routing key, a Slack webhook URL read
from the environment and webhook header values are scrubbed from every error text, and the URL of a notifier whose
URL is a secret is not reported at all.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from engine.retry import Backoff, parse_retry_after, plan_retry
from engine.runbooks.notify import Notifier, NotifierConfigError, Page, Request, build_request

log = logging.getLogger(__name__)
RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
_ERROR_TEXT = 300


@dataclass(frozen=True)
class Attempt:
    """One delivery attempt. outcome: "sent", "retrying" (another attempt follows after retry_in seconds) or
    "failed" (final)."""

    page: Page
    notifier_type: str | None
    attempt: int
    outcome: str
    status: int | None = None
    error: str | None = None
    retry_in: float | None = None
    elapsed_s: float = 0.0

    @property
    def final(self) -> bool:
        return self.outcome != "retrying"

    def as_data(self) -> dict[str, Any]:
        """For a trace event or a time line entry: everything but secrets (a Page carries none)."""
        return {"target": self.page.target, "type": self.notifier_type, "action": self.page.action,
                "dedup_key": self.page.dedup_key, "incident": self.page.incident_id, "kind": self.page.kind,
                "attempt": self.attempt, "outcome": self.outcome, "status": self.status, "error": self.error,
                "retry_in": self.retry_in, "elapsed_s": round(self.elapsed_s, 3)}


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header (engine.retry's parser): a negative number reads as "retry now"."""
    return parse_retry_after(value, now, negative_as_zero=True)


def _scrub(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[REDACTED]")
    return text[:_ERROR_TEXT]


class Pager:
    def __init__(self, notifiers: Mapping[str, Notifier], on_attempt: Callable[[Attempt], None], *,
                 environ: Mapping[str, str] | None = None, max_attempts: int = 5, initial_backoff: float = 1.0,
                 max_backoff: float = 60.0, max_retry_after: float = 300.0, timeout: float = 10.0) -> None:
        self.notifiers = dict(notifiers)
        self._on_attempt = on_attempt
        self._environ = os.environ if environ is None else environ
        self.max_attempts = max(1, max_attempts)
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.max_retry_after = max_retry_after
        # No jitter: pages are few and each has its own task, so there is no herd to spread.
        self._backoff = Backoff(initial_backoff, max_backoff, 2.0, jitter=False)
        self.timeout = timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._outstanding = 0
        self._idle = threading.Condition()
        self._tasks: set[asyncio.Task[None]] = set()
        self._client: Any = None  # the httpx.AsyncClient, created on the pager thread

    # -- lifecycle ----------------------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="flightdeck-pager", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the pager thread did not start")

    def stop(self, timeout: float = 5.0) -> None:
        """Let pages in flight finish for up to `timeout` seconds, then cancel the rest (reported as failed)."""
        if self._thread is None or self._loop is None:
            return
        self.wait_idle(timeout)
        loop, stop = self._loop, self._stop
        if stop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(stop.set)
            except RuntimeError:
                pass
        self._thread.join(timeout=max(1.0, timeout))
        self._thread = None

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Block until no page is queued or being retried (True), or `timeout` passes (False)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._outstanding == 0, timeout)

    @property
    def outstanding(self) -> int:
        return self._outstanding

    # -- sending (any thread) -----------------------------------------------------------------------------------

    def send(self, page: Page) -> None:
        """Queue a page; returns at once. A target the config does not define is reported as failed."""
        notifier = self.notifiers.get(page.target)
        if notifier is None:
            self._report(Attempt(page, None, 0, "failed",
                                 error=f"no notifier named {page.target!r} in the store config "
                                       f"([notifiers.{page.target}])"))
            return
        loop = self._loop
        if loop is None or loop.is_closed():
            self._report(Attempt(page, notifier.type, 0, "failed", error="the pager is not running"))
            return
        with self._idle:
            self._outstanding += 1
        try:
            loop.call_soon_threadsafe(self._spawn, page, notifier)
        except RuntimeError:  # the loop closed between the check and the call: the engine is stopping
            self._done()
            self._report(Attempt(page, notifier.type, 0, "failed", error="the pager stopped"))

    # -- the pager thread ----------------------------------------------------------------------------------------

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        from engine.http import httpx as _httpx_module
        httpx = _httpx_module()

        self._stop = asyncio.Event()
        async with httpx.AsyncClient(timeout=self.timeout, follow_redirects=False) as client:
            self._client = client
            self._loop = asyncio.get_running_loop()
            self._ready.set()
            await self._stop.wait()
            for task in list(self._tasks):
                task.cancel()
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)

    def _spawn(self, page: Page, notifier: Notifier) -> None:
        task = asyncio.get_running_loop().create_task(self._deliver(page, notifier))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _done(self) -> None:
        with self._idle:
            self._outstanding -= 1
            self._idle.notify_all()

    def _report(self, attempt: Attempt) -> None:
        try:
            self._on_attempt(attempt)
        except Exception:  # recording must never take the pager down
            log.exception("recording a page attempt failed")

    async def _deliver(self, page: Page, notifier: Notifier) -> None:
        try:
            await self._attempts(page, notifier)
        except asyncio.CancelledError:
            self._report(Attempt(page, notifier.type, 0, "failed", error="cancelled: the engine stopped"))
        finally:
            self._done()

    async def _attempts(self, page: Page, notifier: Notifier) -> None:
        try:
            request = build_request(notifier, page, self._environ)
        except NotifierConfigError as exc:
            self._report(Attempt(page, notifier.type, 1, "failed", error=str(exc)))
            return
        for attempt in range(1, self.max_attempts + 1):
            started = time.monotonic()
            status, error, retry_after = await self._post(request)
            elapsed = time.monotonic() - started
            if status is not None and 200 <= status < 300:
                self._report(Attempt(page, notifier.type, attempt, "sent", status=status, elapsed_s=elapsed))
                return
            retryable = status is None or status in RETRYABLE_STATUSES
            if not retryable or attempt == self.max_attempts:
                self._report(Attempt(page, notifier.type, attempt, "failed", status=status, error=error,
                                     elapsed_s=elapsed))
                return
            delay = plan_retry(self._backoff, attempt, retry_after, retry_after_cap=self.max_retry_after).delay_s
            self._report(Attempt(page, notifier.type, attempt, "retrying", status=status, error=error,
                                 retry_in=round(delay, 3), elapsed_s=elapsed))
            await asyncio.sleep(delay)

    async def _post(self, request: Request) -> tuple[int | None, str | None, float | None]:
        from engine.http import httpx as _httpx_module
        httpx = _httpx_module()

        try:
            response = await self._client.post(request.url, json=request.json, headers=request.headers)
        except httpx.TimeoutException as exc:
            return None, _scrub(f"timed out: {type(exc).__name__}", request.secrets), None
        except httpx.HTTPError as exc:
            return None, _scrub(f"{type(exc).__name__}: {exc}", request.secrets), None
        if 200 <= response.status_code < 300:
            return response.status_code, None, None
        body = response.text.strip().replace("\n", " ")
        error = _scrub(f"HTTP {response.status_code}" + (f": {body}" if body else ""), request.secrets)
        return response.status_code, error, retry_after_seconds(response.headers.get("retry-after"))
