"""`flightdeck runs` and `flightdeck trace`: read the store, print for people or as stable JSON for scripts.

JSON shapes (a documented interface, see README):
- `runs --json`: a list of run objects: id, hierarchy, status, tenant, started, ended, tokens_in, tokens_out,
  cost_usd, model_calls, tool_calls, error, duration_s, then resumed (how often a durable run resumed after its
  engine died; 0 for others) and replayed_steps (recorded steps it replayed instead of running again), then
  degraded: the tool calls the engine withheld or an operator denied, [{tool, kind, reason}] ([] for most runs); a
  completed run with any is shown as `completed (degraded)` (its `status` stays `completed`).
- `trace --json`: the run's root span with nested `children`; each span has id, kind, name, agent, status, started,
  ended, duration_s, tokens_in, tokens_out, cost_usd, model, attributes, children.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from console.cli import add_store_argument
from console.output import print_json, table, tokens, usd
from engine.errors import InputError
from engine.timefmt import age, seconds

if TYPE_CHECKING:
    from engine.store.reader_protocol import TraceReads
    from engine.store.trace_rows import DegradedCall, RunRow, SpanNode

RUN_FIELDS = ("id", "hierarchy", "status", "tenant", "started", "ended", "tokens_in", "tokens_out", "cost_usd",
              "model_calls", "tool_calls", "error")
SPAN_FIELDS = ("id", "kind", "name", "agent", "status", "started", "ended", "tokens_in", "tokens_out", "cost_usd",
               "model", "attributes")


def add_parsers(commands: argparse._SubParsersAction) -> None:
    runs = commands.add_parser("runs", help="list recent runs", description="List runs, newest first.")
    add_store_argument(runs)
    runs.add_argument("--limit", type=int, default=50, help="how many runs (default 50)")
    runs.add_argument("--status", type=_run_status, metavar="S",
                      help="only runs with this status: " + ", ".join(_run_statuses()))
    runs.add_argument("--json", action="store_true", help="print a JSON list of run objects")
    runs.set_defaults(handler=handle_runs)

    trace = commands.add_parser("trace", help="show a run's span tree",
                                description="Show a run's span tree with timings, tokens and cost.")
    trace.add_argument("run_id", metavar="RUN_ID", help="run id (a unique prefix is enough)")
    add_store_argument(trace)
    trace.add_argument("--json", action="store_true", help="print the root span with nested children as JSON")
    trace.set_defaults(handler=handle_trace)


def _run_statuses() -> tuple[str, ...]:
    from engine.store.traces_schema import RUN_STATUSES

    return tuple(RUN_STATUSES)


def _run_status(text: str) -> str:
    """A status a run can have; anything else would silently list nothing."""
    statuses = _run_statuses()
    if text not in statuses:
        raise argparse.ArgumentTypeError(f"unknown status {text!r} (known: {', '.join(statuses)})")
    return text


def _open_reader(args: argparse.Namespace) -> TraceReads:
    """The store's trace reads: a directory's traces.db or a Postgres database (--store postgresql://...)."""
    from engine.store import open_trace_reads, resolve_store_location

    return open_trace_reads(resolve_store_location(args.store))


def run_json(run: RunRow, degraded: list[DegradedCall] | None = None) -> dict[str, Any]:
    out = {k: getattr(run, k) for k in RUN_FIELDS}
    out["duration_s"] = round(run.ended - run.started, 3) if run.ended else None
    # Durable runs (added after the keys above, which keep their order): 0 and 0 for a run that never resumed.
    out["resumed"] = run.resumed or 0
    out["replayed_steps"] = run.replayed_steps or 0
    out["degraded"] = [{"tool": c.tool, "kind": c.kind, "reason": c.reason} for c in degraded or ()]
    return out


def handle_runs(args: argparse.Namespace) -> int:
    from console.widgets.status import DEGRADED_WORD, degraded_summary

    reader = _open_reader(args)
    try:
        runs = reader.list_runs(limit=args.limit, status=args.status)
        degraded: dict[str, list[DegradedCall]] = {}
        for call in reader.degraded_calls([r.id for r in runs]):
            degraded.setdefault(call.run_id, []).append(call)
    finally:
        reader.close()
    if args.json:
        print_json([run_json(r, degraded.get(r.id)) for r in runs])
        return 0
    if not runs:
        print("no runs yet: start one with `flightdeck run deal-desk`")
        return 0
    now = time.time()
    rows: list[tuple[Any, ...]] = [
        (r.id, DEGRADED_WORD if r.status == "completed" and degraded.get(r.id) else r.status, r.hierarchy,
         r.tenant or "-", age(r.started, now), seconds((r.ended or now) - r.started),
         tokens((r.tokens_in or 0) + (r.tokens_out or 0)), usd(r.cost_usd), r.model_calls, r.tool_calls)
        for r in runs]
    headers: tuple[str, ...] = ("RUN", "STATUS", "HIERARCHY", "TENANT", "STARTED", "DURATION", "TOKENS", "COST",
                                "MODEL", "TOOLS")
    if any(r.resumed or r.replayed_steps for r in runs):
        # Durable runs that came back after their engine died (how often), and runs that replayed recorded steps
        # instead of running them again (a resume, or a retry from a step: engine/runtime/replay.py).
        headers += ("RESUMED",)
        rows = [row + (_resumed_cell(r),) for row, r in zip(rows, runs, strict=True)]
    print(table(headers, rows, right={5, 6, 7, 8, 9}))
    shown = [r for r in runs if r.status == "completed" and degraded.get(r.id)]
    if shown:
        print(f"\n{DEGRADED_WORD}: completed without a tool call that was withheld or denied")
        for r in shown:
            print(f"  {r.id}  {degraded_summary(degraded[r.id])}")
    waiting = [r.id for r in runs if r.status == "needs_reconcile"]
    if waiting:
        print(f"\n{len(waiting)} run(s) wait for an operator (a side effect's outcome is unknown): "
              f"flightdeck reconcile {waiting[-1]}")
    return 0


def _resumed_cell(run: RunRow) -> str:
    if run.resumed:
        return f"{run.resumed}x, {run.replayed_steps} replayed"
    return f"{run.replayed_steps} replayed" if run.replayed_steps else "-"


def _replayed(node: SpanNode) -> bool:
    span = node.span
    return span is not None and isinstance(span.attributes, dict) and span.attributes.get("replayed") is True


def span_json(node: SpanNode) -> dict[str, Any]:
    span = node.span
    if span is None:  # the synthetic root joining several roots
        out: dict[str, Any] = {k: None for k in SPAN_FIELDS}
        out.update(kind="run", name=node.run_id, started=node.started)
        out["duration_s"] = None
    else:
        out = {k: getattr(span, k) for k in SPAN_FIELDS}
        out["duration_s"] = round(span.ended - span.started, 4) if span.ended else None
    out["children"] = [span_json(c) for c in node.children]
    return out


@dataclass(frozen=True, slots=True)
class Figures:
    """Tokens and cost of a span's whole subtree, and whether any of it was estimated."""

    tokens_in: int
    tokens_out: int
    cost_usd: float
    estimated: bool


def rollup(node: SpanNode, out: dict[int, Figures]) -> Figures:
    """Tokens and cost of a node's whole subtree, for it and (in `out`, by id(node)) every node below: an agent's
    figure should include what its children spent. `estimated`: some count in it was estimated by the engine
    because the server reported no usage."""
    span = node.span
    if span is not None and span.kind == "llm":
        attrs = span.attributes
        figures = Figures(span.tokens_in or 0, span.tokens_out or 0, span.cost_usd or 0.0,
                          isinstance(attrs, dict) and attrs.get("tokens_estimated") is True)
        # A model call is a leaf of spend (its own figures are the call's), but spans may hang below it (the tool
        # calls it asked for): they need figures of their own too, or rendering them failed with a KeyError.
        for child in node.children:
            rollup(child, out)
    else:
        tin = tout = 0
        cost = 0.0
        estimated = False
        for child in node.children:
            sub = rollup(child, out)
            tin, tout, cost = tin + sub.tokens_in, tout + sub.tokens_out, cost + sub.cost_usd
            estimated = estimated or sub.estimated
        figures = Figures(tin, tout, cost, estimated)
    out[id(node)] = figures
    return figures


def _label(node: SpanNode) -> str:
    span = node.span
    if span is None:
        return f"run {node.run_id}"
    kind, name = span.kind, span.name
    if kind == "llm":
        return f"llm {name}"
    if kind in ("tool", "stage", "route"):
        return f"{kind} {name}"
    if kind == "delegation":
        return f"→ {span.attributes.get('to', name) if isinstance(span.attributes, dict) else name}"
    return f"{kind} {name}"


def render_tree(root: SpanNode) -> tuple[list[str], bool]:
    """The tree's lines, and whether any figure in it was estimated."""
    figures: dict[int, Figures] = {}
    total = rollup(root, figures)
    lines: list[str] = []

    def walk(node: SpanNode, prefix: str, last: bool, top: bool) -> None:
        span = node.span
        sums = figures[id(node)]
        tin, tout, cost = sums.tokens_in, sums.tokens_out, sums.cost_usd
        duration = seconds(span.ended - span.started) if span is not None and span.ended else "running"
        result = f"{duration:>8}"
        if tin or tout:
            approx = "~" if sums.estimated else ""  # some of it estimated: the server reported no usage
            result += f"  {approx}{tokens(tin)}→{tokens(tout)} tok  {usd(cost)}"
        branch = "" if top else ("└─ " if last else "├─ ")
        # The synthetic root has no status (it used to crash here: None.upper()).
        status = "-" if span is None else (span.status if span.status == "ok" else span.status.upper())
        # A replayed step was answered from the record (a resume or a retry), not run again: no tokens, no cost.
        label = _label(node) + (" (replayed)" if _replayed(node) else "")
        lines.append(f"{prefix}{branch}{label}  [{status}]  {result}")
        children = node.children
        child_prefix = prefix + ("" if top else ("   " if last else "│  "))
        for i, child in enumerate(children):
            walk(child, child_prefix, i == len(children) - 1, False)

    walk(root, "", True, True)
    return lines, total.estimated


def handle_trace(args: argparse.Namespace) -> int:
    reader = _open_reader(args)
    try:
        run = reader.get_run(args.run_id)
        if run is None:
            raise InputError(f"no run {args.run_id!r} in this store (see `flightdeck runs`)", field="RUN_ID")
        tree = reader.span_tree(run.id)
    finally:
        reader.close()
    if tree is None:
        raise InputError(f"run {run.id} has no spans recorded", field="RUN_ID")
    if args.json:
        print_json(span_json(tree))
        return 0
    lines, estimated = render_tree(tree)
    approx = "~" if estimated else ""
    print(f"run {run.id}  {run.hierarchy}  {run.status}  "
          f"{approx}{tokens((run.tokens_in or 0) + (run.tokens_out or 0))} tokens  {usd(run.cost_usd)}")
    attrs = run.attributes if isinstance(run.attributes, dict) else {}
    if run.resumed or run.replayed_steps or attrs.get("retry_of"):
        parts = [f"resumed {run.resumed}x"] if run.resumed else []
        if attrs.get("retry_of"):
            parts.append(f"retry of run {attrs['retry_of']} from span {attrs.get('retry_from')}")
        parts.append(f"{run.replayed_steps or 0} steps replayed (answered from the record, not run or billed again)")
        print(", ".join(parts))
    for line in lines:
        print(line)
    if approx:
        print("\n~ estimated: a model server reported no token usage for some calls (about 4 characters a token)")
    if run.error:
        print(f"\nerror: {run.error}")
    return 0
