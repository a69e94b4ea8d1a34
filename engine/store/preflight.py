"""What must hold before an engine creates or changes anything in a store directory.

An operator's own files in the store (config.toml, runbooks/*.md) are validated first, so a typo in one is an
InputError naming its file and line and the directory is left exactly as it was: no traces.db, control.db or
engine.lock half-created next to a config that can never start an engine. The shipped runbooks are the project's
(validated by its tests), so only the store's own are read here; the engine loads all of them again when it starts.
"""

from __future__ import annotations

from pathlib import Path

from engine.store.config import StoreConfig, load_config

__all__ = ["validate_store_inputs"]


def validate_store_inputs(store_dir: Path, config_file: Path | str | None = None) -> StoreConfig:
    """The store's config (InputError if invalid), after checking every runbook in STORE/runbooks (InputErrors for
    all problems of all files). Reads only; creates nothing."""
    config = load_config(store_dir, config_file)
    # Imported here: the runbook loader is not needed when the store has no runbooks of its own.
    from engine.runbooks.loader import load_dir, store_dir_runbooks

    runbooks = store_dir_runbooks(store_dir)
    if runbooks.is_dir():
        load_dir(runbooks, origin="store")
    return config
