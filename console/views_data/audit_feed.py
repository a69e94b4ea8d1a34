"""The audit view's data: one page of the audit log (newest first) through ControlAPI, re-read only when the log
grew or the page changed, and the hash-chain verification against the engine's anchor."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from engine.controls.audit import newest_id as newest_audit_id

if TYPE_CHECKING:
    from console.screens.base import ConsoleContext
    from engine.store.control_rows import AuditEntry

PAGE = 100


@dataclass(slots=True)
class AuditPage:
    rows: list[AuditEntry]
    before_id: int | None  # the page shown: rows with id < before_id (None: the newest)
    newest_id: int | None
    total: int
    no_store: bool = False
    page_size: int = 0  # the PAGE it was read with: fewer rows than that means there are no older ones


@dataclass(slots=True)
class AuditFeed:
    ctx: ConsoleContext
    before_id: int | None = None
    seen: tuple[Any, ...] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _api(self) -> Any:
        from engine.controls.api import ControlAPI

        db = self.ctx.source.control()
        if db is None:
            return None
        return ControlAPI(self.ctx.location, self.ctx.operator or "console", db=db)

    def poll(self) -> AuditPage | None:
        with self.lock:
            api = self._api()
            if api is None:
                if self.seen == ("none",):
                    return None
                self.seen = ("none",)
                return AuditPage([], None, None, 0, no_store=True)
            # The newest id is the row count (ids are consecutive: the hash chain covers them, so a gap is
            # reported by the verification) and costs one index lookup, where COUNT(*) would read the whole log.
            db = self.ctx.source.control()
            assert db is not None
            with db.reading() as conn:
                newest = newest_audit_id(conn)
            key = (newest, self.before_id)
            if key == self.seen:
                return None
            self.seen = key
            with api:
                rows = api.audit_log(PAGE, self.before_id)
            return AuditPage(rows, self.before_id, newest, int(newest or 0), page_size=PAGE)

    def verify(self) -> Any:
        api = self._api()
        if api is None:
            return None
        from engine.controls.anchor import latest_anchor

        anchor = latest_anchor(self.ctx.location)  # the engine's record of the log's head, from the trace store
        with api:  # closes only its own read connection: the shared ControlDB stays open
            return api.verify_audit(anchor)

    def invalidate(self) -> None:
        self.seen = None
