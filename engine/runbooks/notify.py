"""What a page looks like on the wire, per notifier type of the store config ([notifiers.NAME], see
engine.store.config): pure functions from a Page to an HTTP request, so the payloads are tested exactly.

- slack: an incoming webhook: {"text": fallback, "blocks": [...]} (Block Kit), optional "channel".
- pagerduty: Events API v2: {"routing_key", "event_action": trigger|acknowledge|resolve, "dedup_key", and for a
  trigger "payload": {summary, source, severity, component, group, class, custom_details}}. Severity is mapped
  sev1 -> critical, sev2 -> error, sev3 -> warning, sev4 -> info. The dedup_key is the incident id, so the
  acknowledge and resolve that follow the incident land on the same PagerDuty alert.
- webhook: a generic JSON document with the same facts, for whatever the receiver wants to do.

Secrets (the PagerDuty routing key, a Slack webhook URL given by url_env) are read from the environment variables
the config names, at send time. They are returned in Request.secrets so the pager can scrub them from anything it
records; they never appear in a trace event.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.store.config import PagerDutyNotifier, SlackNotifier, WebhookNotifier

SEVERITY_TO_PAGERDUTY: dict[str, str] = {"sev1": "critical", "sev2": "error", "sev3": "warning", "sev4": "info"}
PAGE_ACTIONS: tuple[str, ...] = ("trigger", "acknowledge", "resolve")
SUMMARY_LIMIT = 1024  # PagerDuty's limit for payload.summary
_VERBS = {"trigger": "Triggered", "acknowledge": "Acknowledged", "resolve": "Resolved"}
_EMOJI = {"trigger": ":rotating_light:", "acknowledge": ":eyes:", "resolve": ":white_check_mark:"}

Notifier = SlackNotifier | PagerDutyNotifier | WebhookNotifier


@dataclass(frozen=True)
class Page:
    """One message to one notifier target. `kind` is "incident" or "approval" (an escalated approval)."""

    target: str
    action: str
    dedup_key: str
    summary: str
    severity: str
    source: str
    details: dict[str, Any] = field(default_factory=dict)
    incident_id: str | None = None
    kind: str = "incident"
    title: str = ""
    scope: str = ""
    group: str = ""
    signal: str = ""


@dataclass(frozen=True)
class Request:
    url: str
    json: dict[str, Any]
    headers: dict[str, str]
    secrets: tuple[str, ...] = ()


class NotifierConfigError(Exception):
    """The notifier cannot be used as configured (a missing environment variable): retrying will not help."""


def notifier_type(notifier: Notifier) -> str:
    return notifier.type


def _env(environ: Mapping[str, str], name: str, target: str, what: str) -> str:
    value = environ.get(name)
    if not value:
        raise NotifierConfigError(f"notifier {target}: environment variable {name} ({what}) is not set")
    return value


def build_request(notifier: Notifier, page: Page, environ: Mapping[str, str]) -> Request:
    if isinstance(notifier, PagerDutyNotifier):
        key = _env(environ, notifier.routing_key_env, page.target, "the PagerDuty routing key")
        return Request(notifier.url, pagerduty_body(page, key), {"Content-Type": "application/json"}, (key,))
    if isinstance(notifier, SlackNotifier):
        secrets: tuple[str, ...] = ()
        if notifier.url_env:
            url = _env(environ, notifier.url_env, page.target, "the Slack webhook URL")
            secrets = (url,)
        elif notifier.url:
            url = notifier.url
        else:
            raise NotifierConfigError(f"notifier {page.target}: a slack notifier needs `url` or `url_env`")
        return Request(url, slack_body(page, notifier.channel), {"Content-Type": "application/json"}, secrets)
    headers = {"Content-Type": "application/json", **notifier.headers}
    return Request(notifier.url, webhook_body(page), headers, tuple(v for v in notifier.headers.values() if v))


def pagerduty_body(page: Page, routing_key: str) -> dict[str, Any]:
    body: dict[str, Any] = {"routing_key": routing_key, "event_action": page.action, "dedup_key": page.dedup_key}
    if page.action == "trigger":
        payload: dict[str, Any] = {"summary": page.summary[:SUMMARY_LIMIT], "source": page.source,
                                   "severity": SEVERITY_TO_PAGERDUTY[page.severity],
                                   "custom_details": page.details}
        if page.scope:
            payload["component"] = page.scope
        if page.group:
            payload["group"] = page.group
        if page.signal:
            payload["class"] = page.signal
        body["payload"] = payload
    return body


def _headline(page: Page) -> str:
    what = page.title or page.summary
    where = f" ({page.scope})" if page.scope else ""
    return f"[{page.severity.upper()}] {_VERBS[page.action]}: {what}{where}"


def slack_body(page: Page, channel: str | None = None) -> dict[str, Any]:
    headline = _headline(page)
    fields = [{"type": "mrkdwn", "text": f"*Severity*\n{page.severity}"}]
    if page.scope:
        fields.append({"type": "mrkdwn", "text": f"*Scope*\n{page.scope}"})
    if page.group:
        fields.append({"type": "mrkdwn", "text": f"*{'Runbook' if page.kind == 'incident' else 'Tool'}*\n{page.group}"})
    fields.append({"type": "mrkdwn", "text": f"*{'Incident' if page.kind == 'incident' else 'Approval'}*\n"
                                             f"{page.dedup_key}"})
    if page.kind == "incident":
        hint = (f"`flightdeck incident show {page.dedup_key}` · `flightdeck incident ack {page.dedup_key}`"
                if page.action == "trigger" else f"`flightdeck postmortem {page.dedup_key}`")
    else:
        hint = "`flightdeck approvals` · `flightdeck approve ID --reason ...`"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": f"{_EMOJI[page.action]} {headline}"[:150],
                                    "emoji": True}},
        {"type": "section", "text": {"type": "mrkdwn", "text": page.summary[:3000]}},
        {"type": "section", "fields": fields},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": f"{page.source} · {hint}"}]},
    ]
    body: dict[str, Any] = {"text": f"{headline} - {page.summary}"[:3000], "blocks": blocks}
    if channel:
        body["channel"] = channel
    return body


def webhook_body(page: Page) -> dict[str, Any]:
    event = {"trigger": "triggered", "acknowledge": "acknowledged", "resolve": "resolved"}[page.action]
    return {"event": f"{page.kind}.{event}", "action": page.action, "dedup_key": page.dedup_key,
            "incident_id": page.incident_id, "title": page.title, "summary": page.summary,
            "severity": page.severity, "scope": page.scope, "runbook": page.group if page.kind == "incident" else None,
            "source": page.source, "details": page.details}
