"""Notifier payloads, checked exactly on a real HTTP receiver on 127.0.0.1, and the pager's delivery rules: retries
with back-off, Retry-After on 429, no retry on other 4xx, secrets never in what is recorded."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest

from engine.runbooks.notify import Page, build_request, pagerduty_body, slack_body, webhook_body
from engine.runbooks.pager import Attempt, Pager, retry_after_seconds
from engine.store.config import PagerDutyNotifier, SlackNotifier, WebhookNotifier
from tests.fakes.receiver import Receiver, receiver, reply  # noqa: F401 (receiver is a fixture)

KEY = "pd-routing-key-SECRET-42"
SLACK_URL_SECRET = "T000/B000/XXXXSECRET"



def page(action: str = "trigger", severity: str = "sev2", target: str = "pd") -> Page:
    return Page(target, action, "inc-0badc0de", "An agent is stuck in a loop (agent:planner): loop_detected=3",
                severity, "flightdeck engine abc on host", {"runbook": "looping-agent", "signals": [{"value": 3}]},
                incident_id="inc-0badc0de", title="An agent is stuck in a loop", scope="agent:planner",
                group="looping-agent", signal="loop_detected")


class Recorder:
    def __init__(self) -> None:
        self.attempts: list[Attempt] = []
        self.lock = threading.Lock()

    def __call__(self, attempt: Attempt) -> None:
        with self.lock:
            self.attempts.append(attempt)

    def summary(self) -> list[tuple[str, int, int | None]]:
        return [(a.outcome, a.attempt, a.status) for a in self.attempts]


def make_pager(receiver: Receiver, recorder: Recorder, **options: Any) -> Pager:
    notifiers = {
        "pd": PagerDutyNotifier(type="pagerduty", routing_key_env="PD_KEY", url=receiver.url("/pd")),
        "chat": SlackNotifier(type="slack", url_env="SLACK_URL"),
        "hook": WebhookNotifier(type="webhook", url=receiver.url("/hook"), headers={"Authorization": "Bearer tok"}),
        "nokey": PagerDutyNotifier(type="pagerduty", routing_key_env="PD_KEY_MISSING", url=receiver.url("/pd")),
    }
    environ = {"PD_KEY": KEY, "SLACK_URL": receiver.url(f"/slack/{SLACK_URL_SECRET}")}
    pager = Pager(notifiers, recorder, environ=environ, **{"initial_backoff": 0.01, "max_backoff": 0.05, **options})
    pager.start()
    return pager


def test_pagerduty_events_v2_payload_and_severity_mapping(receiver: Receiver) -> None:
    recorder = Recorder()
    pager = make_pager(receiver, recorder)
    try:
        for severity in ("sev1", "sev2", "sev3", "sev4"):
            pager.send(page(severity=severity))
        assert pager.wait_idle(10)
    finally:
        pager.stop()
    sent = sorted((r.json for r in receiver.on("/pd")), key=lambda body: body["payload"]["severity"])
    assert [b["payload"]["severity"] for b in sent] == ["critical", "error", "info", "warning"]
    body = next(b for b in sent if b["payload"]["severity"] == "error")
    assert body == {
        "routing_key": KEY, "event_action": "trigger", "dedup_key": "inc-0badc0de",
        "payload": {"summary": "An agent is stuck in a loop (agent:planner): loop_detected=3",
                    "source": "flightdeck engine abc on host", "severity": "error", "component": "agent:planner",
                    "group": "looping-agent", "class": "loop_detected",
                    "custom_details": {"runbook": "looping-agent", "signals": [{"value": 3}]}}}
    assert receiver.on("/pd")[0].headers["content-type"] == "application/json"
    assert {a.outcome for a in recorder.attempts} == {"sent"}


def test_acknowledge_and_resolve_carry_only_the_key_action_and_dedup_key() -> None:
    for action in ("acknowledge", "resolve"):
        assert pagerduty_body(page(action), KEY) == {"routing_key": KEY, "event_action": action,
                                                     "dedup_key": "inc-0badc0de"}
    long = Page("pd", "trigger", "inc-1", "x" * 2000, "sev4", "src")
    assert len(pagerduty_body(long, KEY)["payload"]["summary"]) == 1024  # PagerDuty's limit


def test_slack_and_webhook_bodies() -> None:
    body = slack_body(page(), channel="#oncall")
    assert body["text"].startswith("[SEV2] Triggered: An agent is stuck in a loop (agent:planner) - ")
    assert body["channel"] == "#oncall"
    header, section, fields, context = body["blocks"]
    assert header["type"] == "header" and header["text"]["text"].endswith(
        "[SEV2] Triggered: An agent is stuck in a loop (agent:planner)")
    assert section["text"]["text"] == page().summary
    assert [f["text"] for f in fields["fields"]] == ["*Severity*\nsev2", "*Scope*\nagent:planner",
                                                     "*Runbook*\nlooping-agent", "*Incident*\ninc-0badc0de"]
    assert "flightdeck incident ack inc-0badc0de" in context["elements"][0]["text"]
    assert webhook_body(page("resolve")) == {
        "event": "incident.resolved", "action": "resolve", "dedup_key": "inc-0badc0de",
        "incident_id": "inc-0badc0de", "title": "An agent is stuck in a loop", "summary": page().summary,
        "severity": "sev2", "scope": "agent:planner", "runbook": "looping-agent",
        "source": "flightdeck engine abc on host", "details": page().details}


def test_slack_and_webhook_go_over_http_with_their_headers(receiver: Receiver) -> None:
    recorder = Recorder()
    pager = make_pager(receiver, recorder)
    try:
        pager.send(page(target="chat"))
        pager.send(page(target="hook"))
        assert pager.wait_idle(10)
    finally:
        pager.stop()
    (slack,) = [r for r in receiver.requests if r.path.startswith("/slack/")]
    assert slack.json == slack_body(page(target="chat"))
    (hook,) = receiver.on("/hook")
    assert hook.headers["authorization"] == "Bearer tok"
    assert hook.json == webhook_body(page(target="hook"))
    for attempt in recorder.attempts:  # the Slack URL came from the environment: it is a secret
        assert SLACK_URL_SECRET not in repr(attempt.as_data())


def test_retries_with_backoff_then_delivers(receiver: Receiver) -> None:
    receiver.enqueue(reply(500), reply(502))
    recorder = Recorder()
    pager = make_pager(receiver, recorder, initial_backoff=0.05, max_backoff=1.0)
    try:
        pager.send(page())
        assert pager.wait_idle(10)
    finally:
        pager.stop()
    assert recorder.summary() == [("retrying", 1, 500), ("retrying", 2, 502), ("sent", 3, 202)]
    assert [a.retry_in for a in recorder.attempts[:2]] == [0.05, 0.1]  # exponential
    first, second, third = receiver.requests
    assert second.at - first.at >= 0.05 and third.at - second.at >= 0.1
    assert first.json == second.json == third.json  # the same event, so PagerDuty deduplicates


def test_429_retry_after_is_honoured(receiver: Receiver) -> None:
    receiver.enqueue(reply(429, retry_after="0.3"))
    recorder = Recorder()
    pager = make_pager(receiver, recorder)
    try:
        pager.send(page())
        assert pager.wait_idle(10)
    finally:
        pager.stop()
    assert recorder.summary() == [("retrying", 1, 429), ("sent", 2, 202)]
    assert recorder.attempts[0].retry_in == 0.3  # longer than the 0.01 s back-off: the server's wish wins
    first, second = receiver.requests
    assert second.at - first.at >= 0.3


def test_client_errors_are_not_retried_and_secrets_are_scrubbed(receiver: Receiver) -> None:
    receiver.enqueue(reply(400, {"status": "invalid event", "errors": [f"bad routing key {KEY}"]}))
    recorder = Recorder()
    pager = make_pager(receiver, recorder)
    try:
        pager.send(page())
        assert pager.wait_idle(10)
    finally:
        pager.stop()
    (attempt,) = recorder.attempts
    assert (attempt.outcome, attempt.status) == ("failed", 400)
    assert KEY not in attempt.error and "[REDACTED]" in attempt.error
    assert len(receiver.requests) == 1


def test_gives_up_after_max_attempts(receiver: Receiver) -> None:
    receiver.enqueue(*[reply(503)] * 3)
    recorder = Recorder()
    pager = make_pager(receiver, recorder, max_attempts=3)
    try:
        pager.send(page())
        assert pager.wait_idle(10)
    finally:
        pager.stop()
    assert recorder.summary() == [("retrying", 1, 503), ("retrying", 2, 503), ("failed", 3, 503)]


def test_missing_secret_or_unknown_target_fail_without_a_request(receiver: Receiver) -> None:
    recorder = Recorder()
    pager = make_pager(receiver, recorder)
    try:
        pager.send(page(target="nokey"))
        pager.send(page(target="nobody"))
        assert pager.wait_idle(10)
    finally:
        pager.stop()
    errors = sorted(a.error or "" for a in recorder.attempts)
    assert errors == ["no notifier named 'nobody' in the store config ([notifiers.nobody])",
                      "notifier nokey: environment variable PD_KEY_MISSING (the PagerDuty routing key) is not set"]
    assert all(a.outcome == "failed" for a in recorder.attempts)
    assert receiver.requests == []


def test_network_errors_are_retried(receiver: Receiver) -> None:
    recorder = Recorder()
    dead = Receiver().start()
    url = dead.url("/pd")
    dead.stop()  # nothing listens on that port any more: connection refused
    pager = Pager({"pd": PagerDutyNotifier(type="pagerduty", routing_key_env="PD_KEY", url=url)}, recorder,
                  environ={"PD_KEY": KEY}, max_attempts=2, initial_backoff=0.01)
    pager.start()
    try:
        pager.send(page())
        assert pager.wait_idle(10)
    finally:
        pager.stop()
    assert [(a.outcome, a.status) for a in recorder.attempts] == [("retrying", None), ("failed", None)]
    assert "ConnectError" in (recorder.attempts[-1].error or "")


def test_retry_after_parsing() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    assert retry_after_seconds("2") == 2.0
    assert retry_after_seconds("0.5") == 0.5
    assert retry_after_seconds(format_datetime(now + timedelta(seconds=30), usegmt=True), now.timestamp()) == \
        pytest.approx(30)
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("-3") == 0.0


def test_build_request_reads_secrets_from_the_environment_only() -> None:
    notifier = PagerDutyNotifier(type="pagerduty", routing_key_env="PD_KEY")
    request = build_request(notifier, page(), {"PD_KEY": KEY})
    assert request.url == "https://events.pagerduty.com/v2/enqueue"
    assert request.secrets == (KEY,)
    assert request.json["routing_key"] == KEY
