"""A process-local record of the side effects example tools perform (discounts applied, proposals sent, refunds
issued), so a test or the demo can see exactly what a run did to the outside world. Thread-safe: the runtime may
run synchronous tools in worker threads."""

from __future__ import annotations

import copy
import itertools
import threading
from typing import Any


class Ledger:
    def __init__(self) -> None:
        self._entries: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        # Ids keep counting across clear() so an id is never reused within a process.
        self._ids = itertools.count(1)

    def record(self, kind: str, prefix: str, fields: dict[str, Any]) -> dict[str, Any]:
        """Append an entry and return a copy of it, including its new id (e.g. 'DSC-0007')."""
        with self._lock:
            entry = {"id": f"{prefix}-{next(self._ids):04d}", "kind": kind, **copy.deepcopy(fields)}
            self._entries.append(entry)
            return copy.deepcopy(entry)

    def entries(self) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
