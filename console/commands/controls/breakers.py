"""`flightdeck breakers list | open | reset | disable`: breaker states as the engine reports them, and
overrides asked of it."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from console.cli import add_store_argument
from console.commands.controls.common import (
    add_operator,
    open_api,
    require_reason,
    store_dir_arg,
)
from console.output import pick, print_json, table
from engine.errors import InputError

if TYPE_CHECKING:
    from engine.store.trace_rows import BreakerRow

BREAKER_ACTIONS = {"open": "force_open", "reset": "reset", "disable": "disable"}
OVERRIDE_FIELDS = ("id", "action", "reason", "operator", "created", "applied", "applied_by")


def add_breakers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    breakers = commands.add_parser(
        "breakers", help="list circuit breakers, or force one open / reset / disable it",
        description="`breakers list` shows breaker states as the engine reports them and the overrides asked "
                    "for; open / reset / disable KEY asks the engine to force a breaker open, close it with an "
                    "empty window, or let every call through. KEY is tool:NAME, model:NAME or delegation:NAME.")
    breakers.add_argument("action", choices=("list", *BREAKER_ACTIONS), metavar="ACTION",
                          help="list | open | reset | disable")
    breakers.add_argument("key", nargs="?", metavar="KEY", help="the breaker, e.g. tool:crm_lookup")
    breakers.add_argument("--reason", metavar="TEXT", help="why (required to act; goes to the audit log)")
    breakers.add_argument("--json", action="store_true", help="with list: print JSON")
    add_operator(breakers)
    add_store_argument(breakers)
    breakers.set_defaults(handler=handle_breakers)



def _reported_breakers(store_dir: Path) -> list[BreakerRow] | None:
    from engine.store.breaker_report import reported_breakers

    return reported_breakers(store_dir)


def _breaker_key(row: BreakerRow) -> str:
    if row.key:
        return str(row.key)
    return f"{row.kind}:{row.name}"


def handle_breakers(args: argparse.Namespace) -> int:
    if args.action == "list":
        return _list_breakers(args)
    if not args.key:
        raise InputError(f"`breakers {args.action}` needs the breaker, e.g. tool:crm_lookup", field="KEY")
    reason = require_reason(args)
    _check_known_breaker(args)
    with open_api(args, create=True) as api:
        row = api.override_breaker(args.key, BREAKER_ACTIONS[args.action], reason)
    print(f"breaker override #{row.id}: {row.action} {row.key} by {row.operator}; the engine applies it "
          f"on its next control check")
    return 0


def _check_known_breaker(args: argparse.Namespace) -> None:
    """Open, reset and disable act on a breaker that exists: one the engine reported, or one an operator already
    overrode. Any other key is a typo, and its override would be recorded, audited and never match anything."""
    import difflib

    from engine.store.files import CONTROL_DB

    if ":" not in args.key:
        return  # not a key at all: the control API's check says which form it takes

    known = {_breaker_key(row) for row in _reported_breakers(store_dir_arg(args)) or []}
    if (store_dir_arg(args) / CONTROL_DB).is_file():
        with open_api(args, create=False) as api:
            known |= {row.key for row in api.breaker_overrides(limit=10_000)}
    if args.key in known:
        return
    names = sorted(known)
    close = difflib.get_close_matches(args.key, names, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    listing = (f" (known: {', '.join(names)})" if names else
               " (the engine has not reported any breaker on this store yet)")
    raise InputError(f"unknown breaker {args.key!r}{hint}{listing}", field="KEY")


def _list_breakers(args: argparse.Namespace) -> int:
    store_dir = store_dir_arg(args)
    with open_api(args, create=False, read_only=True) as api:
        overrides = api.breaker_overrides()
    reported = _reported_breakers(store_dir)
    keys: dict[str, dict[str, Any]] = {}
    for row in reported or []:
        key = _breaker_key(row)
        keys[key] = {"key": key, "state": row.state, "reported": row.as_dict(), "overrides": []}  # JSON edge
    for row in overrides:
        entry = keys.setdefault(row.key, {"key": row.key, "state": None, "reported": None, "overrides": []})
        entry["overrides"].append(pick(row, OVERRIDE_FIELDS))
    entries = sorted(keys.values(), key=lambda e: e["key"])
    if args.json:
        print_json(entries)
        return 0
    if reported is None:
        print("the engine has not reported breaker states yet")
    if not entries:
        print("no breakers reported and no overrides asked for")
        return 0
    rows = []
    for entry in entries:
        last = entry["overrides"][0] if entry["overrides"] else None
        override = "-" if last is None else (
            f"{last['action']} by {last['operator']} ({'applied' if last['applied'] else 'pending'})")
        rows.append((entry["key"], entry["state"] or "-", override))
    print(table(("BREAKER", "STATE", "LAST OVERRIDE"), rows))
    return 0

