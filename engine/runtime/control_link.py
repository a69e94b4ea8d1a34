"""Where the engine's control plane is and how its ControlWorker learns of changes: control.db in the store
directory (polled through PRAGMA data_version), or a Postgres store (woken by LISTEN/NOTIFY through
pg/control_watch.py's ControlWatcher: issue 16 asks for no polling of every engine on a timer)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine.runtime.control_worker import ChangeListener
from engine.store.location import PostgresLocation, StoreDirectory, StoreLocation


def control_location(store: Any) -> StoreLocation:
    """The engine store's control plane (`control_location`); test doubles of the store have only `dir`."""
    location = getattr(store, "control_location", None)
    if isinstance(location, (StoreDirectory, PostgresLocation)):
        return location
    return StoreDirectory(store.dir)


def control_listener(location: StoreLocation) -> Callable[[], ChangeListener] | None:
    """What opens the worker's change listener: a ControlWatcher on a Postgres store; None (poll) on control.db."""
    if not isinstance(location, PostgresLocation):
        return None

    def listen() -> ChangeListener:
        from engine.store.pg.control_watch import ControlWatcher

        return ControlWatcher(location)

    return listen
