"""`flightdeck runbooks list | show | check | apply | rollback`: the runbooks in force on a store, their files'
validation, and applying or rolling back one as an audited change."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from console.cli import add_store_argument
from console.commands.runbooks.common import (
    add_config,
    add_operator,
    checked_reason,
    control_target,
    find_runbook,
    incident_store,
    resolve_location,
    runbooks_in_force,
    store_config,
    store_dir_of,
    usage_handler,
)
from console.output import print_json, table
from console.runbook_scopes import fill_body, parse_scope, running_runs, scope_context
from engine.errors import InputError


def add_runbooks(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    runbooks = commands.add_parser(
        "runbooks", help="list, check, apply or roll back runbooks",
        description="Runbooks detect problems on the engine's event stream, open incidents, page their owners and "
                    "apply (or suggest) audited actions that can be rolled back. They are the shipped ones, the "
                    "directory the config's [runbooks] dir names, and STORE/runbooks/*.md (a Postgres store has "
                    "no STORE/: its project runbooks are the config's). See docs/runbooks.md.")
    actions = runbooks.add_subparsers(dest="runbooks_action", metavar="ACTION", parser_class=type(runbooks))

    listing = actions.add_parser("list", help="the runbooks in force on a store")
    listing.add_argument("--json", action="store_true", help="print a JSON list of runbook objects")
    add_config(listing)
    add_store_argument(listing)
    listing.set_defaults(handler=handle_list)

    show = actions.add_parser("show", help="one runbook: detection, actions and its text")
    show.add_argument("runbook_id", metavar="ID")
    show.add_argument("--incident", metavar="INCIDENT_ID", help="fill {hierarchy}, {agent}, ... from this incident")
    add_config(show)
    add_store_argument(show)
    show.set_defaults(handler=handle_show)

    check = actions.add_parser(
        "check", help="validate runbook files",
        description="Validate runbook files: front matter, signals and their parameters, flags, actions, durations, "
                    "placeholders, body sections, and owners/page targets against the store config's notifiers "
                    "(when the store has a config.toml, or with --config). Every problem is printed with its file, "
                    "line and field; exit 2 if any.")
    check.add_argument("path", nargs="?", metavar="DIR|FILE",
                       help="a directory of runbooks or one file (default: the shipped runbooks, the config's "
                            "[runbooks] dir and STORE/runbooks)")
    check.add_argument("--config", metavar="FILE", help="store config to check notifier targets against (and whose "
                                                        "[runbooks] dir to check)")
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
    add_config(apply)
    add_operator(apply)
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
    add_operator(rollback)
    add_store_argument(rollback)
    rollback.set_defaults(handler=handle_rollback)
    runbooks.set_defaults(handler=usage_handler(runbooks))


def _runbook_json(runbook: Any) -> dict[str, Any]:
    spec = runbook.spec
    rollback = spec.rollback.as_dict()
    return {"id": spec.id, "title": spec.title, "severity": spec.severity, "owner": list(spec.owner),
            "apply": spec.apply, "rollback": rollback, "origin": runbook.origin, "path": str(runbook.path),
            "detect": [{"signal": c.signal, "op": c.op, "threshold": c.threshold, "for_s": c.window,
                        "scope": c.scope, "target": c.target, "params": dict(c.params)} for c in spec.detect],
            "actions": [{a.kind: a.body.model_dump(by_alias=True, exclude_none=True)} for a in spec.actions]}


def handle_list(args: argparse.Namespace) -> int:
    runbooks = runbooks_in_force(resolve_location(args), args.config)
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

    location = resolve_location(args)
    runbook = find_runbook(runbooks_in_force(location, args.config), args.runbook_id)
    spec = runbook.spec
    context: dict[str, Any] = {}
    if args.incident:
        store = incident_store(location, read_only=True)
        try:
            incident = store.get(args.incident)
        finally:
            store.db.close()
        context = {**(incident.context or {}), "scope": incident.scope}
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
    print(fill_body(runbook.body, context).strip())
    return 0


def handle_check(args: argparse.Namespace) -> int:
    import os

    from engine.runbooks.loader import check_targets, load_dir, load_runbook, load_runbooks
    from engine.store.files import CONFIG_FILE
    from engine.store.pg_engine_store import CONFIG_ENV

    location = resolve_location(args)
    store_dir = store_dir_of(location)
    # A Postgres store has no config.toml: its engines read --config / $FLIGHTDECK_CONFIG (pg_engine_store.py).
    config_file = args.config or (os.environ.get(CONFIG_ENV, "").strip() or None if store_dir is None else None)
    has_config = bool(config_file) or (store_dir is not None and (store_dir / CONFIG_FILE).is_file())
    config = store_config(location, config_file) if has_config else None
    if args.path:
        path = Path(args.path)
        runbooks = load_dir(path) if path.is_dir() else [load_runbook(path)]
    else:
        runbooks = load_runbooks(store_dir, project_dir=config.runbooks_dir if config is not None else None)
    config_note = None
    if config is not None:
        errors = check_targets(runbooks, config.notifiers)
        if errors:
            from engine.errors import InputErrors

            errors.sort(key=lambda e: (e.file or "", e.line or 0))
            raise errors[0] if len(errors) == 1 else InputErrors(errors)
        missing = _missing_env(runbooks, config)
        for line in missing:
            print(f"warning: {line}", file=sys.stderr)
    elif store_dir is None:
        config_note = (f"owners and page targets not checked: a Postgres store has no config.toml (pass --config "
                       f"FILE or set ${CONFIG_ENV})")
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
    from engine.controls.incidents import IncidentStore
    from engine.runbooks import actions

    location = resolve_location(args)
    runbook = find_runbook(runbooks_in_force(location, args.config), args.runbook_id)
    reason = "" if args.dry_run else checked_reason(args.reason)  # before anything is opened or created
    # A dry run writes nothing and needs a store; applying creates the control plane if need be.
    with ControlAPI(control_target(location), operator_name(args), create=not args.dry_run) as api:
        incident = None
        if args.incident:
            incident = IncidentStore(api.db).get(args.incident)
            if incident.runbook != runbook.id:
                raise InputError(f"incident {incident.id} is about runbook {incident.runbook}, not {runbook.id}",
                                 field="--incident")
        scope_text = args.scope or (incident.scope if incident else None)
        if scope_text is None:
            raise InputError("which scope? e.g. --scope hierarchy:deal-desk (or --incident ID)", field="--scope")
        context = scope_context(incident, scope_text)
        label = context["scope"]
        if args.hierarchy:
            context["hierarchy"] = args.hierarchy.strip()
        if args.dry_run:
            with api.db.reading() as conn:
                steps = actions.plan(runbook, context, conn, running_runs(location))
            print(f"dry run: applying {runbook.id} to {label} would:")
            for step in steps:
                note = " (not sent by `runbooks apply`: you are the person it would page)" if step.kind == "page" \
                    else " (no change)" if step.noop else ""
                print(f"  - {step.description}{note}")
            print("nothing was changed")
            return 2 if any(s.error for s in steps) else 0
        application = actions.apply(api, runbook, label, context, source="operator", reason=reason,
                                    running_runs=running_runs(location),
                                    incident_id=incident.id if incident else None)
    print(f"applied {runbook.id} to {label} as application #{application.id} by {application.actor}:")
    for step in application.steps:
        print(f"  - {step.description}" + (" (no change)" if step.noop else ""))
    print(f"roll back with: flightdeck runbooks rollback {runbook.id} --scope {label} --reason TEXT")
    return 0


def handle_rollback(args: argparse.Namespace) -> int:
    from console.commands.controls import operator_name
    from engine.controls.api import ControlAPI, ControlError
    from engine.controls.incidents import IncidentStore
    from engine.runbooks import actions

    location = resolve_location(args)
    reason = checked_reason(args.reason)
    scope = None
    if args.scope:
        kind, target = parse_scope(args.scope)
        scope = "global" if kind == "global" else f"{kind}:{target}"
    with ControlAPI(control_target(location), operator_name(args), create=False) as api:
        active = actions.active_applications(api.db)
        ref = args.ref.strip()
        if ref.startswith("inc-"):
            incident_id = IncidentStore(api.db).get(ref).id
            chosen = [a for a in active if a.incident_id == incident_id]
            what = f"incident {incident_id}"
        else:
            chosen = [a for a in active if a.runbook == ref]
            what = f"runbook {ref}"
        if scope is not None:
            chosen = [a for a in chosen if a.scope == scope]
            what += f" on {scope}"
        if not chosen:
            raise ControlError(f"{what} is not in force (nothing to roll back; see `flightdeck incidents` and "
                               f"`flightdeck runbooks list`)")
        results = [actions.rollback(api, a.id, source="operator", reason=reason) for a in chosen]
    for result in results:
        print(f"rolled back {result.runbook} on {result.scope} (application #{result.application_id}):")
        for item in result.report:
            mark = {"restored": "restored", "left": "LEFT", "nothing": "-"}[item["outcome"]]
            print(f"  [{mark}] {item['text']}")
        if result.left:
            print(f"  {len(result.left)} item(s) were changed by someone since the runbook applied them and were left "
                  f"as they are")
    return 0
