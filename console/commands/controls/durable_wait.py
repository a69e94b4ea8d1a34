"""`flightdeck resume` and `reconcile` while an engine holds the store: who will carry the run on, and waiting until
it has (engine/runtime/durable_pickup.py takes the request live and records a `resume_taken` audit row).

The engine holding the store says in engine.lock's JSON (`durable`: engine_id, pickup, auto_resume) whether it is a
durable engine that takes requests now; a non-durable one (`flightdeck run` without --durable) never will. Waiting
is polling control.db (the `resume_taken` row) and traces.db (the run's row), every POLL_S, while the engine that
holds the store is alive: an engine that stops first leaves the request for the next durable engine's start.
`wait_taken` and `wait_ended` take that liveness as a callable and read the trace store wherever it is, so the
Postgres store's fleet (durable_fleet.py) waits with them too.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from console.commands.controls.common import store_dir_arg
from console.output import print_json
from engine.controls.errors import ControlError
from engine.store.location import StoreDirectory

if TYPE_CHECKING:
    from engine.controls.resume_preview import ResumePreview
    from engine.controls.run_requests import Taken
    from engine.store.location import StoreLocation
    from engine.store.trace_rows import RunRow

POLL_S = 0.05
PICKUP_WAIT_S = 30.0  # a live engine takes a request within a control poll (~10 ms); this is for a wedged one


@dataclass(frozen=True, slots=True)
class Holder:
    """The engine holding the store now, from engine.lock: its pid, and whether it takes resume requests."""

    pid: int
    engine_id: str | None
    durable: bool  # a durable engine that takes requests now
    auto_resume: bool  # it also carries reconciled runs on by itself

    def describe(self) -> str:
        return f"engine pid {self.pid}" + (f" ({self.engine_id[:12]})" if self.engine_id else "")


def holder(store_dir: Path) -> Holder | None:
    """The live engine holding the store, or None (no engine, or the one named in the lock file is dead)."""
    from engine.controls.terminate import process_alive, read_lock_holder

    found = read_lock_holder(store_dir)
    pid = found.get("pid") if found else None
    if found is None or not isinstance(pid, int) or not process_alive(pid):
        return None
    record = found.get("durable")
    durable: dict[str, Any] = record if isinstance(record, dict) else {}
    return Holder(pid=pid, engine_id=durable.get("engine_id"), durable=bool(durable.get("pickup")),
                  auto_resume=bool(durable.get("auto_resume")))


def still_held(store_dir: Path, by: Holder) -> bool:
    now = holder(store_dir)
    return now is not None and now.pid == by.pid and now.durable


def wait_taken(api: Any, run_id: str, alive: Callable[[], bool], match: Callable[[Taken], bool],
               timeout: float = PICKUP_WAIT_S) -> Taken | None:
    """The run's first `resume_taken` row `match` accepts, once there is one; None when `alive()` turns false first
    (the engine stopped, or stopped taking requests; on Postgres: no live durable engine is left), or after
    `timeout`."""
    from engine.controls.run_requests import takes

    deadline = time.monotonic() + timeout
    while True:
        with api.read() as conn:  # a take given back counts: wait_ended then says why it did not start
            found = [taken for taken in takes(conn, run_id, given_back=True) if match(taken)]
        if found:
            return found[0]
        if time.monotonic() > deadline or not alive():
            return None
        time.sleep(POLL_S)


def report_take(api: Any, run_id: str, audit_id: int, alive: Callable[[], bool], who: Callable[[Taken], str],
                not_taken: str, again: str) -> None:
    """After a reconcile's last decision: wait for the take (`wait_taken`, newer than audit row `audit_id`) and say
    who took the run, that nobody did (`not_taken`), or that the taker gave it back and why; `again` is the command
    that carries the run on instead. `who(taken)` names the engine that took it."""
    from engine.controls.run_requests import released

    taken = wait_taken(api, run_id, alive, lambda t: t.audit_id > audit_id)
    if taken is None:
        print(f"{not_taken}; the next durable engine to start on this store carries it on, or: {again}")
        return
    with api.read() as conn:
        why = released(conn, run_id).get(taken.audit_id)
    if why is not None:
        print(f"{who(taken)} took run {run_id} but could not start it ({why}) and gave it back: fix that, then: "
              f"{again}")
        return
    print(f"{who(taken)} took run {run_id} (audit row {taken.audit_id}): it is running again there")


def wait_ended(location: StoreLocation, run_id: str, taken: Taken, alive: Callable[[], bool],
               api: Any) -> RunRow | str | None:
    """The run's row once the execution the engine started ended (it ends after it was taken); None when the
    engine that took it stopped first (`alive()` false); why, when it could not start it and gave the take back
    (`resume_released`). `location`: the trace store (a directory's traces.db, or the Postgres store)."""
    from engine.controls.run_requests import released
    from engine.errors import StoreError
    from engine.store import open_trace_reads

    def ended() -> RunRow | None:
        try:
            reader = open_trace_reads(location)
        except StoreError:
            return None
        try:
            row = reader.get_run(run_id)
        except StoreError:
            return None
        finally:
            reader.close()
        done = row is not None and row.status != "running" and row.ended is not None and row.ended >= taken.ts
        return row if done else None

    while True:
        row = ended()
        if row is not None:
            return row
        with api.read() as conn:
            why = released(conn, run_id).get(taken.audit_id)
        if why is not None:
            return why
        if not alive():  # its engine stopped: what it recorded last is all there is
            return ended()
        time.sleep(POLL_S)


def print_outcome(args: argparse.Namespace, row: RunRow) -> int:
    """The resumed run as `flightdeck run` prints it; its exit code."""
    from console.commands.run import print_summary
    from engine.runtime.results import EXIT_CODES, RunResult

    result = RunResult(run_id=row.id, hierarchy=row.hierarchy, status=row.status,  # type: ignore[arg-type]
                       output=row.output, error=row.error, tokens_in=row.tokens_in, tokens_out=row.tokens_out,
                       cost_usd=row.cost_usd, model_calls=row.model_calls, tool_calls=row.tool_calls,
                       started=row.started, ended=row.ended or row.started)
    if args.json:
        print_json(result.to_json())
    else:
        print_summary([result])
    return EXIT_CODES.get(row.status, 1)


def resume_in_engine(args: argparse.Namespace, api: Any, preview: ResumePreview, reason: str,
                     limits: dict[str, Any] | None, locked: str) -> int:
    """`flightdeck resume` when an engine holds the store: record the resume for the durable engine holding it and
    (unless --no-wait) wait until it took the run and the run ended; refused (nothing written) when that engine is
    not durable."""
    run = preview.run
    store_dir = store_dir_arg(args)
    again = f"flightdeck resume {run.id}{f' --store {args.store}' if args.store else ''} --reason '{reason}' --yes"
    engine = holder(store_dir)
    if engine is None or not engine.durable:
        who = engine.describe() if engine is not None else "the engine holding it"
        raise ControlError(f"{locked}, and {who} is not a durable engine taking resume requests (flightdeck run "
                           f"without --durable, or one stopping): it cannot resume run {run.id}; nothing was "
                           f"written. Let it finish or stop it (flightdeck engines), then run: {again}")
    entry, _released = api.record_resume(run.id, run.status, limits, reason, run.attributes)
    print(f"resume of run {run.id} recorded (audit row {entry.id}): {engine.describe()}, the durable engine holding "
          f"the store, carries it on", file=sys.stderr)
    if args.no_wait:
        if args.json:
            print_json({"run_id": run.id, "audit_id": entry.id, "engine_pid": engine.pid,
                        "engine_id": engine.engine_id, "waited": False})
        return 0
    # Taken by this request, or by another one for the same ending of the run (a reconcile taken a moment before).
    taken = wait_taken(api, run.id, lambda: still_held(store_dir, engine),
                       lambda t: t.request == entry.id or t.ended == run.ended)
    if taken is None:
        print(f"{engine.describe()} did not take run {run.id} (it stopped, or stopped taking requests): the resume "
              f"stays recorded (audit row {entry.id}) and the next durable engine to start on this store carries "
              f"the run on", file=sys.stderr)
        return 3
    print(f"{engine.describe()} took run {run.id} (audit row {taken.audit_id}); waiting for it to end",
          file=sys.stderr)

    def same_engine() -> bool:
        now = holder(store_dir)
        return now is not None and now.pid == engine.pid

    row = wait_ended(StoreDirectory(store_dir), run.id, taken, same_engine, api)
    if isinstance(row, str):
        print(f"{engine.describe()} took run {run.id} but could not start it ({row}) and gave it back: fix that, "
              f"then resume it again", file=sys.stderr)
        return 3
    if row is None:
        print(f"{engine.describe()} stopped before run {run.id} ended: the next durable engine to start on this "
              "store carries it on", file=sys.stderr)
        return 3
    return print_outcome(args, row)
