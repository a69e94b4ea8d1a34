"""`flightdeck retry RUN --from SPAN`: re-run a run from one of its steps, as a new run (a fork), after a preview, a
confirmation and an audit row. The engine side is engine/runtime/retry_preview.py and engine/runtime/retry.py; the
retry runs in THIS process, on an engine of its own on the store (durable when the original was), like `resume` on a
directory no engine holds. On a Postgres store that engine is one more on the database (no lock to wait for); it
takes no other run's resume requests meanwhile.

JSON (`--json`): the new run object `flightdeck run --json` prints, plus `retry_of`, `retry_from`,
`replayed_steps` and `budget` (the run budget overrides it started with, or null).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from console.cli import add_store_argument
from console.commands.argtypes import non_negative
from console.commands.controls.common import add_operator, confirm, open_api, require_reason, short, store_location_arg
from console.output import print_json
from engine.controls.errors import ControlError
from engine.errors import InputError
from engine.guardrails.budget import limits_attribute

if TYPE_CHECKING:
    from engine.runtime.retry_preview import RetryPreview
    from engine.store.location import StoreLocation

RUN_ID = re.compile(r"[0-9a-f]{8,32}")
BEFORE = ("A call replays (its recorded result is reused: not sent to the model or tool again, not billed, a side "
          "effect not done again) when it comes structurally BEFORE the span: at the first agent invocation where "
          "their call paths part, the same agent and an earlier step, or the same step and an earlier call (a "
          "step's model call comes before the tool calls it asked for). The span itself, everything under it and "
          "every later step run fresh, side effects under the new run's idempotency keys; so do calls of other "
          "agents at the same level (other pipeline stages, even of the same agent; a router's pick), and "
          "recorded results that no longer fit the hierarchy file (it may have changed: a retry loads it as it is "
          "now).")


def add_retry(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from console.commands.argtypes import budget_limits

    parser = commands.add_parser(
        "retry", help="re-run a run from one of its steps, as a new run that reuses what came before",
        description="Starts a NEW run (new id; attributes retry_of, retry_from) of the same hierarchy file and "
                    "input, with the run budget overrides the original started with (unless --budget replaces them). "
                    + BEFORE + " Shows what replays and what runs again (side effects that will be done "
                    "AGAIN are listed first) and the limits, asks for confirmation (or --yes), records the retry in "
                    "the audit log (action retry, target the original run, the span, the new run id and its "
                    "budget), then runs the new run in this process. The original run is not changed.",
        epilog="Exit codes: those of `flightdeck run` for the new run (0 completed, 1 failed, 4 budget exceeded, "
               "6 killed, 8 needs reconcile, ...); 2 bad input or refused (unknown run or span, a span of another "
               "run, a span that is not a model, tool, delegation or agent step, a running run, no --reason, a bad "
               "--budget, no confirmation, another engine holds the store directory, a run recorded by an older "
               "engine whose call paths are ambiguous): nothing written; 3 store problem.")
    parser.add_argument("run", metavar="RUN", help="the run (a unique prefix of its id is enough)")
    parser.add_argument("--from", dest="span", metavar="SPAN", required=True,
                        help="the step to run again from: a span id of the run (or a unique prefix; see "
                             "flightdeck trace RUN --json): an llm, tool, delegation or agent span")
    parser.add_argument("--reason", metavar="TEXT", help="why (required: the audit log keeps it)")
    parser.add_argument("--budget", metavar="LIMITS", type=budget_limits,
                        help="run budget overrides for the new run, e.g. cost=2.50,tool_calls=40: they REPLACE "
                             "those the original started with (its --budget), which the retry keeps otherwise")
    parser.add_argument("--speed", type=non_negative, default=1.0, metavar="X",
                        help="scripted-model speed factor (default 1; 0 removes simulated latency)")
    parser.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    parser.add_argument("--run-id", metavar="ID",
                        help="the new run's id (default: a fresh one): 8 to 32 lowercase hex digits, not a run of "
                             "the store already. The console passes the id it shows while the retry starts")
    parser.add_argument("--json", action="store_true", help="print the new run as JSON")
    add_operator(parser)
    add_store_argument(parser)
    parser.set_defaults(handler=handle_retry)


def _line(span: Any) -> str:
    args = span.attributes.get("args") if isinstance(span.attributes, dict) else None
    what = f"{span.name} {short(args, 50)}" if span.kind == "tool" else f"model call ({span.name})"
    path = span.attributes.get("path") if isinstance(span.attributes, dict) else None
    return f"{what}  [{path}, span {span.id}]"


def print_preview(preview: RetryPreview, changed: bool, new_run_id: str) -> None:
    run, span = preview.run, preview.span
    out = sys.stderr
    print(f"retry run {run.id} ({run.hierarchy}, {run.status}) from {span.kind} span {span.id} ({span.name}, "
          f"path {preview.path}) as new run {new_run_id}" + (" (durable)" if preview.durable else ""), file=out)
    if preview.side_effects_again:
        print(f"  !! {len(preview.side_effects_again)} SIDE EFFECT(S) WILL BE DONE AGAIN if the model asks for "
              "them (under the new run's keys):", file=out)
        for s in preview.side_effects_again:
            print(f"  !!   {_line(s)}", file=out)
    print(f"  replays ({len(preview.replays)} recorded calls, not run or billed again):", file=out)
    for s in preview.replays:
        print(f"    {_line(s)}", file=out)
    print(f"  runs again ({len(preview.runs_again)} recorded calls at or after the span, and whatever the model "
          "asks for next):", file=out)
    for s in preview.runs_again:
        print(f"    {_line(s)}", file=out)
    print(f"  budget: {budget_line(preview)}", file=out)
    if changed:
        print(f"  the hierarchy file {preview.hierarchy_path} changed since the run: recorded calls that no longer "
              "fit it run again", file=out)


def limits_text(limits: dict[str, Any]) -> str:
    return ",".join(f"{key}={'none' if value is None else value}" for key, value in limits.items())


def budget_line(preview: RetryPreview) -> str:
    """Which run limits the new run starts with, and where they come from."""
    if preview.budget_source == "operator":
        assert preview.budget is not None
        return f"{limits_text(limits_attribute(preview.budget))} (--budget: replaces the original's)"
    # The original's budget changes (`flightdeck budget` while it ran), folded in after its own --budget.
    changes = "".join(f"; then budget change #{c.id} by {c.operator} ({c.reason}): {limits_text(c.limits)}"
                      for c in preview.budget_changes)
    if preview.budget_source == "unknown":
        return ("the hierarchy's run limits (the original's row is from an older engine, which did not record its "
                "--budget: pass --budget to set limits)" + changes)
    if preview.budget is None:
        return "the hierarchy's run limits (the original had no --budget and no budget change)"
    attrs = preview.run.attributes if isinstance(preview.run.attributes, dict) else {}
    own = f"the original's --budget {limits_text(attrs['budget'])}" if attrs.get("budget") else \
        "the original had no --budget"
    return f"{limits_text(limits_attribute(preview.budget))} ({own}{changes}; --budget replaces them)"


def chosen_run_id(store: Path | StoreLocation, wanted: str) -> str:
    """--run-id: a fresh id of the usual shape. An id the store knows is refused: a durable run's id is its
    workflow's, and submitting it again would return that run instead of starting a new one."""
    from engine.store import open_trace_reads
    from engine.store.location import StoreDirectory

    if not RUN_ID.fullmatch(wanted):
        raise InputError(f"{wanted!r} is not a run id: 8 to 32 lowercase hex digits", field="--run-id")
    reader = open_trace_reads(StoreDirectory(store) if isinstance(store, Path) else store)
    try:
        known = reader.get_run(wanted)  # the exact id first, else a unique prefix
    except InputError:  # an ambiguous prefix: no run has this exact id
        known = None
    finally:
        reader.close()
    if known is not None and known.id == wanted:
        raise InputError(f"run {wanted} exists already: a retry is a new run", field="--run-id")
    return wanted


def handle_retry(args: argparse.Namespace) -> int:
    from engine.runtime.retry import new_run_id, retry_hierarchy
    from engine.runtime.retry_preview import preview_retry

    store = store_location_arg(args)
    reason = require_reason(args)
    preview = preview_retry(store, args.run, args.span)
    hierarchy, changed = retry_hierarchy(preview)
    if args.budget is not None:
        preview = preview.with_budget(args.budget)
    run_id = chosen_run_id(store, args.run_id) if args.run_id is not None else new_run_id()
    print_preview(preview, changed, run_id)
    if not confirm(args, f"retry run {preview.run.id} from span {preview.span.id}"):
        return 1
    return _retry(args, preview, hierarchy, run_id, reason)


def _retry(args: argparse.Namespace, preview: RetryPreview, hierarchy: Any, run_id: str, reason: str) -> int:
    import anyio

    from console.commands.run import print_summary
    from engine.errors import StoreLocked
    from engine.runtime.engine import Engine
    from engine.runtime.results import EXIT_CODES
    from engine.runtime.retry import start_retry
    from engine.store import open_engine_store
    from engine.store.location import PostgresLocation

    location = store_location_arg(args)
    postgres = isinstance(location, PostgresLocation)
    try:  # on Postgres this process is one more engine on the database (there is no lock to hold)
        store = open_engine_store(location if isinstance(location, PostgresLocation) else location.path)
    except StoreLocked as exc:
        store_arg = f" --store {args.store}" if args.store else ""
        raise ControlError(f"{exc}: nothing was written. Stop that engine (or let it finish), then run: "
                           f"flightdeck retry {preview.run.id} --from {preview.span.id}{store_arg} "
                           f"--reason '{reason}' --yes") from None
    try:
        api = open_api(args, create=True)
        try:
            api.record_retry(preview.run.id, span=preview.span.id, path=preview.path, new_run_id=run_id,
                             replays=len(preview.table),
                             side_effects_again=[s.name for s in preview.side_effects_again], reason=reason,
                             budget=None if preview.budget is None else limits_attribute(preview.budget),
                             budget_source=preview.budget_source,
                             budget_changes=[{"id": c.id, "operator": c.operator, "reason": c.reason,
                                              "limits": c.limits} for c in preview.budget_changes])
        finally:
            api.close()

        async def go() -> Any:
            engine = Engine(store, latency_scale=(1.0 / args.speed) if args.speed else 0.0,
                            durable=preview.durable, auto_resume=False)
            if postgres and engine.durable is not None:  # one engine of a fleet: it runs this retry, takes nothing
                engine.durable.pickup = False
            async with engine:
                return await start_retry(engine, preview, hierarchy, run_id)

        if not args.json:
            print(f"retrying run {preview.run.id} as run {run_id} on store {location}", file=sys.stderr)
        result = anyio.run(go)
    finally:
        store.close()
    if args.json:
        print_json(store.redactor.clean({**result.to_json(), "retry_of": preview.run.id,
                                         "retry_from": preview.span.id, "replayed_steps": len(preview.table),
                                         "budget": None if preview.budget is None else
                                         limits_attribute(preview.budget)}))
    else:
        print_summary([result], redact=store.redactor.clean_text)
    return EXIT_CODES[result.status]
