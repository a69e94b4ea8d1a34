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
    parser.add_argument("--config", metavar="FILE",
                        help="store config file (default: STORE/config.toml; on a Postgres store $FLIGHTDECK_CONFIG, "
                             "else the defaults)")
    parser.add_argument("--listen", metavar="HOST:PORT", default="127.0.0.1:8470",
                        help="address to listen on (default 127.0.0.1:8470; port 0 picks a free port)")
    parser.add_argument("--grace", type=duration, default=30.0, metavar="DURATION",
                        help="on SIGTERM, SIGHUP or SIGINT, how long queued and running runs may finish before "
                             "what is left is handed back to the store for the next serve (default 30s; a second "
                             "signal ends the grace period at once)")
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
    from engine.store import resolve_store_location
    from engine.store.config import load_config
    from engine.store.location import PostgresLocation
    from engine.store.pg_engine_store import engine_config

    location = resolve_store_location(args.store)
    # On Postgres several serve engines share the store (DBOS's queues are in it); config.toml has no directory
    # there: --config, else $FLIGHTDECK_CONFIG, else the defaults (as `flightdeck run --store postgresql://`).
    store: Any = location if isinstance(location, PostgresLocation) else location.path
    config = engine_config(args.config, os.environ) if isinstance(location, PostgresLocation) else (
        load_config(location.path, args.config))
    token_env = config.serve.token_env
    if isinstance(location, PostgresLocation):
        from engine.runtime.durable_takeover import takeover_after

        takeover_after(os.environ)  # a bad FLIGHTDECK_TAKEOVER_AFTER is exit 2 before anything is registered
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
        return anyio.run(_serve, args, store, fleet, token, sock)
    finally:
        sock.close()


def notice(line: str) -> None:
    print(f"flightdeck serve: {line}", file=sys.stderr, flush=True)


async def _serve(args: argparse.Namespace, store: Any, fleet: Any, token: str | None, sock: Any) -> int:
    import signal

    from engine.runtime.shutdown import EXIT_INTERRUPTED, EXIT_TERMINATED, SHUTDOWN_SIGNALS, SignalReceiver
    from engine.serve.service import open_fleet
    from engine.serve.serving import serve_fleet

    def listening(url: str) -> None:
        notice(f"{', '.join(engine.hierarchies())} on store {store}; engine {engine.engine.store.engine_id}; "
               f"{len(fleet.spec.webhooks)} webhook(s), "
               f"{len(fleet.spec.schedules)} schedule(s); auth {'bearer token' if token else 'none (loopback)'}")
        print(f"serving on {url}", flush=True)

    # Signals are caught from before the engine opens: none ends the process without a drain.
    with SignalReceiver(*SHUTDOWN_SIGNALS) as signals:
        async with open_fleet(store, fleet, resume=not args.no_resume,
                              latency_scale=(1.0 / args.speed) if args.speed else 0.0,
                              config_file=args.config) as engine:
            first = await serve_fleet(engine, sock, token=token, signals=signals, grace=args.grace, notice=notice,
                                      listening=listening, halt=engine.engine.gate.wait_fenced)
            fenced = engine.engine.gate.failure if engine.engine.gate.fenced is not None else None
    if fenced is not None:  # another engine took this one's runs while it stalled (runtime/durable_fence.py)
        notice(f"error: {fenced}")
        return fenced.exit_code
    if first is None:
        notice("the HTTP server stopped by itself")
        return 1
    return EXIT_INTERRUPTED if first == signal.SIGINT else EXIT_TERMINATED
