"""What `flightdeck retry RUN --from SPAN` would do, read before it does it (engine/runtime/retry.py runs it; its
audit row is engine/controls/reconcile.py's record_retry).

A retry is a fork: a NEW run (new id, run attributes `retry_of`, `retry_from`) of the same hierarchy file and input,
whose calls structurally BEFORE the span replay from the original run's record (engine/runtime/replay.py), and the
span, everything under it and everything after it run fresh. "Before" is `replay.precedes` on the calls' paths:
at the first agent invocation where the two paths part, the same agent and an earlier step (or the same step and
an earlier call; a step's model call comes before its tool calls). So the steps the span's agent took before it,
the model call that asked for a tool (when the span is that tool call), and whatever earlier calls delegated, all
replay; the span's subtree and every later step of its ancestors run again. Paths that part at different agents
(other pipeline stages, whose `<pipeline>/<stage>` frames differ even when they run the same agent; a router's
pick) are not ordered: those run again too.

Side effects before the span replay their recorded outcome (never executed again); from the span on they run under
the new run's keys: the preview lists them, because a retry does them again in the world. The original run is
never touched.

Limits: the retry starts with the per-run budget overrides the original started with (its `--budget`, recorded as
the run attribute `budget`) and then the budget changes an operator made while it ran (`flightdeck budget`, applied
by its engine: engine/controls/carried_limits.py), so a run stopped by its limit is not retried without one, nor a
raised limit lowered back; an operator's `--budget` on the retry replaces them all (`budget_source` says which,
`budget_changes` which changes were folded in; the preview shows it, the audit row records it). A row from an
engine that recorded neither (no `paths` attribute either) cannot say: the hierarchy's limits apply (with the
changes, if any), and the preview says the original's are unknown.

Call paths: the retry builds them in the format its original was recorded with (engine/runtime/call_paths.py), so
the replay table's paths are the ones it looks up.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.controls.carried_limits import CarriedLimits
from engine.controls.reconcile import read_run
from engine.errors import InputError
from engine.guardrails.budget import BudgetLimits, limits_from_attribute
from engine.runtime.call_paths import path_format_of
from engine.runtime.replay import ReplayTable, table_from_spans
from engine.store.control_rows import BudgetOverride
from engine.store.location import StoreDirectory, StoreLocation
from engine.store.trace_rows import RunRow, SpanRow

STEP_KINDS = ("llm", "tool", "agent", "delegation")  # what a retry may start from: a model, tool or agent step


@dataclass(frozen=True, slots=True)
class RetryPreview:
    run: RunRow
    span: SpanRow
    path: str  # the span's structural path
    hierarchy_path: str  # the file (or bundled name) the retry loads
    scenario: str | None
    durable: bool  # the original was durable: so is the retry
    table: ReplayTable  # what replays, by path
    replays: list[SpanRow] = field(default_factory=list)  # the recorded calls that replay (not run again)
    runs_again: list[SpanRow] = field(default_factory=list)  # recorded model and tool calls that run again
    side_effects_again: list[SpanRow] = field(default_factory=list)  # of those, side effects: done AGAIN
    path_format: int = 2  # the original's call-path format: the retry's too (engine/runtime/call_paths.py)
    budget: BudgetLimits | None = None  # the per-run budget overrides the retry starts with
    # "original": the original's own (or it had none: None); "operator": --budget on the retry; "unknown": the
    # original's row predates recording them (the hierarchy's limits apply)
    budget_source: str = "original"
    # the original's budget changes folded into `budget` (made while it ran), oldest first
    budget_changes: tuple[BudgetOverride, ...] = ()

    def with_budget(self, budget: BudgetLimits) -> RetryPreview:
        """The same retry, starting with the operator's limits instead of the original's."""
        from dataclasses import replace

        return replace(self, budget=budget, budget_source="operator", budget_changes=())


def _attrs(span: SpanRow | RunRow) -> Mapping[str, Any]:
    return span.attributes if isinstance(span.attributes, Mapping) else {}


def find_span(store_dir: Path | StoreLocation, run: RunRow, spans: list[SpanRow], ref: str) -> SpanRow:
    """The run's span with id `ref` (or a unique prefix of one); InputError naming --from otherwise."""
    ref = ref.strip()
    if not ref:
        raise InputError("a span id (or a unique prefix of one) is required", field="--from")
    exact = [s for s in spans if s.id == ref]
    found = exact or [s for s in spans if s.id.startswith(ref)]
    if len(found) > 1:
        shown = ", ".join(s.id for s in found[:5])
        raise InputError(f"span prefix {ref!r} is ambiguous in run {run.id}: it matches {shown}", field="--from")
    if not found:
        other = _run_of_span(store_dir, ref)
        where = f": it is a span of run {other}" if other else ""
        raise InputError(f"run {run.id} has no span {ref!r}{where} (see flightdeck trace {run.id} --json)",
                         field="--from")
    span = found[0]
    if span.kind not in STEP_KINDS:
        raise InputError(f"span {span.id} is a {span.kind} span: a retry starts from a model call (llm), a tool "
                         "call, a delegation or an agent", field="--from")
    if not isinstance(_attrs(span).get("path"), str):
        raise InputError(f"span {span.id} has no call path (it was recorded by an engine before paths were): "
                         "nothing can be replayed up to it; run the hierarchy again instead", field="--from")
    return span


def _run_of_span(store: Path | StoreLocation, ref: str) -> str | None:
    from engine.store import open_trace_reads

    reader = open_trace_reads(StoreDirectory(store) if isinstance(store, Path) else store)
    try:
        rows = reader.query("SELECT run_id FROM spans WHERE id = ? OR id LIKE ? LIMIT 1",
                            (ref, ref.replace("%", "").replace("_", "") + "%"))
    finally:
        reader.close()
    return str(rows[0]["run_id"]) if rows else None


def refusal_for(run: RunRow) -> str | None:
    if run.status == "running":
        return (f"run {run.id} is running (engine {run.engine_id}): retry a run that has ended (stop it first: "
                f"flightdeck kill --run {run.id} --reason ...)")
    if run.status in ("queued", "cancelled") and not run.model_calls and not run.tool_calls:
        return f"run {run.id} never ran ({run.status}): there is no step to retry from"
    return None


def preview_retry(store_dir: Path | StoreLocation, run_id: str, span_ref: str) -> RetryPreview:
    """What retrying `run_id` from `span_ref` replays and runs again. InputError (exit 2, nothing written): no such
    run, a run still running, an unknown span or one of another run, a span that is not a step."""
    run, spans = read_run(store_dir, run_id)
    refusal = refusal_for(run)
    if refusal is not None:
        raise InputError(refusal, field="RUN")
    span = find_span(store_dir, run, spans, span_ref)
    path = str(_attrs(span)["path"])
    attrs = _attrs(run)
    carried = _carried(store_dir, run)
    table = table_from_spans(run.id, spans, before=path, side_effects="all")
    replayed_ids = {r.span_id for r in table.models.values()} | {r.span_id for r in table.tools.values()}
    replays = [s for s in spans if s.id in replayed_ids]
    seen: set[str] = set()
    again: list[SpanRow] = []
    for s in spans:  # one line per call path that runs again (its attempts and earlier records are one call)
        call_path = _attrs(s).get("path")
        if s.kind in ("llm", "tool") and s.id not in replayed_ids and isinstance(call_path, str) \
                and call_path not in table.models and call_path not in table.tools and call_path not in seen:
            seen.add(call_path)
            again.append(s)
    effects = [s for s in again if s.kind == "tool" and _attrs(s).get("side_effects")]
    return RetryPreview(run=run, span=span, path=path,
                        hierarchy_path=str(attrs.get("hierarchy_path") or run.hierarchy),
                        scenario=attrs.get("scenario") if isinstance(attrs.get("scenario"), str) else None,
                        durable=bool(attrs.get("durable")), table=table, replays=replays, runs_again=again,
                        side_effects_again=effects, path_format=path_format_of(attrs),
                        budget=limits_from_attribute(carried.limits), budget_changes=carried.changes,
                        budget_source="original" if "paths" in attrs else "unknown")


def _carried(store: Path | StoreLocation, run: RunRow) -> CarriedLimits:
    """The original's limits and the budget changes applied while it ran (control.db, or a Postgres store's control
    plane; a store without one has none)."""
    from engine.controls.api import ControlAPI
    from engine.controls.carried_limits import of_run
    from engine.store.files import CONTROL_DB
    from engine.store.location import PostgresLocation

    if isinstance(store, PostgresLocation):
        from engine.store.pg.control_db import control_plane_present

        if not control_plane_present(store):
            return of_run_without_changes(run)
    else:
        store_dir = store.path if isinstance(store, StoreDirectory) else store
        if not (store_dir / CONTROL_DB).is_file():
            return of_run_without_changes(run)
    with ControlAPI(store, "retry-preview", create=False, read_only=True) as api, api.read() as conn:
        return of_run(conn, run.id, run.attributes)


def of_run_without_changes(run: RunRow) -> CarriedLimits:
    budget = _attrs(run).get("budget")
    return CarriedLimits(limits=dict(budget) if isinstance(budget, Mapping) and budget else None)
