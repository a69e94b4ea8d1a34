"""What a kill switch would stop, read from traces.db before the operator commits to it.

Only in-flight work is listed: runs with status 'running', agent spans still running, and running llm / tool spans
(the calls that will be cancelled or, for drain, allowed to finish). What each scope selects:

    global      every running run, agent and call
    run         that run, its running agents and calls
    hierarchy   the running runs of that hierarchy, their agents and calls
    agent       runs where that agent is running (only `run_id` if given), its running agent spans and the calls
                it is making
    tool        runs with a running call of that tool, and those calls (agents keep going: a tool switch refuses
                the tool, it does not stop the agent that asked for it)

Reads use TraceReader.running_spans() (a partial index of running spans, so this stays cheap on a big store) and
list_runs(status='running').
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from engine.controls.schema import KILL_SCOPES
from engine.errors import InputError
from engine.store.trace_rows import RunRow, SpanRow

CALL_KINDS = ("llm", "tool")
RUNNING_RUNS_LIMIT = 100_000  # list_runs pages; a store never has anywhere near this many runs in flight


class RunningReader(Protocol):
    """The part of engine.store.TraceReader a preview needs."""

    def list_runs(self, limit: int = 100, before_started: float | None = None, status: str | None = None,
                  hierarchy: str | None = None, tenant: str | None = None,
                  before_id: str | None = None) -> list[RunRow]: ...

    def running_spans(self, run_id: str | None = None) -> list[SpanRow]: ...


@dataclass(frozen=True, slots=True)
class KillPreview:
    scope: str
    target: str | None
    run_id: str | None
    runs: tuple[dict[str, Any], ...]    # id, hierarchy, status, started
    agents: tuple[dict[str, Any], ...]  # run_id, span_id, agent, started
    calls: tuple[dict[str, Any], ...]   # run_id, span_id, kind ('llm' | 'tool'), name, agent, started

    @property
    def empty(self) -> bool:
        return not (self.runs or self.agents or self.calls)

    def to_json(self) -> dict[str, Any]:
        return {"scope": self.scope, "target": self.target, "run_id": self.run_id, "runs": list(self.runs),
                "agents": list(self.agents), "calls": list(self.calls)}


def preview_kill(reader: RunningReader, scope: str, target: str | None, run_id: str | None = None) -> KillPreview:
    if scope not in KILL_SCOPES:
        raise InputError(f"expected one of {', '.join(KILL_SCOPES)}, got {scope!r}", field="scope")
    if scope != "global" and not target:
        raise InputError(f"a {scope} preview needs a target", field="target")
    runs = {run.id: run for run in reader.list_runs(limit=RUNNING_RUNS_LIMIT, status="running")}
    spans = [span for span in reader.running_spans() if span.run_id in runs]
    agents = [span for span in spans if span.kind == "agent"]
    calls = [span for span in spans if span.kind in CALL_KINDS]

    if scope == "run":
        chosen = {rid for rid in runs if rid == target}
    elif scope == "hierarchy":
        chosen = {rid for rid, run in runs.items() if run.hierarchy == target}
    elif scope == "agent":
        chosen = {span.run_id for span in agents if span.agent == target
                  and (run_id is None or span.run_id == run_id)}
        agents = [span for span in agents if span.agent == target]
        calls = [span for span in calls if span.agent == target]
    elif scope == "tool":
        calls = [span for span in calls if span.kind == "tool" and span.name == target]
        chosen = {span.run_id for span in calls}
        agents = []
    else:
        chosen = set(runs)

    return KillPreview(
        scope=scope, target=target, run_id=run_id,
        runs=tuple({"id": rid, "hierarchy": runs[rid].hierarchy, "status": runs[rid].status,
                    "started": runs[rid].started} for rid in sorted(chosen, key=lambda r: runs[r].started)),
        agents=tuple({"run_id": s.run_id, "span_id": s.id, "agent": s.agent, "started": s.started}
                     for s in agents if s.run_id in chosen),
        calls=tuple({"run_id": s.run_id, "span_id": s.id, "kind": s.kind, "name": s.name,
                     "agent": s.agent, "started": s.started} for s in calls if s.run_id in chosen))
