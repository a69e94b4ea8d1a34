"""What the runbooks, incidents and postmortem commands share: the store and runbook look-ups and the CLI's spelling
of API fields. Scopes, the runs a runbook's budget action reaches and the runbook text's placeholders are
console/runbook_scopes.py (shared with the runbooks view)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import InputError

if TYPE_CHECKING:
    from engine.store.location import StoreLocation


def add_operator(parser: argparse.ArgumentParser) -> None:
    from console.commands.controls import OPERATOR_ENV

    parser.add_argument("--operator", metavar="NAME",
                        help=f"who is acting, for the audit log (default: ${OPERATOR_ENV}, else your user name)")


def usage_handler(parser: argparse.ArgumentParser) -> Any:
    def show(args: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        return 2
    return show


def store_dir_of(location: StoreLocation) -> Path | None:
    """The store directory, or None for a Postgres store (which has no STORE/runbooks nor STORE/config.toml)."""
    from engine.store.location import StoreDirectory

    return location.path if isinstance(location, StoreDirectory) else None


def control_target(location: StoreLocation) -> Path | StoreLocation:
    """What ControlAPI opens for this store: the directory's path, or the Postgres store."""
    directory = store_dir_of(location)
    return directory if directory is not None else location


def store_config(location: StoreLocation, config_file: str | None) -> Any:
    """The config an engine on this store reads: `config_file`, else STORE/config.toml on a directory, else (on
    Postgres, which has no config.toml) $FLIGHTDECK_CONFIG, else the defaults. InputError naming file and field."""
    import os

    from engine.store.config import load_config
    from engine.store.pg_engine_store import engine_config

    directory = store_dir_of(location)
    if directory is None:
        return engine_config(config_file, os.environ)
    return load_config(directory, config_file)


def runbooks_in_force(location: StoreLocation, config_file: str | None = None) -> list[Any]:
    """The shipped runbooks, the config's [runbooks] dir, and STORE/runbooks on a directory (what an engine on this
    store with this config loads)."""
    from engine.runbooks.loader import load_runbooks

    config = store_config(location, config_file)
    return load_runbooks(store_dir_of(location), project_dir=config.runbooks_dir)


def add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE",
                        help="the engines' config, for its [runbooks] dir (default: STORE/config.toml; on a Postgres "
                             "store $FLIGHTDECK_CONFIG)")


def find_runbook(runbooks: list[Any], runbook_id: str) -> Any:
    import difflib

    for runbook in runbooks:
        if runbook.id == runbook_id:
            return runbook
    known = [r.id for r in runbooks]
    close = difflib.get_close_matches(runbook_id, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f" (runbooks: {', '.join(known) or 'none'})"
    raise InputError(f"no runbook {runbook_id!r}{hint}", field="ID")


def require_store(store_dir: Path) -> None:
    from engine.errors import StoreError
    from engine.store.files import CONTROL_DB

    if not (store_dir / CONTROL_DB).is_file():
        raise StoreError(f"no store at {store_dir} (nothing has been recorded there yet; pass --store or set "
                         f"FLIGHTDECK_STORE)")


def resolve_location(args: argparse.Namespace) -> StoreLocation:
    """The store, a directory or a Postgres database: the runbook, incident and postmortem commands work on both."""
    from engine.store import resolve_store_location

    return resolve_store_location(args.store)


def incident_store(store: Path | StoreLocation, *, create: bool = False, read_only: bool = False) -> Any:
    """read_only: for commands that only read incidents; control.db is opened read-only (works on a read-only store;
    on a Postgres store, a read-only session)."""
    from engine.runbooks.incidents import IncidentStore
    from engine.store.control import ControlDB
    from engine.store.location import PostgresLocation, StoreDirectory

    if isinstance(store, PostgresLocation):
        from engine.store.pg.control_db import PgControlDB

        return IncidentStore(PgControlDB(store, create=create, read_only=read_only))
    store_dir = store.path if isinstance(store, StoreDirectory) else store
    if not create:
        require_store(store_dir)
    return IncidentStore(ControlDB.open(store_dir, read_only=read_only))


def cli_field(exc: InputError) -> InputError:
    """The API names a field as it spells it; on the command line the operator typed a flag."""
    flag = {"reason": "--reason", "text": "--text", "operator": "--operator", "incident": "ID"}.get(exc.field or "")
    return InputError(exc.message, field=flag) if flag and type(exc) is InputError else exc


def checked_reason(text: str | None) -> str:
    from engine.controls.validate import required_text

    try:
        return required_text(text, "reason")
    except InputError as exc:
        raise cli_field(exc) from None
