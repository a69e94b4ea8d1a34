"""The demo's three minutes (at speed 1), as a timeline of acts against a running Engine.

    0s   deals start arriving every few seconds: normal three-level reviews (supervisor -> desks -> workers)
   10s   competitor research starts failing: its breaker opens; at 50s it recovers, through half-open
   30s   a pricing worker loops on the same quote: loop detection ends it; its desk carries on
   45s   a 18% discount on ACME waits for approval: nobody answers -> escalated (paged) -> denied at the deadline
   70s   a burst of huge deal memos on the strongest model: a spend spike; the cost-spike runbook fires
  130s   quiet: arrivals slow, the spike is over, the runbook's changes can be rolled back
  180s   the scenario is over (interactive demos keep a slow trickle of deals so the console stays alive)

Each act announces itself through `hint(text)`: the console shows it as the hint line, headless prints it.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from engine.demo import variants
from engine.examples import faults
from engine.hierarchy.bundled import sample_inputs
from engine.hierarchy.loader import Hierarchy
from engine.runtime.engine import Engine, RunRequest
from engine.runtime.results import RunResult

Hint = Callable[[str], None]

ARRIVAL_EVERY_S = 4.0
SCENARIO_S = 180.0
FLAKY_TOOL = "competitor_research"
APPROVAL_DEAL = {"account": "ACME-001", "product": "platform", "seats": 250, "requested_discount_pct": 18}


@dataclass
class ScenarioState:
    """What happened, for hints and for the headless summary."""

    results: list[RunResult] = field(default_factory=list)
    acts: list[tuple[float, str]] = field(default_factory=list)
    approval_run: str | None = None
    loop_run: str | None = None
    spike_runs: list[str] = field(default_factory=list)


class DemoScenario:
    def __init__(self, engine: Engine, *, speed: float = 1.0, seed: int = 7, hint: Hint | None = None,
                 keep_alive: bool = False) -> None:
        self.engine = engine
        self.speed = speed
        self.seed = seed
        self.hint: Hint = hint or (lambda text: None)
        self.keep_alive = keep_alive
        self.state = ScenarioState()
        self.base: Hierarchy = variants.base(speed)
        self.looping = variants.looping(self.base)
        self.spike = variants.spike(self.base)
        # Deals under the self-serve discount threshold: they flow without approvals, like most real traffic.
        self.deals = [d for d in sample_inputs("deal-desk") if d["requested_discount_pct"] <= 15
                      and d["seats"] < 1000]
        self._rng = random.Random(seed)
        self._clock0 = 0.0
        self._script = anyio.CancelScope()  # the timeline and the arrivals: stop() cancels them, not the runs

    async def _at(self, t: float) -> None:
        """Sleep until scenario time t (seconds at speed 1)."""
        now = anyio.current_time() - self._clock0
        target = t / self.speed
        if target > now:
            await anyio.sleep(target - now)

    def _say(self, text: str) -> None:
        self.state.acts.append((round((anyio.current_time() - self._clock0) * self.speed, 1), text))
        self.hint(text)

    async def _run(self, hierarchy: Hierarchy, deal: dict[str, Any], on_start: Callable[[str], None] | None = None
                   ) -> None:
        result = await self.engine.run(hierarchy, RunRequest(input=deal, seed=self._rng.randrange(1 << 30),
                                                             tenant=deal["account"].split("-")[0].lower(),
                                                             on_started=on_start))
        self.state.results.append(result)

    async def run(self) -> ScenarioState:
        """Play the timeline (runs arrive, faults come and go). Returns when it is over (with keep_alive: when
        stopped), and after stop() once the runs in flight have ended."""
        self._clock0 = anyio.current_time()
        async with anyio.create_task_group() as runs:
            with self._script:
                async with anyio.create_task_group() as group:
                    group.start_soon(self._arrivals, runs)
                    await self._timeline(runs)
                    if not self.keep_alive:
                        runs.cancel_scope.cancel()
                        group.cancel_scope.cancel()
        return self.state

    def stop(self) -> None:
        """Start no more runs (the engine is shutting down); run() returns once the runs in flight have ended, as
        the engine's shutdown lets them."""
        self._script.cancel()

    async def _arrivals(self, group: anyio.abc.TaskGroup) -> None:
        index = 0
        while True:
            deal = dict(self.deals[index % len(self.deals)])
            index += 1
            group.start_soon(self._run, self.base, deal)
            now = (anyio.current_time() - self._clock0) * self.speed
            every = ARRIVAL_EVERY_S if now < 130 else ARRIVAL_EVERY_S * 4  # the quiet period
            await anyio.sleep(every * self._rng.uniform(0.6, 1.4) / self.speed)

    async def _timeline(self, group: anyio.abc.TaskGroup) -> None:
        self._say("Deals are arriving: press 1 for runs, Enter on one to see its three-level trace.")
        await self._at(10)
        faults.set_fault_rate(FLAKY_TOOL, 1.0, seed=self.seed)
        self._say("competitor_research is failing upstream: press 4 and watch its breaker open.")
        await self._at(30)
        deal = dict(self.deals[0])

        def loop_started(run_id: str) -> None:
            self.state.loop_run = run_id

        group.start_soon(self._run, self.looping, deal, loop_started)
        self._say("A pricing worker is stuck re-quoting the same deal: loop detection will end it (press 1).")
        await self._at(45)

        def approval_started(run_id: str) -> None:
            self.state.approval_run = run_id

        group.start_soon(self._run, self.base, dict(APPROVAL_DEAL), approval_started)
        self._say("Press 3: ACME wants 18% off and an approval is waiting. Approve, deny or edit it before the "
                  "deadline, or watch it escalate.")
        await self._at(50)
        faults.set_fault_rate(FLAKY_TOOL, 0.0)
        self._say("competitor_research is healthy again: its breaker will probe (half-open) and close (press 4).")
        await self._at(70)
        for i in range(6):
            deal = dict(self.deals[(i * 5) % len(self.deals)])
            group.start_soon(self._run, self.spike, deal, self.state.spike_runs.append)
        self._say("A burst of huge deal memos on the strongest model: spend is spiking. Watch the header; the "
                  "cost-spike runbook will act (press 6).")
        await self._at(130)
        self._say("Quiet again: press 6 to see the incident and roll the runbook's changes back; k kills the "
                  "selection, H halts everything, ? shows every key.")
        await self._at(SCENARIO_S)
        self._say("The scripted incident is over; deals keep trickling in. Press q to quit.")


def write_demo_config(store_dir: Path, pager_url: str) -> Path:
    """Notifier targets for the shipped runbooks' owners, all pointing at the demo's local pager."""
    config = store_dir / "config.toml"
    config.write_text(
        "# Written by `flightdeck demo`: every runbook owner pages the demo's local receiver.\n"
        + "".join(f'[notifiers.{name}]\ntype = "webhook"\nurl = "{pager_url}/{name}"\n\n'
                  for name in ("oncall", "secondary", "security", "finance")), encoding="utf-8")
    config.chmod(0o600)
    return config


def describe(result: RunResult) -> str:
    return json.dumps({"run": result.run_id, "status": result.status})
