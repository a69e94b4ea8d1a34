"""`flightdeck run`: run a hierarchy (a file or a bundled name) on a store, with live progress and a summary."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from console.cli import add_store_argument
from console.commands.argtypes import budget_limits, duration, json_or_text_file, non_negative, positive_int
from console.output import print_json, table, tokens, usd
from engine.errors import InputError
from engine.timefmt import seconds

if TYPE_CHECKING:
    from engine.store.control_rows import Approval

SAMPLE_FILES = ("samples.json", "deals.json", "inbox.json", "tickets.json", "inputs.json")


def add_parsers(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "run", help="run a hierarchy and record it in the store",
        description="Run a hierarchy file or a bundled example (deal-desk, support-triage) and record every step.",
        epilog="Exit codes: 0 every run completed; 1 a run failed; 2 bad input; 3 store problem (the trace store "
               "cannot record: its writer died, or commits fail with --on-store-error exit); 4 budget exceeded; "
               "5 loop detected; 6 killed; 7 refused; 8 needs reconcile (a side effect's outcome is unknown after a "
               "crash); 130 interrupted (SIGINT); 143 stopped by SIGTERM or SIGHUP.")
    parser.add_argument("hierarchy", metavar="FILE|NAME", help="hierarchy YAML file or bundled example name")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--input", metavar="TEXT", help="run input: text, or a JSON object")
    source.add_argument("--input-file", metavar="F", help="read the run input from a file (JSON or text)")
    add_store_argument(parser)
    parser.add_argument("--config", metavar="FILE",
                        help="store config file (default: STORE/config.toml; on a Postgres store $FLIGHTDECK_CONFIG, "
                             "else the defaults)")
    parser.add_argument("--scenario", metavar="FILE", help="scripted-model scenario file (a `scripts:` mapping)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the scripted model (default 0)")
    parser.add_argument("--repeat", type=positive_int, default=1, metavar="N", help="number of runs (default 1)")
    parser.add_argument("--concurrency", type=positive_int, default=1, metavar="C",
                        help="runs in flight at once (default 1)")
    parser.add_argument("--speed", type=non_negative, default=1.0, metavar="X",
                        help="scripted-model speed factor: 2 halves simulated latency, 0 removes it (default 1)")
    parser.add_argument("--budget", metavar="LIMITS", type=budget_limits,
                        help="run budget overrides, e.g. cost=2.50,tool_calls=40,wall=300s,tokens=20000")
    parser.add_argument("--tenant", metavar="NAME", help="customer/tenant label for attribution and budgets")
    parser.add_argument("--json", action="store_true", help="print the results as JSON (a list of run objects)")
    parser.add_argument("--grace", type=duration, default=30.0, metavar="DURATION",
                        help="on SIGTERM/SIGHUP, how long runs in flight may finish before they are killed "
                             "(default 30s; a second signal kills at once)")
    parser.add_argument("--on-store-error", choices=("wait", "exit"), default="wait",
                        help="when trace commits fail (disk full, I/O error): wait (hold new model and tool calls, "
                             "retry, carry on when they succeed; default) or exit (stop every run, exit code 3)")
    parser.add_argument("--durable", action="store_true",
                        help="durable runs (STORE/durable.db, or DBOS's schema on a Postgres store): side effects run "
                             "exactly once, and runs a crashed engine left in flight resume when this engine starts "
                             "(on Postgres: a live engine takes a dead engine's runs once its heartbeat stops)")
    parser.add_argument("--idempotency-key", metavar="KEY",
                        help="a durable run named by KEY: the same key never starts a second run (implies "
                             "--durable; with --repeat 1 only)")
    parser.add_argument("--no-resume", action="store_true",
                        help="with --durable: do not resume runs a dead engine left in flight")
    parser.set_defaults(handler=handle)


def read_input(args: argparse.Namespace) -> Any:
    if args.input is not None:
        return args.input
    if args.input_file is None:
        return None
    return json_or_text_file(args.input_file, "--input-file")


def sample_inputs(hierarchy_path: Path) -> list[Any]:
    """Example inputs shipped next to a hierarchy file (a JSON list), used when no --input is given."""
    for name in SAMPLE_FILES:
        candidate = hierarchy_path.parent / name
        if candidate.is_file():
            try:
                data = json.loads(candidate.read_text(encoding="utf-8"))
            except ValueError as exc:
                raise InputError(f"sample inputs are not valid JSON: {exc}", file=str(candidate)) from None
            if isinstance(data, list) and data:
                return data
    return []


class Progress:
    """One live status line on a terminal; one line per finished run otherwise (logs stay readable)."""

    def __init__(self, total: int, enabled: bool, store: str | None = None) -> None:
        self.store = store
        self.total = total
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.done = 0
        self.tokens = 0
        self.cost = 0.0
        self.started = time.monotonic()
        self.statuses: dict[str, int] = {}

    def finished(self, result: Any) -> None:
        self.done += 1
        self.tokens += result.tokens_in + result.tokens_out
        self.cost += result.cost_usd
        self.statuses[result.status] = self.statuses.get(result.status, 0) + 1
        if not self.enabled:
            return
        if self.tty:
            states = " ".join(f"{k} {v}" for k, v in sorted(self.statuses.items()))
            sys.stderr.write(f"\r\x1b[2K{self.done}/{self.total} runs · {states} · {tokens(self.tokens)} tokens · "
                             f"{usd(self.cost)} · {seconds(time.monotonic() - self.started)}")
            sys.stderr.flush()
        else:
            print(f"[{self.done}/{self.total}] run {result.run_id} {result.status} "
                  f"{tokens(result.tokens_in + result.tokens_out)} tokens {usd(result.cost_usd)} "
                  f"{seconds(result.duration_s)}", file=sys.stderr)

    def approval_requested(self, row: Approval) -> None:
        """A run is waiting for a person: say so, with the commands that decide it."""
        store = f" --store {self.store}" if self.store else ""
        left = max(0.0, row.deadline - time.time())
        args = json.dumps(row.arguments) if not isinstance(row.arguments, str) else row.arguments
        if self.tty:
            sys.stderr.write("\r\x1b[2K")
        print(f"⏸ run {row.run_id} waits for approval {row.id}: {row.agent} wants {row.tool} "
              f"{args} (risk {row.risk}, decide within {seconds(left)}, then: {row.on_timeout})\n"
              f"    approve: flightdeck approve {row.id}{store} --reason '...'\n"
              f"    deny:    flightdeck deny {row.id}{store} --reason '...'", file=sys.stderr, flush=True)

    def interrupt(self) -> None:
        """Clear the live line before another message is printed on stderr."""
        if self.enabled and self.tty:
            sys.stderr.write("\r\x1b[2K")

    def close(self) -> None:
        if self.enabled and self.tty:
            sys.stderr.write("\n")


def worst_exit_code(results: list[Any]) -> int:
    from engine.runtime.results import EXIT_CODES

    codes = [EXIT_CODES[r.status] for r in results]
    return max(codes) if codes else 0


def handle(args: argparse.Namespace) -> int:
    from functools import partial

    import anyio

    from engine.errors import InputError, StoreError
    from engine.hierarchy.loader import load_hierarchy
    from engine.runbooks.loader import check_store_runbooks
    from engine.runtime.engine import Engine, RunRequest
    from engine.runtime.shutdown import SHUTDOWN_SIGNALS, Shutdown, SignalReceiver, watch_signals
    from engine.store import open_engine_store, resolve_store_location
    from engine.store.location import PostgresLocation

    if args.idempotency_key is not None and args.repeat != 1:
        raise InputError("--idempotency-key names one run: it cannot be used with --repeat", field="--repeat")
    hierarchy = load_hierarchy(args.hierarchy, scenario=args.scenario)
    given = read_input(args)
    samples = [given] if given is not None else (sample_inputs(hierarchy.path) or [""])
    requests = [RunRequest(input=samples[i % len(samples)], seed=args.seed + i, tenant=args.tenant,
                           budget=args.budget, idempotency_key=args.idempotency_key) for i in range(args.repeat)]
    location = resolve_store_location(args.store)
    if isinstance(location, PostgresLocation) and (args.durable or args.idempotency_key is not None):
        from engine.runtime.durable_takeover import takeover_after

        takeover_after(os.environ)  # a bad FLIGHTDECK_TAKEOVER_AFTER is exit 2 before anything is registered
    # Shown, never with a Postgres password (str() of a location masks it).
    progress = Progress(len(requests), enabled=not args.json, store=None if args.store is None else str(location))
    if not args.json:
        print(f"running {hierarchy.spec.name} ×{len(requests)} (concurrency {args.concurrency}) "
              f"on store {location}", file=sys.stderr)

    shutdown = Shutdown()
    failure: list[StoreError] = []
    exporters: list[Any] = []  # the engine's OpenTelemetry exporter, when [otel] turned it on

    def notice(line: str) -> None:
        progress.interrupt()
        print(f"flightdeck: {line}", file=sys.stderr, flush=True)

    async def go() -> list[Any]:
        # Signals are caught from before the engine starts, so none ends the process without recording.
        with SignalReceiver(*SHUTDOWN_SIGNALS) as signals:
            async with Engine(store, latency_scale=(1.0 / args.speed) if args.speed else 0.0,
                              on_store_error=args.on_store_error,
                              durable=args.durable or args.idempotency_key is not None,
                              auto_resume=not args.no_resume) as engine:
                engine.approval_listeners.append(progress.approval_requested)
                async with anyio.create_task_group() as group:
                    await group.start(partial(watch_signals, signals, engine, args.grace, shutdown, notice))
                    results = await engine.run_many(hierarchy, requests, concurrency=args.concurrency,
                                                    on_result=progress.finished)
                    group.cancel_scope.cancel()
                exporters.append(engine.otel)
                if engine.store_failure is not None:
                    stopped = engine.gate.stopped_runs
                    failure.append(StoreError(f"{engine.store_failure}; stopped {stopped} run(s)" + (
                        " (the next engine on this store marks them abandoned)" if engine.gate.writer_gone
                        else "")))
                return results

    if isinstance(location, PostgresLocation):  # the engine wholly on Postgres: no directory, no lock
        store = open_engine_store(location, config_file=args.config, input_checks=[check_store_runbooks])
    else:
        store = open_engine_store(location.path, config_file=args.config, input_checks=[check_store_runbooks])
    try:
        try:
            results = anyio.run(go)
        finally:
            progress.close()
    finally:
        try:
            # After a store failure the writer can take nothing more: do not wait long for it.
            store.close(timeout=1.0 if failure else 10.0)
        except StoreError:
            if not failure:
                raise
            unwritten = store.writer.unwritten
            if unwritten:
                failure[0] = StoreError(f"{failure[0]}; {unwritten} trace items were not stored")
    if exporters and exporters[0] is not None:  # sent and dropped spans: an operator sees a collector outage
        print(f"flightdeck: {exporters[0].summary()}", file=sys.stderr)
    if failure:
        raise failure[0]  # one line on stderr, exit code 3
    # Through the store's own redactor: a terminal or a CI log shows no more than the store holds.
    if args.json:
        print_json([store.redactor.clean(r.to_json()) for r in results])
    else:
        print_summary(results, redact=store.redactor.clean_text)
        if shutdown.signal is not None:
            print(f"stopped on {shutdown.signal}: {len(requests) - len(results)} run(s) not started",
                  file=sys.stderr)
    return shutdown.exit_code if shutdown.exit_code is not None else worst_exit_code(results)


def print_summary(results: list[Any], redact: Callable[[str], str | None] = lambda text: text) -> None:
    shown = results if len(results) <= 20 else results[-20:]
    rows = [(r.run_id, r.status, seconds(r.duration_s), tokens(r.tokens_in), tokens(r.tokens_out),
             usd(r.cost_usd), r.model_calls, r.tool_calls, (redact(r.error or "") or "")[:60]) for r in shown]
    print(table(("RUN", "STATUS", "DURATION", "TOKENS IN", "TOKENS OUT", "COST", "MODEL", "TOOLS", "ERROR"),
                rows, right={2, 3, 4, 5, 6, 7}))
    if len(results) > len(shown):
        print(f"… {len(results) - len(shown)} earlier runs not shown (see `flightdeck runs`)")
    total_cost = sum(r.cost_usd for r in results)
    total_tokens = sum(r.tokens_in + r.tokens_out for r in results)
    statuses: dict[str, int] = {}
    for r in results:
        statuses[r.status] = statuses.get(r.status, 0) + 1
    print(f"\n{len(results)} run(s): " + ", ".join(f"{v} {k}" for k, v in sorted(statuses.items()))
          + f" · {tokens(total_tokens)} tokens · {usd(total_cost)}")
    if len(results) == 1 and results[0].status != "refused":
        print(f"see the trace: flightdeck trace {results[0].run_id}")
