"""The serve API (engine/serve/http_api.py) over a real 127.0.0.1 socket, against an in-memory FleetService: status
codes, the error shape, Retry-After, validation of every field, the body cap, bearer auth and the OpenAPI
document."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from engine.errors import InputError
from engine.serve.auth import listen_problem
from engine.serve.contracts import Refused
from engine.serve.http_api import build_app
from engine.serve.listener import parse_listen
from engine.store.config import load_config
from tests.serve_http_support import FakeFleet, served

TOKEN = "s3cret-token-value"


@pytest.fixture
def fleet() -> FakeFleet:
    return FakeFleet()


@pytest.fixture
def client(fleet: FakeFleet) -> Iterator[httpx.Client]:
    with served(build_app(fleet, token=None, environ={})) as url, httpx.Client(base_url=url, timeout=10) as http:
        yield http


def test_submit_queues_a_run_and_a_repeated_key_returns_the_original(client: httpx.Client, fleet: FakeFleet) -> None:
    body = {"hierarchy": "deal-desk", "input": {"request": "10% off"}, "tenant": "acme", "priority": 7, "seed": 3}
    first = client.post("/runs", json=body, headers={"Idempotency-Key": "order-42"})
    assert first.status_code == 201
    run = first.json()
    assert first.headers["location"] == f"/runs/{run['run_id']}"
    assert run["created"] is True and run["state"] == "queued" and run["tenant"] == "acme"
    again = client.post("/runs", json=body, headers={"Idempotency-Key": "order-42"})
    assert again.status_code == 200
    assert again.json()["run_id"] == run["run_id"] and again.json()["created"] is False
    assert "location" not in again.headers
    assert len(fleet.submissions) == 1
    sub = fleet.submissions[0]
    assert (sub.hierarchy, sub.input, sub.tenant, sub.priority, sub.seed, sub.source, sub.idempotency_key) == (
        "deal-desk", {"request": "10% off"}, "acme", 7, 3, "api", "order-42")
    # Without a key every submit is a new run.
    assert client.post("/runs", json={"hierarchy": "deal-desk"}).status_code == 201
    assert len(fleet.submissions) == 2


def test_get_list_cancel_resume(client: httpx.Client, fleet: FakeFleet) -> None:
    ids = [client.post("/runs", json={"hierarchy": "deal-desk", "tenant": t}).json()["run_id"]
           for t in ("acme", "globex", "acme")]
    got = client.get(f"/runs/{ids[0]}")
    assert got.status_code == 200 and got.json()["run_id"] == ids[0]
    missing = client.get("/runs/nope")
    assert missing.status_code == 404 and missing.json() == {"error": "no run 'nope'", "field": "run_id"}
    listed = client.get("/runs", params={"tenant": "acme", "limit": 1}).json()
    assert [r["run_id"] for r in listed] == [ids[2]]
    assert len(client.get("/runs", params={"state": "queued"}).json()) == 3

    no_reason = client.post(f"/runs/{ids[0]}/cancel", json={})
    assert no_reason.status_code == 422 and no_reason.json()["field"] == "reason"
    cancelled = client.post(f"/runs/{ids[0]}/cancel", json={"reason": "duplicate order", "actor": "alice"})
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    assert fleet.cancels == [(ids[0], "duplicate order", "api:alice")]
    assert client.post("/runs/nope/cancel", json={"reason": "x"}).status_code == 404

    busy = client.post(f"/runs/{ids[1]}/resume")
    assert busy.status_code == 409 and "nothing to resume" in busy.json()["error"]
    resumed = client.post(f"/runs/{ids[0]}/resume")  # an empty body is fine
    assert resumed.status_code == 200 and resumed.json()["state"] == "running"
    assert client.post("/runs/nope/resume", json={"actor": "bob"}).status_code == 404


def test_queues_schedules_and_health(client: httpx.Client, fleet: FakeFleet) -> None:
    client.post("/runs", json={"hierarchy": "deal-desk"})
    queues = client.get("/queues").json()
    assert queues[0]["queue"] == "deal-desk" and queues[0]["depth"] == 1 and queues[0]["admission"] == "open"
    assert client.get("/schedules").json()[0]["name"] == "nightly"
    health = client.get("/health")
    assert health.status_code == 200 and health.json()["status"] == "ok" and health.json()["queued"] == 1
    fleet.stopping = True
    stopping = client.get("/health")
    assert stopping.status_code == 503 and stopping.json()["status"] == "stopping"
    assert stopping.headers["retry-after"].isdigit()


def test_refusals_carry_their_status_and_retry_after(client: httpx.Client, fleet: FakeFleet) -> None:
    fleet.max_depth = 1
    assert client.post("/runs", json={"hierarchy": "deal-desk"}).status_code == 201
    full = client.post("/runs", json={"hierarchy": "deal-desk"})
    assert full.status_code == 429
    assert full.headers["retry-after"] == "3"  # 2.4 s rounded up to whole seconds
    assert "full" in full.json()["error"]
    fleet.admission = "paused"
    paused = client.post("/runs", json={"hierarchy": "deal-desk"})
    assert paused.status_code == 503 and int(paused.headers["retry-after"]) >= 1
    unknown = client.post("/runs", json={"hierarchy": "nope"})
    assert unknown.status_code == 404 and unknown.json()["field"] == "hierarchy"


MALFORMED: list[tuple[str, str, dict[str, str], bytes, int, str | None]] = [
    ("POST", "/runs", {}, b"", 400, "body"),
    ("POST", "/runs", {}, b"{not json", 400, "body"),
    ("POST", "/runs", {}, b"\xff\xfe\x00", 400, "body"),
    ("POST", "/runs", {}, b"[1, 2]", 422, "body"),
    ("POST", "/runs", {}, b'"a string"', 422, "body"),
    ("POST", "/runs", {}, b"{}", 422, "hierarchy"),
    ("POST", "/runs", {}, b'{"hierarchy": 5}', 422, "hierarchy"),
    ("POST", "/runs", {}, b'{"hierarchy": "../etc/passwd"}', 422, "hierarchy"),
    ("POST", "/runs", {}, b'{"hierarchy": "deal-desk", "priority": "5"}', 422, "priority"),
    ("POST", "/runs", {}, b'{"hierarchy": "deal-desk", "priority": 1001}', 422, "priority"),
    ("POST", "/runs", {}, b'{"hierarchy": "deal-desk", "priority": -1}', 422, "priority"),
    ("POST", "/runs", {}, b'{"hierarchy": "deal-desk", "priority": true}', 422, "priority"),
    ("POST", "/runs", {}, b'{"hierarchy": "deal-desk", "priority": 1.5}', 422, "priority"),
    ("POST", "/runs", {}, b'{"hierarchy": "deal-desk", "seed": 1e400}', 422, "seed"),
    ("POST", "/runs", {}, b'{"hierarchy": "deal-desk", "tenant": ""}', 422, "tenant"),
    ("POST", "/runs", {}, b'{"hierarchy": "deal-desk", "tenant": {"a": 1}}', 422, "tenant"),
    ("POST", "/runs", {}, b'{"hierarchy": "deal-desk", "bogus": 1}', 422, "bogus"),
    ("POST", "/runs", {"Idempotency-Key": "webhook:github:1"}, b'{"hierarchy": "deal-desk"}', 400,
     "Idempotency-Key"),
    ("POST", "/runs", {"Idempotency-Key": "x" * 300}, b'{"hierarchy": "deal-desk"}', 400, "Idempotency-Key"),
    ("GET", "/runs?limit=0", {}, b"", 422, "limit"),
    ("GET", "/runs?limit=abc", {}, b"", 422, "limit"),
    ("GET", "/runs?limit=1&limit=2", {}, b"", 422, "limit"),
    ("GET", "/runs?colour=red", {}, b"", 422, "colour"),
    ("POST", "/runs/run-0001/cancel", {}, b'{"reason": ""}', 422, "reason"),
    ("POST", "/runs/run-0001/cancel", {}, b'{"reason": 7}', 422, "reason"),
    ("POST", "/runs/run-0001/resume", {}, b'{"actor": "bad actor!"}', 422, "actor"),
    ("GET", "/nowhere", {}, b"", 404, None),
    ("DELETE", "/runs", {}, b"", 405, None),
    ("PUT", "/health", {}, b"", 405, None),
]


def test_malformed_requests_get_a_4xx_naming_the_field_never_a_500(client: httpx.Client, fleet: FakeFleet) -> None:
    client.post("/runs", json={"hierarchy": "deal-desk"})
    for method, path, headers, body, status, field in MALFORMED:
        response = client.request(method, path, headers={"Content-Type": "application/json", **headers},
                                  content=body)
        assert response.status_code == status, (method, path, body, response.text)
        payload = response.json()
        assert set(payload) == {"error", "field"} and payload["error"], (path, body, payload)
        assert payload["field"] == field, (path, body, payload)
        assert "Traceback" not in response.text
    assert len(fleet.submissions) == 1  # nothing malformed was submitted


def test_oversized_bodies_are_refused_with_413(client: httpx.Client, fleet: FakeFleet) -> None:
    big = b'{"hierarchy": "deal-desk", "input": "' + b"x" * (1024 * 1024) + b'"}'
    declared = client.post("/runs", content=big, headers={"Content-Type": "application/json"})
    assert declared.status_code == 413 and declared.json()["field"] == "body"

    def chunks() -> Iterator[bytes]:  # no Content-Length: the cap holds while reading
        for start in range(0, len(big), 64 * 1024):
            yield big[start:start + 64 * 1024]

    streamed = client.post("/runs", content=chunks(), headers={"Content-Type": "application/json"})
    assert streamed.status_code == 413
    assert fleet.submissions == []


def test_values_sent_are_never_echoed_in_errors(client: httpx.Client) -> None:
    secret = "sk-live-abcdef0123456789"
    for body in ({"hierarchy": "deal-desk", "priority": secret}, {"hierarchy": secret + "!"},
                 {"hierarchy": "deal-desk", secret: 1}, {"hierarchy": "deal-desk", "tenant": secret + " x"}):
        response = client.post("/runs", json=body)
        assert response.status_code == 422
        assert secret not in response.text


def test_openapi_is_a_valid_3_1_document(client: httpx.Client) -> None:
    from openapi_spec_validator import validate
    from openapi_spec_validator.versions import consts  # noqa: F401 - the 3.1 validator is selected by `openapi`

    doc = client.get("/openapi.json").json()
    assert doc["openapi"] == "3.1.0"
    validate(doc)
    assert {"/runs", "/runs/{run_id}", "/runs/{run_id}/cancel", "/runs/{run_id}/resume", "/queues", "/schedules",
            "/health", "/hooks/{name}", "/openapi.json"} <= set(doc["paths"])
    submit = doc["components"]["schemas"]["SubmitBody"]
    assert submit["additionalProperties"] is False
    assert submit["properties"]["priority"]["maximum"] == 1000
    assert "security" not in doc  # no token: no auth declared


def test_bearer_token_guards_every_route_but_health_and_hooks(fleet: FakeFleet) -> None:
    with served(build_app(fleet, token=TOKEN, environ={})) as url, httpx.Client(base_url=url, timeout=10) as http:
        for path in ("/runs", "/queues", "/schedules", "/openapi.json", "/runs/x"):
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN},
                            {"Authorization": f"Basic {TOKEN}"}):
                response = http.get(path, headers=headers)
                assert response.status_code == 401, (path, headers)
                assert response.json()["field"] == "Authorization"
                assert "wrong" not in response.text.replace("wrong bearer token", "")
                assert response.headers["www-authenticate"].startswith("Bearer")
        refused = http.post("/runs", json={"hierarchy": "deal-desk"})
        assert refused.status_code == 401 and fleet.submissions == []
        ok = http.post("/runs", json={"hierarchy": "deal-desk"}, headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 201
        assert http.get("/queues", headers={"authorization": f"bearer {TOKEN}"}).status_code == 200
        assert http.get("/health").status_code == 200
        assert http.post("/hooks/nope", content=b"{}").status_code == 404  # the webhook's own checks, not 401
        assert http.get("/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"}).json()["security"] == [
            {"bearer": []}]


def test_no_token_refuses_a_non_loopback_listen() -> None:
    problem = listen_problem("0.0.0.0", None, "MY_TOKEN")
    assert problem is not None and "MY_TOKEN" in problem and "0.0.0.0" in problem
    assert listen_problem("192.168.1.5", None, "T") is not None
    assert listen_problem("0.0.0.0", "tok", "T") is None
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        assert listen_problem(host, None, "T") is None
    assert parse_listen("127.0.0.1:0") == ("127.0.0.1", 0)
    assert parse_listen("[::1]:8470") == ("::1", 8470)
    for bad in ("8470", "host:", "host:99999", ":80", "a:b"):
        with pytest.raises(InputError, match="HOST:PORT"):
            parse_listen(bad)


def test_config_names_the_token_variable(tmp_path: Path) -> None:
    assert load_config(tmp_path).serve.token_env == "FLIGHTDECK_API_TOKEN"
    (tmp_path / "config.toml").write_text('[serve]\ntoken_env = "SERVE_TOKEN"\n')
    assert load_config(tmp_path).serve.token_env == "SERVE_TOKEN"
    (tmp_path / "config.toml").write_text('[serve]\ntoken = "inline-secret"\n')
    with pytest.raises(InputError, match="token"):
        load_config(tmp_path)


def test_a_handler_bug_is_a_500_without_a_traceback(fleet: FakeFleet) -> None:
    class Broken(FakeFleet):
        def queues(self) -> list:  # type: ignore[type-arg]
            raise RuntimeError("secret internals")

    with served(build_app(Broken(), token=None, environ={})) as url, httpx.Client(base_url=url) as http:
        response = http.get("/queues")
    assert response.status_code == 500
    assert response.json()["error"].startswith("internal error")
    assert "secret internals" not in response.text


def test_refused_passes_field_through(fleet: FakeFleet) -> None:
    class Picky(FakeFleet):
        async def submit(self, submission):  # type: ignore[no-untyped-def]
            raise Refused(422, "deal-desk needs an object input", field="input")

    with served(build_app(Picky(), token=None, environ={})) as url, httpx.Client(base_url=url) as http:
        response = http.post("/runs", json={"hierarchy": "deal-desk", "input": 3})
    assert response.status_code == 422 and response.json() == {"error": "deal-desk needs an object input",
                                                               "field": "input"}
    assert "retry-after" not in response.headers


def test_port_zero_binds_a_free_port() -> None:
    from engine.serve.listener import bind, url_of

    sock = bind("127.0.0.1", 0)
    try:
        assert url_of(sock).startswith("http://127.0.0.1:") and not url_of(sock).endswith(":0")
        with pytest.raises(InputError, match="--listen"):
            bind("127.0.0.1", sock.getsockname()[1]).close()
    finally:
        sock.close()
    assert isinstance(sock, socket.socket)


def test_connections_accepted_on_the_bound_socket_send_without_delay() -> None:
    """Responses go out as two writes (headers, then body); with Nagle's algorithm on, the second waited for the
    client's delayed ACK (~40 ms a request). asyncio turns it off on what it accepts only on a socket that says TCP."""
    import asyncio

    from engine.serve.listener import bind

    async def nodelay_of_accepted() -> int:
        accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        class Note(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                conn = transport.get_extra_info("socket")
                accepted.set_result(conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                transport.close()

        server = await asyncio.get_running_loop().create_server(Note, sock=bind("127.0.0.1", 0))
        async with server:
            port = server.sockets[0].getsockname()[1]
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                return await asyncio.wait_for(accepted, 10)
            finally:
                writer.close()

    assert asyncio.run(nodelay_of_accepted()) != 0


def test_openapi_describes_exactly_the_routes_the_app_serves(fleet: FakeFleet) -> None:
    from starlette.routing import Route

    from engine.serve.openapi import build_openapi

    app = build_app(fleet, token=None, environ={})
    served_ops = {(route.path, method.lower()) for route in app.routes if isinstance(route, Route)
                  for method in (route.methods or ()) if method != "HEAD"}
    described = {(path, method) for path, ops in build_openapi(auth=False)["paths"].items() for method in ops}
    assert served_ops == described
