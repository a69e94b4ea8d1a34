"""`flightdeck kill` and `flightdeck release`: set a kill switch (after a preview of what it would stop and a
confirmation), wait for the engine's acknowledgement, list and release switches."""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING, Any

from console.cli import add_store_argument
from console.commands.argtypes import non_negative, positive_int
from console.commands.controls.common import (
    add_operator,
    confirm,
    open_api,
    open_trace_reader,
    require_reason,
    short,
    store_location_arg,
)
from console.output import pick, print_json, table
from engine.controls.schema import KILL_MODES
from engine.errors import InputError
from engine.store.location import PostgresLocation
from engine.timefmt import age, timestamp

if TYPE_CHECKING:
    from engine.store.control_rows import KillSwitch, KillSwitchAck
    from engine.store.trace_rows import RunRow

DEFAULT_WAIT_ACK_S = 2.0
ACK_POLL_S = 0.05
KILL_FIELDS = ("id", "scope", "target", "run_id", "mode", "reason", "operator", "created", "acked", "acked_by")


def _add_scope_group(parser: argparse.ArgumentParser, *, with_id: bool) -> None:
    group = parser.add_mutually_exclusive_group(required=True)
    if with_id:
        group.add_argument("--id", type=positive_int, metavar="N", help="one kill switch, by its id")
    else:
        group.add_argument("--list", action="store_true", help="list the active kill switches and exit")
    group.add_argument("--all", action="store_true", help="everything on this store (global scope)")
    group.add_argument("--run", metavar="ID", help="one run (a unique prefix of its id is enough)")
    group.add_argument("--agent", metavar="NAME", help="an agent, in every run (or one run with --in-run)")
    group.add_argument("--tool", metavar="NAME", help="calls of a tool, in every run")
    group.add_argument("--hierarchy", metavar="NAME", help="every run of a hierarchy")
    parser.add_argument("--in-run", metavar="ID", help="with --agent: only in this run")


def add_kill(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    kill = commands.add_parser(
        "kill", help="stop runs, agents or tool calls (a kill switch)",
        description="Set a kill switch. It shows what it would stop, asks for confirmation on a terminal (or needs "
                    "--yes), records the switch with your reason, and waits for the engine to acknowledge it. The "
                    "switch stays in force, across engine restarts, until `flightdeck release`.",
        epilog="Modes: kill stops matching work now; drain lets in-flight calls finish and starts nothing new; "
               "pause holds matching work at its next step. Exit codes: 0 recorded (and acknowledged, or no engine "
               "is running); 1 recorded but the running engine did not acknowledge it, or you answered no; 2 bad "
               "input or refused; 3 store problem.")
    _add_scope_group(kill, with_id=False)
    kill.add_argument("--mode", choices=KILL_MODES, default="kill", help="kill (default), drain or pause")
    kill.add_argument("--reason", metavar="TEXT", help="why (required to set a switch; goes to the audit log)")
    kill.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    kill.add_argument("--wait-ack", type=non_negative, default=DEFAULT_WAIT_ACK_S, metavar="SECONDS",
                      help=f"how long to wait for the engine's acknowledgement (default {DEFAULT_WAIT_ACK_S:g})")
    kill.add_argument("--json", action="store_true", help="with --list: print JSON")
    add_operator(kill)
    add_store_argument(kill)
    kill.set_defaults(handler=handle_kill)


def add_release(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    release = commands.add_parser(
        "release", help="release kill switches",
        description="Release one kill switch (--id) or every active switch of a scope. Audited.")
    _add_scope_group(release, with_id=True)
    release.add_argument("--reason", metavar="TEXT", required=True, help="why (goes to the audit log)")
    add_operator(release)
    add_store_argument(release)
    release.set_defaults(handler=handle_release)



def _scope(args: argparse.Namespace) -> tuple[str, str | None]:
    for scope in ("run", "agent", "tool", "hierarchy"):
        value = getattr(args, scope)
        if value is not None:
            if not value.strip():
                raise InputError("must not be empty", field=f"--{scope}")
            return scope, value.strip()
    return "global", None


def _resolve_run(reader: Any, run_id: str, field: str) -> RunRow | None:
    if reader is None:
        return None
    try:
        run: RunRow | None = reader.get_run(run_id)
    except InputError as exc:
        raise InputError(exc.message, field=field) from None
    return run


def handle_kill(args: argparse.Namespace) -> int:
    if args.list:
        return _list_kill_switches(args)
    scope, target = _scope(args)
    reason = require_reason(args)
    if args.in_run and scope != "agent":
        raise InputError("only goes with --agent", field="--in-run")
    store = store_location_arg(args)
    reader = open_trace_reader(store)
    try:
        run_id = args.in_run
        if scope == "run":
            run = _resolve_run(reader, target or "", "--run")
            if run is None:
                raise InputError(f"no run {target!r} in store {store} (see `flightdeck runs`)", field="--run")
            if run.status != "running":
                raise InputError(f"run {run.id} is not running (status {run.status}); there is nothing to "
                                 f"stop", field="--run")
            target = run.id
        if run_id:
            run = _resolve_run(reader, run_id, "--in-run")
            if run is None:
                raise InputError(f"no run {run_id!r} in store {store}", field="--in-run")
            run_id = run.id
        preview = None
        if reader is not None:
            from engine.controls.preview import preview_kill

            preview = preview_kill(reader, scope, target, run_id)
    finally:
        if reader is not None:
            reader.close()
    label = _label(scope, target, run_id)
    _print_preview(label, args.mode, preview)
    if not confirm(args, f"set a {args.mode} switch"):
        return 1
    with open_api(args, create=True) as api:
        switch = api.set_kill(scope, target, args.mode, reason, run_id=run_id)
        if switch.already_active:
            print(f"kill switch #{switch.id} ({label}, {switch.mode}) was already active: set by "
                  f"{switch.operator} at {timestamp(switch.created)}")
        else:
            print(f"kill switch #{switch.id} set: {label}, mode {switch.mode}, by {switch.operator}")
        return _await_ack(api, switch, args.wait_ack)


def _label(scope: str, target: str | None, run_id: str | None) -> str:
    from engine.controls.labels import switch_label

    return switch_label(scope, target, run_id)


def _print_preview(label: str, mode: str, preview: Any | None) -> None:
    verb = {"kill": "stop", "drain": "drain", "pause": "pause"}[mode]
    if preview is None:
        print(f"{mode} {label}: no engine has recorded runs on this store yet, so nothing is running to {verb}.")
        return
    if preview.empty:
        print(f"{mode} {label}: nothing running matches right now. The switch still applies to matching work that "
              f"starts later, until it is released.")
        return
    print(f"{mode} {label} would {verb}: {len(preview.runs)} run(s), {len(preview.agents)} running agent(s), "
          f"{len(preview.calls)} in-flight call(s)")
    now = time.time()
    if preview.runs:
        print(table(("RUN", "HIERARCHY", "STATUS", "STARTED"),
                    [(r["id"], r["hierarchy"], r["status"], age(r["started"], now)) for r in preview.runs]))
    work = [("agent", a["agent"], "", a["run_id"], age(a["started"], now)) for a in preview.agents]
    work += [(c["kind"], c["name"], c["agent"] or "", c["run_id"], age(c["started"], now)) for c in preview.calls]
    if work:
        print()
        print(table(("KIND", "NAME", "AGENT", "RUN", "STARTED"), work))


def _await_ack(api: Any, switch: KillSwitch, timeout: float) -> int:
    """Wait (bounded) for the engines to acknowledge the switch, re-reading only when the control plane changed. On
    a store directory that is its one engine; on a Postgres store every live engine of the fleet (each applies the
    switch and records its own acknowledgement: "acknowledged by 2 of 3 live engines")."""
    if switch.acked is None and not _running(api):
        print("no engine is running on this store: the switch stays in force and the next engine applies it "
              "when it starts")
        return 0
    on_postgres = isinstance(api.location, PostgresLocation)
    live = [e for e in api.engines() if e.alive]
    if live:  # on a Postgres store, every engine of the fleet (each listens for the switch)
        print("live engine(s) it reaches: " + ", ".join(f"{str(e.id)[:12]} (pid {e.pid} on {e.host})"
                                                         for e in live))
    expected = {str(e.id) for e in live}

    def acked_by() -> dict[str, float]:
        return {a.engine_id: a.acked for a in api.kill_switch_acks([switch.id])}

    def done(acks: dict[str, float]) -> bool:
        # A directory's engine is the one that holds the lock: any ack is its. A fleet's: every live one.
        return bool(acks) and (not on_postgres or expected <= acks.keys())

    deadline = time.monotonic() + timeout
    version = api.data_version()
    acks = acked_by()
    while not done(acks) and time.monotonic() < deadline:
        time.sleep(min(ACK_POLL_S, max(0.0, deadline - time.monotonic())))
        latest = api.data_version()
        if latest != version:
            version = latest
            acks = acked_by()
    acks = acked_by()  # one last look: an ack may have landed during the final wait
    if acks and not on_postgres:
        engine_id, at = min(acks.items(), key=lambda item: item[1])
        print(f"acknowledged by engine {engine_id[:12]} at {timestamp(at)}")
        return 0
    if on_postgres and acks:
        reached = expected & acks.keys()
        print(f"acknowledged by {len(reached)} of {len(expected)} live engine(s): "
              + ", ".join(f"{engine_id[:12]} at {timestamp(at)}" for engine_id, at in
                          sorted(acks.items(), key=lambda item: item[1]) if engine_id in expected))
        if expected <= acks.keys():
            return 0
    running = [e for e in _running(api) if str(e.id) not in acks]
    if not running:
        if not acks:
            print("no engine is running on this store: the switch stays in force and the next engine applies it "
                  "when it starts")
        return 0
    for engine in running:
        state = "alive" if engine.alive else f"stale, last heartbeat {age(engine.heartbeat)}"
        stop = (f"stop it on {engine.host} (kill -TERM {engine.pid})" if on_postgres else
                f"stop it with:\n  flightdeck engines --terminate {engine.pid} --reason \"did not acknowledge kill "
                f"switch #{switch.id}\"")
        print(f"warning: engine pid {engine.pid} ({state}) did not acknowledge the switch within {timeout:g}s. "
              f"If its event loop is wedged, {stop}", file=sys.stderr)
    return 1


def _running(api: Any) -> list[Any]:
    """The engines expected to acknowledge: every unstopped one of a store directory (one, holding the lock); on a
    Postgres store the live ones only, since a dead engine of a fleet stays unstopped until takeover (issue 16)."""
    engines = [e for e in api.engines() if e.stopped is None]
    if isinstance(api.location, PostgresLocation):
        return [e for e in engines if e.alive]
    return engines


def _list_kill_switches(args: argparse.Namespace) -> int:
    with open_api(args, create=False, read_only=True) as api:
        switches = api.active_kill_switches()
        acks: dict[int, list[KillSwitchAck]] = {}
        for ack in api.kill_switch_acks([s.id for s in switches]):
            acks.setdefault(ack.switch_id, []).append(ack)
    if args.json:
        print_json([{**pick(s, KILL_FIELDS), "acks": [pick(a, ("engine_id", "acked")) for a in acks.get(s.id, [])]}
                    for s in switches])
        return 0
    if not switches:
        print("no active kill switches")
        return 0
    rows = [(s.id, _label(s.scope, s.target, s.run_id), s.mode, s.operator, timestamp(s.created),
             _acked_text(acks.get(s.id, [])), short(s.reason, 50)) for s in switches]
    print(table(("ID", "SCOPE", "MODE", "BY", "SET", "ACKED", "REASON"), rows, right={0}))
    return 0


def _acked_text(acks: list[KillSwitchAck]) -> str:
    """`no`, `yes` (one engine: a store directory's), or how many engines of a fleet acknowledged it."""
    if not acks:
        return "no"
    return "yes" if len(acks) == 1 else f"yes ({len(acks)} engines)"


def handle_release(args: argparse.Namespace) -> int:
    if args.in_run and not args.agent:
        raise InputError("only goes with --agent", field="--in-run")
    with open_api(args, create=False) as api:
        if args.id is not None:
            released = api.release(args.id, reason=args.reason)
        else:
            scope, target = _scope(args)
            run_id = args.in_run
            # `kill` stored the full run id it resolved from a prefix, so a prefix must resolve the same way here.
            reader = open_trace_reader(api.location)
            try:
                if scope == "run" and target:
                    found = _resolve_run(reader, target, "--run")
                    target = found.id if found is not None else target
                if run_id:
                    found = _resolve_run(reader, run_id, "--in-run")
                    run_id = found.id if found is not None else run_id
            finally:
                if reader is not None:
                    reader.close()
            released = api.release(scope=scope, target=target, run_id=run_id, reason=args.reason)
    for row in released:
        print(f"released kill switch #{row.id} ({_label(row.scope, row.target, row.run_id)}, "
              f"{row.mode}) by {row.released_by}")
    return 0

