"""What must hold before an engine creates or changes anything in a store directory.

An operator's own files in the store (config.toml, and the files features keep there such as runbooks/*.md) are
validated first, so a typo in one is an InputError naming its file and line and the directory is left exactly as it
was: no traces.db, control.db or engine.lock half-created next to a config that can never start an engine. The store
checks its own config; a feature's files are checked by the InputCheck it hands to open_engine_store (the runbook
loader's check_store_runbooks), because the store imports no feature package.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from engine.store.config import StoreConfig, load_config

__all__ = ["InputCheck", "validate_store_inputs"]

InputCheck = Callable[[Path | None, StoreConfig], None]
"""Checks a feature's files in the store directory and those its config names, e.g. [runbooks] dir (reads only);
raises InputError / InputErrors. The directory is None for an engine wholly on Postgres (pg_engine_store.py)."""


def validate_store_inputs(store_dir: Path, config_file: str | os.PathLike[str] | None = None,
                          checks: Sequence[InputCheck] = ()) -> StoreConfig:
    """The store's config (InputError if invalid), after running each of `checks` on the directory. Reads only;
    creates nothing."""
    config = load_config(store_dir, config_file)
    for check in checks:
        check(store_dir, config)
    return config
