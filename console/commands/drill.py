"""`flightdeck drill HIERARCHY`: run a catalogue of known-bad scenarios and say whether each guardrail held."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from console.commands.argtypes import non_negative
from console.commands.controls.common import short
from console.output import print_json, table, usd
from engine.timefmt import seconds

if TYPE_CHECKING:
    from engine.drills.prepare import ProviderTarget


def add_parsers(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "drill", help="prove a hierarchy's guardrails hold: run known-bad scenarios (for CI)",
        description="Run drill scenarios (429 storms, outages, hung tools, loops, cost spikes, unanswered "
                    "approvals, prompt injection, ...) against a hierarchy on the scripted model and report, for "
                    "each, whether the guardrail expected to act did.",
        epilog="Exit codes: 0 every drill held; 1 a drill FAILED; 2 bad input (hierarchy, drill file, option).")
    parser.add_argument("hierarchy", metavar="FILE|NAME", help="hierarchy YAML file or bundled example name")
    parser.add_argument("--scenarios", metavar="DIR",
                        help="directory of drill files (default: drills/ next to the hierarchy file)")
    parser.add_argument("--extra-scenarios", metavar="DIR", action="append", default=[],
                        help="a directory of your own drill files, run after the catalogue (default drills/ or "
                             "--scenarios); repeatable; drill names must be unique across all of them")
    parser.add_argument("--store", metavar="DIR|URL",
                        help="store to record the drills' runs in, and their summary in STORE/evals.db for the "
                             "console (default: a temporary one, deleted afterwards, and no summary); a "
                             "postgresql:// URL records only the summary in the database's evals tables (the "
                             "drills run in a temporary directory)")
    parser.add_argument("--speed", type=non_negative, default=0.0, metavar="X",
                        help="scripted-model speed factor (default 0: no simulated latency)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the scripted model (default 0)")
    parser.add_argument("--provider-url", metavar="URL",
                        help="run on an OpenAI-compatible server (e.g. http://127.0.0.1:11434/v1) instead of the "
                             "scripted model; drills that need scripted turns are skipped, with the reason shown")
    parser.add_argument("--model", metavar="NAME",
                        help="with --provider-url: the model name to send (default: each model's own name)")
    parser.add_argument("--api-key-env", metavar="VAR",
                        help="with --provider-url: the environment variable holding the API key (never printed)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--junit", metavar="FILE", help="also write the results as JUnit XML to FILE")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from engine.drills.junit import write_junit
    from engine.drills.runner import run_drills
    from engine.drills.spec import load_catalogue
    from engine.errors import InputError
    from engine.hierarchy.loader import load_hierarchy
    from engine.scoring.evals_store import EvalsStore, open_evals_store
    from engine.store import resolve_store_location
    from engine.store.location import PostgresLocation

    location = resolve_store_location(args.store) if args.store else None
    # A drill needs a store directory for its runs (each drill reads the traces and control files of its own engine
    # store). On a Postgres store the drills run in a temporary directory, as without --store, and only their
    # summary goes to the database: the view the fleet's console reads (its cases carry no run ids: those runs
    # were not kept).
    on_postgres = isinstance(location, PostgresLocation)
    store_dir = None if location is None or isinstance(location, PostgresLocation) else location.path
    target = provider_target(args)
    hierarchy = load_hierarchy(args.hierarchy)
    directory = Path(args.scenarios) if args.scenarios else hierarchy.path.parent / "drills"
    if args.scenarios is None and not directory.is_dir():
        raise InputError(f"no drills/ directory next to the hierarchy file ({directory}); pass --scenarios DIR",
                         field="--scenarios")
    if args.junit is not None and not Path(args.junit).resolve().parent.is_dir():
        raise InputError("directory not found", file=args.junit, field="--junit")
    directories = [directory, *(Path(extra) for extra in args.extra_scenarios)]
    drills = load_catalogue(directories)
    # The evals store is opened before anything runs: a database that cannot be reached is exit 3 with no drill run.
    db: EvalsStore | None = open_evals_store(location) if location is not None else None
    try:
        if not args.json:
            print(f"drilling {hierarchy.name}: {len(drills)} scenarios from {', '.join(map(str, directories))}"
                  + (f" on {args.provider_url}" + (f" (model {args.model})" if args.model else "")
                     if args.provider_url else ""), file=sys.stderr)
        started = time.time()
        results = run_drills(hierarchy, drills, store_dir=store_dir, speed=args.speed, seed=args.seed, target=target)
        if db is not None:  # the console's evals view shows the latest drill results per hierarchy
            from engine.drills.record import drill_record

            db.save(drill_record(hierarchy, drills, directories, results, started, time.time(),
                                 runs_kept=not on_postgres))
    finally:
        if db is not None:
            db.close()
    passed = all(r.held or r.skipped for r in results)
    if args.junit is not None:
        write_junit(args.junit, hierarchy.name, results)
    if args.json:
        print_json({"hierarchy": hierarchy.name, "held": passed,
                    "provider_url": args.provider_url, "model": args.model,
                    "drills": [r.to_json() for r in results]})
    else:
        rows = [(r.scenario, short(r.guardrail, 60), r.result, usd(r.cost_usd), seconds(r.duration_s)) for r in results]
        print(table(("SCENARIO", "GUARDRAIL", "RESULT", "COST", "TIME"), rows, right={3, 4}))
        for result in results:
            for stats in result.injection:
                print(f"  {result.scenario} [policy {stats.policy}]: attacks executed {stats.executed}/"
                      f"{stats.attempted} (success rate {stats.attack_success_rate:.0%}), blocked "
                      f"{stats.blocked}, utility under attack {stats.utility_runs}/{stats.runs} "
                      f"({stats.utility:.0%})")
            if result.skipped:
                print(f"  {result.scenario} SKIPPED: {result.skipped}")
            elif not result.held:
                print(f"  {result.scenario} FAILED: " + "; ".join(result.evidence))
        held = sum(r.held for r in results)
        skipped = sum(bool(r.skipped) for r in results)
        print(f"{held}/{len(results) - skipped} drills held" + (f", {skipped} skipped" if skipped else ""))
    return 0 if passed else 1


def provider_target(args: argparse.Namespace) -> ProviderTarget | None:
    """--provider-url / --model / --api-key-env, checked before anything runs (exit 2 naming the option)."""
    import os
    import re
    from urllib.parse import urlsplit

    from engine.drills.prepare import ProviderTarget
    from engine.errors import InputError

    if args.provider_url is None:
        for flag, value in (("--model", args.model), ("--api-key-env", args.api_key_env)):
            if value is not None:
                raise InputError(f"{flag} needs --provider-url (the scripted model takes no model name or key)",
                                 field=flag)
        return None
    parts = urlsplit(args.provider_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError("not an http(s) URL (e.g. http://127.0.0.1:11434/v1)", field="--provider-url")
    if parts.username or parts.password:
        # The URL is printed and stored with the runs: a key in it would leak. Keys go through --api-key-env.
        raise InputError("credentials in the URL; put the key in an environment variable and pass --api-key-env",
                         field="--provider-url")
    if args.model is not None and not args.model.strip():
        raise InputError("must not be empty", field="--model")
    if args.api_key_env is not None:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", args.api_key_env):
            raise InputError(f"not an environment variable name: {args.api_key_env!r}", field="--api-key-env")
        if not os.environ.get(args.api_key_env):
            raise InputError(f"environment variable {args.api_key_env} is not set", field="--api-key-env")
    return ProviderTarget(base_url=args.provider_url, model=args.model, api_key_env=args.api_key_env)
