"""Did the guardrail act? A drill's expectations checked against what the store recorded for its run.

Each expectation yields one line of evidence, whether it held or not, so a FAILED drill says exactly which sign
was missing (`no span tool apply_discount status=denied {error_kind: approval_timed_out}; found: tool apply_discount
ok`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.store.trace_rows import EventRow, RunRow, SpanRow

from .spec import EventMatch, Expectations, SpanMatch

__all__ = ["Evidence", "check_expectations", "describe_span"]


@dataclass(frozen=True, slots=True)
class Evidence:
    held: bool
    detail: str


def _subset(wanted: dict[str, Any], have: Any) -> bool:
    if not isinstance(have, dict):
        return not wanted
    for key, value in wanted.items():
        if key not in have:
            return False
        if isinstance(value, dict):
            if not _subset(value, have[key]):
                return False
        elif have[key] != value:
            return False
    return True


def _statuses(status: str | list[str] | None) -> list[str] | None:
    return [status] if isinstance(status, str) else status


def span_matches(match: SpanMatch, span: SpanRow) -> bool:
    statuses = _statuses(match.status)
    return (span.kind == match.kind and (match.name is None or span.name == match.name)
            and (match.agent is None or span.agent == match.agent)
            and (statuses is None or span.status in statuses) and _subset(match.attrs, span.attributes))


def _event_matches(match: EventMatch, event: EventRow) -> bool:
    return (event.kind == match.kind and (match.agent is None or event.agent == match.agent)
            and (match.name is None or event.name == match.name) and _subset(match.data, event.data))


def _describe_match(match: SpanMatch | EventMatch) -> str:
    parts = [match.kind]
    for field in ("name", "agent"):
        value = getattr(match, field)
        if value is not None:
            parts.append(f"{field}={value}")
    if isinstance(match, SpanMatch):
        if match.status is not None:
            parts.append("status=" + "|".join(_statuses(match.status) or []))
        if match.attrs:
            parts.append(str(match.attrs))
    elif match.data:
        parts.append(str(match.data))
    return " ".join(parts)


def describe_span(span: SpanRow) -> str:
    attrs = span.attributes if isinstance(span.attributes, dict) else {}
    kind = attrs.get("error_kind")
    return f"{span.kind} {span.name} {span.status}" + (f" ({kind})" if kind else "")


def check_expectations(expect: Expectations, run: RunRow | None, spans: list[SpanRow],
                       events: list[EventRow]) -> list[Evidence]:
    out: list[Evidence] = []
    if expect.run_status is not None:
        wanted = _statuses(expect.run_status) or []
        status = run.status if run is not None else "not recorded"
        out.append(Evidence(status in wanted, f"run {status}" + ("" if status in wanted
                                                                else f" (expected {'|'.join(wanted)})")))
    for match in expect.spans:
        found = [s for s in spans if span_matches(match, s)]
        if found:
            out.append(Evidence(True, f"span {describe_span(found[0])}"
                                + (f" (×{len(found)})" if len(found) > 1 else "")))
        else:
            near = [describe_span(s) for s in spans if s.kind == match.kind
                    and (match.name is None or s.name == match.name)][:3]
            out.append(Evidence(False, f"no span {_describe_match(match)}"
                                + (f"; found: {', '.join(near)}" if near else "")))
    for event_match in expect.events:
        hits = [e for e in events if _event_matches(event_match, e)]
        out.append(Evidence(bool(hits), (f"event {event_match.kind}" + (f" ×{len(hits)}" if len(hits) > 1 else ""))
                            if hits else f"no event {_describe_match(event_match)}"))
    for match in expect.absent:
        found = [s for s in spans if span_matches(match, s)]
        out.append(Evidence(not found, f"no span {_describe_match(match)}" if not found
                            else f"unexpected span {describe_span(found[0])}"))
    return out
