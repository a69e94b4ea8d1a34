"""`flightdeck console`: the operator console (Textual) on a store.

Textual is imported only inside the handler: `flightdeck --version` and the other commands never load it. Store
problems (missing, damaged, too new) and config errors are reported on stderr with a non-zero exit before the UI
starts; problems that appear later are shown in the UI.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.store.location import StoreLocation


def add_parsers(commands: argparse._SubParsersAction) -> None:
    from console.cli import add_store_argument

    parser = commands.add_parser(
        "console", help="open the operator console (live runs, traces, controls)",
        description="Open the operator console on a store: live runs, span trees, events. Keys: 1-7 switch "
                    "views, : types a command (:runs, :run ID), ? lists every key, ctrl+p the command palette, "
                    "q quits.",
        epilog="Exit codes: 0 normal quit; 2 invalid config; 3 store missing, damaged or from a newer Flightdeck.")
    add_store_argument(parser)
    parser.add_argument("--operator", metavar="NAME",
                        help="who is at the keyboard, recorded with every action (default: your user name)")
    parser.add_argument("--read-only", action="store_true",
                        help="look, never touch: actions that change anything (kill, approve...) are refused")
    parser.add_argument("--poll", type=float, default=0.25, metavar="SECONDS", help=argparse.SUPPRESS)
    parser.set_defaults(handler=handle)


def preflight(store: Path | StoreLocation) -> None:
    """Raise the StoreError / InputError the UI would otherwise hit on its first poll."""
    from engine.store import open_trace_reads
    from engine.store.files import CONFIG_FILE
    from engine.store.location import PostgresLocation, StoreDirectory

    location = StoreDirectory(store) if isinstance(store, Path) else store
    reader = open_trace_reads(location)  # on Postgres: StoreError when unreachable or holding no trace store
    try:
        reader.data_version()
    finally:
        reader.close()
    if isinstance(location, PostgresLocation):
        return  # no directory, so no config.toml: the console's defaults
    if (location.path / CONFIG_FILE).is_file():  # validating it imports pydantic: only when there is one
        from engine.store.config import load_config

        load_config(location.path)


def handle(args: argparse.Namespace) -> int:
    import gc

    # Everything allocated until the first screen (Textual, our modules, the widgets) lives as long as the console:
    # collecting it while starting only costs time (20-70 ms of a start). The app freezes it and turns the
    # collector back on once the first screen is up (FlightdeckApp.on_ready).
    gc.disable()
    try:
        return _run_console(args)
    finally:
        gc.enable()


def _run_console(args: argparse.Namespace) -> int:
    from engine.store.control import current_user
    from engine.store.location import resolve_store_location

    # A store directory or a Postgres store (`--store postgresql://...`: the whole fleet, every engine's runs).
    location = resolve_store_location(args.store)
    preflight(location)
    from console.app import create_app

    app = create_app(location, operator=args.operator or current_user(), read_only=args.read_only,
                     poll_interval=max(0.05, args.poll))
    code = app.run()
    if app.return_code:  # a crash inside Textual (its traceback is already on the terminal) or a store problem
        return int(app.return_code)
    return int(code or 0)
