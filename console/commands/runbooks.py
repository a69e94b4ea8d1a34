"""Runbooks and incidents on the command line.

    flightdeck runbooks list | show ID | check [DIR] | apply ID --scope S [--dry-run] | rollback ID
    flightdeck incidents [--all] [--json]
    flightdeck incident show | ack | resolve | note ID
    flightdeck postmortem INCIDENT_ID [--out FILE]

Acting commands take --reason (recorded in the audit log) and --operator NAME (default $FLIGHTDECK_OPERATOR, else the
OS user). Bad input exits 2 naming the file, line and field (runbooks) or the argument.

JSON shapes (stable; a documented interface):
- `runbooks list --json`: a list of runbooks: id, title, severity, owner, apply, rollback, origin, path, detect (list
  of signal, op, threshold, for_s, scope, target, params), actions (list of one-key objects as in the file).
- `incidents --json`: a list of incidents, newest first: id, runbook, title, severity, scope, apply_mode, status,
  firing, fired, opened, updated, cleared, signals, last_signals, context, suggested, acknowledged, acknowledged_by,
  resolved, resolved_by, resolution, paged_targets.
- `incident show ID --json`: one incident object as above plus `timeline` (list of id, ts, kind, actor, text, data)
  and `applications` (list of id, runbook, scope, actor, reason, applied, actions, rollback, rollback_due,
  rolled_back, rolled_back_by, rollback_report).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from console.cli import add_store_argument
from console.commands.argtypes import positive_int
from console.output import age, print_json, table, when
from engine.errors import InputError

INCIDENT_FIELDS = ("id", "runbook", "title", "severity", "scope", "apply_mode", "status", "firing", "fired", "opened",
                   "updated", "cleared", "signals", "last_signals", "context", "suggested", "acknowledged",
                   "acknowledged_by", "resolved", "resolved_by", "resolution", "paged_targets")
APPLICATION_FIELDS = ("id", "runbook", "scope", "actor", "reason", "applied", "actions", "rollback", "rollback_due",
                      "rolled_back", "rolled_back_by", "rollback_report")
SCOPE_KINDS = ("global", "hierarchy", "agent", "tool")


# ------------------------------------------------------------------------------------------------ parsers

def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    runbooks = commands.add_parser(
        "runbooks", help="list, check, apply or roll back runbooks",
        description="Runbooks detect problems on the engine's event stream, open incidents, page their owners and "
                    "apply (or suggest) audited actions that can be rolled back. They are the shipped ones plus "
                    "STORE/runbooks/*.md. See docs/runbooks.md.")
    actions = runbooks.add_subparsers(dest="runbooks_action", metavar="ACTION", parser_class=type(runbooks))

    listing = actions.add_parser("list", help="the runbooks in force on a store")
    listing.add_argument("--json", action="store_true", help="print a JSON list of runbook objects")
    add_store_argument(listing)
    listing.set_defaults(handler=handle_list)

    show = actions.add_parser("show", help="one runbook: detection, actions and its text")
    show.add_argument("runbook_id", metavar="ID")
    show.add_argument("--incident", metavar="INCIDENT_ID", help="fill {hierarchy}, {agent}, ... from this incident")
    add_store_argument(show)
    show.set_defaults(handler=handle_show)

    check = actions.add_parser(
        "check", help="validate runbook files",
        description="Validate runbook files: front matter, signals and their parameters, flags, actions, durations, "
                    "placeholders, body sections, and owners/page targets against the store config's notifiers "
                    "(when the store has a config.toml, or with --config). Every problem is printed with its file, "
                    "line and field; exit 2 if any.")
    check.add_argument("path", nargs="?", metavar="DIR|FILE",
                       help="a directory of runbooks or one file (default: the shipped runbooks and STORE/runbooks)")
    check.add_argument("--config", metavar="FILE", help="store config to check notifier targets against")
    add_store_argument(check)
    check.set_defaults(handler=handle_check)

    apply = actions.add_parser(
        "apply", help="apply a runbook's actions now (one audited change)",
        description="Apply a runbook's control actions (flags, kill switches, breaker and budget overrides) for a "
                    "scope, as one audited change that records the previous values. Pages are not sent: you are "
                    "the person they would reach. --dry-run prints what would change and changes nothing.")
    apply.add_argument("runbook_id", metavar="ID")
    apply.add_argument("--scope", metavar="SCOPE", help="global, hierarchy:NAME, agent:NAME or tool:NAME "
                                                        "(default: the incident's, with --incident)")
    apply.add_argument("--hierarchy", metavar="NAME", help="fills {hierarchy} when the scope is an agent or tool")
    apply.add_argument("--incident", metavar="INCIDENT_ID", help="link the application to this incident (its time "
                                                                 "line records it) and take the scope from it")
    apply.add_argument("--dry-run", action="store_true", help="print what would change; change nothing")
    apply.add_argument("--reason", metavar="TEXT", help="why (required unless --dry-run; goes to the audit log)")
    _add_operator(apply)
    add_store_argument(apply)
    apply.set_defaults(handler=handle_apply)

    rollback = actions.add_parser(
        "rollback", help="roll back what a runbook applied",
        description="Restore exactly the values a runbook application replaced, and nothing an operator changed "
                    "since (that is reported instead). ID is a runbook id (every scope it is in force for, or one "
                    "with --scope) or an incident id (the applications linked to it).")
    rollback.add_argument("ref", metavar="ID")
    rollback.add_argument("--scope", metavar="SCOPE", help="only the application for this scope")
    rollback.add_argument("--reason", metavar="TEXT", required=True, help="why (goes to the audit log)")
    _add_operator(rollback)
    add_store_argument(rollback)
    rollback.set_defaults(handler=handle_rollback)
    runbooks.set_defaults(handler=_usage(runbooks))

    incidents = commands.add_parser("incidents", help="list incidents",
                                    description="Open and acknowledged incidents, newest first.")
    incidents.add_argument("--all", action="store_true", help="resolved ones too")
    incidents.add_argument("--limit", type=positive_int, default=100, metavar="N", help="at most N (default 100)")
    incidents.add_argument("--json", action="store_true", help="print a JSON list of incident objects")
    add_store_argument(incidents)
    incidents.set_defaults(handler=handle_incidents)

    incident = commands.add_parser("incident", help="show, acknowledge, resolve or annotate an incident",
                                   description="Act on one incident. ack, resolve and note are audited; a paged "
                                               "incident's page follows (PagerDuty acknowledge / resolve, sent by "
                                               "the running engine).")
    verbs = incident.add_subparsers(dest="incident_action", metavar="ACTION", parser_class=type(incident))
    show_incident = verbs.add_parser("show", help="details, time line and applications")
    show_incident.add_argument("incident_id", metavar="ID")
    show_incident.add_argument("--json", action="store_true", help="print one JSON incident object")
    add_store_argument(show_incident)
    show_incident.set_defaults(handler=handle_incident_show)
    for name, helptext in (("ack", "acknowledge: someone is on it"), ("resolve", "resolve: it is over"),
                           ("note", "add a note to the time line")):
        parser = verbs.add_parser(name, help=helptext)
        parser.add_argument("incident_id", metavar="ID")
        if name == "note":
            parser.add_argument("--text", metavar="TEXT", required=True, help="the note")
        else:
            parser.add_argument("--reason", metavar="TEXT", required=name == "resolve",
                                help="why / how it was resolved (goes to the audit log)")
        _add_operator(parser)
        add_store_argument(parser)
        parser.set_defaults(handler=handle_incident_action, verb=name)
    incident.set_defaults(handler=_usage(incident))

    postmortem = commands.add_parser(
        "postmortem", help="write a postmortem draft for an incident",
        description="A Markdown postmortem draft: time line of signals, actions applied and rolled back, operator "
                    "actions with who and why (from the audit log), runs affected and cost during the incident.")
    postmortem.add_argument("incident_id", metavar="INCIDENT_ID")
    postmortem.add_argument("--out", metavar="FILE", help="write to FILE instead of standard output")
    add_store_argument(postmortem)
    postmortem.set_defaults(handler=handle_postmortem)


def _add_operator(parser: argparse.ArgumentParser) -> None:
    from console.commands.controls import OPERATOR_ENV

    parser.add_argument("--operator", metavar="NAME",
                        help=f"who is acting, for the audit log (default: ${OPERATOR_ENV}, else your user name)")


def _usage(parser: argparse.ArgumentParser) -> Any:
    def show(args: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        return 2
    return show




# ------------------------------------------------------------------------------------------------ shared

def _store_dir(args: argparse.Namespace) -> Path:
    from engine.store import resolve_store_dir

    return resolve_store_dir(args.store)


def _load(store_dir: Path | None) -> list[Any]:
    from engine.runbooks.loader import load_runbooks

    return load_runbooks(store_dir)


def _find(runbooks: list[Any], runbook_id: str) -> Any:
    import difflib

    for runbook in runbooks:
        if runbook.id == runbook_id:
            return runbook
    known = [r.id for r in runbooks]
    close = difflib.get_close_matches(runbook_id, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f" (runbooks: {', '.join(known) or 'none'})"
    raise InputError(f"no runbook {runbook_id!r}{hint}", field="ID")


def _require_store(store_dir: Path) -> None:
    from engine.errors import StoreError
    from engine.store.files import CONTROL_DB

    if not (store_dir / CONTROL_DB).is_file():
        raise StoreError(f"no store at {store_dir} (nothing has been recorded there yet; pass --store or set "
                         f"FLIGHTDECK_STORE)")


def _incident_store(store_dir: Path, *, create: bool = False, read_only: bool = False) -> Any:
    """read_only: for commands that only read incidents; control.db is opened read-only (works on a read-only store)."""
    from engine.runbooks.incidents import IncidentStore
    from engine.store.control import ControlDB

    if not create:
        _require_store(store_dir)
    return IncidentStore(ControlDB.open(store_dir, read_only=read_only))


def parse_scope(text: str | None, field: str = "--scope") -> tuple[str, str | None]:
    text = (text or "").strip()
    if text == "global":
        return "global", None
    kind, sep, target = text.partition(":")
    if not sep or kind not in SCOPE_KINDS or kind == "global" or not target.strip():
        raise InputError(f"expected global, hierarchy:NAME, agent:NAME or tool:NAME, got {text!r}", field=field)
    return kind, target.strip()


def _running_runs(store_dir: Path) -> Any:
    """hierarchy (None: all) -> ids of runs the store records as running."""
    from engine.store.files import TRACES_DB

    def running(hierarchy: str | None) -> list[str]:
        if not (store_dir / TRACES_DB).is_file():
            return []
        from engine.store import open_reader

        reader = open_reader(store_dir)
        try:
            return sorted(r["id"] for r in reader.list_runs(limit=10_000, status="running", hierarchy=hierarchy))
        finally:
            reader.close()
    return running


# ------------------------------------------------------------------------------------------------ runbooks

def _runbook_json(runbook: Any) -> dict[str, Any]:
    spec = runbook.spec
    rollback = spec.rollback.as_dict()
    return {"id": spec.id, "title": spec.title, "severity": spec.severity, "owner": list(spec.owner),
            "apply": spec.apply, "rollback": rollback, "origin": runbook.origin, "path": str(runbook.path),
            "detect": [{"signal": c.signal, "op": c.op, "threshold": c.threshold, "for_s": c.window,
                        "scope": c.scope, "target": c.target, "params": dict(c.params)} for c in spec.detect],
            "actions": [{a.kind: a.body.model_dump(by_alias=True, exclude_none=True)} for a in spec.actions]}


def handle_list(args: argparse.Namespace) -> int:
    runbooks = _load(_store_dir(args))
    if args.json:
        print_json([_runbook_json(r) for r in runbooks])
        return 0
    if not runbooks:
        print("no runbooks")
        return 0
    rows = [(r.id, r.spec.severity, r.spec.apply, ", ".join(c.describe() for c in r.spec.detect),
             ", ".join(a.kind for a in r.spec.actions) or "-", r.origin) for r in runbooks]
    print(table(("RUNBOOK", "SEV", "APPLY", "DETECTS", "ACTIONS", "FROM"), rows))
    return 0


def handle_show(args: argparse.Namespace) -> int:
    from engine.runbooks.loader import page_targets
    from engine.runbooks.model import short_duration

    store_dir = _store_dir(args)
    runbook = _find(_load(store_dir), args.runbook_id)
    spec = runbook.spec
    context: dict[str, Any] = {}
    if args.incident:
        incident = _incident_store(store_dir, read_only=True).get(args.incident)
        context = {**(incident.get("context") or {}), "scope": incident["scope"]}
    print(f"{spec.id}: {spec.title}")
    print(f"severity {spec.severity}, apply {spec.apply}, owner {', '.join(spec.owner) or '-'}, from {runbook.path}")
    print("detects (any of):")
    for condition in spec.detect:
        extra = f" params {condition.params}" if condition.params else ""
        print(f"  - {condition.describe()}{extra}; clears after {short_duration(condition.quiet_s)} quiet")
    print("actions:")
    for action in spec.actions:
        print(f"  - {action.kind}: {action.body.model_dump(by_alias=True, exclude_none=True)}")
    for targets, severity in page_targets(runbook):
        print(f"  pages {', '.join(targets)} as {severity}")
    rollback = spec.rollback
    print("rollback: " + ("manual" if rollback.after is None else
                          f"automatic {short_duration(rollback.after)} after applying"
                          + (", once the signal is quiet" if rollback.require_quiet else "")))
    print()
    print(_fill_body(runbook.body, context).strip())
    return 0


def _fill_body(body: str, context: dict[str, Any]) -> str:
    import re

    def fill(match: re.Match[str]) -> str:
        value = context.get(match.group(1))
        return str(value) if isinstance(value, str) and value else match.group(0)
    return re.sub(r"\{(hierarchy|agent|tool|run|target|scope)\}", fill, body)


def handle_check(args: argparse.Namespace) -> int:
    from engine.runbooks.loader import check_targets, load_dir, load_runbook
    from engine.store.config import load_config
    from engine.store.files import CONFIG_FILE

    store_dir = _store_dir(args)
    if args.path:
        path = Path(args.path)
        runbooks = load_dir(path) if path.is_dir() else [load_runbook(path)]
    else:
        runbooks = _load(store_dir)
    config_note = None
    if args.config or (store_dir / CONFIG_FILE).is_file():
        config = load_config(store_dir, args.config)
        errors = check_targets(runbooks, config.notifiers)
        if errors:
            from engine.errors import InputErrors

            errors.sort(key=lambda e: (e.file or "", e.line or 0))
            raise errors[0] if len(errors) == 1 else InputErrors(errors)
        missing = _missing_env(runbooks, config)
        for line in missing:
            print(f"warning: {line}", file=sys.stderr)
    else:
        config_note = (f"owners and page targets not checked: no {store_dir / CONFIG_FILE} (pass --config FILE or "
                       f"--store DIR)")
    for runbook in runbooks:
        print(f"{runbook.path}: ok: runbook {runbook.id}: {len(runbook.spec.detect)} condition(s), "
              f"{len(runbook.spec.actions)} action(s), apply {runbook.spec.apply}")
    if config_note:
        print(f"note: {config_note}")
    return 0


def _missing_env(runbooks: list[Any], config: Any) -> list[str]:
    """Notifier targets whose secret variable is not set in this shell: a warning, since the engine's environment
    is what counts, not the checker's."""
    import os

    from engine.runbooks.loader import page_targets

    used = {t for r in runbooks for targets, _ in page_targets(r) for t in targets}
    out = []
    for name in sorted(used):
        notifier = config.notifiers.get(name)
        env = getattr(notifier, "routing_key_env", None) or getattr(notifier, "url_env", None)
        if env and not os.environ.get(env):
            out.append(f"notifier {name}: ${env} is not set here; the engine needs it to page")
    return out


def handle_apply(args: argparse.Namespace) -> int:
    from console.commands.controls import operator_name
    from engine.controls.api import ControlAPI
    from engine.runbooks import actions
    from engine.store.control import ControlDB

    store_dir = _store_dir(args)
    runbook = _find(_load(store_dir), args.runbook_id)
    incident = None
    if args.incident:
        incident = _incident_store(store_dir).get(args.incident)
        if incident["runbook"] != runbook.id:
            raise InputError(f"incident {incident['id']} is about runbook {incident['runbook']}, not {runbook.id}",
                             field="--incident")
    scope_text = args.scope or (incident["scope"] if incident else None)
    if scope_text is None:
        raise InputError("which scope? e.g. --scope hierarchy:deal-desk (or --incident ID)", field="--scope")
    kind, target = parse_scope(scope_text)
    label = "global" if kind == "global" else f"{kind}:{target}"
    context: dict[str, Any] = dict((incident or {}).get("context") or {})
    context.update({"scope": label})
    if target is not None:
        context.update({kind: target, "target": target})
    if args.hierarchy:
        context["hierarchy"] = args.hierarchy.strip()
    reason = "" if args.dry_run else _checked_reason(args.reason)
    if args.dry_run:
        _require_store(store_dir)
    else:
        from engine.store.files import ensure_store_dir

        ensure_store_dir(store_dir)
    db = ControlDB.open(store_dir)
    try:
        if args.dry_run:
            steps = actions.plan(runbook, context, db.connection, _running_runs(store_dir))
            print(f"dry run: applying {runbook.id} to {label} would:")
            for step in steps:
                note = " (not sent by `runbooks apply`: you are the person it would page)" if step.kind == "page" \
                    else " (no change)" if step.noop else ""
                print(f"  - {step.description}{note}")
            print("nothing was changed")
            return 2 if any(s.error for s in steps) else 0
        with ControlAPI(store_dir, operator_name(args), db=db) as api:
            application = actions.apply(api, runbook, label, context, source="operator", reason=reason,
                                        running_runs=_running_runs(store_dir),
                                        incident_id=incident["id"] if incident else None)
    finally:
        db.close()
    print(f"applied {runbook.id} to {label} as application #{application.id} by {application.actor}:")
    for step in application.steps:
        print(f"  - {step.description}" + (" (no change)" if step.noop else ""))
    print(f"roll back with: flightdeck runbooks rollback {runbook.id} --scope {label} --reason TEXT")
    return 0


def handle_rollback(args: argparse.Namespace) -> int:
    from console.commands.controls import operator_name
    from engine.controls.api import ControlAPI, ControlError
    from engine.runbooks import actions
    from engine.store.control import ControlDB

    store_dir = _store_dir(args)
    _require_store(store_dir)
    reason = _checked_reason(args.reason)
    scope = None
    if args.scope:
        kind, target = parse_scope(args.scope)
        scope = "global" if kind == "global" else f"{kind}:{target}"
    db = ControlDB.open(store_dir)
    try:
        active = actions.active_applications(db)
        ref = args.ref.strip()
        if ref.startswith("inc-"):
            incident_id = _incident_store(store_dir).get(ref)["id"]
            chosen = [a for a in active if a.get("incident_id") == incident_id]
            what = f"incident {incident_id}"
        else:
            chosen = [a for a in active if a["runbook"] == ref]
            what = f"runbook {ref}"
        if scope is not None:
            chosen = [a for a in chosen if a["scope"] == scope]
            what += f" on {scope}"
        if not chosen:
            raise ControlError(f"{what} is not in force (nothing to roll back; see `flightdeck incidents` and "
                               f"`flightdeck runbooks list`)")
        with ControlAPI(store_dir, operator_name(args), db=db) as api:
            results = [actions.rollback(api, a["id"], source="operator", reason=reason) for a in chosen]
    finally:
        db.close()
    for result in results:
        print(f"rolled back {result.runbook} on {result.scope} (application #{result.application_id}):")
        for item in result.report:
            mark = {"restored": "restored", "left": "LEFT", "nothing": "-"}[item["outcome"]]
            print(f"  [{mark}] {item['text']}")
        if result.left:
            print(f"  {len(result.left)} item(s) were changed by someone since the runbook applied them and were left "
                  f"as they are")
    return 0


# ------------------------------------------------------------------------------------------------ incidents

def _pick(row: dict[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    return {name: row.get(name) for name in fields}


def handle_incidents(args: argparse.Namespace) -> int:
    store = _incident_store(_store_dir(args), read_only=True)
    try:
        rows = store.list(active_only=not args.all, limit=args.limit)
    finally:
        store.db.close()
    if args.json:
        print_json([_pick(r, INCIDENT_FIELDS) for r in rows])
        return 0
    if not rows:
        print("no incidents" if args.all else "no open incidents")
        return 0
    now = time.time()
    table_rows = []
    for r in rows:
        who = r["acknowledged_by"] or "-"
        if r["status"] == "resolved":
            who = r["resolved_by"]
        table_rows.append((r["id"], r["severity"], r["status"], "yes" if r["firing"] else "no", r["runbook"],
                           r["scope"], age(r["opened"], now), who, _signals_text(r.get("last_signals") or [])))
    print(table(("INCIDENT", "SEV", "STATUS", "FIRING", "RUNBOOK", "SCOPE", "OPENED", "BY", "SIGNALS"), table_rows))
    return 0


def _signals_text(readings: list[dict[str, Any]]) -> str:
    out = []
    for reading in readings:
        if reading.get("value") is not None:
            out.append(f"{reading['signal']}={reading['value']:.3g}")
    return ", ".join(out)[:60]


def handle_incident_show(args: argparse.Namespace) -> int:
    from engine.controls.applications import for_incident

    store = _incident_store(_store_dir(args), read_only=True)
    try:
        incident = store.get(args.incident_id)
        timeline = store.timeline(incident["id"])
        with store.db.reading() as conn:
            applications = for_incident(conn, incident["id"])
    finally:
        store.db.close()
    if args.json:
        out = _pick(incident, INCIDENT_FIELDS)
        out["timeline"] = [_pick(e, ("id", "ts", "kind", "actor", "text", "data")) for e in timeline]
        out["applications"] = [_pick(a, APPLICATION_FIELDS) for a in applications]
        print_json(out)
        return 0
    print(f"{incident['id']}  {incident['severity']}  {incident['status']}  {incident['title']}")
    print(f"runbook {incident['runbook']} on {incident['scope']}, opened {when(incident['opened'])}, fired "
          f"{incident['fired']} time(s), {'still firing' if incident['firing'] else 'signal quiet'}")
    context = incident.get("context") or {}
    if context.get("runs"):
        print(f"runs involved: {', '.join(context['runs'])}")
    print()
    print(table(("TIME", "EVENT", "WHO", "WHAT"), [(when(e["ts"]), e["kind"], e["actor"], e["text"])
                                                   for e in timeline]))
    in_force = [a for a in applications if not a.get("rolled_back")]
    if in_force:
        print()
        for application in in_force:
            print(f"in force: application #{application['id']} by {application['actor']}; roll back with "
                  f"`flightdeck runbooks rollback {application['runbook']} --scope {application['scope']} "
                  f"--reason TEXT`")
    if incident["status"] != "resolved":
        print()
        print(f"runbook text: flightdeck runbooks show {incident['runbook']} --incident {incident['id']}")
    return 0


def _cli_field(exc: InputError) -> InputError:
    """The API names a field as it spells it; on the command line the operator typed a flag."""
    flag = {"reason": "--reason", "text": "--text", "operator": "--operator", "incident": "ID"}.get(exc.field or "")
    return InputError(exc.message, field=flag) if flag and type(exc) is InputError else exc


def _checked_reason(text: str | None) -> str:
    from engine.controls.validate import required_text

    try:
        return required_text(text, "reason")
    except InputError as exc:
        raise _cli_field(exc) from None


def handle_incident_action(args: argparse.Namespace) -> int:
    try:
        return _incident_action(args)
    except InputError as exc:
        raise _cli_field(exc) from None


def _incident_action(args: argparse.Namespace) -> int:
    from console.commands.controls import operator_name

    store = _incident_store(_store_dir(args))
    try:
        operator = operator_name(args)
        if args.verb == "ack":
            row = store.acknowledge(args.incident_id, operator, args.reason)
            print(f"acknowledged {row['id']} ({row['title']}, {row['scope']}) by {operator}")
        elif args.verb == "resolve":
            row = store.resolve(args.incident_id, operator, args.reason)
            print(f"resolved {row['id']} ({row['title']}, {row['scope']}) by {operator}")
            from engine.runbooks.actions import active_applications

            still = [a for a in active_applications(store.db) if a.get("incident_id") == row["id"]]
            for application in still:
                print(f"note: the runbook's actions are still in force (application #{application['id']}); roll back "
                      f"with `flightdeck runbooks rollback {row['id']} --reason TEXT`")
        else:
            row = store.annotate(args.incident_id, operator, args.text)
            print(f"noted on {row['id']} by {operator}")
        if row.get("paged_targets") and args.verb != "note":
            print(f"the page to {', '.join(row['paged_targets'])} follows when the engine next looks (it is sent by "
                  f"the running engine)")
    finally:
        store.db.close()
    return 0


def handle_postmortem(args: argparse.Namespace) -> int:
    from engine.controls import audit
    from engine.controls.applications import for_incident
    from engine.runbooks import postmortem
    from engine.store.files import TRACES_DB, connect

    store_dir = _store_dir(args)
    store = _incident_store(store_dir, read_only=True)
    try:
        incident = store.get(args.incident_id)
        timeline = store.timeline(incident["id"])
        with store.db.reading() as conn:
            applications = for_incident(conn, incident["id"])
        now = time.time()
        window = max((float(s.get("window_s") or 0) for s in incident.get("signals") or []), default=0.0)
        start = incident["opened"] - window
        end = incident.get("resolved") or now
        with store.db.reading() as conn:
            audit_rows = audit.between(conn, start, end)
    finally:
        store.db.close()
    runbook_path = None
    try:
        runbook_path = str(_find(_load(store_dir), incident["runbook"]).path)
    except InputError:
        pass
    conn = connect(store_dir / TRACES_DB, read_only=True) if (store_dir / TRACES_DB).is_file() else None
    try:
        runs = postmortem.affected_runs(conn, incident, start, end)
        spend = postmortem.spend_between(conn, start, end)
    finally:
        if conn is not None:
            conn.close()
    text = postmortem.render(incident, timeline, applications, audit_rows, runs, window_start=start, window_end=end,
                             spend_in_window=spend, runbook_path=runbook_path, now=now)
    if args.out:
        out = Path(args.out)
        try:
            # Written whole to a temporary name, then renamed: a failure never leaves half a draft behind.
            tmp = out.with_name(out.name + ".tmp")
            tmp.write_text(text + "\n", encoding="utf-8")
            tmp.replace(out)
        except OSError as exc:
            raise InputError(f"cannot write the draft: {exc.strerror or exc}", file=str(out)) from None
        print(f"postmortem draft for {incident['id']} written to {out}")
    else:
        sys.stdout.write(text + "\n")
    return 0
