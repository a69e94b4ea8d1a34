"""Serve-mode queues as the console and the CLI show them, from what the engine publishes (traces.db `queues` and
`schedules`, read with TraceReader.queues() / .schedules()) and the flags `queue.NAME`, `tenant.NAME` and
`runs.admission`. Shared by the queues view (console/screens/queues.py), its header slot (console/queue_slots.py)
and `flightdeck queues` (console/commands/controls/queues.py); no Textual here.

- `read_queues(reader, control, now)`: one QueuesSnapshot (rows, schedules, the flags in force, whether an engine is
  alive, and whether the rows are stale: not refreshed for STALE_AFTER_S, because no engine publishes them).
- `backed_up(row)`: why a queue is backed up (over BACKED_UP_FRACTION of max_depth, its oldest item older than
  OLD_ITEM_S, or its admission paused), or None.
- `relative(ts, now)`: "in 4m 10s", "3m 5s ago", "now".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.store.control import ControlStore
    from engine.store.reader_protocol import TraceReads
    from engine.store.trace_rows import QueueRow, ScheduleRow

STALE_AFTER_S = 5.0  # the engine publishes every second: older rows are "as of <time>", not live
BACKED_UP_FRACTION = 0.8  # of max_depth
OLD_ITEM_S = 300.0  # the oldest queued item has waited this long
SERVE_HINT = "start serve mode with `flightdeck serve` (README, \"Run it as a service\")"

# admission -> (word, style). Never colour alone: the word is always there.
ADMISSION = {
    "open": ("open", "green"),
    "paused": ("PAUSED", "bold white on red"),
    "draining": ("DRAINING", "bold black on yellow"),
}


@dataclass(frozen=True, slots=True)
class QueuesSnapshot:
    rows: list[QueueRow]
    schedules: list[ScheduleRow]
    flags: dict[str, str] = field(default_factory=dict)  # queue.NAME / tenant.NAME / runs.admission -> value
    engine_alive: bool = False
    as_of: float | None = None  # the newest `updated` of the rows
    stale: bool = False  # no fresh row: what is shown is as of `as_of`

    def queue_names(self) -> list[str]:
        return sorted({row.queue for row in self.rows})

    def queue_row(self, queue: str) -> QueueRow | None:
        return next((r for r in self.rows if r.queue == queue and not r.tenant), None)

    def tenants_of(self, queue: str) -> list[QueueRow]:
        return [r for r in self.rows if r.queue == queue and r.tenant]


def flag_name(queue: str, tenant: str = "") -> str:
    """The flag that opens, pauses or drains a queue (`queue.NAME`) or a tenant (`tenant.NAME`)."""
    return f"tenant.{tenant}" if tenant else f"queue.{queue}"


def read_queues(reader: TraceReads | None, control: ControlStore | None, now: float) -> QueuesSnapshot:
    """What the queues view, its header slot and `flightdeck queues` show (a few indexed reads)."""
    from engine.store.control import STALE_AFTER_S as ENGINE_STALE_S

    rows = reader.queues() if reader is not None else []
    schedules = reader.schedules() if reader is not None else []
    flags: dict[str, str] = {}
    alive = False
    if control is not None:
        from engine.controls import flag_settings

        with control.reading() as conn:
            for flag in flag_settings.active(conn):
                if flag.scope == "global" and (flag.name.startswith(("queue.", "tenant."))
                                               or flag.name == "runs.admission"):
                    flags[flag.name] = str(flag.value)
        alive = any(e.stopped is None and now - float(e.heartbeat or 0) <= ENGINE_STALE_S
                    for e in control.list_engines())
    updated = [float(r.updated) for r in rows] + [float(s.updated) for s in schedules]
    as_of = max(updated) if updated else None
    stale = as_of is not None and now - as_of > STALE_AFTER_S
    return QueuesSnapshot(rows, schedules, flags, alive, as_of, stale)


def depth_fraction(row: QueueRow) -> float | None:
    if not row.max_depth:
        return None
    return float(row.depth) / float(row.max_depth)


def backed_up(row: QueueRow) -> str | None:
    """Why the queue (or tenant) is backed up, in words, or None."""
    if row.admission == "paused":
        return "admission paused"
    fraction = depth_fraction(row)
    if fraction is not None and fraction >= BACKED_UP_FRACTION:
        return f"{fraction:.0%} of max depth {row.max_depth}"
    if row.oldest_age_s is not None and float(row.oldest_age_s) >= OLD_ITEM_S:
        return f"oldest waiting {span(float(row.oldest_age_s))}"
    return None


def span(seconds: float) -> str:
    """4m 10s, 12s, 2h 5m, 3d 4h: two units at most."""
    s = int(max(0.0, seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60}s" if s % 60 else f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60}m" if s % 3600 // 60 else f"{s // 3600}h"
    return f"{s // 86400}d {s % 86400 // 3600}h" if s % 86400 // 3600 else f"{s // 86400}d"


def relative(ts: float | None, now: float) -> str:
    """A time next to now: "in 4m 10s", "3m 5s ago", "now" ("-" when there is none)."""
    if ts is None:
        return "-"
    delta = float(ts) - now
    if abs(delta) < 1:
        return "now"
    return f"in {span(delta)}" if delta > 0 else f"{span(-delta)} ago"


def admission_word(state: str | None) -> tuple[str, str]:
    return ADMISSION.get(str(state), (str(state or "unknown").upper(), "bold"))


def pending_flag(snapshot: QueuesSnapshot, row: QueueRow) -> str | None:
    """A flag value an operator set that the published admission does not show yet (no engine applied it)."""
    value = snapshot.flags.get(flag_name(row.queue, row.tenant))
    if value is None or value == row.admission:
        return None
    return value


def limits_text(row: QueueRow) -> str:
    """concurrency, rate, max depth: "4 · 10/1m · max 500" ("-" for each that is unset)."""
    return " · ".join((str(row.concurrency) if row.concurrency else "-", row.rate_limit or "-",
                       f"max {row.max_depth}" if row.max_depth else "max -"))
