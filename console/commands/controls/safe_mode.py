"""`flightdeck safe-mode list | set | clear`: the safe-mode flags."""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Callable

from console.cli import add_store_argument
from console.commands.controls.common import add_operator, open_api, short
from console.output import pick, print_json, table
from engine.controls.schema import FLAG_SCOPES
from engine.errors import InputError
from engine.timefmt import timestamp

FLAG_FIELDS = ("id", "name", "value", "scope", "target", "previous_value", "source", "reason", "operator", "created",
               "acked")


def add_safe_mode(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from engine.controls.flags import FLAGS

    vocabulary = "\n".join(
        f"  {spec.name} = {' | '.join(spec.values) if spec.values else 'N (a positive whole number)'}"
        f"   [{', '.join(spec.scopes)}]" for spec in FLAGS)
    safe = commands.add_parser(
        "safe-mode", help="list, set or clear safe-mode flags",
        description="Safe-mode flags change what the engine allows, at global, hierarchy or run scope (the most "
                    "specific wins).",
        epilog="Flags:\n" + vocabulary, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = safe.add_subparsers(dest="safe_action", metavar="ACTION", parser_class=type(safe))

    listing = actions.add_parser("list", help="active flags")
    listing.add_argument("--json", action="store_true", help="print a JSON list of flag objects")
    add_store_argument(listing)
    listing.set_defaults(handler=handle_safe_mode_list)

    docs = "\n\n".join(textwrap.fill(f"{spec.name}: {spec.doc}", width=78, subsequent_indent="  ")
                         for spec in FLAGS)
    setting = actions.add_parser("set", help="set FLAG=VALUE", description="Set a flag (replacing the value it had "
                                 "at that scope, which is kept for rollback).", epilog=docs,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    setting.add_argument("assignment", metavar="FLAG=VALUE")
    clearing = actions.add_parser("clear", help="clear FLAG", description="Clear a flag at a scope.")
    clearing.add_argument("flag", metavar="FLAG")
    for parser, handler in ((setting, handle_safe_mode_set), (clearing, handle_safe_mode_clear)):
        parser.add_argument("--scope", default="global", metavar="SCOPE",
                            help="global (default), hierarchy:NAME or run:ID")
        parser.add_argument("--reason", metavar="TEXT", required=True, help="why (goes to the audit log)")
        add_operator(parser)
        add_store_argument(parser)
        parser.set_defaults(handler=handler)
    safe.set_defaults(handler=_usage(safe))



def _usage(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    def show(args: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        return 2
    return show



def parse_scope(text: str) -> tuple[str, str | None]:
    """`global`, `hierarchy:NAME` or `run:ID` -> (scope, target)."""
    text = (text or "").strip()
    if text == "global":
        return "global", None
    scope, sep, target = text.partition(":")
    if not sep or scope not in FLAG_SCOPES or scope == "global" or not target.strip():
        raise InputError(f"expected global, hierarchy:NAME or run:ID, got {text!r}", field="--scope")
    return scope, target.strip()


def handle_safe_mode_list(args: argparse.Namespace) -> int:
    with open_api(args, create=False, read_only=True) as api:
        flags = api.active_flags()
    if args.json:
        print_json([pick(f, FLAG_FIELDS) for f in flags])
        return 0
    if not flags:
        print("no safe-mode flags set (see `flightdeck safe-mode --help` for the list)")
        return 0
    rows = [(f.name, f.value, "global" if f.scope == "global" else f"{f.scope}:{f.target}",
             f.previous_value or "(unset)", f.operator if f.source == "operator" else f.source,
             timestamp(f.created), "yes" if f.acked else "no", short(f.reason, 40)) for f in flags]
    print(table(("FLAG", "VALUE", "SCOPE", "WAS", "BY", "SET", "ACKED", "REASON"), rows))
    return 0


def handle_safe_mode_set(args: argparse.Namespace) -> int:
    name, sep, value = args.assignment.partition("=")
    if not sep or not name.strip():
        raise InputError(f"expected FLAG=VALUE, got {args.assignment!r}", field="FLAG=VALUE")
    scope, target = parse_scope(args.scope)
    with open_api(args, create=True) as api:
        row = api.set_flag(name.strip(), value, scope, target, reason=args.reason)
    was = row.previous_value or "unset"
    print(f"{row.name} = {row.value} at {args.scope.strip()} (was {was}), flag #{row.id} by {row.operator}")
    return 0


def handle_safe_mode_clear(args: argparse.Namespace) -> int:
    scope, target = parse_scope(args.scope)
    with open_api(args, create=False) as api:
        row = api.clear_flag(args.flag, scope, target, reason=args.reason)
    print(f"cleared {row.name} at {args.scope.strip()} (it was {row.value}) by {row.cleared_by}")
    return 0

