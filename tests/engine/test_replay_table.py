"""The replay table (engine/runtime/replay.py): which recorded calls replay, and the structural order that says
what comes before a span."""

from __future__ import annotations

from typing import Any

import pytest

from engine.runtime.replay import precedes, table_from_spans
from engine.store.trace_rows import SpanRow


def span(span_id: str, kind: str, name: str, attrs: Any, status: str = "ok", agent: str = "clerk") -> SpanRow:
    return SpanRow(id=span_id, run_id="r1", parent_id=None, kind=kind, agent=agent, name=name, status=status,
                   started=0.0, ended=1.0, tokens_in=0, tokens_out=0, cost_usd=0.0, model="m", attributes=attrs,
                   last_seq=0)


def llm(span_id: str, path: str, content: str | None = None, calls: list[dict[str, Any]] | None = None,
        status: str = "ok") -> SpanRow:
    return span(span_id, "llm", "m", {"path": path, "content": content, "tool_calls": calls or [],
                                      "finish_reason": "stop"}, status)


@pytest.mark.parametrize(("earlier", "later", "expected"), [
    ("clerk.0", "clerk.1", True),  # an earlier step
    ("clerk.1", "clerk.1.0", True),  # a step's model call before its calls
    ("clerk.1.0", "clerk.1", False),  # ... and not the other way round
    ("clerk.0.0", "clerk.0.1", True),  # an earlier call of the same step
    ("clerk.0.0>desk.3", "clerk.1", True),  # a delegate's steps before the parent's next step
    ("clerk.1", "clerk.0.0>desk.3", False),
    ("clerk.0.0>desk.2", "clerk.0.0>desk.3", True),
    ("clerk.0.0", "clerk.0.0>desk.3", False),  # the delegation holding the span runs again
    ("clerk.0.0>desk.4", "clerk.0.0", False),  # the span's own subtree runs again
    ("clerk.0", "clerk", False),  # an agent span: all its steps run again
    ("clerk.2", "clerk.2", False),
    ("intake.3", "review.0", False),  # pipeline stages (different agents at one level) are not ordered
])
def test_structural_order(earlier: str, later: str, expected: bool) -> None:
    assert precedes(earlier, later) is expected


def test_only_complete_successful_records_replay() -> None:
    spans = [
        llm("a", "clerk.0", calls=[{"id": "c0", "name": "lookup", "arguments": {"id": 1}, "raw": '{"id": 1}'}]),
        llm("b", "clerk.1", content="the key is [REDACTED]"),  # the store redacted it: not what the model said
        llm("c", "clerk.2", content="x" * 10 + "…[truncated 99 bytes]"),
        llm("d", "clerk.3", status="error"),
        span("e", "tool", "lookup", {"path": "clerk.0.0", "result": {"id": 1}, "side_effects": False}),
        span("f", "tool", "lookup", {"path": "clerk.0.1", "error": "boom", "error_kind": "tool_error",
                                     "side_effects": False}, status="error"),
        span("g", "tool", "charge", {"path": "clerk.0.2", "result": {"ok": 1}, "side_effects": True}),
        span("h", "tool", "charge", {"path": "clerk.0.3", "result": {"ok": 2}, "side_effects": True,
                                     "replayed": True}),
        span("i", "llm", "m", "a payload the store cut to a string"),
        span("j", "llm", "m", {"content": "no path: recorded before paths were"}),
    ]
    table = table_from_spans("r1", spans)
    assert set(table.models) == {"clerk.0"}
    assert table.models["clerk.0"].tool_calls[0].raw_arguments == '{"id": 1}'
    # A pure tool's success replays; a side effect only if it was replayed already (DBOS holds the others).
    assert set(table.tools) == {"clerk.0.0", "clerk.0.3"}
    every = table_from_spans("r1", spans, side_effects="all")
    assert set(every.tools) == {"clerk.0.0", "clerk.0.2", "clerk.0.3"}
    before = table_from_spans("r1", spans, before="clerk.0.2", side_effects="all")
    assert set(before.models) == {"clerk.0"} and set(before.tools) == {"clerk.0.0"}


def test_a_recorded_call_replays_only_while_it_fits() -> None:
    table = table_from_spans("r1", [
        span("e", "tool", "lookup", {"path": "clerk.0.0", "result": 1, "side_effects": False})])
    assert table.tool("clerk.0.0", "lookup", False) is not None
    assert table.tool("clerk.0.0", "find", False) is None  # renamed: it runs
    assert table.tool("clerk.0.0", "lookup", True) is None  # now a side effect: it runs under its key
