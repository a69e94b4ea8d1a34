"""Replaying a run's recorded calls instead of making them again (issue 13): a resumed durable run, and a retry from a
chosen step (engine/runtime/retry.py), answer model calls and tool calls whose result is already in the trace store
(traces.db, or a Postgres store) from that record, so they are neither sent to the provider / tool again nor billed
again.

The record is read once, when the run (re)starts, into a ReplayTable keyed by the call's structural path (the
`path` attribute of llm and tool spans, engine/durable/keys.py): `<agent path><agent>.<step>` for a model call,
`... .<call index>` for a tool call. Parallel calls and delegations cannot reorder those, so a path names the same
call on every execution. During the run a call costs one `ctx.replay is not None` test (and a dict lookup when
resuming): nothing is read or written per call to find a record.

Only a complete record replays: a span whose attributes the trace store redacted or cut (the `[REDACTED` and
`…[truncated` markers, engine/store/redact.py) is not what the model or tool produced, so that call runs again.
A recorded model answer that no longer fits the agent (it asks for a tool or delegate the agent no longer has:
the hierarchy changed, which a retry allows) runs again too, as does a recorded tool call of another name.

Structural order ("before" a span, for retry): see `precedes`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from engine.providers.base import ModelResponse, ToolCall, Usage

if TYPE_CHECKING:
    from engine.runtime.compiled import CompiledAgent
    from engine.runtime.context import RunContext
    from engine.store.location import StoreLocation
    from engine.store.trace_rows import SpanRow

# What the trace store leaves in a value it changed (engine/store/redact.py): such a record is not replayed.
INCOMPLETE_MARKERS = ("[REDACTED", "…[truncated")

# Which side effects a table holds. "replayed": only those a run already replayed (a resumed run's own record:
# its executed side effects replay through DBOS, engine/runtime/side_effects.py, and what a retry replayed from
# its original has no DBOS record under the retry's keys). "all": every recorded outcome (a retry's source).
SideEffects = Literal["replayed", "all"]


@dataclass(frozen=True, slots=True)
class RecordedModel:
    span_id: str
    agent: str
    content: str | None
    tool_calls: tuple[ToolCall, ...]
    finish_reason: str
    model: str | None


@dataclass(frozen=True, slots=True)
class RecordedTool:
    span_id: str
    name: str
    ok: bool  # False: the tool raised; `value` is the error text the model was given
    value: Any
    side_effects: bool


@dataclass(slots=True)
class ReplayTable:
    """A run's replayable calls by path. `source`: the run they were recorded in."""

    source: str
    models: dict[str, RecordedModel] = field(default_factory=dict)
    tools: dict[str, RecordedTool] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.models) + len(self.tools)

    def model(self, path: str, agent: CompiledAgent) -> RecordedModel | None:
        """The recorded answer for this model call, if it still fits the agent."""
        recorded = self.models.get(path)
        if recorded is None or recorded.agent != agent.name:
            return None
        for call in recorded.tool_calls:
            if call.name not in agent.tools and call.name not in agent.delegation_names:
                return None
        return recorded

    def tool(self, path: str, name: str, side_effects: bool) -> RecordedTool | None:
        recorded = self.tools.get(path)
        if recorded is None or recorded.name != name or recorded.side_effects != side_effects:
            return None
        return recorded

    def merged_over(self, other: ReplayTable) -> ReplayTable:
        """This table's records, and `other`'s where this one has none for a path."""
        return ReplayTable(self.source, {**other.models, **self.models}, {**other.tools, **self.tools})


# -- structural order ----------------------------------------------------------------------------------------------

Frame = tuple[str, int, int]


def frames(path: str) -> list[Frame]:
    """`a.0.1>b.2` -> [(a, 0, 1), (b, 2, -1)]: one (agent, step, call index) per agent invocation on the way; -1
    where a path stops short (an agent span's path is its agent alone; a model call's has no call index). Agent
    names cannot hold `.` or `>` (hierarchy NAME_PATTERN)."""
    out: list[Frame] = []
    for frame in path.split(">"):
        agent, *numbers = frame.split(".")
        step = int(numbers[0]) if numbers else -1
        index = int(numbers[1]) if len(numbers) > 1 else -1
        out.append((agent, step, index))
    return out


def precedes(earlier: str, later: str) -> bool:
    """Whether the call at path `earlier` comes structurally before the step at path `later`: at the first
    invocation where their paths part, the same agent, and an earlier step, or the same step and an earlier call
    (the step's model call, index -1, before its tool calls). So a step's model call precedes its calls and
    everything they delegate; a call's delegate's steps precede the parent's later steps; `later`'s own subtree
    (and `later` itself) does not precede it; and paths that part at different agents (pipeline stages, which
    run in parallel: their `<pipeline>/<stage>` frames differ, or a router's pick) are not ordered: they do not
    precede."""
    try:
        a, b = frames(earlier), frames(later)
    except ValueError:
        return False
    for x, y in zip(a, b, strict=False):
        if x == y:
            continue
        if x[0] != y[0]:
            return False
        return (x[1], x[2]) < (y[1], y[2])
    return False  # one is the other's ancestor (or the same step)


# -- reading a record ----------------------------------------------------------------------------------------------

def complete(value: Any) -> bool:
    """No string in `value` was redacted or cut by the trace store."""
    if isinstance(value, str):
        return not any(marker in value for marker in INCOMPLETE_MARKERS)
    if isinstance(value, Mapping):
        return all(complete(k) and complete(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return all(complete(v) for v in value)
    return True


def _recorded_calls(raw: Any) -> tuple[ToolCall, ...] | None:
    if not isinstance(raw, list):
        return None
    calls = []
    for item in raw:
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str) or not isinstance(
                item.get("arguments"), Mapping):
            return None
        calls.append(ToolCall(id=str(item.get("id")), name=item["name"], arguments=dict(item["arguments"]),
                              raw_arguments=item.get("raw"), parse_error=item.get("parse_error")))
    return tuple(calls)


def table_from_spans(source: str, spans: list[SpanRow], *, before: str | None = None,
                     side_effects: SideEffects = "replayed") -> ReplayTable:
    """The replayable calls among `spans` (oldest first: a later record of a path wins); with `before`, only those
    whose path precedes it."""
    table = ReplayTable(source)
    for span in spans:
        attrs = span.attributes
        if span.kind not in ("llm", "tool") or not isinstance(attrs, Mapping):
            continue
        path = attrs.get("path")
        if not isinstance(path, str) or (before is not None and not precedes(path, before)):
            continue
        if span.kind == "llm":
            calls = _recorded_calls(attrs.get("tool_calls"))
            if span.status != "ok" or calls is None or not complete(attrs) or span.agent is None:
                continue
            table.models[path] = RecordedModel(span.id, span.agent, attrs.get("content"), calls,
                                               str(attrs.get("finish_reason") or "stop"), span.model)
            continue
        effect = bool(attrs.get("side_effects"))
        if effect and side_effects == "replayed" and not attrs.get("replayed"):
            continue
        if span.status == "ok" and "result" in attrs and complete(attrs.get("result")):
            table.tools[path] = RecordedTool(span.id, span.name, True, attrs["result"], effect)
        elif (effect and side_effects == "all" and span.status == "error" and attrs.get("error_kind") == "tool_error"
              and isinstance(attrs.get("error"), str) and complete(attrs["error"])):
            table.tools[path] = RecordedTool(span.id, span.name, False, attrs["error"], effect)
    return table


def load_table(store: Path | StoreLocation, run_id: str, *, before: str | None = None,
               side_effects: SideEffects = "replayed") -> ReplayTable:
    """One read of `run_id`'s spans from the trace store: a directory's traces.db, or the Postgres store the engine's
    traces go to (the same reads, engine/store/trace_queries.py). Empty when the store has none."""
    from engine.errors import StoreError
    from engine.store import open_trace_reads
    from engine.store.location import StoreDirectory

    try:
        reader = open_trace_reads(StoreDirectory(store) if isinstance(store, Path) else store)
    except StoreError:
        return ReplayTable(run_id)
    try:
        spans = reader.spans(run_id)
    finally:
        reader.close()
    return table_from_spans(run_id, spans, before=before, side_effects=side_effects)


# -- replaying -----------------------------------------------------------------------------------------------------

def count_replayed(ctx: RunContext) -> None:
    ctx.attributes["replayed_steps"] = ctx.attributes.get("replayed_steps", 0) + 1


def replay_model(ctx: RunContext, agent: CompiledAgent, agent_span: str, recorded: RecordedModel, step: int,
                 path: str, messages: int) -> ModelResponse:
    """Record an llm span for a replayed answer (no tokens, no cost: its spend was counted where it was recorded)
    and return the answer as the provider gave it."""
    count_replayed(ctx)
    tracer = ctx.tracer
    span = tracer.start(ctx.run_id, agent_span, "llm", agent.name, recorded.model or "", {
        "step": step, "attempt": 1, "messages": messages, "path": path, "replayed": True,
        "replayed_from": {"run": ctx.replay.source if ctx.replay is not None else None, "span": recorded.span_id}})
    tracer.end(span, ctx.run_id, "ok", model=recorded.model, attrs={
        "content": recorded.content,
        "tool_calls": [{"id": c.id, "name": c.name, "arguments": c.arguments, "raw": c.raw_arguments,
                        **({"parse_error": c.parse_error} if c.parse_error else {})} for c in recorded.tool_calls],
        "finish_reason": recorded.finish_reason, "latency_ms": 0.0, "cached": False, "replayed": True})
    return ModelResponse(content=recorded.content, tool_calls=recorded.tool_calls, usage=Usage(),
                         finish_reason=recorded.finish_reason,  # type: ignore[arg-type]
                         model=recorded.model or "", latency_s=0.0)

