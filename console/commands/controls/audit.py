"""`flightdeck audit` and `audit verify`: the hash-chained audit log."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from console.cli import add_store_argument
from console.commands.argtypes import positive_int
from console.commands.controls.common import open_api, short, store_location_arg
from console.output import pick, print_json, table
from engine.timefmt import timestamp

AUDIT_FIELDS = ("id", "ts", "actor", "action", "target", "before", "after", "reason", "prev_hash", "hash")


def add_audit(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    audit = commands.add_parser(
        "audit", help="show or verify the audit log",
        description="`audit` lists operator and engine actions, newest first. `audit verify` checks the hash "
                    "chain: exit 0 when intact, 1 naming the first row that was edited, deleted or moved.")
    audit.add_argument("action", nargs="?", choices=("verify",), metavar="verify", help="check the hash chain")
    audit.add_argument("--limit", type=positive_int, default=50, metavar="N", help="rows to show (default 50)")
    audit.add_argument("--before", type=positive_int, metavar="ID", help="only rows older than this id")
    audit.add_argument("--json", action="store_true", help="print JSON")
    add_store_argument(audit)
    audit.set_defaults(handler=handle_audit)



def _print_verification(args: argparse.Namespace, result: Any, where: str = "traces.db") -> int:
    if args.json:
        print_json({"ok": result.ok, "rows": result.rows, "first_bad_id": result.first_bad_id,
                    "problem": result.problem, "anchored_seq": result.anchored_seq})
    elif result.ok:
        anchored = (f", matches the engine's record of row {result.anchored_seq} in {where}"
                    if result.anchored_seq is not None else f" (no engine has recorded an anchor in {where} yet)")
        print(f"audit log intact: {result.rows} row(s), hash chain verified{anchored}")
    else:
        print(f"audit log TAMPERED at row {result.first_bad_id}: {result.problem}", file=sys.stderr)
    return 0 if result.ok else 1


def _verify_audit(args: argparse.Namespace) -> int:
    from engine.controls.anchor import anchor_problem, latest_anchor
    from engine.controls.audit import AuditVerification
    from engine.store.files import CONTROL_DB
    from engine.store.location import StoreDirectory

    store = store_location_arg(args)
    anchor = latest_anchor(store)
    if anchor is not None and isinstance(store, StoreDirectory) and not (store.path / CONTROL_DB).is_file():
        # The whole of control.db deleted: the anchor in traces.db is the only trace of the log that was.
        return _print_verification(args, AuditVerification(False, 0, 1, anchor_problem(None, anchor),
                                                           anchored_seq=anchor.seq))
    where = "traces.db" if isinstance(store, StoreDirectory) else "the store's trace tables"
    with open_api(args, create=False, read_only=True) as api:
        return _print_verification(args, api.verify_audit(anchor), where)


def handle_audit(args: argparse.Namespace) -> int:
    if args.action == "verify":
        return _verify_audit(args)
    with open_api(args, create=False, read_only=True) as api:
        rows = api.audit_log(args.limit, before_id=args.before)
    if args.json:
        print_json([pick(r, AUDIT_FIELDS) for r in rows])
        return 0
    if not rows:
        print("the audit log is empty")
        return 0
    print(table(("ID", "TIME", "ACTOR", "ACTION", "TARGET", "REASON"),
                [(r.id, timestamp(r.ts), r.actor, r.action, r.target or "-", short(r.reason or "", 50))
                 for r in rows], right={0}))
    return 0

