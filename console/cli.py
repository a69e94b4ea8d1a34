"""The `flightdeck` command line. Parses arguments, dispatches to console/commands/*, and turns every
FlightdeckError into one clear line on stderr and its exit code: never a traceback for a person's mistake.

Imports stay lazy: `flightdeck --version` must answer in well under 0.5 s, and Textual is imported only by the
commands that open a UI.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

import engine

COMMAND_MODULES = ("run", "inspect", "check", "usage", "ui", "controls", "demo", "runbooks", "export", "serve",
                   "submit", "store", "drill", "eval")
# `flightdeck console` is the command people wait on to start: it is parsed by its own module's parser alone
# (importing the other command modules costs 15 ms of its start); its usage, help and errors are the same.
SOLO_COMMANDS = {"console": "ui"}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse exits 2 on bad usage; keep that, with our wording
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser(modules: Sequence[str] = COMMAND_MODULES) -> argparse.ArgumentParser:
    import importlib

    parser = _Parser(prog="flightdeck", description="The control room for AI agent hierarchies.")
    parser.add_argument("--version", action="version", version=f"flightdeck {engine.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in modules:
        importlib.import_module(f"console.commands.{name}").add_parsers(commands)
    return parser


def add_store_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", metavar="DIR|URL",
                        help="store directory, or a postgresql:// URL (issue 16: runs, trace, usage, store prune, "
                             "kill, release, approvals, safe-mode, incidents and audit so far) (default: "
                             "$FLIGHTDECK_STORE, else ./.flightdeck)")


def main(argv: Sequence[str] | None = None) -> int:
    from engine.errors import FlightdeckError

    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list in (["--version"], ["-V"]):  # fast path: no parser construction, no command imports
        print(f"flightdeck {engine.__version__}")
        return 0
    solo = SOLO_COMMANDS.get(args_list[0]) if args_list else None
    parser = build_parser((solo,) if solo else COMMAND_MODULES)
    args = parser.parse_args(args_list)
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        return handler(args)
    except FlightdeckError as exc:
        # PostgresNotSupported names the command that cannot serve the store yet.
        where = f" {args.command}" if getattr(exc, "names_command", False) else ""
        print(f"flightdeck{where}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("flightdeck: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
