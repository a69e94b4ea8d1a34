"""`flightdeck resume` and `reconcile` on a Postgres store (issue 16): a fleet of engines, none holding the store.

On a directory the engine to carry a run on is the one holding engine.lock (durable_wait.py). A Postgres store has no
lock and several engines, so the request goes to the control plane in the database (the same audit rows as on
control.db: `resume`, or the `reconcile` decisions) and the live durable engines that take requests (the database's
`durable_pickup` rows of engines with a fresh heartbeat: engine/store/pg/durable_takers.py) race for it: each one's
control watcher is woken by the audit row's NOTIFY, and the first to write the `resume_taken` row under the control
plane's write lock carries the run on (engine/runtime/durable_pickup.py); the others find it taken. The command
waits for that row and then for the run's end, as on a directory.

With no live durable engine registered nothing would take the request now, so `resume` writes nothing and exits 3
saying how to start one; this process does not become the engine itself (unlike on a directory): the fleet's engines
carry its config (models, tools, notifiers), which this command does not have.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from console.commands.controls.durable_wait import print_outcome, report_take, wait_ended, wait_taken
from console.output import print_json

if TYPE_CHECKING:
    from engine.controls.resume_preview import ResumePreview
    from engine.store.location import PostgresLocation
    from engine.store.pg.durable_takers import DurableTaker

RECHECK_S = 0.5  # how often a wait re-reads the engines' liveness (a connection each time; the takes are polled faster)


def takers(location: PostgresLocation) -> list[DurableTaker]:
    from engine.store.pg.durable_takers import live_takers

    return live_takers(location)


def throttled(check: Callable[[], bool]) -> Callable[[], bool]:
    """`check`, asked at most every RECHECK_S; the last answer in between."""
    last: list[Any] = [0.0, True]

    def ask() -> bool:
        if time.monotonic() - last[0] >= RECHECK_S:
            last[:] = [time.monotonic(), check()]
        return bool(last[1])

    return ask


def engine_alive(api: Any, engine_id: str) -> Callable[[], bool]:
    """Whether the engine that took the run is alive (registered, not stopped, heartbeat fresh): it may have stopped
    taking new requests (closing) and still be carrying this run to its end."""
    return throttled(lambda: any(e.id == engine_id and e.alive for e in api.engines()))


def names(found: list[DurableTaker]) -> str:
    shown = ", ".join(t.describe() for t in found[:3])
    return shown + (f" and {len(found) - 3} more" if len(found) > 3 else "")


def no_taker(location: PostgresLocation) -> str:
    return (f"no live durable engine on the Postgres store {location.masked} takes resume requests (none "
            f"registered with a fresh heartbeat; see flightdeck engines --store ...). Start one: flightdeck serve "
            f"--store URL, or flightdeck run --durable --store URL")


def resume_on_fleet(args: argparse.Namespace, api: Any, preview: ResumePreview, reason: str,
                    limits: dict[str, Any] | None, location: PostgresLocation) -> int:
    """`flightdeck resume` on a Postgres store: record the resume for the live durable engines and (unless
    --no-wait) wait until one took the run and the run ended. Exit 3, nothing written, when none is live."""
    run = preview.run
    again = f"flightdeck resume {run.id} --store URL --reason '{reason}' --yes"
    found = takers(location)
    if not found:
        print(f"{no_taker(location)}; nothing was written. Then run: {again}", file=sys.stderr)
        return 3
    entry, _released = api.record_resume(run.id, run.status, limits, reason, run.attributes)
    print(f"resume of run {run.id} recorded (audit row {entry.id}): one of the live durable engines on the store "
          f"carries it on ({names(found)})", file=sys.stderr)
    if args.no_wait:
        if args.json:
            print_json({"run_id": run.id, "audit_id": entry.id, "engine_ids": [t.engine_id for t in found],
                        "waited": False})
        return 0
    # Taken by this request, or by another one for the same ending of the run (a reconcile taken a moment before).
    taken = wait_taken(api, run.id, throttled(lambda: bool(takers(location))),
                       lambda t: t.request == entry.id or t.ended == run.ended)
    if taken is None:
        print(f"no durable engine took run {run.id} (they stopped, or stopped taking requests): the resume stays "
              f"recorded (audit row {entry.id}) and the next durable engine to start on this store carries the run "
              "on", file=sys.stderr)
        return 3
    print(f"engine {taken.engine_id} took run {run.id} (audit row {taken.audit_id}); waiting for it to end",
          file=sys.stderr)
    row = wait_ended(location, run.id, taken, engine_alive(api, taken.engine_id), api)
    if isinstance(row, str):
        print(f"engine {taken.engine_id} took run {run.id} but could not start it ({row}) and gave it back: fix "
              "that, then resume it again", file=sys.stderr)
        return 3
    if row is None:
        print(f"engine {taken.engine_id} stopped before run {run.id} ended: a live durable engine takes its runs "
              "over once its heartbeat is stale", file=sys.stderr)
        return 3
    return print_outcome(args, row)


def after_reconcile_on_fleet(args: argparse.Namespace, api: Any, run_id: str, audit_id: int,
                             location: PostgresLocation) -> None:
    """Every side effect of the run is decided, on a Postgres store: say which engines carry it on (and, with one
    live that carries reconciled runs on by itself, wait until one took the run)."""
    now = f"flightdeck resume {run_id} --store URL --reason '...'"
    found = takers(location)
    if not found:
        print(f"run {run_id} goes on when a durable engine next starts on this store: {no_taker(location)}")
        return
    off = [f for f in api.active_flags() if f.name == "runs.auto_resume" and f.scope == "global"
           and str(f.value) == "false"]
    carriers = [t for t in found if t.auto_resume]
    if not carriers or off:
        why = "flag runs.auto_resume=false" if off else "they were started with --no-resume"
        print(f"the live durable engines on this store ({names(found)}) do not carry reconciled runs on by "
              f"themselves ({why}): resume it with {now}")
        return
    if args.no_wait:
        print(f"a live durable engine on this store ({names(carriers)}) carries run {run_id} on within a moment")
        return
    report_take(api, run_id, audit_id, throttled(lambda: any(t.auto_resume for t in takers(location))),
                lambda taken: f"engine {taken.engine_id}",
                f"no durable engine has taken run {run_id} (they stopped, or are busy)", now)
