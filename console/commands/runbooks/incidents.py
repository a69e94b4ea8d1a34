"""`flightdeck incidents` (the list) and `flightdeck incident show | ack | resolve | note ID`."""

from __future__ import annotations

import argparse
import time
from typing import Any

from console.cli import add_store_argument
from console.commands.argtypes import positive_int
from console.commands.runbooks.common import (
    add_operator,
    cli_field,
    incident_store,
    resolve_location,
    usage_handler,
)
from console.output import pick, print_json, table
from engine.errors import InputError
from engine.timefmt import age, timestamp

INCIDENT_FIELDS = ("id", "runbook", "title", "severity", "scope", "apply_mode", "status", "firing", "fired", "opened",
                   "updated", "cleared", "signals", "last_signals", "context", "suggested", "acknowledged",
                   "acknowledged_by", "resolved", "resolved_by", "resolution", "paged_targets")
APPLICATION_FIELDS = ("id", "runbook", "scope", "actor", "reason", "applied", "actions", "rollback", "rollback_due",
                      "rolled_back", "rolled_back_by", "rollback_report")


def add_incidents(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
        add_operator(parser)
        add_store_argument(parser)
        parser.set_defaults(handler=handle_incident_action, verb=name)
    incident.set_defaults(handler=usage_handler(incident))


def handle_incidents(args: argparse.Namespace) -> int:
    from engine.controls import applications
    from engine.controls.incidents import incident_state

    store = incident_store(resolve_location(args), read_only=True)
    try:
        rows = store.list(active_only=not args.all, limit=args.limit)
        with store.db.reading() as conn:
            in_force = {(a.runbook, a.scope) for a in applications.in_force(conn)}
        # Firing is what an engine's detection saw; with no engine alive nothing watches, so say so.
        watched = any(engine.alive for engine in store.db.list_engines())
    finally:
        store.db.close()
    # state: firing, clearing (detection cleared, no action in force: resolve it), quiet, resolved.
    states = [incident_state(r, (r.runbook, r.scope) in in_force) for r in rows]
    if args.json:
        print_json([{**pick(r, INCIDENT_FIELDS), "state": state, "watched": watched}
                    for r, state in zip(rows, states, strict=True)])
        return 0
    if not rows:
        print("no incidents" if args.all else "no open incidents")
        return 0
    now = time.time()
    table_rows = []
    for r, state in zip(rows, states, strict=True):
        who = r.acknowledged_by or "-"
        if r.status == "resolved":
            who = r.resolved_by
        shown = ("FIRING" if watched else "FIRING?") if state == "firing" else state
        table_rows.append((r.id, r.severity, r.status, shown, r.runbook, r.scope, age(r.opened, now), who,
                           _signals_text(r.last_signals or [])))
    print(table(("INCIDENT", "SEV", "STATUS", "STATE", "RUNBOOK", "SCOPE", "OPENED", "BY", "SIGNALS"), table_rows))
    if not watched and "firing" in states:
        print("\nFIRING? no engine is running, so nothing watches these signals: FIRING is what the last engine saw "
              "before it stopped. Start an engine on this store to know, or resolve the incident.")
    return 0


def _signals_text(readings: list[dict[str, Any]]) -> str:
    out = []
    for reading in readings:
        if reading.get("value") is not None:
            out.append(f"{reading['signal']}={reading['value']:.3g}")
    return ", ".join(out)[:60]


def handle_incident_show(args: argparse.Namespace) -> int:
    from engine.controls.applications import for_incident

    store = incident_store(resolve_location(args), read_only=True)
    try:
        incident = store.get(args.incident_id)
        timeline = store.timeline(incident.id)
        with store.db.reading() as conn:
            applications = for_incident(conn, incident.id)
    finally:
        store.db.close()
    if args.json:
        out = pick(incident, INCIDENT_FIELDS)
        out["timeline"] = [pick(e, ("id", "ts", "kind", "actor", "text", "data")) for e in timeline]
        out["applications"] = [pick(a, APPLICATION_FIELDS) for a in applications]
        print_json(out)
        return 0
    print(f"{incident.id}  {incident.severity}  {incident.status}  {incident.title}")
    print(f"runbook {incident.runbook} on {incident.scope}, opened {timestamp(incident.opened)}, fired "
          f"{incident.fired} time(s), {'still firing' if incident.firing else 'signal quiet'}")
    context = incident.context or {}
    if context.get("runs"):
        print(f"runs involved: {', '.join(context['runs'])}")
    print()
    print(table(("TIME", "EVENT", "WHO", "WHAT"), [(timestamp(e.ts), e.kind, e.actor, e.text)
                                                   for e in timeline]))
    in_force = [a for a in applications if not a.rolled_back]
    if in_force:
        print()
        for application in in_force:
            print(f"in force: application #{application.id} by {application.actor}; roll back with "
                  f"`flightdeck runbooks rollback {application.runbook} --scope {application.scope} "
                  f"--reason TEXT`")
    if incident.status != "resolved":
        print()
        print(f"runbook text: flightdeck runbooks show {incident.runbook} --incident {incident.id}")
    return 0


def handle_incident_action(args: argparse.Namespace) -> int:
    try:
        return _incident_action(args)
    except InputError as exc:
        raise cli_field(exc) from None


def _incident_action(args: argparse.Namespace) -> int:
    from console.commands.controls import operator_name

    store = incident_store(resolve_location(args))
    try:
        operator = operator_name(args)
        if args.verb == "ack":
            row = store.acknowledge(args.incident_id, operator, args.reason)
            print(f"acknowledged {row.id} ({row.title}, {row.scope}) by {operator}")
        elif args.verb == "resolve":
            row = store.resolve(args.incident_id, operator, args.reason)
            print(f"resolved {row.id} ({row.title}, {row.scope}) by {operator}")
            from engine.runbooks.actions import active_applications

            still = [a for a in active_applications(store.db) if a.incident_id == row.id]
            for application in still:
                print(f"note: the runbook's actions are still in force (application #{application.id}); roll back "
                      f"with `flightdeck runbooks rollback {row.id} --reason TEXT`")
        else:
            row = store.annotate(args.incident_id, operator, args.text)
            print(f"noted on {row.id} by {operator}")
        if row.paged_targets and args.verb != "note":
            print(f"the page to {', '.join(row.paged_targets)} follows when the engine next looks (it is sent by "
                  f"the running engine)")
    finally:
        store.db.close()
    return 0
