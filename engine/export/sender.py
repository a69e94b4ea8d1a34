"""One OTLP/HTTP POST, retried with backoff on 429, 502, 503, 504 and connection failures (the OTLP spec's
retryable answers; Retry-After honoured up to a cap), behind the exporter's own breaker.

The wait between attempts is engine/retry.py's plan_retry; the sleep is `wait(seconds)` (the exporter's stop event,
so stopping ends a wait at once). The breaker is deliberately small and not the runtime's resilience4j machine:
those breakers guard calls an agent makes (tool, model, delegation) and are shown and overridden by operators; this
one only keeps a dead collector from costing a timeout per batch: CLOSED --(failures in a row)--> OPEN
--(wait)--> one probe --(ok)--> CLOSED or --(fail)--> OPEN.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engine.export.encoding import CONTENT_TYPES
from engine.export.settings import ExportSettings
from engine.retry import Backoff, parse_retry_after, plan_retry

RETRYABLE_STATUS = frozenset({429, 502, 503, 504})
BACKOFF = Backoff(initial=0.5, maximum=8.0)
MAX_ATTEMPTS = 4
RETRY_AFTER_CAP_S = 30.0


class ExportBreaker:
    def __init__(self, failures_to_open: int = 3, wait_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.failures_to_open = failures_to_open
        self.wait_s = wait_s
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._lock = threading.Lock()

    @property
    def state(self) -> str:
        with self._lock:
            if self._opened_at is None:
                return "closed"
            return "half_open" if self._clock() - self._opened_at >= self.wait_s else "open"

    def allow(self) -> bool:
        return self.state != "open"

    def success(self) -> None:
        with self._lock:
            self._failures = 0
            self._opened_at = None

    def failure(self) -> bool:
        """Record a failed attempt; True when the breaker is (now) open."""
        with self._lock:
            self._failures += 1
            if self._opened_at is not None or self._failures >= self.failures_to_open:
                self._opened_at = self._clock()
                return True
            return False


@dataclass(frozen=True, slots=True)
class SendOutcome:
    sent: bool
    attempts: int
    error: str | None = None


class Sender:
    def __init__(self, settings: ExportSettings, *, breaker: ExportBreaker | None = None,
                 wait: Callable[[float], Any] | None = None, backoff: Backoff = BACKOFF,
                 max_attempts: int = MAX_ATTEMPTS) -> None:
        from engine.http import httpx

        self.settings = settings
        self.breaker = breaker or ExportBreaker()
        self._wait = wait or threading.Event().wait
        self._backoff = backoff
        self._max_attempts = max_attempts
        self._httpx = httpx()
        headers = {**settings.headers, "Content-Type": CONTENT_TYPES[settings.protocol],
                   "User-Agent": "flightdeck-otlp-exporter"}
        self._client = self._httpx.Client(timeout=settings.timeout_s, headers=headers, follow_redirects=False)

    def close(self) -> None:
        self._client.close()

    def send(self, body: bytes, stopping: Callable[[], bool] = lambda: False) -> SendOutcome:
        attempt = 0
        error: str | None = None
        while True:
            if not self.breaker.allow():
                return SendOutcome(False, attempt, f"exporter breaker open ({error or 'earlier failures'})")
            attempt += 1
            retry_after: float | None = None
            try:
                response = self._client.post(self.settings.url, content=body)
            except self._httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"[:300]
            else:
                if 200 <= response.status_code < 300:
                    self.breaker.success()
                    return SendOutcome(True, attempt)
                error = f"HTTP {response.status_code}: {response.text[:200]}"
                if response.status_code not in RETRYABLE_STATUS:
                    # The collector understood and refused (400 bad data, 401/403 credentials): retrying cannot help,
                    # and it is not the collector being down, so the breaker is not charged either.
                    return SendOutcome(False, attempt, error)
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
            opened = self.breaker.failure()
            if opened or attempt >= self._max_attempts or stopping():
                return SendOutcome(False, attempt, error)
            plan = plan_retry(self._backoff, attempt, retry_after, retry_after_cap=RETRY_AFTER_CAP_S)
            if plan.give_up is not None:
                return SendOutcome(False, attempt, f"{error}; {plan.give_up}")
            self._wait(plan.delay_s)
            if stopping():
                return SendOutcome(False, attempt, error)
