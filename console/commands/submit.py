"""`flightdeck submit`: submit a run to a running `flightdeck serve` over its HTTP API, and optionally wait for it."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from console.commands.argtypes import json_or_text_file, positive
from engine.errors import FlightdeckError, InputError

DEFAULT_URL = "http://127.0.0.1:8470"
URL_ENV = "FLIGHTDECK_URL"
TOKEN_ENV = "FLIGHTDECK_API_TOKEN"
EXIT_UNREACHABLE = 9
EXIT_REFUSED = 7
ENDED = {"completed", "failed", "budget_exceeded", "loop_detected", "killed", "cancelled", "refused",
         "needs_reconcile"}


class ServeUnreachable(FlightdeckError):
    """The serve did not answer, or refused our token: nothing was submitted that we know of."""

    exit_code = EXIT_UNREACHABLE


class SubmitRefused(FlightdeckError):
    """The serve answered 429 or 503: a queue is full, admission is paused, or it is draining."""

    exit_code = EXIT_REFUSED


def add_parsers(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "submit", help="submit a run to a running flightdeck serve",
        description="Submit a run to a running `flightdeck serve` over HTTP and print its id and state.",
        epilog="Exit codes: 0 queued (or, with --wait, completed); with --wait, the run's code as flightdeck run "
               "gives it (1 failed, 4 budget exceeded, 5 loop detected, 6 killed or cancelled, 7 refused, 8 needs "
               "reconcile); 2 bad input (the serve answered 400, 404, 413 or 422: the message names the field); "
               "7 refused by back-pressure (429 queue full or 503 paused or draining: retry after the time given); "
               f"{EXIT_UNREACHABLE} the serve cannot be reached or refused the token.")
    parser.add_argument("hierarchy", metavar="FILE|NAME",
                        help="the hierarchy's name on the serve (a hierarchy file is read for its name)")
    parser.add_argument("--input", metavar="JSON|@FILE", required=True,
                        help="the run's input: JSON (or text), or @FILE to read it from a file")
    parser.add_argument("--tenant", metavar="NAME", help="customer/tenant label")
    parser.add_argument("--priority", type=int, default=500, metavar="P", help="0 (first) .. 1000 (default 500)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the scripted model (default 0)")
    parser.add_argument("--idempotency-key", metavar="KEY",
                        help="name the run: the same key never starts a second run (a repeat prints the original)")
    parser.add_argument("--wait", action="store_true", help="wait until the run ends; exit with its code")
    parser.add_argument("--timeout", type=positive, default=10.0, metavar="SECONDS",
                        help="per HTTP request (default 10)")
    parser.add_argument("--url", default=None,
                        help=f"the serve's URL (default ${URL_ENV}, else {DEFAULT_URL})")
    parser.add_argument("--token-env", default=TOKEN_ENV, metavar="NAME",
                        help=f"the variable holding the API token, sent as a bearer token when set (default "
                             f"{TOKEN_ENV})")
    parser.add_argument("--json", action="store_true", help="print the run as JSON")
    parser.set_defaults(handler=handle)


def read_input(value: str) -> Any:
    if value.startswith("@"):
        return json_or_text_file(value[1:], "--input")
    try:
        return json.loads(value)
    except ValueError:
        return value


def hierarchy_name(ref: str) -> str:
    """A bundled or served name as is; a hierarchy file's own `name`."""
    if not (ref.endswith((".yaml", ".yml")) or os.sep in ref) or not Path(ref).exists():
        return ref
    from engine.hierarchy.loader import load_hierarchy

    return load_hierarchy(ref).spec.name


def handle(args: argparse.Namespace) -> int:
    from engine.http import httpx as load_httpx
    from engine.runtime.results import EXIT_CODES

    httpx = load_httpx()
    if not 0 <= args.priority <= 1000:
        raise InputError(f"must be 0..1000, got {args.priority}", field="--priority")
    url = (args.url or os.environ.get(URL_ENV) or DEFAULT_URL).rstrip("/")
    token = os.environ.get(args.token_env) or None
    body = {"hierarchy": hierarchy_name(args.hierarchy), "input": read_input(args.input), "priority": args.priority,
            "seed": args.seed}
    if args.tenant is not None:
        body["tenant"] = args.tenant
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if args.idempotency_key is not None:
        headers["Idempotency-Key"] = args.idempotency_key
    with httpx.Client(base_url=url, timeout=args.timeout, headers=headers) as client:
        run = _call(client, url, "POST", "/runs", json=body)
        created = run.get("created", True)
        if not args.json:
            print(f"{run['run_id']} {run['state']}" + ("" if created else " (already submitted: the original run)"))
        while args.wait and run.get("state") not in ENDED:
            time.sleep(0.2)  # the run is in another process: polling its state is the only way to learn it
            run = _call(client, url, "GET", f"/runs/{run['run_id']}")
        if args.json:
            print(json.dumps(run, indent=2))
        elif args.wait:
            print(f"{run['run_id']} {run['state']}" + (f": {run['error']}" if run.get("error") else ""))
    if not args.wait:
        return 0
    state = run.get("state")
    return 6 if state == "cancelled" else EXIT_CODES.get(state, 1)


def _call(client: Any, url: str, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    from engine.http import httpx as load_httpx

    httpx = load_httpx()
    try:
        response = client.request(method, path, **kwargs)
    except httpx.ConnectError:
        raise ServeUnreachable(f"cannot connect to a flightdeck serve at {url} (is it running? --url or "
                               f"${URL_ENV} names it)") from None
    except httpx.TimeoutException:
        raise ServeUnreachable(f"{url} did not answer {method} {path} in time") from None
    except httpx.HTTPError as exc:
        raise ServeUnreachable(f"{method} {url}{path} failed: {exc}") from None
    try:
        payload = response.json()
    except ValueError:
        payload = {}
    if response.status_code < 400 and isinstance(payload, dict):
        return payload
    reason = payload.get("error") if isinstance(payload, dict) else None
    reason = reason or f"HTTP {response.status_code}"
    field = payload.get("field") if isinstance(payload, dict) else None
    if response.status_code in (429, 503):
        retry = response.headers.get("retry-after")
        raise SubmitRefused(f"refused ({response.status_code}): {reason}" + (
            f"; retry after {retry}s" if retry else ""))
    if response.status_code == 401:
        raise ServeUnreachable(f"{url} refused the request (401): {reason} (the token comes from the variable "
                               "--token-env names)")
    if 400 <= response.status_code < 500:
        raise InputError(reason, field=field)
    raise ServeUnreachable(f"{url} answered {response.status_code}: {reason}")
