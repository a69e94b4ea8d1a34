"""A record of the side effects example tools perform (discounts applied, proposals sent, refunds issued), so a test
or the demo can see exactly what a run did to the outside world. Thread-safe: the runtime may run synchronous
tools in worker threads.

Idempotent by key: a tool passes its call's `ctx.idempotency_key` (engine/tool_context.py) and a second record with
the same key returns the first entry instead of a second effect, as a real system with an idempotency key would.
With FLIGHTDECK_EXAMPLE_LEDGER=FILE set, every execution is also appended to FILE (one JSON line, flushed and
fsynced before the tool returns) and keys recorded there by earlier processes count: the crash drill reads it to
prove no side effect happened twice across engines that were killed and restarted."""

from __future__ import annotations

import copy
import itertools
import json
import os
import threading
from typing import Any

LEDGER_FILE_ENV = "FLIGHTDECK_EXAMPLE_LEDGER"


class Ledger:
    def __init__(self) -> None:
        self._entries: list[dict[str, Any]] = []
        self._by_key: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        # Ids keep counting across clear() so an id is never reused within a process.
        self._ids = itertools.count(1)
        self._file_loaded: str | None = None

    def record(self, kind: str, prefix: str, fields: dict[str, Any], key: str | None = None) -> dict[str, Any]:
        """Append an entry and return a copy of it, including its new id (e.g. 'DSC-0007'); with a key seen
        before, return that entry (marked `duplicate_suppressed`) and append nothing."""
        with self._lock:
            path = os.environ.get(LEDGER_FILE_ENV)
            if path and self._file_loaded != path:
                self._load(path)
            if key is not None and key in self._by_key:
                self._log(path, {"key": key, "kind": kind, "duplicate_suppressed": True})
                return {**copy.deepcopy(self._by_key[key]), "duplicate_suppressed": True}
            entry = {"id": f"{prefix}-{next(self._ids):04d}", "kind": kind, **copy.deepcopy(fields)}
            if key is not None:
                entry["idempotency_key"] = key
                self._by_key[key] = entry
            self._entries.append(entry)
            self._log(path, entry)
            return copy.deepcopy(entry)

    def _load(self, path: str) -> None:
        self._file_loaded = path
        try:
            with open(path, encoding="utf-8") as file:
                for line in file:
                    entry = json.loads(line)
                    if entry.get("idempotency_key") and not entry.get("duplicate_suppressed"):
                        self._by_key.setdefault(entry["idempotency_key"], entry)
        except FileNotFoundError:
            pass

    @staticmethod
    def _log(path: str | None, entry: dict[str, Any]) -> None:
        if not path:
            return
        with open(path, "a", encoding="utf-8") as file:
            file.write(json.dumps(entry, default=str) + "\n")
            file.flush()
            os.fsync(file.fileno())

    def entries(self) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._by_key.clear()
