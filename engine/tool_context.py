"""What a running tool may know about its call: `current_tool_context()` inside a tool function (sync tools too:
they run on a worker thread that carries the caller's context).

`idempotency_key` is stable for one call across every execution of its run (a resume after a crash, an operator's
"run it again"): `<run id>:<call path>`, the path naming the agent invocation, the model step and the call's
position in that step, which parallel delegations cannot reorder. A tool that writes to the outside world passes
it on (as an Idempotency-Key header, a unique column) so the world sees one effect however often it is asked."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ToolContext:
    run_id: str
    call_path: str
    idempotency_key: str
    attempt: int = 0  # 0 the first time; n when a durable engine runs this call again (idempotent tool, operator)


CURRENT: ContextVar[ToolContext | None] = ContextVar("flightdeck_tool_context", default=None)


def current_tool_context() -> ToolContext | None:
    """The context of the tool call running in this task or thread, or None outside a tool call."""
    return CURRENT.get()
