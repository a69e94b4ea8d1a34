"""`flightdeck queues [--json]` and `flightdeck queues pause | drain | open QUEUE [--tenant T] --reason R`: serve-mode
queues as the engine publishes them (traces.db `queues` and `schedules`), and the flags that pause, drain or open
a queue (`queue.NAME`) or a tenant (`tenant.NAME`, on every queue). Acting sets or clears the flag through ControlAPI
(audited); the engine applies it within a second. The console's view 8 shows the same (console/queue_status.py).

`--json` prints one object: queues (a list of the published rows: queue, tenant ("" for the whole queue), hierarchy,
depth, running, oldest_age_s, admitted_per_min, rejected_total, max_depth, concurrency, rate_limit, admission,
updated, plus backed_up (why, or null) and pending (a flag value no engine applied yet, or null)), schedules (name,
hierarchy, cron, missed, next_fire, last_fire, last_run_id, updated), flags (queue.* / tenant.* / runs.admission in
force), engine_alive, as_of (the newest `updated`), stale (true: no engine refreshed the rows for 5 s).
"""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING, Any

from console.cli import add_store_argument
from console.commands.controls.common import add_operator, open_api, open_trace_reader, require_reason, store_dir_arg
from console.output import print_json, table
from console.queue_status import (
    SERVE_HINT,
    QueuesSnapshot,
    backed_up,
    flag_name,
    limits_text,
    pending_flag,
    read_queues,
    relative,
    span,
)
from engine.errors import InputError
from engine.timefmt import clock

if TYPE_CHECKING:
    from engine.store.trace_rows import QueueRow

VALUES = {"pause": "paused", "drain": "draining", "open": "open"}


def add_queues(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    queues = commands.add_parser(
        "queues", help="serve-mode queues and schedules; pause, drain or open a queue or a tenant",
        description="Without an action: every queue and its tenants (depth, oldest item, admissions per minute, "
                    "rejections, running, limits, admission) and the schedules with their next fire time, as the "
                    "engine last published them. pause | drain | open QUEUE sets the flag queue.QUEUE (with "
                    "--tenant T: tenant.T, on every queue; a tenant is paused or open, never draining). open "
                    "clears a pause or drain.")
    queues.add_argument("action", nargs="?", default="list", choices=("list", *VALUES), metavar="ACTION",
                        help="list (default) | pause | drain | open")
    queues.add_argument("queue", nargs="?", metavar="QUEUE", help="the queue (a hierarchy's queue is named after it)")
    queues.add_argument("--tenant", metavar="T", help="act on the tenant T instead of the whole queue")
    queues.add_argument("--reason", metavar="TEXT", help="why (required to act; goes to the audit log)")
    queues.add_argument("--json", action="store_true", help="with list: print JSON")
    add_operator(queues)
    add_store_argument(queues)
    queues.set_defaults(handler=handle_queues)


def _snapshot(args: argparse.Namespace) -> QueuesSnapshot:
    from engine.store.control import ControlDB
    from engine.store.files import CONTROL_DB

    store_dir = store_dir_arg(args)
    reader = open_trace_reader(store_dir)
    control = ControlDB.open(store_dir, read_only=True) if (store_dir / CONTROL_DB).is_file() else None
    try:
        return read_queues(reader, control, time.time())
    finally:
        if reader is not None:
            reader.close()
        if control is not None:
            control.close()


def handle_queues(args: argparse.Namespace) -> int:
    if args.action == "list":
        if not store_dir_arg(args).is_dir():
            from engine.errors import StoreError

            raise StoreError(f"no store at {store_dir_arg(args)} (nothing has been recorded there yet; pass --store "
                             f"or set FLIGHTDECK_STORE)")
        return _list(args, _snapshot(args))
    if not args.queue:
        raise InputError(f"`queues {args.action}` needs the queue, e.g. `flightdeck queues {args.action} "
                         f"deal-desk --reason ...`", field="QUEUE")
    if args.tenant is not None and args.action == "drain":
        raise InputError("a tenant is paused or open, never draining: `queues drain QUEUE` drains the whole queue",
                         field="--tenant")
    reason = require_reason(args)
    snapshot = _snapshot(args)
    _check_known(snapshot, args.queue, args.tenant)
    name = flag_name(args.queue, args.tenant or "")
    value = VALUES[args.action]
    with open_api(args, create=True) as api:
        current = next((f.value for f in api.active_flags() if f.name == name and f.scope == "global"), None)
        if args.action == "open" and current is not None:
            api.clear_flag(name, "global", reason=reason)
            print(f"{name}={current} cleared by {api.operator}: the default (open) applies; the engine applies it "
                  f"within a second")
            return 0
        row = api.set_flag(name, value, "global", reason=reason)
    print(f"{row.name}={row.value} set by {row.operator}; the engine applies it within a second")
    return 0


def _check_known(snapshot: QueuesSnapshot, queue: str, tenant: str | None) -> None:
    """A queue (and tenant) the engine published: any other name is a typo whose flag nobody would read. With no row
    published yet (no serve mode so far) the flag is set for the engine to come."""
    import difflib

    names = snapshot.queue_names()
    if not names:
        return
    if queue not in names:
        close = difflib.get_close_matches(queue, names, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise InputError(f"unknown queue {queue!r}{hint} (known: {', '.join(names)})", field="QUEUE")
    tenants = sorted(r.tenant for r in snapshot.tenants_of(queue))
    if tenant is not None and tenants and tenant not in tenants:
        close = difflib.get_close_matches(tenant, tenants, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise InputError(f"no tenant {tenant!r} on queue {queue!r}{hint} (known: {', '.join(tenants)})",
                         field="--tenant")


def _row_json(snapshot: QueuesSnapshot, row: QueueRow) -> dict[str, Any]:
    return {**row.as_dict(), "backed_up": backed_up(row), "pending": pending_flag(snapshot, row)}


def _list(args: argparse.Namespace, snapshot: QueuesSnapshot) -> int:
    if args.json:
        print_json({"queues": [_row_json(snapshot, r) for r in _ordered(snapshot)],
                    "schedules": [s.as_dict() for s in snapshot.schedules], "flags": snapshot.flags,
                    "engine_alive": snapshot.engine_alive, "as_of": snapshot.as_of, "stale": snapshot.stale})
        return 0
    if not snapshot.rows and not snapshot.schedules:
        print(f"no queue published on this store: {SERVE_HINT}")
        return 0
    if snapshot.stale and snapshot.as_of is not None:
        who = "no engine is running" if not snapshot.engine_alive else "no engine publishes them now"
        print(f"as of {clock(snapshot.as_of)}: {who}; these are the last published figures\n")
    rows = []
    for row in _ordered(snapshot):
        admission = row.admission.upper() if row.admission != "open" else "open"
        pending = pending_flag(snapshot, row)
        if pending:
            admission += f" -> {pending} (not applied yet)"
        why = backed_up(row)
        rows.append((row.queue if not row.tenant else f"  tenant {row.tenant}", admission,
                     f"{row.depth}/{row.max_depth}" if row.max_depth else str(row.depth),
                     span(float(row.oldest_age_s)) if row.oldest_age_s is not None else "-",
                     f"{float(row.admitted_per_min):.0f}", row.rejected_total, row.running, limits_text(row),
                     f"BACKED UP: {why}" if why else ""))
    if rows:
        print(table(("QUEUE", "ADMISSION", "DEPTH", "OLDEST", "ADMIT/MIN", "REJECTED", "RUNNING",
                     "LIMITS conc·rate·max", ""), rows, right={2, 3, 4, 5, 6}))
    if snapshot.schedules:
        now = time.time()
        print()
        print(table(("SCHEDULE", "HIERARCHY", "CRON", "NEXT FIRE", "LAST FIRE", "LAST RUN", "MISSED"),
                    [(s.name, s.hierarchy, s.cron, relative(s.next_fire, now), relative(s.last_fire, now),
                      s.last_run_id or "-", s.missed) for s in snapshot.schedules]))
    return 0


def _ordered(snapshot: QueuesSnapshot) -> list[QueueRow]:
    """The deepest queue first, its tenants under it, deepest first."""
    queues = sorted((r for r in snapshot.rows if not r.tenant), key=lambda r: (-r.depth, r.queue))
    out: list[QueueRow] = []
    for queue in queues:
        out.append(queue)
        out.extend(sorted(snapshot.tenants_of(queue.queue), key=lambda r: (-r.depth, r.tenant)))
    orphans = [r for r in snapshot.rows if r.tenant and snapshot.queue_row(r.queue) is None]
    return out + orphans
