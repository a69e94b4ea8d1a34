"""`flightdeck store prune`: retention for the trace store, on a store directory or a Postgres store.

Deletes ended runs older than --older-than with their spans, events and budget rows (never a running run, nor one
waiting for reconcile), in bounded transactions, and prints what it removed. An operator action: it needs --reason
and confirmation (--yes), and is audited: an audit row `store_prune` in the control plane (control.db, or the Postgres
store's, where prune also appends a `store.pruned` event to the store's own feed).
A store directory is pruned only while no engine runs on it (traces.db has one writer: engine/store/prune.py).
"""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING, Any

from console.cli import add_store_argument
from engine.errors import InputError
from engine.timefmt import timestamp

if TYPE_CHECKING:
    from engine.store.location import StoreLocation
    from engine.store.prune import PruneReport


def add_parsers(commands: argparse._SubParsersAction) -> None:
    from console.commands.controls.common import add_operator

    store = commands.add_parser("store", help="maintain the store (prune old runs)",
                                description="Maintain the store.")
    actions = store.add_subparsers(dest="store_command", metavar="ACTION", required=True)
    prune = actions.add_parser(
        "prune", help="delete ended runs older than a cutoff, with their spans and events",
        description="Delete ended runs older than --older-than with their spans, events and budget rows, in "
                    "bounded transactions; never a running run or one waiting for reconcile. A store directory "
                    "is pruned only while no engine runs on it.",
        epilog="Exit codes: 0 pruned (or nothing to prune); 2 bad input or not confirmed; 3 store problem "
               "(including: an engine holds the store).")
    prune.add_argument("--older-than", required=True, metavar="DURATION",
                       help="runs that ended longer ago than this, e.g. 30d, 12h")
    prune.add_argument("--dry-run", action="store_true", help="only count what would be removed; change nothing")
    prune.add_argument("--reason", metavar="TEXT", help="why (required unless --dry-run; it goes to the audit log)")
    prune.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    prune.add_argument("--json", action="store_true", help="print what was removed as JSON")
    add_operator(prune)
    add_store_argument(prune)
    prune.set_defaults(handler=handle_prune)


def _older_than(text: str) -> float:
    from engine.durations import parse_duration

    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise InputError(str(exc), field="--older-than") from None
    if seconds <= 0:
        raise InputError("must be more than 0 (e.g. 30d)", field="--older-than")
    return seconds


def _prune(location: StoreLocation, cutoff: float, *, dry_run: bool, operator: str,
           reason: str | None) -> PruneReport:
    from engine.store.location import PostgresLocation

    if isinstance(location, PostgresLocation):
        from engine.store.pg.prune import prune_postgres

        return prune_postgres(location, cutoff, operator=operator, reason=reason, dry_run=dry_run)
    from engine.store.prune import prune_sqlite

    return prune_sqlite(location.path, cutoff, dry_run=dry_run)


def _describe(report: PruneReport) -> str:
    span = ""
    if report.runs:
        span = f" (ended {timestamp(report.oldest_ended)} to {timestamp(report.newest_ended)})"
    executors = (f", {report.durable_executors} durable executor rows of dead engines taken over"
                 if report.durable_executors else "")
    return (f"{report.runs} runs{span}, {report.spans} spans, {report.events} events, "
            f"{report.budgets} budget rows{executors}")


def handle_prune(args: argparse.Namespace) -> int:
    from console.commands.controls.common import confirm, operator_name, require_reason
    from console.output import print_json
    from engine.store import resolve_store_location
    from engine.store.location import PostgresLocation

    older_than = _older_than(args.older_than)
    location = resolve_store_location(args.store)
    operator = operator_name(args)
    cutoff = time.time() - older_than
    preview = _prune(location, cutoff, dry_run=True, operator=operator, reason=None)
    if args.dry_run:
        if args.json:
            print_json({**_as_json(preview), "store": str(location)})
        else:
            print(f"would remove {_describe(preview)} that ended before {timestamp(cutoff)}; nothing was changed")
        return 0
    reason = require_reason(args)
    if not preview.runs and not preview.durable_executors:
        print(f"nothing to prune: no run ended before {timestamp(cutoff)}")
        return 0
    if not args.json:
        print(f"prune {location}: {_describe(preview)} that ended before {timestamp(cutoff)}")
    if not confirm(args, "prune the store"):
        return 2
    report = _prune(location, cutoff, dry_run=False, operator=operator, reason=reason)
    from engine.controls.api import ControlAPI

    # Audited in the control plane like any operator action: control.db, or the Postgres store's control plane
    # (where prune has also put a store.pruned event in the feed the engines and consoles tail).
    target = "traces" if isinstance(location, PostgresLocation) else "traces.db"
    with ControlAPI(location if isinstance(location, PostgresLocation) else location.path, operator) as api:
        entry = api.record_action("store_prune", target, before={"older_than": args.older_than},
                                  after=_as_json(report), reason=reason)
    recorded = f"audit row {entry.id}"
    if isinstance(location, PostgresLocation):
        recorded += " and a store.pruned event in the store's feed"
    if args.json:
        print_json({**_as_json(report), "store": str(location), "recorded": recorded})
        return 0
    print(f"removed {_describe(report)} in {report.transactions} transaction(s); {recorded}")
    return 0


def _as_json(report: PruneReport) -> dict[str, Any]:
    return {"cutoff": report.cutoff, "dry_run": report.dry_run, "runs": report.runs, "spans": report.spans,
            "events": report.events, "budgets": report.budgets, "oldest_ended": report.oldest_ended,
            "newest_ended": report.newest_ended, "transactions": report.transactions,
            "durable_executors": report.durable_executors}
