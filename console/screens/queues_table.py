"""The queues view's tables (view 8): columns, cells, the sort that keeps each queue's tenants under it (in either
direction) and the filter's words, for the queues and the schedules (console/screens/queues.py is the view)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rich.text import Text

from console.queue_status import (
    QueuesSnapshot,
    admission_word,
    backed_up,
    depth_fraction,
    limits_text,
    pending_flag,
    relative,
    span,
)
from console.widgets.safe import literal
from console.widgets.virtual_table import Column

if TYPE_CHECKING:
    from engine.store.trace_rows import QueueRow, ScheduleRow

COLUMNS = (
    Column("admission", "ADMISSION", 9),
    Column("name", "QUEUE / TENANT", 17, flex=2, max_width=36),
    Column("depth", "DEPTH", 9, align="right"),
    Column("oldest", "OLDEST", 8, align="right"),
    Column("admitted", "ADMIT/MIN", 9, align="right"),
    Column("rejected", "REJECTED", 8, align="right"),
    Column("running", "RUNNING", 7, align="right"),
    Column("limits", "LIMITS", 18, flex=1, max_width=30, drop=1),
)
SCHEDULE_COLUMNS = (
    Column("name", "SCHEDULE", 14, flex=2, max_width=30),
    Column("hierarchy", "HIERARCHY", 12, flex=1, max_width=24),
    Column("cron", "CRON", 13, flex=1, max_width=24),
    Column("next", "NEXT FIRE", 12, align="right"),
    Column("last", "LAST FIRE", 12, align="right"),
    Column("run", "LAST RUN", 12, drop=2),
    Column("missed", "MISSED", 8, drop=1),
)


@dataclass(frozen=True, slots=True)
class QueueLine:
    """A row of the table: a queue (tenant "") or a tenant of it, with its queue's figures for the ordering."""

    row: QueueRow
    queue_depth: int
    queue_oldest: float
    pending: str | None  # a flag value set but not yet applied by an engine


def queue_cell(line: QueueLine, column: str, now: float) -> Text | str:
    row = line.row
    if column == "admission":
        word, style = admission_word(row.admission)
        text = Text(word, style=style, end="")
        if line.pending:
            text.append(f"→{admission_word(line.pending)[0]}", style="bold yellow")
        return text
    if column == "name":
        if row.tenant:
            text = Text("  └ tenant ", style="dim", end="")
            text.append_text(literal(row.tenant, limit=40))
            return text
        return literal(row.queue, "bold", limit=40)
    if column == "depth":
        fraction = depth_fraction(row)
        shown = f"{row.depth}/{row.max_depth}" if row.max_depth else str(row.depth)
        style = "bold red" if backed_up(row) and fraction is not None and fraction >= 0.8 else ""
        return Text(shown, style=style, end="")
    if column == "oldest":
        if row.oldest_age_s is None:
            return Text("-", style="dim", end="")
        return Text(span(float(row.oldest_age_s)), style="bold red" if "oldest" in (backed_up(row) or "") else "",
                    end="")
    if column == "admitted":
        return f"{float(row.admitted_per_min):.0f}"
    if column == "rejected":
        return Text(str(row.rejected_total), style="bold yellow" if row.rejected_total else "", end="")
    if column == "running":
        return str(row.running)
    if column == "limits":
        return limits_text(row) if not row.tenant else Text(limits_text(row), style="dim", end="")
    return ""


REVERSED = ":reversed"  # a sort column with this suffix is the reverse order, tenants still under their queue


def _flip(key: tuple[Any, ...]) -> tuple[Any, ...]:
    """The reverse order of a key of numbers and strings (a string's characters negated, then a sentinel)."""
    return tuple(-v if isinstance(v, (int, float)) else (*(-ord(c) for c in v), 1) for v in key)


def queue_sort(line: QueueLine, column: str) -> Any:
    """The queue's figures first (tenants stay under their queue, in either direction), then the tenant's."""
    row = line.row
    if column.endswith(REVERSED):
        group, mine = _sort_parts(line, column[:-len(REVERSED)])
        return (*_flip(group), row.tenant != "", *_flip(mine))
    group, mine = _sort_parts(line, column)
    return (*group, row.tenant != "", *mine)


def _sort_parts(line: QueueLine, column: str) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    row = line.row
    own = float(row.oldest_age_s or 0.0)
    if column == "oldest":
        group: tuple[Any, ...] = (-line.queue_oldest, -line.queue_depth, row.queue)
        mine: tuple[Any, ...] = (-own, -row.depth, row.tenant)
    elif column == "name":
        group, mine = (row.queue.lower(),), (row.tenant.lower(),)
    elif column == "rejected":
        group, mine = (row.queue,), (-row.rejected_total, row.tenant)
    else:  # depth: the deepest first, the oldest first among equals
        group, mine = (-line.queue_depth, -line.queue_oldest, row.queue), (-row.depth, -own, row.tenant)
    return group, mine


def queue_words(line: QueueLine) -> str:
    row = line.row
    return " ".join(str(v or "") for v in (row.queue, row.tenant, row.hierarchy, row.admission,
                                           backed_up(row))).lower()


def schedule_cell(row: ScheduleRow, column: str, now: float) -> Text | str:
    if column in ("name", "hierarchy", "cron", "missed"):
        return literal(getattr(row, column), limit=60)
    if column == "next":
        if row.next_fire is None:
            return Text("-", style="dim", end="")
        late = float(row.next_fire) < now - 1
        return Text(relative(row.next_fire, now), style="bold yellow" if late else "", end="")
    if column == "last":
        return relative(row.last_fire, now)
    if column == "run":
        return literal(row.last_run_id or "-", limit=40)
    return ""


def schedule_sort(row: ScheduleRow, column: str) -> Any:
    return (row.next_fire is None, float(row.next_fire or 0.0), row.name)


def lines_of(snapshot: QueuesSnapshot) -> dict[tuple[str, str], QueueLine]:
    queues = {r.queue: r for r in snapshot.rows if not r.tenant}
    out: dict[tuple[str, str], QueueLine] = {}
    for row in snapshot.rows:
        parent = queues.get(row.queue, row)
        out[(row.queue, row.tenant)] = QueueLine(row, int(parent.depth), float(parent.oldest_age_s or 0.0),
                                                 pending_flag(snapshot, row))
    return out
