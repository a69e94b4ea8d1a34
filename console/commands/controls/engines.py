"""`flightdeck engines` (and `--terminate PID`): the engines recorded on a store, and stopping a wedged one."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from console.cli import add_store_argument
from console.commands.argtypes import non_negative, positive_int
from console.commands.controls.common import (
    add_operator,
    confirm,
    open_api,
    require_reason,
    store_dir_arg,
    store_location_arg,
)
from console.output import pick, print_json, table
from engine.errors import InputError
from engine.store.control_rows import parsed_json
from engine.timefmt import age, timestamp

ENGINE_FIELDS = ("id", "pid", "host", "user", "version", "started", "heartbeat", "stopped", "alive", "stale",
                 "holds_lock", "store", "export", "durable")


def add_engines(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    engines = commands.add_parser(
        "engines", help="list engines, or terminate a wedged one",
        description="List the engines recorded on this store. --terminate PID stops the store's engine when it "
                    "no longer answers (SIGTERM, then SIGKILL after --grace seconds); only the process holding "
                    "the store lock, and only if it is yours.")
    engines.add_argument("--json", action="store_true", help="print a JSON list of engine objects")
    engines.add_argument("--terminate", type=positive_int, metavar="PID", help="the engine process to stop")
    engines.add_argument("--grace", type=non_negative, default=5.0, metavar="SECONDS",
                         help="how long SIGTERM may take before SIGKILL (default 5)")
    engines.add_argument("--reason", metavar="TEXT", help="why (required with --terminate)")
    engines.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    add_operator(engines)
    add_store_argument(engines)
    engines.set_defaults(handler=handle_engines)



def handle_engines(args: argparse.Namespace) -> int:
    from engine.controls.terminate import read_lock_holder

    if args.terminate is not None:
        return _terminate(args)
    from engine.store.location import StoreDirectory

    location = store_location_arg(args)
    with open_api(args, create=False, read_only=True) as api:
        # Dicts from here on: the listing adds what the lock file says to each engine's row.
        engines = [engine.as_dict() for engine in api.engines()]
    # A Postgres store has no lock file: several engines share it by design, each alive by its own heartbeat, and
    # each publishes what a lock holder writes in engine.lock (durable, store and export health) in its registry
    # row instead (trace schema v5: `published`; None for a row from before it).
    on_directory = isinstance(location, StoreDirectory)
    holder = (read_lock_holder(location.path) or {}) if on_directory else {}
    pickups: dict[str, tuple[bool, bool]] = {}
    if not on_directory:  # what each durable engine's current life says it takes (the resume path reads the same)
        from engine.store.pg.durable_takers import pickup_states

        pickups = pickup_states(location)
    for engine in engines:
        published = engine.pop("published", None)
        if on_directory:
            engine["holds_lock"] = (engine["stopped"] is None and holder.get("pid") == engine["pid"]
                                    and holder.get("host") == engine["host"])
            source = holder if engine["holds_lock"] else None
        else:
            engine["holds_lock"] = False
            source = _published(published)
        running = source is not None and engine["stopped"] is None
        # The trace store's health as the engine reports it (engine.lock's `store`): ok, degraded, failed.
        engine["store"] = _store_health(source) if running and source is not None else None
        # The OpenTelemetry exporter's sent and dropped spans (engine.lock's `export`), when it has any to tell.
        engine["export"] = _export_health(source) if running and source is not None else None
        # Durable, and taking operators' resume and reconcile requests (engine.lock's `durable`, which the engine
        # writes once DBOS is open: runtime/durable_runs.py). Known for the lock holder, or from the registry row;
        # on Postgres `durable_pickup` (written at once, per life) wins over the heartbeat-published copy.
        engine["durable"] = _durable(source) if source is not None else None
        if engine["id"] in pickups:
            pickup, auto_resume = pickups[engine["id"]]
            engine["durable"] = {"durable": True, "pickup": pickup, "auto_resume": auto_resume}
    if args.json:
        print_json([pick(e, ENGINE_FIELDS) for e in engines])
        return 0
    if not engines:
        print("no engine has run on this store yet")
        return 0
    rows = [(e["id"][:12], e["pid"], e["host"], e["user"], e["version"], timestamp(e["started"]), age(e["heartbeat"]),
             ("alive" if e["alive"] else ("STALE" if e["stale"] else "stopped"))
             + (f", store {e['store']['state'].upper()}" if e["store"] and e["store"]["state"] != "ok" else "")
             + (", export DROPPING" if e["export"] and e["export"]["dropped_spans"] else ""),
             "yes" if e["holds_lock"] else "", _durable_words(e["durable"]))
            for e in engines]
    print(table(("ENGINE", "PID", "HOST", "USER", "VERSION", "STARTED", "HEARTBEAT", "STATE", "LOCK", "DURABLE"),
                rows, right={1}))
    for e in engines:
        store = e["store"]
        if store and store["state"] != "ok":
            print(f"\nengine pid {e['pid']}: trace store {store['state']} since {timestamp(store['since'])}: "
                  f"{store['error']}" + ("\n  no new model or tool call starts until commits succeed again; free "
                                         "space (or fix the I/O error) and it carries on by itself"
                                         if store["state"] == "degraded" else ""))
        export = e["export"]
        if export and export["dropped_spans"]:
            print(f"\nengine pid {e['pid']}: OpenTelemetry export to {export['endpoint']}: "
                  f"{export['dropped_spans']} span(s) dropped, {export['sent_spans']} sent (exporter breaker "
                  f"{export['breaker']}; last error: {export['error'] or 'none'})\n  the runs are unaffected and "
                  f"stay in the store; fix the collector, then `flightdeck export otlp --since 24h` sends them again")
    return 0


def _published(text: str | None) -> dict[str, Any] | None:
    """An engine's registry row's `published` object; None before trace schema v5 (not known)."""
    if text is None:
        return None
    value = parsed_json(text)
    return value if isinstance(value, dict) else {}


def _store_health(holder: dict[str, Any]) -> dict[str, Any]:
    store = holder.get("store")
    if not isinstance(store, dict) or store.get("state") not in ("ok", "degraded", "failed", "fenced"):
        return {"state": "ok", "error": None, "since": holder.get("started")}
    return {"state": store["state"], "error": store.get("error"), "since": store.get("since")}


def _durable(holder: dict[str, Any]) -> dict[str, Any]:
    """{durable, pickup, auto_resume}: a durable engine (`flightdeck run --durable`, serve) and whether it takes
    operators' resume and reconcile requests now (`pickup`; not `flightdeck resume`'s own engine, nor one closing)
    and carries reconciled runs on by itself (`auto_resume`)."""
    record = holder.get("durable")
    if not isinstance(record, dict):
        return {"durable": False, "pickup": False, "auto_resume": False}
    return {"durable": True, "pickup": bool(record.get("pickup")), "auto_resume": bool(record.get("auto_resume"))}


def _durable_words(durable: dict[str, Any] | None) -> str:
    if durable is None:
        return ""  # not the lock holder: what it was is not recorded
    if not durable["durable"]:
        return "no"
    if not durable["pickup"]:
        return "yes, takes no requests"
    return "yes, takes resume+reconcile" if durable["auto_resume"] else "yes, takes resume"


def _export_health(holder: dict[str, Any]) -> dict[str, Any] | None:
    export = holder.get("export")
    if not isinstance(export, dict) or not isinstance(export.get("dropped_spans"), int):
        return None
    return {"endpoint": str(export.get("endpoint") or "?"), "sent_spans": int(export.get("sent_spans") or 0),
            "dropped_spans": export["dropped_spans"], "breaker": str(export.get("breaker") or "?"),
            "error": export.get("error"), "at": export.get("at")}


def _terminate(args: argparse.Namespace) -> int:
    from engine.controls.terminate import check_terminable, terminate_engine
    from engine.store.location import PostgresLocation

    reason = require_reason(args)
    if isinstance(store_location_arg(args), PostgresLocation):
        raise InputError("stops the engine holding a store directory's lock; an engine on a Postgres store holds "
                         "none: stop it on its own host (kill -TERM PID; `flightdeck engines` shows host and pid)",
                         field="--terminate")
    store_dir = store_dir_arg(args)
    with open_api(args, create=False) as api:
        holder = check_terminable(store_dir, args.terminate)  # refuse before asking, not after
        print(f"terminate engine pid {args.terminate} (user {holder.get('user')}, store {store_dir}): SIGTERM, "
              f"then SIGKILL after {args.grace:g}s")
        if not confirm(args, "terminate an engine"):
            return 1
        result = terminate_engine(store_dir, args.terminate, api.operator, reason, args.grace, api=api)
    if result.exited:
        print(f"engine pid {result.pid} stopped after {' then '.join(result.signals) or 'no signal (already gone)'} "
              f"({result.waited_s:.1f}s); audit row #{result.audit_id}")
        return 0
    print(f"engine pid {result.pid} is still running after {' and '.join(result.signals)}; audit row "
          f"#{result.audit_id}", file=sys.stderr)
    return 1
