"""`flightdeck postmortem INCIDENT_ID [--out FILE]`: a Markdown postmortem draft for an incident."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from console.cli import add_store_argument
from console.commands.runbooks.common import find_runbook, incident_store, resolve_location, runbooks_in_force
from engine.errors import InputError


def add_postmortem(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    postmortem = commands.add_parser(
        "postmortem", help="write a postmortem draft for an incident",
        description="A Markdown postmortem draft: time line of signals, actions applied and rolled back, operator "
                    "actions with who and why (from the audit log), runs affected and cost during the incident.")
    postmortem.add_argument("incident_id", metavar="INCIDENT_ID")
    postmortem.add_argument("--out", metavar="FILE", help="write to FILE instead of standard output")
    add_store_argument(postmortem)
    postmortem.set_defaults(handler=handle_postmortem)


def handle_postmortem(args: argparse.Namespace) -> int:
    from engine.controls import audit
    from engine.controls.applications import for_incident
    from engine.runbooks import postmortem
    from engine.store import open_trace_reads
    from engine.store.files import TRACES_DB
    from engine.store.location import PostgresLocation, StoreDirectory
    from engine.store.reader_protocol import TraceReads

    location = resolve_location(args)  # a store directory or a Postgres store
    store = incident_store(location, read_only=True)
    try:
        incident = store.get(args.incident_id)
        timeline = store.timeline(incident.id)
        with store.db.reading() as conn:
            applications = for_incident(conn, incident.id)
        now = time.time()
        window = max((float(s.get("window_s") or 0) for s in incident.signals or []), default=0.0)
        start = incident.opened - window
        end = incident.resolved or now
        with store.db.reading() as conn:
            audit_rows = audit.between(conn, start, end)
    finally:
        store.db.close()
    runbook_path = None
    store_dir = location.path if isinstance(location, StoreDirectory) else None
    try:
        runbook_path = str(find_runbook(runbooks_in_force(location), incident.runbook).path)
    except InputError:
        pass
    reader: TraceReads | None = None  # None: no traces recorded yet, the draft lists no runs
    if store_dir is not None:
        if (store_dir / TRACES_DB).is_file():
            reader = open_trace_reads(location)  # a damaged or too new traces.db is an error
    elif isinstance(location, PostgresLocation):
        from engine.store.pg.reader import PgTraceReader

        reader = PgTraceReader.connect_if_present(location)
    try:
        runs = postmortem.affected_runs(reader, incident, start, end)
        spend = postmortem.spend_between(reader, start, end)
    finally:
        if reader is not None:
            reader.close()
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
        print(f"postmortem draft for {incident.id} written to {out}")
    else:
        sys.stdout.write(text + "\n")
    return 0
