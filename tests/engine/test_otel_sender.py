"""The exporter's HTTP sender against a real loopback server: retries on 429/5xx with Retry-After, no retries on
other 4xx, and its own breaker (open after failures in a row, one probe after the wait)."""

from __future__ import annotations

import threading

from engine.export.sender import ExportBreaker, Sender
from engine.export.settings import ExportSettings
from engine.retry import Backoff
from tests.fakes.otlp_receiver import OtlpReceiver, reply


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def sender_for(receiver: OtlpReceiver, breaker: ExportBreaker | None = None) -> tuple[Sender, list[float]]:
    waits: list[float] = []
    settings = ExportSettings(url=receiver.url("/v1/traces"), headers={"x-token": "abc"}, timeout_s=2.0)
    stop = threading.Event()

    def wait(seconds: float) -> None:
        waits.append(seconds)
        stop.wait(0)  # the sender's wait is the exporter's stop event; here it returns at once

    return Sender(settings, breaker=breaker, wait=wait, backoff=Backoff(0.01, 0.02)), waits


def test_retryable_answers_are_retried_honouring_retry_after() -> None:
    with OtlpReceiver() as receiver:
        receiver.enqueue(reply(429, retry_after="1.5"), reply(503), reply(502))
        sender, waits = sender_for(receiver, ExportBreaker(failures_to_open=10))
        outcome = sender.send(b"\x0a\x00")
        sender.close()
        assert outcome.sent and outcome.attempts == 4
        assert waits[0] == 1.5  # Retry-After wins over the shorter backoff
        assert all(r.headers["x-token"] == "abc" for r in receiver.requests)
        assert receiver.requests[0].headers["content-type"] == "application/x-protobuf"


def test_a_refusal_is_not_retried_and_does_not_charge_the_breaker() -> None:
    with OtlpReceiver() as receiver:
        receiver.enqueue(reply(400, b"bad data"), reply(401, b"who are you"))
        breaker = ExportBreaker(failures_to_open=1)
        sender, waits = sender_for(receiver, breaker)
        first, second = sender.send(b"x"), sender.send(b"x")
        sender.close()
        assert (first.sent, first.attempts, second.attempts) == (False, 1, 1)
        assert "HTTP 400" in (first.error or "") and "HTTP 401" in (second.error or "")
        assert waits == [] and breaker.state == "closed"


def test_the_breaker_opens_fails_fast_and_probes_after_its_wait() -> None:
    clock = Clock()
    with OtlpReceiver(default=reply(503)) as receiver:
        breaker = ExportBreaker(failures_to_open=3, wait_s=30.0, clock=clock)
        sender, _ = sender_for(receiver, breaker)
        outcome = sender.send(b"x")
        assert not outcome.sent and outcome.attempts == 3 and breaker.state == "open"
        before = len(receiver.requests)
        fast = sender.send(b"x")
        assert not fast.sent and fast.attempts == 0 and "breaker open" in (fast.error or "")
        assert len(receiver.requests) == before  # open: the collector is not even asked
        clock.now += 30.0
        assert breaker.state == "half_open"
        receiver.default = reply(200, b"")
        probe = sender.send(b"x")
        sender.close()
        assert probe.sent and breaker.state == "closed"
