"""Operator controls on the command line: kill / release, approvals, safe-mode flags, breakers, the audit log and
engines. Every acting command takes --reason (required, recorded in the audit log) and --operator NAME (default
$FLIGHTDECK_OPERATOR, else the OS user); each action and its audit row are one control.db transaction.

JSON shapes (stable; a documented interface):
- `kill --list --json`: a list of kill switches: id, scope, target, run_id, mode, reason, operator, created, acked,
  acked_by (active ones only, so released fields are omitted).
- `approvals --json`: a list of approvals, oldest request first (with --all: every status, newest first): id, status,
  run_id, span_id, agent, tool, arguments (object), args_hash (sha256 of the canonical arguments: pass it to
  `approve/deny --expect-hash`), risk, reason (the model's), requested, deadline, level, on_timeout, decided,
  decided_by, decision_reason, edited_arguments (object or null).
- `safe-mode list --json`: a list of active flags: id, name, value, scope, target, previous_value, source, reason,
  operator, created, acked.
- `breakers list --json`: a list with one object per breaker key known from the engine's report or from overrides:
  key, state (null until the engine reports breaker states), reported (the engine's row or null), overrides (list
  of id, action, reason, operator, created, applied, applied_by; newest first).
- `audit --json`: a list of audit rows, newest first: id, ts, actor, action, target, before, after, reason,
  prev_hash, hash. `audit verify --json`: one object: ok, rows, first_bad_id, problem, anchored_seq (the audit row
  the engine's newest anchor in traces.db names, or null).
- `engines --json`: a list of engines, newest first: id, pid, host, user, version, started, heartbeat, stopped,
  alive, stale, holds_lock.

Times are Unix seconds (floats) in JSON and local wall-clock times on screen.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Callable

from console.commands.argtypes import non_negative, positive_int
from console.cli import add_store_argument
from console.output import age, print_json, table, when
from engine.controls.schema import FLAG_SCOPES, KILL_MODES
from engine.errors import InputError

OPERATOR_ENV = "FLIGHTDECK_OPERATOR"
DEFAULT_WAIT_ACK_S = 2.0
ACK_POLL_S = 0.05
BREAKER_ACTIONS = {"open": "force_open", "reset": "reset", "disable": "disable"}

KILL_FIELDS = ("id", "scope", "target", "run_id", "mode", "reason", "operator", "created", "acked", "acked_by")
APPROVAL_FIELDS = ("id", "status", "run_id", "span_id", "agent", "tool", "arguments", "args_hash", "risk", "reason",
                   "requested", "deadline", "level", "on_timeout", "decided", "decided_by", "decision_reason",
                   "edited_arguments")
FLAG_FIELDS = ("id", "name", "value", "scope", "target", "previous_value", "source", "reason", "operator", "created",
               "acked")
OVERRIDE_FIELDS = ("id", "action", "reason", "operator", "created", "applied", "applied_by")
AUDIT_FIELDS = ("id", "ts", "actor", "action", "target", "before", "after", "reason", "prev_hash", "hash")
ENGINE_FIELDS = ("id", "pid", "host", "user", "version", "started", "heartbeat", "stopped", "alive", "stale",
                 "holds_lock", "store")


# ------------------------------------------------------------------------------------------------ parsers

def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    before = set(commands.choices)
    _add_kill(commands)
    _add_release(commands)
    _add_approvals(commands)
    _add_safe_mode(commands)
    _add_breakers(commands)
    _add_audit(commands)
    _add_engines(commands)
    for name, parser in commands.choices.items():
        if name not in before:
            _wrap_handlers(parser)


# The API names its fields as the API spells them; on the command line the operator typed a flag.
_CLI_FIELDS = {"operator": "--operator", "reason": "--reason", "key": "KEY", "approval": "ID",
               "expected_args_hash": "--expect-hash", "edited_arguments": "--edit-args", "mode": "--mode",
               "run_id": "--in-run"}


def _with_cli_fields(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except InputError as exc:
            if exc.field in _CLI_FIELDS and type(exc) is InputError:
                raise InputError(exc.message, field=_CLI_FIELDS[exc.field]) from None
            raise
    return run


def _wrap_handlers(parser: argparse.ArgumentParser) -> None:
    handler = parser.get_default("handler")
    if handler is not None:
        parser.set_defaults(handler=_with_cli_fields(handler))
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _wrap_handlers(child)


def _add_operator(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--operator", metavar="NAME",
                        help=f"who is acting, for the audit log (default: ${OPERATOR_ENV}, else your user name)")


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


def _add_kill(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
    _add_operator(kill)
    add_store_argument(kill)
    kill.set_defaults(handler=handle_kill)


def _add_release(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    release = commands.add_parser(
        "release", help="release kill switches",
        description="Release one kill switch (--id) or every active switch of a scope. Audited.")
    _add_scope_group(release, with_id=True)
    release.add_argument("--reason", metavar="TEXT", required=True, help="why (goes to the audit log)")
    _add_operator(release)
    add_store_argument(release)
    release.set_defaults(handler=handle_release)


def _add_approvals(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    approvals = commands.add_parser("approvals", help="list tool calls waiting for an operator",
                                    description="List pending approval requests, oldest first.")
    approvals.add_argument("--all", action="store_true", help="every request, decided ones too, newest first")
    approvals.add_argument("--limit", type=positive_int, default=100, metavar="N", help="with --all (default 100)")
    approvals.add_argument("--json", action="store_true", help="print a JSON list of approval objects")
    add_store_argument(approvals)
    approvals.set_defaults(handler=handle_approvals)

    for name, verb in (("approve", "approve"), ("deny", "deny")):
        parser = commands.add_parser(
            name, help=f"{verb} a pending tool call",
            description=f"{verb.capitalize()} one pending request. The decision binds to that request: it fails "
                        f"(exit 2) if it was already decided, has expired, or (with --expect-hash) its arguments "
                        f"are not the ones you reviewed.")
        parser.add_argument("approval_id", metavar="ID", help="the approval id (ap-...)")
        if name == "approve":
            parser.add_argument("--edit-args", metavar="JSON",
                                help="approve with these arguments instead (a JSON object; the engine validates "
                                     "it against the tool's schema)")
        parser.add_argument("--expect-hash", metavar="SHA256",
                            help="the args_hash you reviewed (at least 8 hex digits)")
        parser.add_argument("--reason", metavar="TEXT", required=True, help="why (goes to the audit log)")
        _add_operator(parser)
        add_store_argument(parser)
        parser.set_defaults(handler=handle_approve if name == "approve" else handle_deny)


def _add_safe_mode(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from engine.controls.flags import FLAGS

    vocabulary = "\n".join(
        f"  {spec.name} = {' | '.join(spec.values) if spec.values else 'N (a positive whole number)'}"
        f"   [{', '.join(spec.scopes)}]" for spec in FLAGS)
    safe = commands.add_parser(
        "safe-mode", help="list, set or clear safe-mode flags",
        description="Safe-mode flags change what the engine allows, at global, hierarchy or run scope (the most "
                    "specific wins).",
        epilog="Flags:\n" + vocabulary, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = safe.add_subparsers(dest="safe_action", metavar="ACTION", parser_class=type(safe))

    listing = actions.add_parser("list", help="active flags")
    listing.add_argument("--json", action="store_true", help="print a JSON list of flag objects")
    add_store_argument(listing)
    listing.set_defaults(handler=handle_safe_mode_list)

    docs = "\n\n".join(textwrap.fill(f"{spec.name}: {spec.doc}", width=78, subsequent_indent="  ")
                         for spec in FLAGS)
    setting = actions.add_parser("set", help="set FLAG=VALUE", description="Set a flag (replacing the value it had "
                                 "at that scope, which is kept for rollback).", epilog=docs,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    setting.add_argument("assignment", metavar="FLAG=VALUE")
    clearing = actions.add_parser("clear", help="clear FLAG", description="Clear a flag at a scope.")
    clearing.add_argument("flag", metavar="FLAG")
    for parser, handler in ((setting, handle_safe_mode_set), (clearing, handle_safe_mode_clear)):
        parser.add_argument("--scope", default="global", metavar="SCOPE",
                            help="global (default), hierarchy:NAME or run:ID")
        parser.add_argument("--reason", metavar="TEXT", required=True, help="why (goes to the audit log)")
        _add_operator(parser)
        add_store_argument(parser)
        parser.set_defaults(handler=handler)
    safe.set_defaults(handler=_usage(safe))


def _add_breakers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    breakers = commands.add_parser(
        "breakers", help="list circuit breakers, or force one open / reset / disable it",
        description="`breakers list` shows breaker states as the engine reports them and the overrides asked "
                    "for; open / reset / disable KEY asks the engine to force a breaker open, close it with an "
                    "empty window, or let every call through. KEY is tool:NAME, model:NAME or delegation:NAME.")
    breakers.add_argument("action", choices=("list", *BREAKER_ACTIONS), metavar="ACTION",
                          help="list | open | reset | disable")
    breakers.add_argument("key", nargs="?", metavar="KEY", help="the breaker, e.g. tool:crm_lookup")
    breakers.add_argument("--reason", metavar="TEXT", help="why (required to act; goes to the audit log)")
    breakers.add_argument("--json", action="store_true", help="with list: print JSON")
    _add_operator(breakers)
    add_store_argument(breakers)
    breakers.set_defaults(handler=handle_breakers)


def _add_audit(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    audit = commands.add_parser(
        "audit", help="show or verify the audit log",
        description="`audit` lists operator and engine actions, newest first. `audit verify` checks the hash "
                    "chain: exit 0 when intact, 1 naming the first row that was edited, deleted or moved.")
    audit.add_argument("action", nargs="?", choices=("verify",), metavar="verify", help="check the hash chain")
    audit.add_argument("--limit", type=positive_int, default=50, metavar="N", help="rows to show (default 50)")
    audit.add_argument("--before", type=positive_int, metavar="ID", help="only rows older than this id")
    audit.add_argument("--json", action="store_true", help="print JSON")
    add_store_argument(audit)
    audit.set_defaults(handler=handle_audit)


def _add_engines(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
    _add_operator(engines)
    add_store_argument(engines)
    engines.set_defaults(handler=handle_engines)


def _usage(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    def show(args: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        return 2
    return show






# ------------------------------------------------------------------------------------------------ shared

def operator_name(args: argparse.Namespace) -> str:
    from engine.store.control import current_user

    name: str | None = getattr(args, "operator", None)
    if name is None:
        name = os.environ.get(OPERATOR_ENV) or current_user()
    if not name.strip():
        raise InputError("must not be empty", field="--operator")
    return name.strip()


def _store_dir(args: argparse.Namespace) -> Path:
    from engine.store import resolve_store_dir

    return resolve_store_dir(args.store)


def _api(args: argparse.Namespace, *, create: bool, read_only: bool = False) -> Any:
    """read_only: for commands that only read; they open control.db read-only, so they work on a store whose files
    and directory are read-only (forensics on a copy, a mounted snapshot)."""
    from engine.controls.api import ControlAPI

    return ControlAPI(_store_dir(args), operator_name(args), create=create, read_only=read_only)


def _reader(store_dir: Path) -> Any | None:
    """A TraceReader, or None when the store has no traces yet (no engine has ever run on it)."""
    from engine.store import open_reader
    from engine.store.files import TRACES_DB

    if not (store_dir / TRACES_DB).is_file():
        return None
    return open_reader(store_dir)


def _require_reason(args: argparse.Namespace) -> str:
    reason: str | None = args.reason
    if not reason or not reason.strip():
        raise InputError("is required (it goes to the audit log)", field="--reason")
    return reason


def _confirm(args: argparse.Namespace, what: str) -> bool:
    """--yes, or a person typing "yes" on a terminal. Without a terminal and without --yes: refuse (exit 2),
    because a script that forgot --yes must not be taken as consent."""
    if args.yes:
        return True
    if not sys.stdin.isatty():
        raise InputError(f"refusing to {what} without confirmation: stdin is not a terminal, pass --yes",
                         field="--yes")
    try:
        answer = input("type yes to continue: ")
    except EOFError:
        answer = ""
    if answer.strip().lower() != "yes":
        print("aborted: nothing was changed", file=sys.stderr)
        return False
    return True


def _pick(row: dict[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    return {name: row.get(name) for name in fields}


def _short(value: Any, width: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return text if len(text) <= width else text[:width - 1] + "…"


# ------------------------------------------------------------------------------------------------ kill / release

def _scope(args: argparse.Namespace) -> tuple[str, str | None]:
    for scope in ("run", "agent", "tool", "hierarchy"):
        value = getattr(args, scope)
        if value is not None:
            if not value.strip():
                raise InputError("must not be empty", field=f"--{scope}")
            return scope, value.strip()
    return "global", None


def _resolve_run(reader: Any, run_id: str, field: str) -> dict[str, Any] | None:
    if reader is None:
        return None
    try:
        run: dict[str, Any] | None = reader.get_run(run_id)
    except InputError as exc:
        raise InputError(exc.message, field=field) from None
    return run


def handle_kill(args: argparse.Namespace) -> int:
    if args.list:
        return _list_kill_switches(args)
    scope, target = _scope(args)
    reason = _require_reason(args)
    if args.in_run and scope != "agent":
        raise InputError("only goes with --agent", field="--in-run")
    store_dir = _store_dir(args)
    reader = _reader(store_dir)
    try:
        run_id = args.in_run
        if scope == "run":
            run = _resolve_run(reader, target or "", "--run")
            if run is None:
                raise InputError(f"no run {target!r} in store {store_dir} (see `flightdeck runs`)", field="--run")
            if run["status"] != "running":
                raise InputError(f"run {run['id']} is not running (status {run['status']}); there is nothing to "
                                 f"stop", field="--run")
            target = run["id"]
        if run_id:
            run = _resolve_run(reader, run_id, "--in-run")
            if run is None:
                raise InputError(f"no run {run_id!r} in store {store_dir}", field="--in-run")
            run_id = run["id"]
        preview = None
        if reader is not None:
            from engine.controls.preview import preview_kill

            preview = preview_kill(reader, scope, target, run_id)
    finally:
        if reader is not None:
            reader.close()
    label = _label(scope, target, run_id)
    _print_preview(label, args.mode, preview)
    if not _confirm(args, f"set a {args.mode} switch"):
        return 1
    with _api(args, create=True) as api:
        switch = api.set_kill(scope, target, args.mode, reason, run_id=run_id)
        if switch["already_active"]:
            print(f"kill switch #{switch['id']} ({label}, {switch['mode']}) was already active: set by "
                  f"{switch['operator']} at {when(switch['created'])}")
        else:
            print(f"kill switch #{switch['id']} set: {label}, mode {switch['mode']}, by {switch['operator']}")
        return _await_ack(api, switch, args.wait_ack)


def _label(scope: str, target: str | None, run_id: str | None) -> str:
    from engine.controls.api import switch_label

    return switch_label({"scope": scope, "target": target, "run_id": run_id})


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


def _await_ack(api: Any, switch: dict[str, Any], timeout: float) -> int:
    """Wait (bounded) for the engine to acknowledge the switch, re-reading only when control.db changed."""
    current = switch
    if current["acked"] is None and not [e for e in api.engines() if e["stopped"] is None]:
        print("no engine is running on this store: the switch stays in force and the next engine applies it "
              "when it starts")
        return 0
    deadline = time.monotonic() + timeout
    version = api.data_version()
    while current["acked"] is None and time.monotonic() < deadline:
        time.sleep(min(ACK_POLL_S, max(0.0, deadline - time.monotonic())))
        latest = api.data_version()
        if latest != version:
            version = latest
            current = api.kill_switch(switch["id"])
    if current["acked"] is None:  # one last look: the ack may have landed during the final wait
        current = api.kill_switch(switch["id"])
    if current["acked"] is not None:
        print(f"acknowledged by engine {str(current['acked_by'])[:12]} at {when(current['acked'])}")
        return 0
    running = [e for e in api.engines() if e["stopped"] is None]
    if not running:
        print("no engine is running on this store: the switch stays in force and the next engine applies it "
              "when it starts")
        return 0
    for engine in running:
        state = "alive" if engine["alive"] else f"stale, last heartbeat {age(engine['heartbeat'])}"
        print(f"warning: engine pid {engine['pid']} ({state}) did not acknowledge the switch within {timeout:g}s. "
              f"If its event loop is wedged, stop it with:\n  flightdeck engines --terminate {engine['pid']} "
              f"--reason \"did not acknowledge kill switch #{switch['id']}\"", file=sys.stderr)
    return 1


def _list_kill_switches(args: argparse.Namespace) -> int:
    with _api(args, create=False, read_only=True) as api:
        switches = api.active_kill_switches()
    if args.json:
        print_json([_pick(s, KILL_FIELDS) for s in switches])
        return 0
    if not switches:
        print("no active kill switches")
        return 0
    rows = [(s["id"], _label(s["scope"], s["target"], s["run_id"]), s["mode"], s["operator"], when(s["created"]),
             "yes" if s["acked"] else "no", _short(s["reason"], 50)) for s in switches]
    print(table(("ID", "SCOPE", "MODE", "BY", "SET", "ACKED", "REASON"), rows, right={0}))
    return 0


def handle_release(args: argparse.Namespace) -> int:
    if args.in_run and not args.agent:
        raise InputError("only goes with --agent", field="--in-run")
    with _api(args, create=False) as api:
        if args.id is not None:
            released = api.release(args.id, reason=args.reason)
        else:
            scope, target = _scope(args)
            run_id = args.in_run
            # `kill` stored the full run id it resolved from a prefix, so a prefix must resolve the same way here.
            reader = _reader(api.store_dir)
            try:
                if scope == "run" and target:
                    target = (_resolve_run(reader, target, "--run") or {}).get("id", target)
                if run_id:
                    run_id = (_resolve_run(reader, run_id, "--in-run") or {}).get("id", run_id)
            finally:
                if reader is not None:
                    reader.close()
            released = api.release(scope=scope, target=target, run_id=run_id, reason=args.reason)
    for row in released:
        print(f"released kill switch #{row['id']} ({_label(row['scope'], row['target'], row['run_id'])}, "
              f"{row['mode']}) by {row['released_by']}")
    return 0


# ------------------------------------------------------------------------------------------------ approvals

def handle_approvals(args: argparse.Namespace) -> int:
    with _api(args, create=False, read_only=True) as api:
        rows = api.list_approvals(args.limit) if args.all else api.pending_approvals()
        now = api.now()
    if args.json:
        print_json([_pick(r, APPROVAL_FIELDS) for r in rows])
        return 0
    if not rows:
        print("no approvals" if args.all else "no pending approvals")
        return 0
    table_rows = []
    for r in rows:
        if r["status"] == "pending":
            left = r["deadline"] - now
            due = f"{left:.0f}s left" if left > 0 else "expired"
        else:
            due = f"{r['status']} by {r['decided_by']}"
        table_rows.append((r["id"], r["tool"], r["agent"], r["run_id"], r["risk"] or "-", age(r["requested"], now),
                           due, r["level"], r["args_hash"][:12], _short(r["arguments"], 50),
                           _short(r["reason"] or "-", 40)))
    print(table(("ID", "TOOL", "AGENT", "RUN", "RISK", "WAITING", "DECISION", "LEVEL", "HASH", "ARGUMENTS",
                 "MODEL'S REASON"), table_rows, right={7}))
    if not args.all:
        print("\ndecide with: flightdeck approve ID --reason TEXT [--expect-hash HASH] [--edit-args JSON]"
              "   |   flightdeck deny ID --reason TEXT")
    return 0


def _edited_arguments(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise InputError(f"not valid JSON: {exc}", field="--edit-args") from None
    if not isinstance(value, dict):
        raise InputError(f"must be a JSON object like '{{\"amount\": 10}}', got {type(value).__name__}",
                         field="--edit-args")
    return value


def handle_approve(args: argparse.Namespace) -> int:
    edited = _edited_arguments(args.edit_args)
    with _api(args, create=False) as api:
        row = api.approve(args.approval_id, args.reason, edited_arguments=edited,
                          expected_args_hash=args.expect_hash)
    note = " with edited arguments" if edited is not None else ""
    print(f"approved {row['id']}{note}: tool {row['tool']} for agent {row['agent']} in run {row['run_id']} "
          f"(by {row['decided_by']})")
    return 0


def handle_deny(args: argparse.Namespace) -> int:
    with _api(args, create=False) as api:
        row = api.deny(args.approval_id, args.reason, expected_args_hash=args.expect_hash)
    print(f"denied {row['id']}: tool {row['tool']} for agent {row['agent']} in run {row['run_id']} "
          f"(by {row['decided_by']})")
    return 0


# ------------------------------------------------------------------------------------------------ safe mode

def parse_scope(text: str) -> tuple[str, str | None]:
    """`global`, `hierarchy:NAME` or `run:ID` -> (scope, target)."""
    text = (text or "").strip()
    if text == "global":
        return "global", None
    scope, sep, target = text.partition(":")
    if not sep or scope not in FLAG_SCOPES or scope == "global" or not target.strip():
        raise InputError(f"expected global, hierarchy:NAME or run:ID, got {text!r}", field="--scope")
    return scope, target.strip()


def handle_safe_mode_list(args: argparse.Namespace) -> int:
    with _api(args, create=False, read_only=True) as api:
        flags = api.active_flags()
    if args.json:
        print_json([_pick(f, FLAG_FIELDS) for f in flags])
        return 0
    if not flags:
        print("no safe-mode flags set (see `flightdeck safe-mode --help` for the list)")
        return 0
    rows = [(f["name"], f["value"], "global" if f["scope"] == "global" else f"{f['scope']}:{f['target']}",
             f["previous_value"] or "(unset)", f["operator"] if f["source"] == "operator" else f["source"],
             when(f["created"]), "yes" if f["acked"] else "no", _short(f["reason"], 40)) for f in flags]
    print(table(("FLAG", "VALUE", "SCOPE", "WAS", "BY", "SET", "ACKED", "REASON"), rows))
    return 0


def handle_safe_mode_set(args: argparse.Namespace) -> int:
    name, sep, value = args.assignment.partition("=")
    if not sep or not name.strip():
        raise InputError(f"expected FLAG=VALUE, got {args.assignment!r}", field="FLAG=VALUE")
    scope, target = parse_scope(args.scope)
    with _api(args, create=True) as api:
        row = api.set_flag(name.strip(), value, scope, target, reason=args.reason)
    was = row["previous_value"] or "unset"
    print(f"{row['name']} = {row['value']} at {args.scope.strip()} (was {was}), flag #{row['id']} by {row['operator']}")
    return 0


def handle_safe_mode_clear(args: argparse.Namespace) -> int:
    scope, target = parse_scope(args.scope)
    with _api(args, create=False) as api:
        row = api.clear_flag(args.flag, scope, target, reason=args.reason)
    print(f"cleared {row['name']} at {args.scope.strip()} (it was {row['value']}) by {row['cleared_by']}")
    return 0


# ------------------------------------------------------------------------------------------------ breakers

def _reported_breakers(store_dir: Path) -> list[dict[str, Any]] | None:
    """Rows of traces.db's `breakers` table (the engine's current breaker states), or None until it has one."""
    from engine.store.files import TRACES_DB, connect, translate_sqlite_error

    path = store_dir / TRACES_DB
    if not path.is_file():
        return None
    conn = connect(path, read_only=True)
    try:
        if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'breakers'").fetchone() is None:
            return None
        cursor = conn.execute("SELECT * FROM breakers")
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, values)) for values in cursor.fetchall()]
    except sqlite3.Error as exc:
        raise translate_sqlite_error(exc, path, "read") from exc
    finally:
        conn.close()


def _breaker_key(row: dict[str, Any]) -> str:
    if row.get("key"):
        return str(row["key"])
    return f"{row.get('kind')}:{row.get('name')}"


def handle_breakers(args: argparse.Namespace) -> int:
    if args.action == "list":
        return _list_breakers(args)
    if not args.key:
        raise InputError(f"`breakers {args.action}` needs the breaker, e.g. tool:crm_lookup", field="KEY")
    reason = _require_reason(args)
    if args.action == "reset":
        _check_known_breaker(args)
    with _api(args, create=True) as api:
        row = api.override_breaker(args.key, BREAKER_ACTIONS[args.action], reason)
    print(f"breaker override #{row['id']}: {row['action']} {row['key']} by {row['operator']}; the engine applies it "
          f"on its next control check")
    return 0


def _check_known_breaker(args: argparse.Namespace) -> None:
    """Reset closes a breaker that exists: one the engine reported, or one an operator already overrode. Any other
    key is a typo, and its override would be recorded, audited and never match anything."""
    import difflib

    from engine.store.files import CONTROL_DB

    known = {_breaker_key(row) for row in _reported_breakers(_store_dir(args)) or []}
    if (_store_dir(args) / CONTROL_DB).is_file():
        with _api(args, create=False) as api:
            known |= {row["key"] for row in api.breaker_overrides(limit=10_000)}
    if args.key in known:
        return
    names = sorted(known)
    close = difflib.get_close_matches(args.key, names, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    listing = (f" (known: {', '.join(names)})" if names else
               " (the engine has not reported any breaker on this store yet)")
    raise InputError(f"unknown breaker {args.key!r}{hint}{listing}", field="KEY")


def _list_breakers(args: argparse.Namespace) -> int:
    store_dir = _store_dir(args)
    with _api(args, create=False, read_only=True) as api:
        overrides = api.breaker_overrides()
    reported = _reported_breakers(store_dir)
    keys: dict[str, dict[str, Any]] = {}
    for row in reported or []:
        key = _breaker_key(row)
        keys[key] = {"key": key, "state": row.get("state"), "reported": row, "overrides": []}
    for row in overrides:
        entry = keys.setdefault(row["key"], {"key": row["key"], "state": None, "reported": None, "overrides": []})
        entry["overrides"].append(_pick(row, OVERRIDE_FIELDS))
    entries = sorted(keys.values(), key=lambda e: e["key"])
    if args.json:
        print_json(entries)
        return 0
    if reported is None:
        print("the engine has not reported breaker states yet")
    if not entries:
        print("no breakers reported and no overrides asked for")
        return 0
    rows = []
    for entry in entries:
        last = entry["overrides"][0] if entry["overrides"] else None
        override = "-" if last is None else (
            f"{last['action']} by {last['operator']} ({'applied' if last['applied'] else 'pending'})")
        rows.append((entry["key"], entry["state"] or "-", override))
    print(table(("BREAKER", "STATE", "LAST OVERRIDE"), rows))
    return 0


# ------------------------------------------------------------------------------------------------ audit

def _print_verification(args: argparse.Namespace, result: Any) -> int:
    if args.json:
        print_json({"ok": result.ok, "rows": result.rows, "first_bad_id": result.first_bad_id,
                    "problem": result.problem, "anchored_seq": result.anchored_seq})
    elif result.ok:
        anchored = (f", matches the engine's record of row {result.anchored_seq} in traces.db"
                    if result.anchored_seq is not None else " (no engine has recorded an anchor in traces.db yet)")
        print(f"audit log intact: {result.rows} row(s), hash chain verified{anchored}")
    else:
        print(f"audit log TAMPERED at row {result.first_bad_id}: {result.problem}", file=sys.stderr)
    return 0 if result.ok else 1


def _verify_audit(args: argparse.Namespace) -> int:
    from engine.controls.anchor import anchor_problem, latest_anchor
    from engine.controls.audit import AuditVerification
    from engine.store.files import CONTROL_DB

    store_dir = _store_dir(args)
    anchor = latest_anchor(store_dir)
    if anchor is not None and not (store_dir / CONTROL_DB).is_file():
        # The whole of control.db deleted: the anchor in traces.db is the only trace of the log that was.
        return _print_verification(args, AuditVerification(False, 0, 1, anchor_problem(None, anchor),
                                                           anchored_seq=anchor.seq))
    with _api(args, create=False, read_only=True) as api:
        return _print_verification(args, api.verify_audit(anchor))


def handle_audit(args: argparse.Namespace) -> int:
    if args.action == "verify":
        return _verify_audit(args)
    with _api(args, create=False, read_only=True) as api:
        rows = api.audit_log(args.limit, before_id=args.before)
    if args.json:
        print_json([_pick(r, AUDIT_FIELDS) for r in rows])
        return 0
    if not rows:
        print("the audit log is empty")
        return 0
    print(table(("ID", "TIME", "ACTOR", "ACTION", "TARGET", "REASON"),
                [(r["id"], when(r["ts"]), r["actor"], r["action"], r["target"] or "-", _short(r["reason"] or "", 50))
                 for r in rows], right={0}))
    return 0


# ------------------------------------------------------------------------------------------------ engines

def handle_engines(args: argparse.Namespace) -> int:
    from engine.controls.terminate import read_lock_holder

    if args.terminate is not None:
        return _terminate(args)
    store_dir = _store_dir(args)
    with _api(args, create=False, read_only=True) as api:
        engines = api.engines()
    holder = read_lock_holder(store_dir) or {}
    for engine in engines:
        engine["holds_lock"] = (engine["stopped"] is None and holder.get("pid") == engine["pid"]
                                and holder.get("host") == engine["host"])
        # The trace store's health as the lock holder reports it (engine.lock's `store`): ok, degraded, failed.
        engine["store"] = _store_health(holder) if engine["holds_lock"] else None
    if args.json:
        print_json([_pick(e, ENGINE_FIELDS) for e in engines])
        return 0
    if not engines:
        print("no engine has run on this store yet")
        return 0
    rows = [(e["id"][:12], e["pid"], e["host"], e["user"], e["version"], when(e["started"]), age(e["heartbeat"]),
             ("alive" if e["alive"] else ("STALE" if e["stale"] else "stopped"))
             + (f", store {e['store']['state'].upper()}" if e["store"] and e["store"]["state"] != "ok" else ""),
             "yes" if e["holds_lock"] else "")
            for e in engines]
    print(table(("ENGINE", "PID", "HOST", "USER", "VERSION", "STARTED", "HEARTBEAT", "STATE", "LOCK"), rows,
                right={1}))
    for e in engines:
        store = e["store"]
        if store and store["state"] != "ok":
            print(f"\nengine pid {e['pid']}: trace store {store['state']} since {when(store['since'])}: "
                  f"{store['error']}" + ("\n  no new model or tool call starts until commits succeed again; free "
                                         "space (or fix the I/O error) and it carries on by itself"
                                         if store["state"] == "degraded" else ""))
    return 0


def _store_health(holder: dict[str, Any]) -> dict[str, Any]:
    store = holder.get("store")
    if not isinstance(store, dict) or store.get("state") not in ("ok", "degraded", "failed"):
        return {"state": "ok", "error": None, "since": holder.get("started")}
    return {"state": store["state"], "error": store.get("error"), "since": store.get("since")}


def _terminate(args: argparse.Namespace) -> int:
    from engine.controls.terminate import check_terminable, terminate_engine

    reason = _require_reason(args)
    store_dir = _store_dir(args)
    with _api(args, create=False) as api:
        holder = check_terminable(store_dir, args.terminate)  # refuse before asking, not after
        print(f"terminate engine pid {args.terminate} (user {holder.get('user')}, store {store_dir}): SIGTERM, "
              f"then SIGKILL after {args.grace:g}s")
        if not _confirm(args, "terminate an engine"):
            return 1
        result = terminate_engine(store_dir, args.terminate, api.operator, reason, args.grace, api=api)
    if result.exited:
        print(f"engine pid {result.pid} stopped after {' then '.join(result.signals) or 'no signal (already gone)'} "
              f"({result.waited_s:.1f}s); audit row #{result.audit_id}")
        return 0
    print(f"engine pid {result.pid} is still running after {' and '.join(result.signals)}; audit row "
          f"#{result.audit_id}", file=sys.stderr)
    return 1
