"""The engine obeying operator controls written to control.db by another connection (as another process would):
kill switches at every scope and mode, approvals, safe-mode flags, budget and breaker overrides."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from engine.controls.api import ControlAPI
from engine.runtime.engine import Engine, RunRequest
from engine.runtime.results import RunResult
from engine.store import open_engine_store
from engine.store.control_rows import Approval
from tests import fixture_tools, runtime_tools
from tests.engine_helpers import events, spans, write_hierarchy

MODELS = """
models:
  big: {model: m-big, tier: strong, price_in: 3, price_out: 15, latency: 0, latency_per_token: 0}
  small: {model: m-small, tier: economy, price_in: 0.15, price_out: 0.6, latency: 0, latency_per_token: 0}
tools:
  slow: {function: "tests.runtime_tools:slow", timeout: 30s}
  flaky: {function: "tests.runtime_tools:flaky"}
  record:
    function: "tests.fixture_tools:record"
    side_effects: true
    risk: high
    approval: {required: when, when: "amount > 500", deadline: DEADLINE, on_timeout: ON_TIMEOUT}
"""


def hierarchy_text(worker_script: str, *, deadline: str = "10s", on_timeout: str = "deny") -> str:
    return ("name: ctl\nentry: lead\n" + MODELS.replace("DEADLINE", deadline).replace("ON_TIMEOUT", on_timeout)
            + """
agents:
  lead: {contract: Leads., model: big, fallback: [small], delegates: [worker]}
  worker: {contract: Works., model: big, fallback: [small], tools: [slow, flaky, record]}
scripts:
  lead:
    - delegate: [{agent: worker, task: work}]
    - final: lead done
  worker:
""" + worker_script)


SLOW_THEN_FLAKY = """    - tool: {name: slow, args: {key: s1}}
    - tool: {name: flaky, args: {key: f1}}
    - final: worker done
"""


async def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait for a condition the code under test brings about (bounded)."""
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.005)


async def in_thread(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return await anyio.to_thread.run_sync(lambda: fn(*args, **kwargs))


def scenario(store_dir: Path, hierarchy: Any, act: Callable[[Engine, ControlAPI, list[RunResult]], Awaitable[None]],
             *, runs: int = 1, inputs: list[Any] | None = None) -> list[RunResult]:
    """Start `runs` runs, let `act` play the operator (through a separate control.db connection), collect results."""
    runtime_tools.reset()
    fixture_tools.clear_journal()

    async def go() -> list[RunResult]:
        results: list[RunResult] = []
        with open_engine_store(store_dir) as store:
            async with Engine(store, latency_scale=1.0, runbooks=False) as engine:
                api = ControlAPI(store_dir, "alice")
                try:
                    async with anyio.create_task_group() as group:
                        for i in range(runs):
                            request = RunRequest(input=(inputs[i] if inputs else f"run {i}"))

                            async def one(request: RunRequest = request) -> None:
                                results.append(await engine.run(hierarchy, request))

                            group.start_soon(one)
                        await act(engine, api, results)
                finally:
                    runtime_tools.release_slow.set()
                    api.close()
        return results

    return anyio.run(go)


def _tool_spans(store_dir: Path, run_id: str) -> list[dict]:
    return [s for s in spans(store_dir, run_id) if s.kind == "tool"]


# --- kill switches ------------------------------------------------------------------------------------------------

def test_kill_run_cancels_in_flight_calls_and_ends_the_run_killed(tmp_path: Path, store_dir: Path) -> None:
    hierarchy = write_hierarchy(tmp_path, hierarchy_text(SLOW_THEN_FLAKY))

    async def act(engine: Engine, api: ControlAPI, results: list[RunResult]) -> None:
        await wait_until(lambda: "s1" in runtime_tools.CALLS)
        (run_id,) = list(engine.controls.runs)
        switch = await in_thread(api.set_kill, "run", run_id, "kill", "runaway spend")
        await wait_until(lambda: bool(results))
        # The acknowledgement is written by the control thread, independently of the run ending: it must arrive.
        await wait_until(lambda: api.kill_switch(switch.id).acked is not None)

    (result,) = scenario(store_dir, hierarchy, act)
    assert result.status == "killed" and "runaway spend" in result.error and "alice" in result.error
    tools = _tool_spans(store_dir, result.run_id)
    assert [(t.name, t.status) for t in tools] == [("slow", "cancelled")]
    assert "f1" not in runtime_tools.CALLS  # nothing started after the kill


def test_kill_one_agent_lets_its_parent_finish(tmp_path: Path, store_dir: Path) -> None:
    hierarchy = write_hierarchy(tmp_path, hierarchy_text(SLOW_THEN_FLAKY))

    async def act(engine: Engine, api: ControlAPI, results: list[RunResult]) -> None:
        await wait_until(lambda: "s1" in runtime_tools.CALLS)
        await in_thread(api.set_kill, "agent", "worker", "kill", "worker misbehaves")

    (result,) = scenario(store_dir, hierarchy, act)
    assert result.status == "completed" and result.output == "lead done"
    agents = {s.name: s.status for s in spans(store_dir, result.run_id) if s.kind == "agent"}
    assert agents == {"lead": "ok", "worker": "cancelled"}


def test_kill_a_tool_cancels_its_calls_and_refuses_new_ones(tmp_path: Path, store_dir: Path) -> None:
    script = """    - tool: {name: slow, args: {key: s1}}
    - tool: {name: slow, args: {key: s2}}
    - tool: {name: flaky, args: {key: f1}}
    - final: worker done
"""
    hierarchy = write_hierarchy(tmp_path, hierarchy_text(script))

    async def act(engine: Engine, api: ControlAPI, results: list[RunResult]) -> None:
        await wait_until(lambda: "s1" in runtime_tools.CALLS)
        await in_thread(api.set_kill, "tool", "slow", "kill", "slow tool hangs")

    (result,) = scenario(store_dir, hierarchy, act)
    assert result.status == "completed"
    tools = [(t.name, t.status) for t in _tool_spans(store_dir, result.run_id)]
    assert tools == [("slow", "cancelled"), ("slow", "denied"), ("flaky", "ok")]
    assert runtime_tools.CALLS == ["s1", "f1"]


def test_drain_lets_in_flight_calls_finish_and_starts_nothing_new(tmp_path: Path, store_dir: Path) -> None:
    hierarchy = write_hierarchy(tmp_path, hierarchy_text(SLOW_THEN_FLAKY))

    async def act(engine: Engine, api: ControlAPI, results: list[RunResult]) -> None:
        await wait_until(lambda: "s1" in runtime_tools.CALLS)
        switch = await in_thread(api.set_kill, "global", None, "drain", "maintenance")
        await wait_until(lambda: api.kill_switch(switch.id).acked is not None)
        runtime_tools.release_slow.set()

    (result,) = scenario(store_dir, hierarchy, act)
    assert result.status == "killed" and "drained" in result.error
    assert [(t.name, t.status) for t in _tool_spans(store_dir, result.run_id)] == [("slow", "ok")]
    assert "f1" not in runtime_tools.CALLS


def test_pause_holds_before_the_next_step_and_release_resumes_with_nothing_lost(tmp_path: Path,
                                                                                store_dir: Path) -> None:
    hierarchy = write_hierarchy(tmp_path, hierarchy_text(SLOW_THEN_FLAKY))

    async def act(engine: Engine, api: ControlAPI, results: list[RunResult]) -> None:
        await wait_until(lambda: "s1" in runtime_tools.CALLS)
        switch = await in_thread(api.set_kill, "agent", "worker", "pause", "look before it goes on")
        await wait_until(lambda: api.kill_switch(switch.id).acked is not None)
        runtime_tools.release_slow.set()
        # The slow call finishes, but the worker's next model call is held while paused.
        await wait_until(lambda: engine.writer.last_committed_seq > 0 and any(
            s["status"] == "ok" for s in _running_tool(engine)))
        calls_before = list(runtime_tools.CALLS)
        model_calls_before = engine.controls.runs and next(iter(engine.controls.runs.values())).ctx.model_calls
        await anyio.sleep(0.3)  # a window in which a paused agent must not make progress
        assert runtime_tools.CALLS == calls_before
        assert next(iter(engine.controls.runs.values())).ctx.model_calls == model_calls_before
        await in_thread(api.release, switch.id, reason="looked, fine")

    def _running_tool(engine: Engine) -> list[dict]:
        return [{"status": "ok"}] if runtime_tools.release_slow.is_set() else []

    (result,) = scenario(store_dir, hierarchy, act)
    assert result.status == "completed" and result.output == "lead done"
    assert runtime_tools.CALLS == ["s1", "f1"]


def test_global_halt_refuses_new_runs_and_survives_an_engine_restart(tmp_path: Path, store_dir: Path) -> None:
    hierarchy = write_hierarchy(tmp_path, hierarchy_text("    - final: ok\n"))

    async def first(engine: Engine, api: ControlAPI, results: list[RunResult]) -> None:
        await wait_until(lambda: bool(results))
        await in_thread(api.set_kill, "global", None, "kill", "incident 42: stop everything")

    scenario(store_dir, hierarchy, first)

    async def after_restart(engine: Engine, api: ControlAPI, results: list[RunResult]) -> None:
        return None

    (refused,) = scenario(store_dir, hierarchy, after_restart)
    assert refused.status == "refused" and "incident 42" in refused.error
    api = ControlAPI(store_dir, "bob")
    api.release(scope="global", reason="incident over")
    api.close()
    (again,) = scenario(store_dir, hierarchy, after_restart)
    assert again.status == "completed"


# --- approvals ----------------------------------------------------------------------------------------------------

RECORD_BIG = """    - tool: {name: record, args: {note: big refund, amount: 900}}
    - final: worker done
"""


def _approval_scenario(tmp_path: Path, store_dir: Path, decide: Callable[[ControlAPI, Approval], Any], *,
                       deadline: str = "10s", on_timeout: str = "deny") -> tuple[RunResult, list[dict]]:
    hierarchy = write_hierarchy(tmp_path, hierarchy_text(RECORD_BIG, deadline=deadline, on_timeout=on_timeout))
    escalations: list[dict] = []

    async def act(engine: Engine, api: ControlAPI, results: list[RunResult]) -> None:
        engine.escalation_listeners.append(escalations.append)
        await wait_until(lambda: bool(api.pending_approvals()) or bool(results))
        pending = api.pending_approvals()
        if pending:
            await in_thread(decide, api, pending[0])

    (result,) = scenario(store_dir, hierarchy, act)
    return result, escalations


def test_approved_call_runs_and_the_trace_says_who_approved(tmp_path: Path, store_dir: Path) -> None:
    result, _ = _approval_scenario(tmp_path, store_dir, lambda api, row: api.approve(row.id, "customer is good"))
    assert result.status == "completed"
    (tool,) = _tool_spans(store_dir, result.run_id)
    assert tool.status == "ok"
    assert tool.attributes["approval"]["decided_by"] == "alice"
    assert tool.attributes["approval"]["decision_reason"] == "customer is good"
    assert [e["note"] for e in fixture_tools.journal()] == ["big refund"]


def test_denied_call_never_runs_and_the_model_is_told_why(tmp_path: Path, store_dir: Path) -> None:
    result, _ = _approval_scenario(tmp_path, store_dir, lambda api, row: api.deny(row.id, "too large"))
    assert result.status == "completed"
    (tool,) = _tool_spans(store_dir, result.run_id)
    assert tool.status == "denied" and "denied by alice: too large" in tool.attributes["error"]
    assert fixture_tools.journal() == []


def test_approve_with_edited_arguments_runs_the_edited_call(tmp_path: Path, store_dir: Path) -> None:
    result, _ = _approval_scenario(tmp_path, store_dir, lambda api, row: api.approve(
        row.id, "cap it", edited_arguments={"note": "capped refund", "amount": 400},
        expected_args_hash=row.args_hash))
    (tool,) = _tool_spans(store_dir, result.run_id)
    assert tool.status == "ok" and tool.attributes["approval"]["edited"] is True
    assert fixture_tools.journal()[0]["amount"] == 400


def test_approval_timeout_is_a_timeout_not_a_human_denial(tmp_path: Path, store_dir: Path) -> None:
    result, _ = _approval_scenario(tmp_path, store_dir, lambda api, row: None, deadline="0.3s")
    (tool,) = _tool_spans(store_dir, result.run_id)
    assert tool.status == "denied"
    assert tool.attributes["approval"]["status"] == "timed_out"
    assert tool.attributes["approval"]["decided_by"] != "alice"
    api = ControlAPI(store_dir, "carol")
    (row,) = api.list_approvals()
    with pytest.raises(Exception, match="expired|timed out|already"):
        api.approve(row.id, "too late")  # a decision after the deadline is refused
    api.close()


def test_escalation_extends_the_deadline_and_pages(tmp_path: Path, store_dir: Path) -> None:
    def decide_after_escalation(api: ControlAPI, row: Approval) -> None:
        # Wait (bounded) until the engine escalated the request, then approve it at level 1.
        import time

        deadline = time.monotonic() + 10
        while api.approval(row.id).level < 1:
            assert time.monotonic() < deadline, "never escalated"
            time.sleep(0.01)
        api.approve(row.id, "escalated to me, fine")

    result, escalations = _approval_scenario(tmp_path, store_dir, decide_after_escalation, deadline="0.3s",
                                             on_timeout="escalate")
    (tool,) = _tool_spans(store_dir, result.run_id)
    assert tool.status == "ok" and tool.attributes["approval"]["level"] == 1
    assert len(escalations) == 1 and escalations[0].level == 1
    assert events(store_dir, result.run_id, kinds=["approval.escalated"])


def test_a_mismatched_decision_is_refused(tmp_path: Path, store_dir: Path) -> None:
    outcomes: list[str] = []

    def decide(api: ControlAPI, row: Approval) -> None:
        try:
            api.approve(row.id, "ok", expected_args_hash="0" * 64)
        except Exception as exc:
            outcomes.append(str(exc))
        api.deny(row.id, "after all, no")

    result, _ = _approval_scenario(tmp_path, store_dir, decide)
    assert outcomes and "arguments changed" in outcomes[0]
    assert _tool_spans(store_dir, result.run_id)[0].status == "denied"


# --- safe-mode flags ------------------------------------------------------------------------------------------------

def _with_flag(tmp_path: Path, store_dir: Path, script: str, name: str, value: str,
               inputs: list[Any] | None = None, runs: int = 1) -> list[RunResult]:
    store_dir.mkdir(parents=True, exist_ok=True)
    api = ControlAPI(store_dir, "alice")
    api.set_flag(name, value, reason="test")
    api.close()
    hierarchy = write_hierarchy(tmp_path, hierarchy_text(script))

    async def act(engine: Engine, api: ControlAPI, results: list[RunResult]) -> None:
        await wait_until(lambda: len(results) == runs, timeout=20)

    return scenario(store_dir, hierarchy, act, runs=runs, inputs=inputs)


def test_flag_side_effects_off_withholds_side_effecting_tools(tmp_path: Path, store_dir: Path) -> None:
    (result,) = _with_flag(tmp_path, store_dir, "    - tool: {name: record, args: {note: x, amount: 1}}\n"
                           "    - final: done\n", "tools.side_effects", "off")
    (tool,) = _tool_spans(store_dir, result.run_id)
    assert tool.status == "denied" and "side effects are off" in tool.attributes["error"]
    assert fixture_tools.journal() == []


def test_flag_approvals_all_gates_every_side_effect(tmp_path: Path, store_dir: Path) -> None:
    store_dir.mkdir(parents=True)
    api = ControlAPI(store_dir, "alice")
    api.set_flag("approvals", "all", reason="incident")
    api.close()
    hierarchy = write_hierarchy(tmp_path, hierarchy_text("    - tool: {name: record, args: {note: small, amount: 1}}\n"
                                                         "    - final: done\n", deadline="0.2s"))

    async def act(engine: Engine, api: ControlAPI, results: list[RunResult]) -> None:
        await wait_until(lambda: bool(results))

    (result,) = scenario(store_dir, hierarchy, act)
    (tool,) = _tool_spans(store_dir, result.run_id)
    assert tool.attributes["approval"]["status"] == "timed_out"  # it needed approval though amount <= 500


def test_flag_max_tier_moves_agents_to_cheaper_models(tmp_path: Path, store_dir: Path) -> None:
    (result,) = _with_flag(tmp_path, store_dir, "    - final: done\n", "models.max_tier", "economy")
    models = {s.model for s in spans(store_dir, result.run_id) if s.kind == "llm"}
    assert models == {"m-small"}


def test_flag_admission_paused_refuses_new_runs(tmp_path: Path, store_dir: Path) -> None:
    (result,) = _with_flag(tmp_path, store_dir, "    - final: done\n", "runs.admission", "paused")
    assert result.status == "refused" and "runs.admission=paused" in result.error


def test_flag_concurrency_max_serialises_runs(tmp_path: Path, store_dir: Path) -> None:
    script = "    - tool: {name: flaky, args: {key: k}}\n    - final: done\n"
    hierarchy_latency = hierarchy_text(script).replace("latency: 0,", "latency: 0.05,")
    store_dir.mkdir(parents=True)
    api = ControlAPI(store_dir, "alice")
    api.set_flag("concurrency.max", "1", reason="load shedding")
    api.close()
    hierarchy = write_hierarchy(tmp_path, hierarchy_latency)

    async def act(engine: Engine, api: ControlAPI, results: list[RunResult]) -> None:
        await wait_until(lambda: len(results) == 3, timeout=20)

    results = scenario(store_dir, hierarchy, act, runs=3)
    ordered = sorted(results, key=lambda r: r.started)
    assert all(a.ended <= b.started + 0.01 for a, b in zip(ordered, ordered[1:]))


def test_flag_agent_disabled_withholds_delegation_to_it(tmp_path: Path, store_dir: Path) -> None:
    (result,) = _with_flag(tmp_path, store_dir, "    - final: done\n", "agent.worker", "disabled")
    recorded = spans(store_dir, result.run_id)
    assert not [s for s in recorded if s.kind == "agent" and s.name == "worker"]
    (delegation,) = [s for s in recorded if s.kind == "delegation"]
    assert delegation.status == "denied" and "disabled" in delegation.attributes["error"]


def test_flag_tool_disabled_withholds_it(tmp_path: Path, store_dir: Path) -> None:
    (result,) = _with_flag(tmp_path, store_dir, "    - tool: {name: flaky, args: {key: k}}\n    - final: done\n",
                           "tool.flaky", "disabled")
    (tool,) = _tool_spans(store_dir, result.run_id)
    assert tool.status == "denied" and "tool.flaky=disabled" in tool.attributes["error"]
    assert runtime_tools.CALLS == []


def test_flag_agent_paused_holds_it_until_cleared(tmp_path: Path, store_dir: Path) -> None:
    hierarchy = write_hierarchy(tmp_path, hierarchy_text("    - tool: {name: flaky, args: {key: k}}\n"
                                                         "    - final: done\n"))
    store_dir.mkdir(parents=True)
    api0 = ControlAPI(store_dir, "alice")
    api0.set_flag("agent.worker", "paused", reason="inspect")
    api0.close()

    async def act(engine: Engine, api: ControlAPI, results: list[RunResult]) -> None:
        await wait_until(lambda: any(r.ctx.agents_active >= 2 for r in engine.controls.runs.values()))
        await anyio.sleep(0.2)  # a window in which a paused agent must not call anything
        assert runtime_tools.CALLS == []
        await in_thread(api.clear_flag, "agent.worker", reason="resume")

    (result,) = scenario(store_dir, hierarchy, act)
    assert result.status == "completed" and runtime_tools.CALLS == ["k"]


# --- overrides ----------------------------------------------------------------------------------------------------

def test_operator_lowers_a_running_runs_budget(tmp_path: Path, store_dir: Path) -> None:
    hierarchy = write_hierarchy(tmp_path, hierarchy_text(SLOW_THEN_FLAKY))

    async def act(engine: Engine, api: ControlAPI, results: list[RunResult]) -> None:
        await wait_until(lambda: "s1" in runtime_tools.CALLS)
        (run_id,) = list(engine.controls.runs)
        await in_thread(api.budget_change, run_id, {"tool_calls": 1}, "cut it short")
        await wait_until(lambda: bool(events_in(engine, "budget.changed")))
        runtime_tools.release_slow.set()

    def events_in(engine: Engine, kind: str) -> list[Any]:
        engine.writer.flush()
        return events(store_dir, kinds=[kind])

    (result,) = scenario(store_dir, hierarchy, act)
    assert result.status == "budget_exceeded"
    assert "f1" not in runtime_tools.CALLS


def test_operator_forces_a_tool_breaker_open(tmp_path: Path, store_dir: Path) -> None:
    store_dir.mkdir(parents=True)
    api = ControlAPI(store_dir, "alice")
    api.override_breaker("tool:flaky", "force_open", "vendor outage")
    api.close()
    hierarchy = write_hierarchy(tmp_path, hierarchy_text("    - tool: {name: flaky, args: {key: k}}\n"
                                                         "    - final: done\n"))

    async def act(engine: Engine, api: ControlAPI, results: list[RunResult]) -> None:
        await wait_until(lambda: bool(results))

    (result,) = scenario(store_dir, hierarchy, act)
    (tool,) = _tool_spans(store_dir, result.run_id)
    assert tool.status == "denied" and "circuit open" in tool.attributes["error"]
    api = ControlAPI(store_dir, "alice")
    assert all(row.applied is not None for row in api.breaker_overrides())
    api.close()
