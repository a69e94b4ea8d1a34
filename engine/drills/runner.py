"""Running drills: each scenario on the hierarchy under test (scripted model, speed 0 by default), in a temporary
or given store, then checked against what the store recorded.

Every drill runs in its own Engine (fresh breakers, fresh daily budget windows) so one drill's aftermath cannot
make the next one hold or fail; all of them share one store, so `flightdeck trace RUN` works on any drill's run
when a store is given. Runbooks are off: a drill checks the guardrail itself, not the automation reacting to it,
and an auto-applied runbook would change the hierarchy's flags under the drills that follow.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.examples import faults
from engine.hierarchy.loader import Hierarchy
from engine.runtime.engine import Engine, RunRequest
from engine.runtime.results import RunResult
from engine.store.reader import TraceReader

from .evidence import check_expectations
from .prepare import ProviderTarget, drill_hierarchy, on_provider, scripted_only
from .session import run_then_read
from .spec import Drill

__all__ = ["DrillResult", "InjectionStats", "first_sample_input", "run_drills"]

SAMPLE_FILES = ("samples.json", "deals.json", "inbox.json", "tickets.json", "inputs.json")


@dataclass(frozen=True, slots=True)
class InjectionStats:
    """One pass of an injection drill. `executed`: the attacker's calls that ran (ok), of `attempted`; `blocked`:
    refused by a guardrail (policy, least privilege, approval); `utility`: runs whose user task still got done."""

    policy: str
    attempted: int
    executed: int
    blocked: int
    runs: int
    utility_runs: int

    @property
    def attack_success_rate(self) -> float:
        return self.executed / self.attempted if self.attempted else 0.0

    @property
    def utility(self) -> float:
        return self.utility_runs / self.runs if self.runs else 0.0

    def to_json(self) -> dict[str, Any]:
        return {"policy": self.policy, "attempted": self.attempted, "executed": self.executed,
                "blocked": self.blocked, "attack_success_rate": round(self.attack_success_rate, 4),
                "runs": self.runs, "utility_runs": self.utility_runs, "utility": round(self.utility, 4)}


@dataclass(slots=True)
class DrillResult:
    scenario: str
    guardrail: str
    held: bool
    evidence: list[str]
    cost_usd: float
    duration_s: float
    file: str
    run_ids: list[str] = field(default_factory=list)
    run_status: str | None = None
    injection: list[InjectionStats] = field(default_factory=list)
    skipped: str | None = None  # why the drill did not run (`--provider-url` and a scripted-only drill); held False

    @property
    def result(self) -> str:
        return "SKIPPED" if self.skipped else "HELD" if self.held else "FAILED"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"scenario": self.scenario, "guardrail": self.guardrail,
                               "result": self.result, "held": self.held, "skipped": self.skipped,
                               "evidence": self.evidence, "cost_usd": round(self.cost_usd, 6),
                               "duration_s": round(self.duration_s, 3), "file": self.file, "runs": self.run_ids,
                               "run_status": self.run_status}
        if self.injection:
            out["injection"] = [s.to_json() for s in self.injection]
        return out


@dataclass(slots=True)
class _Ran:
    """A drill's runs, before the store is read back."""

    drill: Drill
    results: list[tuple[str, RunResult]]  # (pass label, result): "" for fault drills, "configured"/"off"
    duration_s: float
    policies: dict[str, str] = field(default_factory=dict)
    skipped: str | None = None


def first_sample_input(hierarchy: Hierarchy) -> Any:
    """The first sample input shipped next to the hierarchy file (deals.json, ...), else an empty input."""
    for name in SAMPLE_FILES:
        candidate = hierarchy.path.parent / name
        if candidate.is_file():
            try:
                data = json.loads(candidate.read_text(encoding="utf-8"))
            except ValueError:
                continue
            if isinstance(data, list) and data:
                return data[0]
    return ""


def _set_tool_faults(drill: Drill) -> None:
    for name, fault in drill.spec.tool_faults.items():
        if fault.rate:
            faults.set_fault_rate(name, fault.rate, seed=0)
        if fault.delay:
            faults.set_fault_delay(name, fault.delay)
        if fault.hang:
            faults.set_fault_hang(name)


async def _run_one(store: Any, hierarchy: Hierarchy, drill: Drill, latency_scale: float, seed: int,
                   target: ProviderTarget | None) -> _Ran:
    from .injection import run_attacks

    started = time.monotonic()
    prepared = drill_hierarchy(hierarchy, drill)
    if target is not None:
        skip = scripted_only(drill)
        if skip is not None:
            return _Ran(drill, [], 0.0, skipped=skip)
        prepared = on_provider(prepared, target)
    run_input = drill.spec.input if drill.spec.input is not None else first_sample_input(hierarchy)
    _set_tool_faults(drill)
    try:
        if drill.spec.kind == "injection":
            results, policies = await run_attacks(store, hierarchy, drill, prepared, run_input, latency_scale,
                                                  seed)
            return _Ran(drill, results, time.monotonic() - started, policies)
        async with Engine(store, latency_scale=latency_scale, runbooks=False, sampling=False) as engine:
            result = await engine.run(prepared, RunRequest(input=run_input, seed=seed))
        return _Ran(drill, [("", result)], time.monotonic() - started)
    finally:
        faults.clear()


def _judge(reader: TraceReader, ran: _Ran) -> DrillResult:
    from .injection import judge_attacks

    drill = ran.drill
    cost = sum(r.cost_usd for _, r in ran.results)
    run_ids = [r.run_id for _, r in ran.results]
    out = DrillResult(scenario=drill.name, guardrail=drill.spec.guardrail, held=False, evidence=[],
                      cost_usd=cost, duration_s=ran.duration_s, file=str(drill.path), run_ids=run_ids,
                      skipped=ran.skipped)
    if ran.skipped:
        out.evidence = [ran.skipped]
        return out
    if drill.spec.kind == "injection":
        out.held, out.evidence, out.injection = judge_attacks(reader, drill, ran.results, ran.policies)
        return out
    run_id = run_ids[0]
    run = reader.get_run(run_id)
    out.run_status = run.status if run is not None else None
    assert drill.spec.expect is not None
    events = reader.events_after(0, 100_000, run_id=run_id)
    if run is not None and drill.spec.expect.events:
        # Engine-level events (breaker transitions) name no run: those during this drill's run are its own, since
        # drills run one after another, each in its own engine.
        ended = run.ended if run.ended is not None else float("inf")
        kinds = sorted({e.kind for e in drill.spec.expect.events})
        events += [e for e in reader.events_after(0, 100_000, kinds=kinds)
                   if e.run_id is None and run.started <= e.ts <= ended]
    evidence = check_expectations(drill.spec.expect, run, reader.spans(run_id), events)
    out.held = all(e.held for e in evidence)
    out.evidence = [e.detail for e in evidence]
    return out


def run_drills(hierarchy: Hierarchy, drills: list[Drill], *, store_dir: str | Path | None = None,
               speed: float = 0.0, seed: int = 0,
               on_result: Callable[[DrillResult], None] | None = None,
               target: ProviderTarget | None = None) -> list[DrillResult]:
    """Run every drill (in order) and judge it. `speed`: the scripted model's speed factor, 0 = no simulated
    latency. `target`: run on an OpenAI-compatible server instead of the scripted model; scripted-only drills are
    then skipped (DrillResult.skipped says why). Raises InputError (before anything runs) when a drill does not
    fit the hierarchy."""
    for drill in drills:  # every drill must fit the hierarchy before the first one runs: nothing half-done
        drill_hierarchy(hierarchy, drill)
    latency_scale = (1.0 / speed) if speed else 0.0

    async def go(store: Any) -> list[_Ran]:
        return [await _run_one(store, hierarchy, drill, latency_scale, seed, target) for drill in drills]

    def judge_all(reader: TraceReader, all_ran: list[_Ran]) -> list[DrillResult]:
        results: list[DrillResult] = []
        for ran in all_ran:
            result = _judge(reader, ran)
            results.append(result)
            if on_result is not None:
                on_result(result)
        return results

    return run_then_read(store_dir, go, judge_all, prefix="flightdeck-drill-")
