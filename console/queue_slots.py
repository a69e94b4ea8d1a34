"""The header's queues slot (serve mode): queue depth on the first status line, and the backed-up alarm.

Shown only once an engine has published queues (traces.db `queues`): a store that never ran serve mode keeps its
header as it was. Values:

- "442 queued · 6 running" (ok);
- "442 queued · 1 BACKED UP (deal-desk)" (crit, with an alarm pointing to view 8) when a queue or tenant is over
  80% of its max_depth, its oldest item has waited over 5 minutes, or its admission is paused
  (console/queue_status.backed_up);
- "442 queued as of 07:58:00 (no engine)" (info, warn if it was backed up) when no engine refreshes the rows: what
  the last engine saw, not a live alarm.

Its urgency is "queues" in header.ALARM_ORDER (after breakers, before kill switches). console/header_slots.py lists
it with the other slots.
"""

from __future__ import annotations

from console.queue_status import backed_up, read_queues
from console.widgets.header import HeaderContext, SlotValue
from console.widgets.safe import printable
from engine.timefmt import clock

QUEUES_KEY = "8"


def queues_slot(ctx: HeaderContext) -> SlotValue:
    snapshot = read_queues(ctx.reader, None, ctx.now)
    queues = [r for r in snapshot.rows if not r.tenant]
    if not snapshot.rows:
        return SlotValue("", "na")  # no serve mode on this store: the slot is not shown
    depth = sum(r.depth for r in queues)
    running = sum(r.running for r in queues)
    backed = [(r, why) for r in snapshot.rows if (why := backed_up(r)) is not None]
    if snapshot.stale and snapshot.as_of is not None:
        alive = ctx.cache.get("engines", {}).get("alive", 0)
        when = f"as of {clock(snapshot.as_of)} ({'not updated' if alive else 'no engine'})"
        return SlotValue(f"{depth} queued {when}", "warn" if backed else "info", short=f"{depth} {when}")
    if not backed:
        return SlotValue(f"{depth} queued · {running} running", "ok", short=f"{depth} queued")
    row, why = backed[0]
    names = sorted({printable(r.queue, limit=30) for r, _ in backed})
    what = printable(row.queue, limit=30) + (f" tenant {printable(row.tenant, limit=30)}" if row.tenant else "")
    return SlotValue(f"{depth} queued · {len(names)} BACKED UP ({', '.join(names)})", "crit",
                     short=f"{depth} · {len(names)} BACKED UP",
                     alarm=f"Queue {what} is backed up ({why}): press {QUEUES_KEY}, pause its noisiest tenant (p) "
                           f"or drain it (d).", view="queues",
                     alarm_here=f"Queue {what} is backed up ({why}): select its noisiest tenant, p pauses it, d "
                                f"drains.")
