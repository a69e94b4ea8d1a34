"""The engine's side of operator controls: it obeys what operators (and runbooks) wrote to control.db.

Snapshots arrive from the ControlWorker thread whenever control.db changes. Applying one:
- kill switches in `kill` mode cancel what they cover right away (runs and agent invocations through their anyio
  cancel scopes, in-flight tool calls through their call handles); `drain` and `pause` act at the gate every model
  and tool call passes (`before_call`): drain refuses new calls, pause holds them until released;
- safe-mode flags change which tools are offered, which calls need approval, which models agents may use, whether
  new runs are admitted, and how many run at once;
- decided approvals wake the tool calls waiting for them; breaker and budget overrides are applied;
- then the engine acknowledges what it applied, so the operator sees when it took effect.

With nothing active, `before_call` returns at once: the gate must cost nothing on the hot path.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio

from engine.runtime.safe_mode import (
    Flags,
    covers,
    describe_switch,
    flag_value,
    limited_to,
    models_within_cap,
    tools_withheld,
)

if TYPE_CHECKING:
    from engine.controls.api import ControlSnapshot
    from engine.hierarchy.schema import ModelSpec
    from engine.runtime.compiled import CompiledAgent
    from engine.runtime.context import RunContext
    from engine.runtime.control_worker import ControlWorker
    from engine.runtime.deadline import Deadline
    from engine.runtime.durable_fence import Lease
    from engine.runtime.engine import Engine
    from engine.runtime.store_gate import StoreGate
    from engine.store.control_rows import Approval, FlagSetting, KillSwitch

# Ended runs remembered for spent switches. The CLI refuses a switch on a run already ended; this covers the race with
# a run's last moments and runs a dead engine left, not a switch set long after.
ENDED_RUNS_KEPT = 4096


class OperatorStop(Exception):
    """An operator's kill switch (or a safe-mode flag) stopped this agent: it ends `killed` with partial results."""

    def __init__(self, reason: str, *, mode: str = "kill", tool_only: bool = False) -> None:
        super().__init__(reason)
        self.mode = mode
        self.tool_only = tool_only


class RunRefused(Exception):
    """A new run may not start (global halt, hierarchy kill switch, admission paused): the run is `refused`."""


@dataclass(slots=True)
class ActiveRun:
    ctx: RunContext
    scope: anyio.CancelScope
    agents: dict[str, tuple[str, anyio.CancelScope]] = field(default_factory=dict)  # span id -> (agent, scope)
    calls: dict[str, tuple[str, str | None, Deadline]] = field(default_factory=dict)  # span -> (agent, tool, handle)
    stopped_agents: dict[str, str] = field(default_factory=dict)  # span id -> why an operator stopped it
    stop_reason: str | None = None
    gauges_published: bool = False  # the state publisher has written this run's budget gauges at least once


class RuntimeControls:
    def __init__(self, engine: Engine | None = None) -> None:
        self._engine = engine
        self.worker: ControlWorker | None = None
        self.runs: dict[str, ActiveRun] = {}
        self.switches: list[KillSwitch] = []
        self.flags: Flags = {}
        # The same flags as rows (who set each, why), for messages that name them (serve mode's refusals).
        self.flag_rows: dict[tuple[str, str, str | None], FlagSetting] = {}
        self._applied_kills: set[int] = set()
        # Switches this engine acknowledged. Not `acked IS NULL`: on a Postgres store the first engine of the fleet
        # to apply a switch fills that column, and every other engine must still record its own acknowledgement.
        self._acked_switches: set[int] = set()
        # Runs of this engine that ended for good (and, at start, runs a dead engine left behind): a switch limited
        # to one of them is spent. Kept so that a switch set in a run's last moments, which the snapshot the run
        # ended with did not hold yet, is released when a later snapshot shows it (bounded: old runs drop out).
        self._ended_runs: OrderedDict[str, None] = OrderedDict()
        self._releasing: set[int] = set()  # spent switches whose release is on its way to control.db
        self._watcher_stages = False  # True once the control watcher stages snapshots itself (see stage)
        # Created in attach(): anyio primitives need a running event loop.
        self._changed: anyio.Event | None = None
        self.first_applied: anyio.Event | None = None
        self._approval_waiters: dict[str, anyio.Event] = {}
        self.decisions: dict[str, Approval] = {}
        self._run_slots: anyio.CapacityLimiter | None = None
        self._audit_head: tuple[int, str] | None = None  # the last head recorded in traces.db
        self.store_gate: StoreGate | None = None  # no call starts that the trace store cannot record
        # A durable engine on a shared Postgres store: no call starts unless its heartbeat's lease holds (it may
        # have been seen dead and fenced while it stalled: runtime/durable_fence.py).
        self.lease: Lease | None = None
        self.shutting_down: str | None = None  # why new runs are no longer admitted (the engine is stopping)

    # -- lifecycle -----------------------------------------------------------------------------------------------

    def attach(self, worker: ControlWorker) -> None:
        self.worker = worker
        self._changed = anyio.Event()
        self.first_applied = anyio.Event()
        self._run_slots = anyio.CapacityLimiter(math.inf)

    async def wait_changed(self) -> None:
        """Until the next control snapshot is applied (flags, switches or decisions may have changed)."""
        assert self._changed is not None
        await self._changed.wait()

    @property
    def run_slots(self) -> anyio.CapacityLimiter:
        assert self._run_slots is not None
        return self._run_slots

    # -- registration (cheap: dict operations) -------------------------------------------------------------------

    def register_run(self, ctx: RunContext, scope: anyio.CancelScope) -> ActiveRun:
        active = self.runs[ctx.run_id] = ActiveRun(ctx, scope)
        return active

    def unregister_run(self, run_id: str) -> ActiveRun | None:
        return self.runs.pop(run_id, None)

    def stop_reason(self, run_id: str) -> str | None:
        active = self.runs.get(run_id)
        return active.stop_reason if active else None

    # -- admission ------------------------------------------------------------------------------------------------

    def admission_refusal(self, hierarchy: str) -> str | None:
        """Why a new run of this hierarchy may not start, or None."""
        if self.shutting_down is not None:
            return "refused: " + self.shutting_down
        gate = self.store_gate
        if gate is not None and gate.failure is not None:
            return f"refused: {gate.refusal()}"
        for switch in self.switches:
            if switch.mode in ("kill", "drain") and (
                    switch.scope == "global" or (switch.scope == "hierarchy" and switch.target == hierarchy)):
                return "refused: " + describe_switch(switch)
        admission = self._flag("runs.admission", None, hierarchy)
        if admission == "paused":
            return "refused: new runs are paused (safe-mode flag runs.admission=paused)"
        return None

    def covers_only(self, run_id: str) -> bool:
        """Whether an active switch covers only this run (scope `run` on it, or an agent switch limited to it)."""
        return any(limited_to(s) == run_id for s in self.switches)

    def run_ended(self, run_id: str) -> bool:
        """Remember a run that ended for good (nothing resumes it); a switch limited to it is spent. Returns whether
        the switches in force now cover only it, so the engine releases them at once; one that shows up later (set
        in the run's last moments) is released when the snapshot that holds it is applied."""
        self._ended_runs[run_id] = None
        while len(self._ended_runs) > ENDED_RUNS_KEPT:
            self._ended_runs.popitem(last=False)
        covering = [s.id for s in self.switches if limited_to(s) == run_id]
        self._releasing.update(covering)
        return bool(covering)

    def spent_runs(self) -> list[str]:
        """Ended runs that a switch in force is still limited to, each once until its release lands."""
        spent: list[str] = []
        self._releasing &= {s.id for s in self.switches}  # released ones have left the snapshot
        for switch in self.switches:
            run_id = limited_to(switch)
            if run_id is not None and run_id in self._ended_runs and switch.id not in self._releasing:
                self._releasing.add(switch.id)
                if run_id not in spent:
                    spent.append(run_id)
        return spent

    # -- the gate --------------------------------------------------------------------------------------------------

    def _matching(self, ctx: RunContext, agent: str, tool: str | None) -> list[KillSwitch]:
        return [switch for switch in self.switches if covers(switch, ctx, agent, tool)]

    async def hold_for_lease(self) -> None:
        """A durable engine on a shared store that woke from a stall: wait for its next beat; OperatorStop when it
        found this engine fenced (runtime/durable_fence.py). A float comparison when the lease holds."""
        lease = self.lease
        if lease is not None and not lease.current():
            await lease.wait()
            gate = self.store_gate
            if gate is not None and gate.fenced is not None:
                raise OperatorStop(f"stopped: {gate.refusal()}")

    async def before_call(self, ctx: RunContext, agent: str, tool: str | None) -> None:
        await self.hold_for_lease()
        gate = self.store_gate
        if gate is not None and gate.blocked:  # the store cannot record right now: wait, or refuse once it failed
            await gate.wait_usable()
        if not self.switches and not self.flags:
            return
        while True:
            paused_by = None
            for switch in self._matching(ctx, agent, tool):
                if switch.mode == "pause":
                    paused_by = paused_by or switch
                else:
                    verb = "stopped: " if switch.mode == "kill" else "drained: "
                    raise OperatorStop(verb + describe_switch(switch), mode=switch.mode,
                                       tool_only=switch.scope == "tool")
            agent_flag = self._flag(f"agent.{agent}", ctx.run_id, ctx.compiled.name)
            if agent_flag == "disabled":
                raise OperatorStop(f"stopped: agent {agent} is disabled (safe-mode flag agent.{agent}=disabled)")
            if paused_by is None and agent_flag != "paused":
                return
            # Paused: hold here (nothing is lost) until the state changes, then look again.
            assert self._changed is not None
            await self._changed.wait()

    # -- what agents may use ---------------------------------------------------------------------------------------

    def _flag(self, name: str, run_id: str | None, hierarchy: str) -> str | None:
        return flag_value(self.flags, name, run_id, hierarchy)

    def flag(self, ctx: RunContext, name: str) -> str | None:
        return self._flag(name, ctx.run_id, ctx.compiled.name) if self.flags else None

    def models_for(self, ctx: RunContext, agent: CompiledAgent) -> list[ModelSpec]:
        return models_within_cap(ctx, agent, self.flag(ctx, "models.max_tier"))

    def withheld_tools(self, ctx: RunContext, agent: CompiledAgent) -> dict[str, str]:
        return tools_withheld(agent, lambda name: self.flag(ctx, name)) if self.flags else {}

    def approvals_for_all_side_effects(self, ctx: RunContext) -> bool:
        return self.flag(ctx, "approvals") == "all"

    # -- approvals ----------------------------------------------------------------------------------------------

    def approval_event(self, approval_id: str) -> anyio.Event:
        event = self._approval_waiters.get(approval_id)
        if event is None:
            event = self._approval_waiters[approval_id] = anyio.Event()
            if approval_id in self.decisions:
                event.set()
        return event

    def forget_approval(self, approval_id: str) -> None:
        self._approval_waiters.pop(approval_id, None)
        self.decisions.pop(approval_id, None)

    # -- staging a snapshot (on the control watcher's thread) ----------------------------------------------------

    def stage(self, snapshot: ControlSnapshot, *, from_watcher: bool = False) -> None:
        """Make a snapshot's switches and flags the gate's view. The control watcher calls this on its own thread
        the moment it has read a snapshot, so new kill, drain and pause switches stop calls at `before_call` (and
        runs at admission) without waiting for a busy event loop to reach `apply`, which then cancels in-flight
        work, wakes waiters and acknowledges. Thread-safe: it only replaces two references, which readers on the
        loop see whole, and the watcher stages snapshots in the order it reads them."""
        switches = list(snapshot.kill_switches)
        flags: Flags = {}
        for row in snapshot.flags:
            flags.setdefault(row.name, {})[(row.scope, row.target)] = str(row.value)
        self.switches = switches
        self.flag_rows = {(row.name, row.scope, row.target): row for row in snapshot.flags}
        self.flags = flags  # always a new dict: the runtime's withheld-tools cache keys on its identity
        if from_watcher:
            self._watcher_stages = True

    def stage_kills(self, switches: list[KillSwitch]) -> bool:
        """Kill switches read ahead of a snapshot (the control worker's thread, a notification named them): the new
        ones join the gate's view at once; True if there was one (then `apply_kills` runs on the loop). Only adds:
        the snapshot that follows replaces the view whole (releases included)."""
        known = {switch.id for switch in self.switches}
        new = [switch for switch in switches if switch.id not in known]
        if not new:
            return False
        self.switches = [*self.switches, *new]
        return True

    def apply_kills(self) -> None:
        """(on the event loop) Cancel what the staged kill switches not yet applied cover, as `apply` does first,
        and acknowledge them at once (read ahead of a snapshot, they would otherwise wait for its `apply`)."""
        new = [s for s in self.switches if s.mode == "kill" and s.id not in self._applied_kills]
        for switch in new:
            self._applied_kills.add(switch.id)
            self._cancel_covered(switch)
        acked = [s.id for s in new if s.id not in self._acked_switches]  # this engine's own acks (see apply)
        if acked and self._engine is not None:
            self._acked_switches.update(acked)
            self._engine.acknowledge(acked, [], on_failure=self._acknowledgement_failed)

    # -- applying a snapshot (on the event loop) ------------------------------------------------------------------

    def apply(self, snapshot: ControlSnapshot) -> None:
        engine = self._engine
        if not self._watcher_stages:
            self.stage(snapshot)
        # else: the watcher staged this snapshot, or a newer one, already; apply works from the newest state.
        self._apply_concurrency()
        self.apply_kills()
        for row in snapshot.decided_approvals:
            self.decisions[row.id] = row
            waiter = self._approval_waiters.get(row.id)
            if waiter is not None:
                waiter.set()
        if engine is not None:
            self._record_audit_head(engine, snapshot.audit_head)
            for run_id in self.spent_runs():
                engine.release_spent_switches(run_id)
            engine.apply_overrides(snapshot.breaker_overrides, snapshot.budget_overrides)
            self._acked_switches &= {s.id for s in self.switches}  # released ones have left the snapshot for good
            unacked_switches = [s.id for s in self.switches if s.id not in self._acked_switches]
            self._acked_switches.update(unacked_switches)  # acknowledged, or on its way (a failure gives them back)
            unacked_flags = [f.id for f in snapshot.flags if f.acked is None]
            if unacked_switches or unacked_flags:
                engine.acknowledge(unacked_switches, unacked_flags, on_failure=self._acknowledgement_failed)
        # Wake everything paused at the gate so it re-evaluates against the new state.
        assert self._changed is not None
        changed, self._changed = self._changed, anyio.Event()
        changed.set()
        assert self.first_applied is not None
        self.first_applied.set()

    def _acknowledgement_failed(self, switch_ids: list[int]) -> None:
        """The control thread could not record these acknowledgements: the next snapshot applied tries again.
        (Called on the control thread: each set operation is atomic under the GIL, as are apply()'s on the loop.)"""
        self._acked_switches.difference_update(switch_ids)

    def _record_audit_head(self, engine: Engine, head: tuple[int, str] | None) -> None:
        """Anchor the audit chain in traces.db, which only this engine writes: `audit verify` compares the log with
        the newest `audit.head` event, so a log cut short or rewritten (hashes recomputed) after this point shows."""
        if head is None or head == self._audit_head:
            return
        self._audit_head = head
        engine.tracer.event(None, None, "audit.head", data={"seq": head[0], "hash": head[1]})

    def _apply_concurrency(self) -> None:
        if self._run_slots is None:
            return
        value = (self.flags.get("concurrency.max") or {}).get(("global", None))
        total: float = int(value) if value is not None and value.isdigit() and int(value) > 0 else math.inf
        if self._run_slots.total_tokens != total:
            self._run_slots.total_tokens = total

    def stop_all(self, reason: str) -> int:
        """Cancel every active run (their in-flight calls included); each ends `killed` with `reason`. Returns how
        many were active."""
        runs = list(self.runs.values())
        for active in runs:
            if active.stop_reason is None:
                active.stop_reason = reason
            active.scope.cancel()
        return len(runs)

    def _cancel_covered(self, switch: KillSwitch) -> None:
        reason = "killed: " + describe_switch(switch)
        scope, target = switch.scope, switch.target
        for active in list(self.runs.values()):
            ctx = active.ctx
            if scope == "global" or (scope == "run" and target == ctx.run_id) or (
                    scope == "hierarchy" and target == ctx.compiled.name):
                active.stop_reason = reason
                active.scope.cancel()
            elif scope == "agent" and switch.run_id in (None, ctx.run_id):
                for span, (agent, agent_scope) in list(active.agents.items()):
                    if agent == target:
                        active.stopped_agents[span] = reason
                        agent_scope.cancel()
            elif scope == "tool":
                for _, tool, handle in list(active.calls.values()):
                    if tool == target:
                        handle.kill(reason)

