"""`flightdeck drill HIERARCHY`: run a catalogue of known-bad scenarios and say whether each guardrail held."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from console.commands.argtypes import non_negative
from console.output import print_json, table, usd
from engine.timefmt import seconds


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
    parser.add_argument("--store", metavar="DIR",
                        help="store to record the drills' runs in (default: a temporary one, deleted afterwards)")
    parser.add_argument("--speed", type=non_negative, default=0.0, metavar="X",
                        help="scripted-model speed factor (default 0: no simulated latency)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the scripted model (default 0)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--junit", metavar="FILE", help="also write the results as JUnit XML to FILE")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from engine.drills.junit import write_junit
    from engine.drills.runner import run_drills
    from engine.drills.spec import load_drills
    from engine.errors import InputError
    from engine.hierarchy.loader import load_hierarchy
    from engine.store import resolve_store_dir

    store_dir = resolve_store_dir(args.store) if args.store else None  # a postgres:// URL is refused, exit 2
    hierarchy = load_hierarchy(args.hierarchy)
    directory = Path(args.scenarios) if args.scenarios else hierarchy.path.parent / "drills"
    if args.scenarios is None and not directory.is_dir():
        raise InputError(f"no drills/ directory next to the hierarchy file ({directory}); pass --scenarios DIR",
                         field="--scenarios")
    if args.junit is not None and not Path(args.junit).resolve().parent.is_dir():
        raise InputError("directory not found", file=args.junit, field="--junit")
    drills = load_drills(directory)
    if not args.json:
        print(f"drilling {hierarchy.name}: {len(drills)} scenarios from {directory}", file=sys.stderr)
    results = run_drills(hierarchy, drills, store_dir=store_dir, speed=args.speed, seed=args.seed)
    if args.junit is not None:
        write_junit(args.junit, hierarchy.name, results)
    if args.json:
        print_json({"hierarchy": hierarchy.name, "held": all(r.held for r in results),
                    "drills": [r.to_json() for r in results]})
    else:
        rows = [(r.scenario, r.guardrail[:60], "HELD" if r.held else "FAILED", usd(r.cost_usd),
                 seconds(r.duration_s)) for r in results]
        print(table(("SCENARIO", "GUARDRAIL", "RESULT", "COST", "TIME"), rows, right={3, 4}))
        for result in results:
            for stats in result.injection:
                print(f"  {result.scenario} [policy {stats.policy}]: attacks executed {stats.executed}/"
                      f"{stats.attempted} (success rate {stats.attack_success_rate:.0%}), blocked "
                      f"{stats.blocked}, utility under attack {stats.utility_runs}/{stats.runs} "
                      f"({stats.utility:.0%})")
            if not result.held:
                print(f"  {result.scenario} FAILED: " + "; ".join(result.evidence))
        held = sum(r.held for r in results)
        print(f"{held}/{len(results)} drills held")
    return 0 if all(r.held for r in results) else 1
