"""`flightdeck demo --headless`: the same scenario with no UI. Approvals are answered by a fixed policy (the
scenario's one approval is left unanswered, to show the deadline, the escalation page and the timeout), and at the
end every guardrail and control that fired is summarised. Exit 0 only if each expected event happened."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from engine.demo.pager import PageReceiver, summarize
from engine.demo.scenario import DemoScenario, ScenarioState, write_demo_config
from engine.runbooks.loader import check_store_runbooks
from engine.runtime.shutdown import (
    DEFAULT_GRACE_S,
    EXIT_TERMINATED,
    SHUTDOWN_SIGNALS,
    Shutdown,
    SignalReceiver,
    watch_signals,
)
from engine.store import open_engine_store, open_reader
from engine.store.trace_rows import SpanRow

if TYPE_CHECKING:
    from engine.store.control_rows import FlagSetting, Incident


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


def _depth(span: SpanRow, by_id: dict[str, SpanRow]) -> int:
    depth = 0
    while span.parent_id in by_id:
        span = by_id[span.parent_id]
        depth += span.kind == "agent"
    return depth


def verify(store_dir: Path, state: ScenarioState, pager: PageReceiver) -> list[Check]:
    reader = open_reader(store_dir)
    try:
        checks: list[Check] = []
        completed = [r for r in state.results if r.status == "completed"]
        deepest = 0
        for result in completed[:3]:
            spans = reader.spans(result.run_id)
            by_id = {s.id: s for s in spans}
            deepest = max([deepest, *(_depth(s, by_id) for s in spans if s.kind == "agent")])
        checks.append(Check("delegations three levels deep", deepest >= 2,
                            f"{len(completed)} runs completed; deepest agent at level {deepest + 1}"))

        transitions = [(e.data["from"], e.data["to"]) for e in reader.events_after(0, 100_000,
                                                                               kinds=["breaker.transition"])
                       if e.data.get("key") == "tool:competitor_research"]
        cycle = [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]
        checks.append(Check("competitor_research breaker opened and recovered through half-open",
                            _contains_in_order(transitions, cycle), " -> ".join(f"{a}>{b}" for a, b in transitions)))

        loops = [e for e in reader.events_after(0, 100_000, run_id=state.loop_run, kinds=["loop.detected"])
                 ] if state.loop_run else []
        checks.append(Check("looping pricing worker caught", any(e.agent == "pricing" for e in loops),
                            f"{len(loops)} loop detections in run {state.loop_run}"))

        approval_events = reader.events_after(0, 100_000, run_id=state.approval_run,
                                              kinds=["approval.requested", "approval.escalated",
                                                     "approval.decided"]) if state.approval_run else []
        kinds = [e.kind for e in approval_events]
        decided = [e.data.get("status") for e in approval_events if e.kind == "approval.decided"]
        checks.append(Check("apply_discount waited for approval, escalated, then timed out",
                            kinds[:2] == ["approval.requested", "approval.escalated"] and decided == ["timed_out"],
                            ", ".join(kinds) + (f" ({decided[0]})" if decided else "")))

        incidents = _incidents(store_dir)
        cost = [i for i in incidents if i.runbook == "cost-spike"]
        checks.append(Check("spend spike fired the cost-spike runbook", bool(cost),
                            f"{len(incidents)} incidents: " + ", ".join(sorted({str(i.runbook)
                                                                                for i in incidents}))))
        capped = _flag_history(store_dir, "models.max_tier")
        checks.append(Check("runbook capped the model tier (auto-applied)",
                            any(f.value == "economy" and f.source.startswith("runbook:")
                                for f in capped), f"{len(capped)} models.max_tier changes"))
        pages = [summarize(p) for p in pager.pages]
        checks.append(Check("on-call paged on the local receiver", bool(pages),
                            f"{len(pages)} pages" + (f", first: {pages[0][:80]}" if pages else "")))
        rolled_back = [f for f in capped if f.value == "economy" and f.cleared]
        checks.append(Check("quiet period: the runbook's change was rolled back", bool(rolled_back),
                            "models.max_tier cleared" if rolled_back else "still capped"))
        return checks
    finally:
        reader.close()


QUIET_GRACE_S = 60.0


def _rolled_back(store_dir: Path) -> bool:
    return any(f.value == "economy" and f.cleared for f in _flag_history(store_dir, "models.max_tier"))


def _contains_in_order(seq: list[Any], wanted: list[Any]) -> bool:
    position = 0
    for item in seq:
        if position < len(wanted) and item == wanted[position]:
            position += 1
    return position == len(wanted)


def _incidents(store_dir: Path) -> list[Incident]:
    try:
        from engine.runbooks.incidents import list_incidents
    except ImportError:
        return []
    return list_incidents(store_dir)


def _flag_history(store_dir: Path, name: str) -> list[FlagSetting]:
    from engine.controls.flag_settings import history
    from engine.store.files import CONTROL_DB, connect

    conn = connect(store_dir / CONTROL_DB, read_only=True)
    try:
        return history(conn, name)
    finally:
        conn.close()


async def _play(store_dir: Path, speed: float, seed: int, out: Callable[[str], None],
                pager: PageReceiver, grace: float, shutdown: Shutdown) -> ScenarioState:
    from engine.runtime.engine import Engine

    # Signals are caught from before the engine starts (as `flightdeck run` does): SIGTERM/SIGHUP stop the
    # scenario, let the runs in flight finish for `grace`, then kill what is left, every run's end recorded.
    with SignalReceiver(*SHUTDOWN_SIGNALS) as signals, \
            open_engine_store(store_dir, input_checks=[check_store_runbooks]) as store:
        async with Engine(store, latency_scale=1.0 / speed) as engine:
            scenario = DemoScenario(engine, speed=speed, seed=seed,
                                    hint=lambda text: out(
                                        f"  [{(anyio.current_time() - scenario._clock0) * speed:6.1f}s] {text}"))

            def notice(line: str) -> None:
                scenario.stop()
                print(f"flightdeck: {line}", file=sys.stderr, flush=True)

            async with anyio.create_task_group() as group:
                await group.start(partial(watch_signals, signals, engine, grace, shutdown, notice))
                state = await scenario.run()
                # The quiet period: once detection has been quiet long enough, the cost runbook rolls its change
                # back. Wait for that (bounded) rather than end the story a moment too early.
                with anyio.move_on_after(0 if shutdown.signal else QUIET_GRACE_S / speed):
                    while not _rolled_back(store_dir) and shutdown.signal is None:
                        await anyio.sleep(0.2 / speed)
                group.cancel_scope.cancel()
            return state


def run_headless(store_dir: Path, *, speed: float = 1.0, seed: int = 7,
                 out: Callable[[str], None] = print, grace: float = DEFAULT_GRACE_S) -> int:
    """Exit code: 0 if every expected event happened, 1 if not; 143 (130 for Ctrl-C) if a signal stopped it."""
    store_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    pager = PageReceiver(store_dir).start()
    try:
        write_demo_config(store_dir, pager.url)
        from engine.demo.runbooks import install_demo_runbooks

        install_demo_runbooks(store_dir, speed)
        out(f"flightdeck demo (headless) on {store_dir}, speed {speed:g}, seed {seed}; pager at {pager.url}")
        shutdown = Shutdown()
        state = anyio.run(_play, store_dir, speed, seed, out, pager, grace, shutdown)
        checks = verify(store_dir, state, pager) if shutdown.signal is None else []
    finally:
        pager.stop()
    statuses: dict[str, int] = {}
    for result in state.results:
        statuses[result.status] = statuses.get(result.status, 0) + 1
    out(f"\n{len(state.results)} runs: " + ", ".join(f"{n} {s}" for s, n in sorted(statuses.items())))
    if shutdown.signal is not None:
        out(f"stopped on {shutdown.signal}: the scenario did not finish; every run's end is recorded")
        return shutdown.exit_code or EXIT_TERMINATED
    out("guardrails and controls that fired:")
    for check in checks:
        out(f"  {'ok  ' if check.ok else 'MISSING'} {check.name}: {check.detail}")
    failed = [c for c in checks if not c.ok]
    out("\nall expected events happened" if not failed else f"\n{len(failed)} expected events did not happen")
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(run_headless(Path(sys.argv[1]), speed=float(sys.argv[2]) if len(sys.argv) > 2 else 10.0))
