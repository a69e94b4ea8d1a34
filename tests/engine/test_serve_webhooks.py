"""POST /hooks/NAME (engine/serve/webhooks.py): HMAC signatures, the event id as idempotency key, the input template,
and every refusal, over a real 127.0.0.1 socket against an in-memory FleetService."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from engine.serve.fleet import WebhookSpec
from engine.serve.http_api import build_app
from engine.serve.webhooks import MissingPath, fill, unset_secrets
from tests.serve_http_support import FakeFleet, served, sign

SECRET = "whsec-0123456789abcdef"


def spec(**changes: Any) -> WebhookSpec:
    fields: dict[str, Any] = {
        "name": "github", "hierarchy": "deal-desk", "secret_env": "GITHUB_SECRET",
        "event_id": {"header": "X-GitHub-Delivery"},
        "input": {"request": "{{ $.issue.title }}", "number": "{{ $.issue.number }}",
                  "summary": "#{{ $.issue.number }}: {{ $.issue.title }}", "labels": "{{$.issue.labels}}"},
        "tenant": "{{ $.org }}", "priority": 100}
    fields.update(changes)
    return WebhookSpec.model_validate(fields)


EVENT = {"org": "acme", "issue": {"title": "Refund please", "number": 17, "labels": ["billing", "p1"]},
         "delivery": {"id": "evt_9"}}


@pytest.fixture
def fleet() -> FakeFleet:
    return FakeFleet(hooks={"github": spec(), "stripe": spec(name="stripe", secret_env="STRIPE_SECRET",
                                                                signature_header="Stripe-Signature",
                                                                event_id={"json": "$.delivery.id"}, tenant=None,
                                                                input="{{ $.missing.path }}"),
                            "unset": spec(name="unset", secret_env="NOT_SET_ANYWHERE")})


@pytest.fixture
def client(fleet: FakeFleet) -> Iterator[httpx.Client]:
    environ = {"GITHUB_SECRET": SECRET, "STRIPE_SECRET": SECRET}
    with served(build_app(fleet, token="api-token", environ=environ)) as url, \
            httpx.Client(base_url=url, timeout=10) as http:
        yield http


def post(client: httpx.Client, path: str, body: bytes, signature: str | None, **headers: str) -> httpx.Response:

    sent = dict(headers)
    if signature is not None:
        sent["X-Hub-Signature-256"] = sign(signature, body) if signature == SECRET else signature
    return client.post(path, content=body, headers=sent)


def test_a_signed_event_starts_one_run_and_a_redelivery_returns_it(client: httpx.Client, fleet: FakeFleet) -> None:
    body = json.dumps(EVENT).encode()
    first = post(client, "/hooks/github", body, SECRET, **{"X-GitHub-Delivery": "d-1"})
    assert first.status_code == 201, first.text
    run_id = first.json()["run_id"]
    assert first.headers["location"] == f"/runs/{run_id}"
    again = post(client, "/hooks/github", body, SECRET, **{"X-GitHub-Delivery": "d-1"})
    assert again.status_code == 200 and again.json()["run_id"] == run_id and again.json()["created"] is False
    assert len(fleet.submissions) == 1
    sub = fleet.submissions[0]
    assert sub.idempotency_key == "webhook:github:d-1" and sub.source == "webhook:github"
    assert (sub.hierarchy, sub.tenant, sub.priority) == ("deal-desk", "acme", 100)
    # A whole-string placeholder keeps the JSON type; one inside text becomes text.
    assert sub.input == {"request": "Refund please", "number": 17, "summary": "#17: Refund please",
                         "labels": ["billing", "p1"]}
    other = post(client, "/hooks/github", body, SECRET, **{"X-GitHub-Delivery": "d-2"})
    assert other.status_code == 201 and len(fleet.submissions) == 2


def test_unsigned_and_badly_signed_events_are_refused(client: httpx.Client, fleet: FakeFleet) -> None:
    body = json.dumps(EVENT).encode()
    delivery = {"X-GitHub-Delivery": "d-1"}

    for signature in (None, "", "sha256=", "sha256=" + "0" * 64, "sha1=abc", sign("another-secret", body),
                      sign(SECRET, body + b" "), sign(SECRET, body).upper().replace("SHA256=", "sha256=") + "0"):
        response = post(client, "/hooks/github", body, signature, **delivery)
        assert response.status_code == 401, signature
        assert response.json()["field"] == "X-Hub-Signature-256"
        assert SECRET not in response.text and sign(SECRET, body)[7:] not in response.text
    assert fleet.submissions == []
    # The bearer token is not what guards a webhook: it is neither needed nor enough.
    assert client.post("/hooks/github", content=body, headers={
        "Authorization": "Bearer api-token", **delivery}).status_code == 401


def test_an_unset_secret_answers_503_and_is_listed(client: httpx.Client, fleet: FakeFleet) -> None:
    response = post(client, "/hooks/unset", b"{}", SECRET, **{"X-GitHub-Delivery": "d-1"})
    assert response.status_code == 503 and response.json()["field"] == "NOT_SET_ANYWHERE"
    assert int(response.headers["retry-after"]) >= 1
    assert [s.name for s in unset_secrets(list(fleet.hooks.values()), {"GITHUB_SECRET": SECRET,
                                                                        "STRIPE_SECRET": ""})] == ["stripe", "unset"]
    assert post(client, "/hooks/nope", b"{}", SECRET).status_code == 404


def test_event_id_and_template_refusals_name_the_field(client: httpx.Client, fleet: FakeFleet) -> None:
    body = json.dumps(EVENT).encode()
    no_id = post(client, "/hooks/github", body, SECRET)
    assert no_id.status_code == 400 and no_id.json()["field"] == "X-GitHub-Delivery"
    not_json = post(client, "/hooks/github", b"payload=1", SECRET, **{"X-GitHub-Delivery": "d-1"})
    assert not_json.status_code == 400 and not_json.json()["field"] == "body"
    missing = json.dumps({"issue": {"title": "x"}, "org": "acme"}).encode()
    no_path = post(client, "/hooks/github", missing, SECRET, **{"X-GitHub-Delivery": "d-9"})
    assert no_path.status_code == 422 and no_path.json()["field"] == "$.issue.number"

    def stripe(payload: dict[str, Any]) -> httpx.Response:

        raw = json.dumps(payload).encode()
        return client.post("/hooks/stripe", content=raw, headers={"Stripe-Signature": sign(SECRET, raw)})

    assert stripe({"delivery": {}}).json()["field"] == "$.delivery.id"
    assert stripe({"delivery": {"id": True}}).status_code == 400
    templated = stripe({"delivery": {"id": 12}})  # an integer id is fine; the template's path is missing
    assert templated.status_code == 422 and templated.json()["field"] == "$.missing.path"
    big = b'{"a": "' + b"x" * (1024 * 1024) + b'"}'
    assert post(client, "/hooks/github", big, SECRET, **{"X-GitHub-Delivery": "d-1"}).status_code == 413
    assert fleet.submissions == []


def test_fill() -> None:
    body = {"a": {"b": [10, {"c": None}]}, "s": "x"}
    assert fill("{{ $.a.b.0 }}", body) == 10
    assert fill("{{$.a.b.1.c}}", body) is None
    assert fill(["{{ $.s }}-{{ $.a.b.0 }}", {"k": "{{ $.a }}"}, 3], body) == ["x-10", {"k": body["a"]}, 3]
    assert fill("no placeholders", body) == "no placeholders"
    assert fill("{{ $.a }} text", body) == '{"b": [10, {"c": null}]} text'
    for missing in ("{{ $.a.z }}", "{{ $.a.b.5 }}", "{{ $.s.x }}", "t {{ $.nope }}"):
        with pytest.raises(MissingPath):
            fill(missing, body)
