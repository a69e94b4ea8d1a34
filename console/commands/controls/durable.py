"""`flightdeck reconcile` and `flightdeck resume`: the operator's side of durable runs (engine/controls/reconcile.py).

reconcile: list what awaits a decision (every run, or one), or decide one side effect whose outcome is unknown
(--done / --again / --fail, with --reason); a durable engine running on the store takes the run at once (the command
waits until it has, unless --no-wait), else the next durable engine's start does (or `flightdeck resume RUN` now).
resume: a preview, a confirmation, an audit row, then the run resumes: in THIS process as a durable engine when no
engine holds the store, else in the durable engine that holds it (engine/runtime/durable_pickup.py: the command
waits until it took the run and the run ended, unless --no-wait); an engine holding the store that is not durable
cannot, and nothing is written. On a Postgres store one of the live durable engines on the database takes it
(durable_fleet.py), and with none live nothing is written (exit 3). The exit code is the resumed run's, as
`flightdeck run` gives it.

JSON: `reconcile --json` (listing): a list of runs: run_id, hierarchy, status, ended, error, calls (span_id, key,
call, tool, agent, args, decision (null or: decision, note, operator, ts, audit_id)). `reconcile ... --done|--again|
--fail --json`: the decision: run_id, key, call, decision, note, operator, ts, audit_id. `resume --json`: the run
object `flightdeck run --json` prints.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from console.cli import add_store_argument
from console.commands.argtypes import non_negative
from console.commands.controls.common import (
    add_operator,
    confirm,
    open_api,
    require_reason,
    short,
    store_dir_arg,
    store_location_arg,
)
from console.output import print_json, table, tokens, usd
from engine.controls.errors import ControlError
from engine.timefmt import timestamp

if TYPE_CHECKING:
    from engine.controls.reconcile import AwaitingCall
    from engine.controls.resume_preview import ResumePreview


def add_reconcile(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "reconcile", help="decide a side effect whose outcome is unknown after a crash (durable runs)",
        description="Without RUN: every run waiting in needs_reconcile. With RUN only: what awaits a decision in it. "
                    "With a decision: record it (audited). --done: it happened (the model is told the operator "
                    "confirmed it, with your reason; it never runs again); --again: run it again under the same "
                    "idempotency key (you accept the risk of a second effect); --fail: the run ends failed with "
                    "your reason as its error. Once every side effect of the run is decided, a durable engine "
                    "running on the store carries the run on at once (this command waits until it took it, unless "
                    "--no-wait); with none running, the next durable engine to start does (or now: flightdeck "
                    "resume RUN).",
        epilog="Exit codes: 0 listed or recorded; 2 bad input or refused (unknown run, a run not in "
               "needs_reconcile, a call whose outcome is not unknown or already decided, no --reason): nothing "
               "written; 3 store problem.")
    parser.add_argument("run", nargs="?", metavar="RUN", help="the run (a unique prefix of its id is enough)")
    parser.add_argument("--call", metavar="ID", help="the side effect: its span id, idempotency key or call path "
                                                     "(needed when the run waits on more than one)")
    decision = parser.add_mutually_exclusive_group()
    for name, text in (("done", "it happened: record it done, never run it again"),
                       ("again", "run it again with the same idempotency key"),
                       ("fail", "end the run failed, with --reason as its error")):
        decision.add_argument(f"--{name}", dest="decision", action="store_const", const=name, help=text)
    parser.add_argument("--reason", metavar="TEXT", help="why (required with a decision; the audit log keeps it, "
                                                         "and --done/--fail pass it on as the note)")
    parser.add_argument("--no-wait", action="store_true",
                        help="return once the decision is recorded (do not wait for the running engine to take it)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    add_operator(parser)
    add_store_argument(parser)
    parser.set_defaults(handler=handle_reconcile)


def add_resume(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from console.commands.argtypes import budget_limits

    parser = commands.add_parser(
        "resume", help="resume a failed, killed, abandoned or budget-exceeded durable run",
        description="Shows what the resume will do (recorded side effects replay and do NOT run again; recorded model "
                    "calls and other tools replay, the rest runs; spend so far counts against the budgets), asks for "
                    "confirmation (or --yes), records it in the audit log (releasing a kill switch on the run), "
                    "and resumes the run: in this process as a durable engine when no engine holds the store; in "
                    "the durable engine that holds it (flightdeck serve, flightdeck run --durable) otherwise, "
                    "waiting until it took the run and the run ended (--no-wait: return once recorded). An engine "
                    "holding the store that is not durable cannot resume it: nothing is written. On a Postgres store "
                    "one of the live durable engines on the database takes it (exactly one); with none live nothing "
                    "is written (exit 3).",
        epilog="Exit codes: those of `flightdeck run` for the resumed run (0 completed, 1 failed, 4 budget "
               "exceeded, 6 killed, 8 needs reconcile, ...); 0 with --no-wait once recorded; 2 bad input or "
               "refused (completed, running, not durable, waiting for reconcile, the engine holding the store is "
               "not durable, no confirmation); 3 store problem, or the engine holding the store stopped before it "
               "resumed the run (the next durable engine to start on the store does), or, on a Postgres store, no "
               "live durable engine is registered (nothing written).")
    parser.add_argument("run", metavar="RUN", help="the run (a unique prefix of its id is enough)")
    parser.add_argument("--reason", metavar="TEXT", help="why (for the audit log; default: 'operator resume')")
    parser.add_argument("--budget", metavar="LIMITS", type=budget_limits,
                        help="new run budget overrides, e.g. cost=2.50,tool_calls=40 (replace the run's own)")
    parser.add_argument("--speed", type=non_negative, default=1.0, metavar="X",
                        help="scripted-model speed factor (default 1; 0 removes simulated latency)")
    parser.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    parser.add_argument("--no-wait", action="store_true",
                        help="when a durable engine holds the store: return once the resume is recorded")
    parser.add_argument("--json", action="store_true", help="print the resumed run as JSON")
    add_operator(parser)
    add_store_argument(parser)
    parser.set_defaults(handler=handle_resume)


# -- reconcile ---------------------------------------------------------------------------------------------------

def _call_json(call: AwaitingCall) -> dict[str, Any]:
    decision = call.decision
    return {"span_id": call.span_id, "key": call.key, "call": call.call, "tool": call.tool, "agent": call.agent,
            "args": call.args, "decision": None if decision is None else {
                "decision": decision.decision, "note": decision.note, "operator": decision.operator,
                "ts": decision.ts, "audit_id": decision.audit_id}}


def _print_calls(calls: list[AwaitingCall]) -> None:
    rows = [(c.span_id, c.tool, c.agent or "", c.key, short(c.args, 40),
             "awaiting" if c.decision is None else f"{c.decision.decision} by {c.decision.operator}")
            for c in calls]
    print(table(("SPAN", "TOOL", "AGENT", "IDEMPOTENCY KEY", "ARGS", "DECISION"), rows))


def handle_reconcile(args: argparse.Namespace) -> int:
    from engine.controls.reconcile import runs_waiting, undecided

    api = open_api(args, create=False, read_only=args.decision is None)
    try:
        if args.decision is None:
            runs = runs_waiting(store_location_arg(args)) if args.run is None else None
            listing = []
            for run_id in [r.id for r in runs] if runs is not None else [args.run]:
                calls = api.reconcile_calls(run_id)
                listing.append((run_id, calls))
            if args.json:
                print_json([{"run_id": calls[0].run_id if calls else run_id, "calls": [_call_json(c) for c in calls]}
                            for run_id, calls in listing])
                return 0
            if not listing:
                print("no run is waiting for reconcile")
            for run_id, calls in listing:
                waiting = len(undecided(calls))
                if not calls:
                    print(f"run {run_id}: no side effect of unknown outcome (it is not waiting for reconcile)")
                    continue
                print(f"run {calls[0].run_id}: {waiting} side effect(s) awaiting a decision")
                _print_calls(calls)
            return 0
        reason = require_reason(args)
        decision = api.reconcile_side_effect(args.run or "", args.call, args.decision, reason)
        if args.json:
            print_json({"run_id": decision.run_id, "key": decision.key, "call": decision.call,
                        "decision": decision.decision, "note": decision.note, "operator": decision.operator,
                        "ts": decision.ts, "audit_id": decision.audit_id})
            return 0
        print(f"reconciled {decision.key}: {decision.decision} (by {decision.operator}, audit row {decision.audit_id})")
        if not undecided(api.reconcile_calls(decision.run_id)):
            _after_reconcile(args, api, decision.run_id, decision.audit_id)
        return 0
    finally:
        api.close()


def _after_reconcile(args: argparse.Namespace, api: Any, run_id: str, audit_id: int) -> None:
    """Every side effect of the run is decided: say who carries it on (and, with a durable engine running, wait
    until it took the run)."""
    from console.commands.controls.durable_wait import holder, report_take, still_held
    from engine.store.location import PostgresLocation

    location = store_location_arg(args)
    if isinstance(location, PostgresLocation):  # a fleet: no engine holds the store (durable_fleet.py)
        from console.commands.controls.durable_fleet import after_reconcile_on_fleet

        after_reconcile_on_fleet(args, api, run_id, audit_id, location)
        return
    store_dir = store_dir_arg(args)
    store = f" --store {args.store}" if args.store else ""
    now = f"flightdeck resume {run_id}{store} --reason '...'"
    engine = holder(store_dir)
    if engine is None:
        print(f"run {run_id} goes on when a durable engine next starts on this store, or now: {now}")
        return
    if not engine.durable:
        print(f"the engine holding the store ({engine.describe()}) is not a durable engine: it cannot carry the "
              f"run on. Run {run_id} goes on when a durable engine next starts on this store (or once that engine "
              f"stopped: {now})")
        return
    off = [f for f in api.active_flags() if f.name == "runs.auto_resume" and f.scope == "global"
           and str(f.value) == "false"]
    if not engine.auto_resume or off:
        why = "flag runs.auto_resume=false" if off else "it was started with --no-resume"
        print(f"{engine.describe()} holds the store but does not carry reconciled runs on by itself ({why}): "
              f"resume it with {now}")
        return
    if args.no_wait:
        print(f"{engine.describe()} (durable, running on this store) carries run {run_id} on within a moment")
        return
    report_take(api, run_id, audit_id, lambda: still_held(store_dir, engine), lambda _taken: engine.describe(),
                f"{engine.describe()} has not taken run {run_id} (it stopped, or is busy)", now)


# -- resume ------------------------------------------------------------------------------------------------------

def _print_preview(preview: ResumePreview) -> None:
    run = preview.run
    print(f"resume run {run.id} ({run.hierarchy}, {run.status} {timestamp(run.ended) if run.ended else ''})".rstrip()
          + (f": {short(run.error, 80)}" if run.error else ""), file=sys.stderr)
    print(f"  already spent (counts against the run's and the day's budgets): {usd(run.cost_usd)}, "
          f"{tokens(run.tokens_in + run.tokens_out)} tokens, {run.model_calls} model calls, {run.tool_calls} tool "
          "calls", file=sys.stderr)
    if preview.recorded or preview.reconciled:
        print("  will NOT run again (recorded side effects: their recorded result is replayed):", file=sys.stderr)
        for span in preview.recorded:
            args = span.attributes.get("args") if isinstance(span.attributes, dict) else None
            print(f"    {span.name} {short(args, 60)} (span {span.id}, {span.agent})", file=sys.stderr)
        for call in preview.reconciled:
            assert call.decision is not None
            verb = {"done": "confirmed done, not run again", "again": "RUNS AGAIN (same idempotency key)",
                    "fail": "the run ends failed"}[call.decision.decision]
            print(f"    {call.tool} {short(call.args, 40)}: reconciled by {call.decision.operator}: {verb}",
                  file=sys.stderr)
    else:
        print("  no side effect is recorded: every call the model asks for runs", file=sys.stderr)
    print("  replays: model calls and tool calls without side effects recorded complete in the trace store (not "
          "sent or billed again); anything not recorded (or redacted, or cut) runs, and side effects not recorded "
          "above run when the model asks for them", file=sys.stderr)
    if preview.limits is not None:
        print(f"  run limits: {preview.limits.describe()}", file=sys.stderr)
    for switch in preview.releases:
        print(f"  releases kill switch #{switch.id} on the run ({switch.mode}, by {switch.operator}: "
              f"{short(switch.reason, 60)})", file=sys.stderr)


def handle_resume(args: argparse.Namespace) -> int:
    from engine.controls.resume_preview import preview_resume
    from engine.runtime.call_paths import carry_on_refusal

    api = open_api(args, create=False)
    try:
        preview = preview_resume(api, args.run)
        refusal = preview.refusal or carry_on_refusal(preview.run)
        if refusal is not None:
            raise ControlError(refusal)
        if args.budget is not None:  # they replace the run's own and its budget changes
            from dataclasses import replace

            from engine.controls.carried_limits import CarriedLimits

            given = _limits_dict(args.budget)
            preview = replace(preview, limits=CarriedLimits(limits=given, base=given, replaced=True))
        _print_preview(preview)
        reason = args.reason.strip() if args.reason and args.reason.strip() else "operator resume"
        if not confirm(args, f"resume run {preview.run.id}"):
            return 1
        limits = None if args.budget is None else _limits_dict(args.budget)
        return _resume(args, api, preview, reason, limits)
    finally:
        api.close()


def _limits_dict(budget: Any) -> dict[str, Any]:
    """The limits an operator gave (a BudgetLimits), as the audit row records them."""
    return {k: v for k, v in budget.model_dump(exclude_unset=True).items() if v is not None}


def _resume(args: argparse.Namespace, api: Any, preview: ResumePreview, reason: str,
            limits: dict[str, Any] | None) -> int:
    import anyio

    from console.commands.run import print_summary
    from engine.controls.run_requests import record_and_take
    from engine.errors import StoreLocked
    from engine.runtime.engine import Engine
    from engine.runtime.results import EXIT_CODES
    from engine.store import open_engine_store
    from engine.store.location import PostgresLocation

    run_id = preview.run.id
    location = store_location_arg(args)
    if isinstance(location, PostgresLocation):  # a fleet: a live durable engine carries it on (durable_fleet.py)
        from console.commands.controls.durable_fleet import resume_on_fleet

        return resume_on_fleet(args, api, preview, reason, limits, location)
    store_dir = store_dir_arg(args)
    try:
        store = open_engine_store(store_dir)
    except StoreLocked as exc:
        from console.commands.controls.durable_wait import resume_in_engine

        return resume_in_engine(args, api, preview, reason, limits, str(exc))
    try:
        # Recorded and taken by this process in one transaction: no engine starting later takes it again. This
        # process holds the store alone, so it carries the run on even if an earlier request's taker never did.
        record_and_take(api, run_id, preview.run.status, preview.run.ended, limits=limits, reason=reason,
                        engine_id=store.engine_id, attributes=preview.run.attributes)

        async def go() -> Any:
            engine = Engine(store, latency_scale=(1.0 / args.speed) if args.speed else 0.0, durable=True,
                            auto_resume=False)
            assert engine.durable is not None
            engine.durable.pickup = False  # this engine carries on this one run, nothing an operator asks meanwhile
            async with engine:
                return await engine.durable.resume_run(run_id, args.budget)

        if not args.json:
            print(f"resuming run {run_id} on store {store_dir}", file=sys.stderr)
        result = anyio.run(go)
    finally:
        store.close()
    if args.json:
        print_json(store.redactor.clean(result.to_json()))
    else:
        print_summary([result], redact=store.redactor.clean_text)
    return EXIT_CODES[result.status]
