"""The engines view's data (view 9): every engine on the store with what the fleet's operators ask of it first, read
on the view's poll thread. On a Postgres store that is the whole fleet (every engine registered on the database); on
a store directory the engines that have run on it (one at a time).

- Registration and liveness: the control plane's `list_engines()` (control.db's `engines`, or the trace schema's
  `engines` on Postgres, pg/engine_registry.py). Alive / STALE / stopped are decided by the console's clock at paint
  time (`engine_state`), as the header's engines slot does: one notion of "now" on screen.
- LOAD: runs running now per engine (`runs.engine_id`). QUEUES: the serve-mode queues the engine publishes (on
  Postgres the queues rows carry the engine id; on a directory the one engine not stopped serves them all).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from console.polling import ReaderState
from engine.store.control import STALE_AFTER_S

if TYPE_CHECKING:
    from console.screens.base import ConsoleContext


@dataclass(frozen=True, slots=True)
class EngineLine:
    """A line of the engines view."""

    id: str
    host: str
    pid: int
    user: str
    version: str
    started: float
    heartbeat: float
    stopped: float | None
    load: int  # runs running now
    queues: tuple[str, ...]  # serve-mode queues it publishes


def engine_state(line: EngineLine, now: float) -> str:
    """alive, STALE (not stopped, no heartbeat for STALE_AFTER_S: hung, killed, or its host gone) or stopped."""
    if line.stopped is not None:
        return "stopped"
    return "alive" if now - line.heartbeat <= STALE_AFTER_S else "STALE"


class EnginesFeed:
    def __init__(self, ctx: ConsoleContext) -> None:
        self.ctx = ctx
        self.state = ReaderState(ctx.source)
        self.last: Any = object()

    def poll(self) -> list[EngineLine] | None:
        # No data_version shortcut: heartbeats are not trace commits, and liveness moves with them.
        try:
            lines = self._read()
        except Exception:
            self.state.reset()
            raise
        if lines == self.last:
            return None
        self.last = lines
        return lines

    def _read(self) -> list[EngineLine]:
        control = self.ctx.source.control()
        if control is None:
            return []
        engines = control.list_engines(limit=200)
        loads: dict[str | None, int] = {}
        queues: dict[str, list[str]] = {}
        if engines and self.ctx.source.has_traces():
            reader = self.state.reader
            loads = {row.engine_id: row.active for row in reader.engine_loads()}
            for row in reader.engine_queues():
                queues.setdefault(row.engine_id, []).append(row.queue)
            if not queues:  # a store directory: its queues are the one serving engine's
                names = sorted({row.queue for row in reader.queues() if not row.tenant})
                for engine in engines:
                    if engine.stopped is None and names:
                        queues[engine.id] = names
        return [EngineLine(e.id, e.host, e.pid, e.user, e.version, e.started, e.heartbeat, e.stopped,
                           loads.get(e.id, 0), tuple(queues.get(e.id, ()))) for e in engines]

    def invalidate(self) -> None:
        self.last = object()

    def close(self) -> None:
        self.state.close()
