"""`flightdeck usage`: spend and tokens per agent, model, tool, tenant and run, from the store.

`--json` prints {"filter": ..., "total": ..., "agents": [...], "models": [...], "tools": [...], "tenants": [...],
"runs": [...]} (each entry with tokens_in, tokens_out, cost_usd and call counts where they apply)."""

from __future__ import annotations

import argparse
import time

from console.cli import add_store_argument
from console.output import print_json, table, tokens, usd
from engine.errors import InputError


def add_parsers(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("usage", help="spend and tokens per agent, model, tool, tenant and run",
                                 description="Spend and tokens per scope, read from the store.")
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("--run", metavar="ID", help="one run (a unique id prefix is enough)")
    scope.add_argument("--tenant", metavar="NAME", help="runs of one tenant")
    parser.add_argument("--since", metavar="DURATION", help="runs started within this long, e.g. 24h, 30m")
    add_store_argument(parser)
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from engine.store import open_trace_reads, resolve_store_location
    from engine.store.usage_queries import top_runs, usage_by_tenant, usage_by_tool

    since = None
    if args.since:
        # Imported here: engine.durations imports pydantic (0.2 s), and every command builds this parser,
        # `flightdeck console` included (whose first screen must be up within a second).
        from engine.durations import parse_duration

        try:
            since = time.time() - parse_duration(args.since)
        except ValueError as exc:
            raise InputError(str(exc), field="--since") from None
    reader = open_trace_reads(resolve_store_location(args.store))  # a directory or a Postgres database
    try:
        run_id = None
        if args.run:
            run = reader.get_run(args.run)
            if run is None:
                raise InputError(f"no run {args.run!r} in this store", field="--run")
            run_id = run.id
        filters = {"run_id": run_id, "tenant": args.tenant, "since": since}
        usage = reader.usage(**filters)
        tools = usage_by_tool(reader, **filters)
        tenants = usage_by_tenant(reader, **filters)
        runs = top_runs(reader, **filters)
    finally:
        reader.close()
    if args.json:
        # The JSON edge: typed rows as their dicts (same keys and order as before).
        print_json({"filter": {"run": run_id, "tenant": args.tenant, "since": since},
                    "total": usage.total.as_dict(), "agents": [a.as_dict() for a in usage.agents],
                    "models": [m.as_dict() for m in usage.models], "tools": [t.as_dict() for t in tools],
                    "tenants": [t.as_dict() for t in tenants], "runs": [r.as_dict() for r in runs]})
        return 0
    total = usage.total
    print(f"total: {usd(total.cost_usd)} · {tokens(total.tokens_in)} in / {tokens(total.tokens_out)} out "
          f"· {total.model_calls} model calls · {total.tool_calls} tool calls")
    sections = [
        ("by agent", ("AGENT", "COST", "TOKENS IN", "TOKENS OUT", "MODEL CALLS", "TOOL CALLS"),
         [(a.agent, usd(a.cost_usd), tokens(a.tokens_in), tokens(a.tokens_out), a.model_calls, a.tool_calls)
          for a in usage.agents]),
        ("by model", ("MODEL", "COST", "TOKENS IN", "TOKENS OUT", "CALLS"),
         [(m.model, usd(m.cost_usd), tokens(m.tokens_in), tokens(m.tokens_out), m.model_calls)
          for m in usage.models]),
        ("by tool", ("TOOL", "CALLS", "FAILED"), [(t.tool, t.calls, t.failed) for t in tools]),
        ("by tenant", ("TENANT", "RUNS", "COST", "TOKENS"),
         [(t.tenant, t.runs, usd(t.cost_usd), tokens((t.tokens_in or 0) + (t.tokens_out or 0))) for t in tenants]),
        ("top runs by cost", ("RUN", "HIERARCHY", "STATUS", "TENANT", "COST"),
         [(r.id, r.hierarchy, r.status, r.tenant, usd(r.cost_usd)) for r in runs]),
    ]
    for title, headers, rows in sections:
        if rows:
            print(f"\n{title}")
            print(table(headers, rows))
    return 0
