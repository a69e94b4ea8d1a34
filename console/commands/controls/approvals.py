"""`flightdeck approvals`, `approve` and `deny`: tool calls waiting for an operator, and deciding them."""

from __future__ import annotations

import argparse
import json
from typing import Any

from console.cli import add_store_argument
from console.commands.argtypes import positive_int
from console.commands.controls.common import add_operator, open_api, short
from console.output import pick, print_json, table
from engine.errors import InputError
from engine.timefmt import age

APPROVAL_FIELDS = ("id", "status", "run_id", "span_id", "agent", "tool", "arguments", "args_hash", "risk", "reason",
                   "requested", "deadline", "level", "on_timeout", "decided", "decided_by", "decision_reason",
                   "edited_arguments")


def add_approvals(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    approvals = commands.add_parser("approvals", help="list tool calls waiting for an operator",
                                    description="List pending approval requests, oldest first.")
    approvals.add_argument("--all", action="store_true", help="every request, decided ones too, newest first")
    approvals.add_argument("--limit", type=positive_int, default=100, metavar="N", help="with --all (default 100)")
    approvals.add_argument("--json", action="store_true", help="print a JSON list of approval objects")
    add_store_argument(approvals)
    approvals.set_defaults(handler=handle_approvals)

    for name, verb in (("approve", "approve"), ("deny", "deny")):
        parser = commands.add_parser(
            name, help=f"{verb} a pending tool call",
            description=f"{verb.capitalize()} one pending request. The decision binds to that request: it fails "
                        f"(exit 2) if it was already decided, has expired, or (with --expect-hash) its arguments "
                        f"are not the ones you reviewed.")
        parser.add_argument("approval_id", metavar="ID", help="the approval id (ap-...)")
        if name == "approve":
            parser.add_argument("--edit-args", metavar="JSON",
                                help="approve with these arguments instead (a JSON object; the engine validates "
                                     "it against the tool's schema)")
        parser.add_argument("--expect-hash", metavar="SHA256",
                            help="the args_hash you reviewed (at least 8 hex digits)")
        parser.add_argument("--reason", metavar="TEXT", required=True, help="why (goes to the audit log)")
        add_operator(parser)
        add_store_argument(parser)
        parser.set_defaults(handler=handle_approve if name == "approve" else handle_deny)



def handle_approvals(args: argparse.Namespace) -> int:
    with open_api(args, create=False, read_only=True) as api:
        rows = api.list_approvals(args.limit) if args.all else api.pending_approvals()
        now = api.now()
    if args.json:
        print_json([pick(r, APPROVAL_FIELDS) for r in rows])
        return 0
    if not rows:
        print("no approvals" if args.all else "no pending approvals")
        return 0
    table_rows = []
    for r in rows:
        if r.status == "pending":
            left = r.deadline - now
            due = f"{left:.0f}s left" if left > 0 else "expired"
        else:
            due = f"{r.status} by {r.decided_by}"
        table_rows.append((r.id, r.tool, r.agent, r.run_id, r.risk or "-", age(r.requested, now),
                           due, r.level, r.args_hash[:12], short(r.arguments, 50),
                           short(r.reason or "-", 40)))
    print(table(("ID", "TOOL", "AGENT", "RUN", "RISK", "WAITING", "DECISION", "LEVEL", "HASH", "ARGUMENTS",
                 "MODEL'S REASON"), table_rows, right={7}))
    if not args.all:
        print("\ndecide with: flightdeck approve ID --reason TEXT [--expect-hash HASH] [--edit-args JSON]"
              "   |   flightdeck deny ID --reason TEXT")
    return 0


def _edited_arguments(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise InputError(f"not valid JSON: {exc}", field="--edit-args") from None
    if not isinstance(value, dict):
        raise InputError(f"must be a JSON object like '{{\"amount\": 10}}', got {type(value).__name__}",
                         field="--edit-args")
    return value


def handle_approve(args: argparse.Namespace) -> int:
    edited = _edited_arguments(args.edit_args)
    with open_api(args, create=False) as api:
        row = api.approve(args.approval_id, args.reason, edited_arguments=edited,
                          expected_args_hash=args.expect_hash)
    note = " with edited arguments" if edited is not None else ""
    print(f"approved {row.id}{note}: tool {row.tool} for agent {row.agent} in run {row.run_id} "
          f"(by {row.decided_by})")
    return 0


def handle_deny(args: argparse.Namespace) -> int:
    with open_api(args, create=False) as api:
        row = api.deny(args.approval_id, args.reason, expected_args_hash=args.expect_hash)
    print(f"denied {row.id}: tool {row.tool} for agent {row.agent} in run {row.run_id} "
          f"(by {row.decided_by})")
    return 0

