"""What every control command shares: who the operator is, the store and ControlAPI to use, --reason,
confirmation, JSON field picking, and turning the API's field names into the flags the operator typed."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import InputError

if TYPE_CHECKING:
    from engine.store.location import StoreLocation

OPERATOR_ENV = "FLIGHTDECK_OPERATOR"

# The API names its fields as the API spells them; on the command line the operator typed a flag.
_CLI_FIELDS = {"operator": "--operator", "reason": "--reason", "key": "KEY", "approval": "ID",
               "expected_args_hash": "--expect-hash", "edited_arguments": "--edit-args", "mode": "--mode",
               "run_id": "--in-run"}


def with_cli_fields(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except InputError as exc:
            if exc.field in _CLI_FIELDS and type(exc) is InputError:
                raise InputError(exc.message, field=_CLI_FIELDS[exc.field]) from None
            raise
    return run


def wrap_handlers(parser: argparse.ArgumentParser) -> None:
    handler = parser.get_default("handler")
    if handler is not None:
        parser.set_defaults(handler=with_cli_fields(handler))
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                wrap_handlers(child)


def add_operator(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--operator", metavar="NAME",
                        help=f"who is acting, for the audit log (default: ${OPERATOR_ENV}, else your user name)")


def operator_name(args: argparse.Namespace) -> str:
    from engine.store.control import current_user

    name: str | None = getattr(args, "operator", None)
    if name is None:
        name = os.environ.get(OPERATOR_ENV) or current_user()
    if not name.strip():
        raise InputError("must not be empty", field="--operator")
    return name.strip()


def store_dir_arg(args: argparse.Namespace) -> Path:
    from engine.store import resolve_store_dir

    return resolve_store_dir(args.store)


def store_location_arg(args: argparse.Namespace) -> StoreLocation:
    """The store: a directory or a Postgres database (the control plane works on both)."""
    from engine.store import resolve_store_location

    return resolve_store_location(args.store)


def open_api(args: argparse.Namespace, *, create: bool, read_only: bool = False) -> Any:
    """read_only: for commands that only read; they open control.db read-only, so they work on a store whose files
    and directory are read-only (forensics on a copy, a mounted snapshot). On a Postgres store the session is
    read-only and the control schema is checked, not created."""
    from engine.controls.api import ControlAPI

    return ControlAPI(store_location_arg(args), operator_name(args), create=create, read_only=read_only)


def open_trace_reader(store: Path | StoreLocation) -> Any | None:
    """A trace reader (traces.db, or a Postgres store's trace tables), or None when the store has no traces yet (no
    engine has ever run on it)."""
    from engine.store import open_reader
    from engine.store.files import TRACES_DB
    from engine.store.location import PostgresLocation, StoreDirectory

    if isinstance(store, PostgresLocation):
        from engine.store.pg.reader import PgTraceReader

        return PgTraceReader.connect_if_present(store)
    store_dir = store.path if isinstance(store, StoreDirectory) else store
    if not (store_dir / TRACES_DB).is_file():
        return None
    return open_reader(store_dir)


def require_reason(args: argparse.Namespace) -> str:
    reason: str | None = args.reason
    if not reason or not reason.strip():
        raise InputError("is required (it goes to the audit log)", field="--reason")
    return reason


def confirm(args: argparse.Namespace, what: str) -> bool:
    """--yes, or a person typing "yes" on a terminal. Without a terminal and without --yes: refuse (exit 2),
    because a script that forgot --yes must not be taken as consent."""
    if args.yes:
        return True
    if not sys.stdin.isatty():
        raise InputError(f"refusing to {what} without confirmation: stdin is not a terminal, pass --yes",
                         field="--yes")
    try:
        answer = input("type yes to continue: ")
    except EOFError:
        answer = ""
    if answer.strip().lower() != "yes":
        print("aborted: nothing was changed", file=sys.stderr)
        return False
    return True


def short(value: Any, width: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return text if len(text) <= width else text[:width - 1] + "…"

