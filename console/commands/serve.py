"""`flightdeck serve`: a long-running engine on a store that takes work from an HTTP API, webhooks and cron schedules
(engine/serve/). The HTTP server runs on the engine's own event loop, on a socket bound here (so `--listen
127.0.0.1:0` works and the real address is printed). SIGTERM or SIGINT drains: no new submissions (503), queued and
running runs get `--grace` to finish, what is left stays in the store for the next serve; the API answers
throughout (/health says "stopping")."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from console.cli import add_store_argument
from console.commands.argtypes import duration, non_negative
from engine.errors import InputError

SERVE_EPILOG = (
    "The API: POST /runs, GET /runs, GET /runs/ID, POST /runs/ID/cancel, POST /runs/ID/resume, GET /queues, "
    "GET /schedules, GET /health, GET /openapi.json, POST /hooks/NAME (docs/operations.md, 'Serve mode'). "
    "Auth: when the variable named by config.toml [serve] token_env (default FLIGHTDECK_API_TOKEN) is set, every "
    "route but /health and /hooks/* needs 'Authorization: Bearer <token>'; without a token, serve listens on a "
    "loopback address only. "
    "Exit codes (as flightdeck run on a signal): 143 stopped by SIGTERM or SIGHUP after the drain; 130 stopped by "
    "SIGINT after the drain; 2 bad input (fleet file, --listen, no token for a non-loopback address); 3 store "
    "problem; 1 the HTTP server stopped by itself.")


def add_parsers(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "serve", help="serve a fleet: runs from an HTTP API, webhooks and schedules, on durable queues",
        description="Run a long-lived engine that takes runs from an HTTP API, webhooks and cron schedules, queued "
                    "durably on the store (a crash or restart resumes them). Prints 'serving on URL' on stdout "
                    "when it listens.", epilog=SERVE_EPILOG)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--fleet", metavar="FILE",
                        help="fleet.yaml: hierarchies with their queues, webhooks and schedules")
    source.add_argument("--hierarchy", metavar="FILE|NAME", action="append",
                        help="serve this hierarchy with default queue bounds (repeatable)")
    add_store_argument(parser)
    parser.add_argument("--listen", metavar="HOST:PORT", default="127.0.0.1:8470",
                        help="address to listen on (default 127.0.0.1:8470; port 0 picks a free port)")
    parser.add_argument("--grace", type=duration, default=30.0, metavar="DURATION",
                        help="on SIGTERM/SIGINT, how long queued and running runs may finish before what is left "
                             "is handed back to the store for the next serve (default 30s; a second signal ends "
                             "the grace period at once)")
    parser.add_argument("--no-resume", action="store_true",
                        help="do not resume runs a dead engine left queued or running (they wait for a serve "
                             "without this flag)")
    parser.add_argument("--speed", type=non_negative, default=1.0, metavar="X",
                        help="scripted-model speed factor: 2 halves simulated latency, 0 removes it (default 1)")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    import anyio

    from engine.serve.auth import api_token, listen_problem
    from engine.serve.fleet import fleet_of, load_fleet
    from engine.serve.listener import bind, parse_listen
    from engine.serve.webhooks import unset_secrets
    from engine.store import resolve_store_dir
    from engine.store.config import load_config

    store_dir = resolve_store_dir(args.store)
    token_env = load_config(store_dir).serve.token_env
    token = api_token(os.environ, token_env)
    host, port = parse_listen(args.listen)
    problem = listen_problem(host, token, token_env)
    if problem is not None:
        raise InputError(problem, field="--listen")
    fleet = load_fleet(args.fleet) if args.fleet else fleet_of(args.hierarchy)
    for hook in unset_secrets(list(fleet.spec.webhooks), os.environ):
        notice(f"warning: webhook {hook.name!r} answers 503 until {hook.secret_env} is set in this serve's "
               "environment (its HMAC secret)")
    sock = bind(host, port)
    try:
        return anyio.run(_serve, args, store_dir, fleet, token, sock)
    finally:
        sock.close()


def notice(line: str) -> None:
    print(f"flightdeck serve: {line}", file=sys.stderr, flush=True)


async def _serve(args: argparse.Namespace, store_dir: Any, fleet: Any, token: str | None, sock: Any) -> int:
    import signal

    import anyio

    from engine.runtime.shutdown import EXIT_INTERRUPTED, EXIT_TERMINATED, SHUTDOWN_SIGNALS, SignalReceiver
    from engine.serve.http_api import build_app
    from engine.serve.listener import api_server, url_of
    from engine.serve.service import open_fleet

    caught: list[int] = []
    # Signals are caught from before the engine opens: none ends the process without a drain.
    with SignalReceiver(*SHUTDOWN_SIGNALS) as signals:
        async with open_fleet(store_dir, fleet, resume=not args.no_resume,
                              latency_scale=(1.0 / args.speed) if args.speed else 0.0) as engine:
            server = api_server(build_app(engine, token=token))

            async def drain(grace: float) -> None:
                report = await engine.drain(grace)
                notice(f"drained: {_count(report.finished)} run(s) finished, {_count(report.handed_back)} left "
                       "queued or running for the next serve on this store")
                server.should_exit = True

            async def watch() -> None:
                async for signum in signals:
                    name = signal.Signals(signum).name
                    caught.append(signum)
                    if len(caught) == 1:
                        notice(f"{name}: taking no new runs (503); queued and running runs get {args.grace:g}s "
                               f"to finish (send {name} again to stop waiting)")
                        group.start_soon(drain, args.grace)
                    elif len(caught) == 2:
                        notice(f"{name}: ending the grace period now")
                        group.start_soon(drain, 0.0)

            async def run_server() -> None:
                await server.serve(sockets=[sock])
                group.cancel_scope.cancel()

            async with anyio.create_task_group() as group:
                group.start_soon(run_server)
                group.start_soon(watch)
                names = ", ".join(engine.hierarchies())
                notice(f"{names} on store {store_dir}; {len(fleet.spec.webhooks)} webhook(s), "
                       f"{len(fleet.spec.schedules)} schedule(s); auth {'bearer token' if token else 'none'}")
                print(f"serving on {url_of(sock)}", flush=True)
    if not caught:
        notice("the HTTP server stopped by itself")
        return 1
    return EXIT_INTERRUPTED if caught[0] == signal.SIGINT else EXIT_TERMINATED


def _count(value: Any) -> int:
    return value if isinstance(value, int) else len(value)
