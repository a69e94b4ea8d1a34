"""Guardrails stopping real work in the runtime: every budget dimension and scope, breakers around tools and models,
retries that honour Retry-After against a loopback server, fallbacks, timeouts and the response cache."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from engine.guardrails.budget import parse_budget_overrides
from engine.runtime.engine import Engine, RunRequest
from engine.store import open_engine_store
from tests import runtime_tools
from tests.engine_helpers import events, run_sync, spans, write_hierarchy
from tests.fakes.openai_server import FakeOpenAIServer, rate_limited, server_error, slow, text

WORKER = """
name: budgeted
entry: lead
models:
  big: {model: m-big, tier: strong, price_in: 3, price_out: 15, latency: 0, latency_per_token: 0,
        max_output_tokens: 200}
  small: {model: m-small, tier: economy, price_in: 0.15, price_out: 0.6, latency: 0, latency_per_token: 0,
          max_output_tokens: 200}
tools:
  add: {function: "tests.fixture_tools:add"}
agents:
  lead: {contract: Leads., model: big, delegates: [worker]}
  worker: {contract: Adds numbers., model: small, tools: [add], max_steps: 30}
scripts:
  lead:
    - delegate: [{agent: worker, task: add up}]
    - final: lead done
  worker:
    - {tool: {name: add, args: {a: 1, b: 1}}}
    - {tool: {name: add, args: {a: 1, b: 2}}}
    - {tool: {name: add, args: {a: 1, b: 3}}}
    - {tool: {name: add, args: {a: 1, b: 4}}}
    - {tool: {name: add, args: {a: 1, b: 5}}}
    - {tool: {name: add, args: {a: 1, b: 6}}}
    - final: worker done
"""


def _run_with_budget(store_dir: Path, hierarchy, budget: str) -> tuple:
    async def go():
        with open_engine_store(store_dir) as store:
            async with Engine(store, latency_scale=0, runbooks=False) as engine:
                return await engine.run(hierarchy, RunRequest(input="go", budget=parse_budget_overrides(budget)))

    return anyio.run(go)


@pytest.mark.parametrize("budget, dimension", [
    # An unconstrained run of WORKER spends ~$0.0011, ~770 input and ~110 output tokens, 9 model and 6 tool calls,
    # and the lead's worst case (200 output tokens at $15/M) is reserved before each of its calls.
    ("cost=0.0035", "cost_usd"),
    ("input_tokens=500", "input_tokens"),
    ("output_tokens=60", "output_tokens"),
    ("tokens=600", "total_tokens"),
    ("calls=4", "model_calls"),
    ("tool_calls=3", "tool_calls"),
    ("context=100", "max_context_tokens"),
])
def test_each_run_budget_dimension_stops_work(tmp_path: Path, store_dir: Path, budget: str, dimension: str) -> None:
    hierarchy = write_hierarchy(tmp_path, WORKER)
    result = _run_with_budget(store_dir, hierarchy, budget)
    assert result.status == "budget_exceeded", (result.status, result.error)
    exceeded = events(store_dir, result.run_id, kinds=["budget.exceeded"])
    assert exceeded and {e.data["dimension"] for e in exceeded} == {dimension}
    limit = float(budget.split("=")[1].rstrip("s"))
    recorded = spans(store_dir, result.run_id)
    spent = {"cost_usd": result.cost_usd, "input_tokens": result.tokens_in, "output_tokens": result.tokens_out,
             "total_tokens": result.tokens_in + result.tokens_out, "model_calls": result.model_calls,
             "tool_calls": result.tool_calls}
    if dimension in spent:
        assert spent[dimension] <= limit, (spent, limit)
    # Partial results are kept: the worker's completed tool calls are in the trace.
    assert any(s.kind == "tool" and s.status == "ok" for s in recorded) or dimension in (
        "cost_usd", "input_tokens", "total_tokens", "max_context_tokens", "model_calls", "output_tokens")


def test_wall_time_budget_stops_a_slow_run(tmp_path: Path, store_dir: Path) -> None:
    hierarchy = write_hierarchy(tmp_path, WORKER.replace("latency: 0,", "latency: 0.05,"))

    async def go():
        with open_engine_store(store_dir) as store:
            async with Engine(store, latency_scale=1.0, runbooks=False) as engine:
                return await engine.run(hierarchy, RunRequest(input="go", budget=parse_budget_overrides("wall=0.2s")))

    result = anyio.run(go)
    assert result.status == "budget_exceeded"
    assert result.ended - result.started < 2.0
    (event, *_) = events(store_dir, result.run_id, kinds=["budget.exceeded"])
    assert event.data["dimension"] == "wall_time_s"


def test_retry_budget_limits_retries_per_run(tmp_path: Path, store_dir: Path) -> None:
    with FakeOpenAIServer(default=server_error(500)) as server:
        hierarchy = write_hierarchy(tmp_path, f"""
name: retries
entry: w
models:
  gpt: {{provider: openai, model: gpt-test, base_url: "{server.base_url}", timeout: 5s}}
agents:
  w: {{contract: Answers., model: gpt, retry: {{max_attempts: 10, initial_backoff: 0.001, max_backoff: 0.002}}}}
""")
        result = _run_with_budget(store_dir, hierarchy, "retries=2")
        assert server.request_count == 3  # the first attempt and two retries, then the retry budget is spent
    assert result.status == "failed" and "retry budget exhausted" in result.error


def test_agent_scope_budget_stops_the_agent_and_the_parent_finishes(tmp_path: Path, store_dir: Path) -> None:
    text_ = WORKER.replace("worker: {contract: Adds numbers., model: small, tools: [add], max_steps: 30}",
                           "worker: {contract: Adds numbers., model: small, tools: [add], max_steps: 30, "
                           "budget: {tool_calls: 2}}")
    hierarchy = write_hierarchy(tmp_path, text_)
    (result,) = run_sync(store_dir, hierarchy, "go")
    assert result.status == "completed" and result.output == "lead done"
    recorded = spans(store_dir, result.run_id)
    worker = next(s for s in recorded if s.kind == "agent" and s.name == "worker")
    assert worker.status == "budget_exceeded"
    assert worker.attributes["output"]["partial"] is True
    assert len([s for s in recorded if s.kind == "tool" and s.status == "ok"]) == 2


def test_daily_hierarchy_cap_spans_runs(tmp_path: Path, store_dir: Path) -> None:
    hierarchy = write_hierarchy(tmp_path, WORKER + "budgets:\n  daily: {cost_usd: 0.006}\n")
    results = run_sync(store_dir, hierarchy, *["go"] * 6)
    statuses = [r.status for r in results]
    assert statuses[0] == "completed" and statuses[-1] == "budget_exceeded", statuses
    assert sum(r.cost_usd for r in results) <= 0.006
    breach = events(store_dir, kinds=["budget.exceeded"])[0]
    assert breach.data["scope_kind"] == "hierarchy_daily"


def test_soft_threshold_warns_once(tmp_path: Path, store_dir: Path) -> None:
    hierarchy = write_hierarchy(tmp_path, WORKER)
    result = _run_with_budget(store_dir, hierarchy, "tool_calls=7")
    assert result.status == "completed"
    warnings = events(store_dir, result.run_id, kinds=["budget.soft_threshold"])
    assert [w.data["dimension"] for w in warnings if w.data["scope_kind"] == "run"] == ["tool_calls"]


BREAKER = """
name: breakers
entry: w
models:
  m: {model: m, latency: 0, latency_per_token: 0}
tools:
  flaky: {function: "tests.runtime_tools:flaky"}
agents:
  w: {contract: Uses a flaky tool., model: m, tools: [flaky], max_steps: 20}
breakers:
  defaults: {sliding_window_size: 4, minimum_calls: 4, failure_rate_threshold: 50, wait_in_open: 0.3s,
             permitted_calls_in_half_open: 1}
scripts:
  w:
    - {tool: {name: flaky, args: {key: a}}}
    - {tool: {name: flaky, args: {key: b}}}
    - {tool: {name: flaky, args: {key: c}}}
    - {tool: {name: flaky, args: {key: d}}}
    - {tool: {name: flaky, args: {key: e}}}
    - final: done
"""


def test_tool_breaker_opens_withholds_the_tool_and_recovers_through_half_open(tmp_path: Path,
                                                                              store_dir: Path) -> None:
    runtime_tools.reset()
    runtime_tools.FAILING.update({"a", "b", "c", "d", "e"})
    hierarchy = write_hierarchy(tmp_path, BREAKER)

    async def go():
        with open_engine_store(store_dir) as store:
            async with Engine(store, latency_scale=0, runbooks=False) as engine:
                first = await engine.run(hierarchy, RunRequest(input="go"))
                runtime_tools.FAILING.clear()
                breaker = engine.guards.breakers(engine.compile(hierarchy)).get("tool", "flaky")
                with anyio.fail_after(5):
                    while breaker.state.value == "open":  # condition: the wait in open elapses (0.3 s)
                        await anyio.sleep(0.02)
                second = await engine.run(hierarchy, RunRequest(input="go"))
                return first, second

    first, second = anyio.run(go)
    tools = [s for s in spans(store_dir, first.run_id) if s.kind == "tool"]
    # Four failures fill the window at 100% >= 50%: the breaker opens; the fifth call fails fast, never runs.
    assert [t.status for t in tools] == ["error"] * 4 + ["denied"]
    assert "unavailable: circuit open" in tools[4].attributes["error"]
    assert runtime_tools.CALLS[:5] == ["a", "b", "c", "d", "a"] or runtime_tools.CALLS[:4] == ["a", "b", "c", "d"]
    transitions = [(e.data["from"], e.data["to"]) for e in events(store_dir, kinds=["breaker.transition"])]
    assert transitions == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]
    assert second.status == "completed"
    (opened,) = [e for e in events(store_dir, kinds=["breaker.transition"]) if e.data["to"] == "open"]
    assert opened.data["key"] == "tool:flaky" and "failure rate" in opened.data["reason"]


def test_open_tool_breaker_withholds_the_tool_from_the_model(tmp_path: Path, store_dir: Path) -> None:
    with FakeOpenAIServer(default=text("no tools today")) as server:
        hierarchy = write_hierarchy(tmp_path, f"""
name: withheld
entry: w
models:
  gpt: {{provider: openai, model: gpt-test, base_url: "{server.base_url}"}}
tools:
  flaky: {{function: "tests.runtime_tools:flaky"}}
  add: {{function: "tests.fixture_tools:add"}}
agents:
  w: {{contract: Works., model: gpt, tools: [flaky, add]}}
""")

        async def go():
            with open_engine_store(store_dir) as store:
                async with Engine(store, latency_scale=0, runbooks=False) as engine:
                    engine.guards.breakers(engine.compile(hierarchy)).apply_override("tool:flaky", "force_open")
                    return await engine.run(hierarchy, RunRequest(input="go"))

        result = anyio.run(go)
        request = server.requests[0]
    assert result.status == "completed"
    assert [t["function"]["name"] for t in request.json["tools"]] == ["add"]
    notes = [m["content"] for m in request.messages if m["role"] == "system"]
    assert any("flaky (unavailable: circuit open)" in n for n in notes)


def _two_model_hierarchy(tmp_path: Path, primary_url: str, fallback_url: str, retry: str = "") -> object:
    return write_hierarchy(tmp_path, f"""
name: fallbacks
entry: w
models:
  primary: {{provider: openai, model: gpt-primary, tier: strong, base_url: "{primary_url}", timeout: 0.5s}}
  backup: {{provider: openai, model: gpt-backup, tier: economy, base_url: "{fallback_url}", timeout: 5s}}
agents:
  w: {{contract: Answers., model: primary, fallback: [backup]{retry}}}
""")


def test_retry_honours_retry_after_from_the_server(tmp_path: Path, store_dir: Path) -> None:
    with FakeOpenAIServer() as server:
        server.enqueue(rate_limited(retry_after=0.4), text("after the wait"))
        hierarchy = _two_model_hierarchy(tmp_path, server.base_url, server.base_url,
                                         ", retry: {max_attempts: 3, initial_backoff: 0.001, max_backoff: 0.01}")
        (result,) = run_sync(store_dir, hierarchy, "hi")
        first, second = server.requests[0], server.requests[1]
    assert result.status == "completed" and result.output == "after the wait"
    assert second.received - first.received >= 0.4
    (retry,) = events(store_dir, result.run_id, kinds=["model.retry"])
    assert retry.data["retry_after"] == 0.4 and retry.data["error_kind"] == "rate_limited"
    llm = [s for s in spans(store_dir, result.run_id) if s.kind == "llm"]
    assert [(s.status, s.attributes["attempt"]) for s in llm] == [("error", 1), ("ok", 2)]


def test_persistent_errors_fall_back_to_the_next_model(tmp_path: Path, store_dir: Path) -> None:
    with FakeOpenAIServer(default=server_error(503)) as primary, FakeOpenAIServer(default=text("backup")) as backup:
        hierarchy = _two_model_hierarchy(tmp_path, primary.base_url, backup.base_url,
                                         ", retry: {max_attempts: 2, initial_backoff: 0.001, max_backoff: 0.002}")
        (result,) = run_sync(store_dir, hierarchy, "hi")
        assert primary.request_count == 2 and backup.request_count == 1
    assert result.status == "completed" and result.output == "backup"
    (switch,) = events(store_dir, result.run_id, kinds=["model.fallback"])
    assert switch.data["from"] == "gpt-primary" and switch.data["to"] == "gpt-backup"
    assert "503" in switch.data["reason"] or "unavailable" in switch.data["reason"].lower()


def test_a_timed_out_call_is_recorded_as_timeout_then_falls_back(tmp_path: Path, store_dir: Path) -> None:
    with FakeOpenAIServer(default=slow(text("too late"), seconds=5)) as primary, \
            FakeOpenAIServer(default=text("backup")) as backup:
        hierarchy = _two_model_hierarchy(tmp_path, primary.base_url, backup.base_url, ", retry: {max_attempts: 1}")
        (result,) = run_sync(store_dir, hierarchy, "hi")
        primary.release()
    assert result.output == "backup"
    llm = [s for s in spans(store_dir, result.run_id) if s.kind == "llm"]
    assert [s.status for s in llm] == ["timeout", "ok"]


def test_open_model_breaker_moves_calls_to_the_fallback_chain(tmp_path: Path, store_dir: Path) -> None:
    with FakeOpenAIServer(default=server_error(500)) as primary, FakeOpenAIServer(default=text("backup")) as backup:
        text_ = _two_model_hierarchy(tmp_path, primary.base_url, backup.base_url,
                                     ", retry: {max_attempts: 1}").path.read_text()
        hierarchy = write_hierarchy(tmp_path, text_ + """
breakers:
  defaults: {sliding_window_size: 2, minimum_calls: 2, failure_rate_threshold: 50, wait_in_open: 60s}
""", name="fb2.yaml")
        results = run_sync(store_dir, hierarchy, "a", "b", "c")
        assert primary.request_count == 2  # the third run never calls the primary: its breaker is open
    assert [r.output for r in results] == ["backup"] * 3
    reasons = [e.data["reason"] for e in events(store_dir, results[2].run_id, kinds=["model.fallback"])]
    assert reasons == ["scripted/gpt-primary unavailable: circuit open".replace("scripted", "openai")]


def test_cached_responses_cost_nothing(tmp_path: Path, store_dir: Path) -> None:
    with FakeOpenAIServer(default=text("cached answer")) as server:
        hierarchy = write_hierarchy(tmp_path, f"""
name: cache
entry: w
models:
  gpt: {{provider: openai, model: gpt-test, base_url: "{server.base_url}", price_in: 1, price_out: 1}}
agents:
  w: {{contract: Answers., model: gpt, cache: {{ttl: 10m}}}}
""")
        first, second = run_sync(store_dir, hierarchy, "same question", "same question")
        assert server.request_count == 1
    assert first.cost_usd > 0 and second.cost_usd == 0
    (llm,) = [s for s in spans(store_dir, second.run_id) if s.kind == "llm"]
    assert llm.attributes["cached"] is True and llm.cost_usd == 0


def test_a_breach_among_concurrent_calls_ends_the_agent_budget_exceeded(tmp_path: Path, store_dir: Path) -> None:
    hierarchy = write_hierarchy(tmp_path, """
name: batch
entry: w
models:
  m: {model: m, latency: 0, latency_per_token: 0}
tools:
  add: {function: "tests.fixture_tools:add"}
agents:
  w: {contract: Adds in batches., model: m, tools: [add]}
scripts:
  w:
    - tools: [{name: add, args: {a: 1, b: 1}}, {name: add, args: {a: 1, b: 2}}, {name: add, args: {a: 1, b: 3}}]
    - final: done
""")
    result = _run_with_budget(store_dir, hierarchy, "tool_calls=2")
    assert result.status == "budget_exceeded", (result.status, result.error)
    assert result.tool_calls <= 2


def test_the_daily_cap_holds_across_engine_restarts(tmp_path: Path, store_dir: Path) -> None:
    hierarchy = write_hierarchy(tmp_path, WORKER + "budgets:\n  daily: {cost_usd: 0.006}\n")
    (first,) = run_sync(store_dir, hierarchy, "go")
    (second,) = run_sync(store_dir, hierarchy, "go")  # a new engine process would start from the same store
    (third,) = run_sync(store_dir, hierarchy, "go")
    assert first.status == "completed"
    assert "budget_exceeded" in (second.status, third.status)
    assert first.cost_usd + second.cost_usd + third.cost_usd <= 0.006


def test_a_finished_runs_budget_gauges_show_nothing_still_reserved(tmp_path: Path, store_dir: Path) -> None:
    from engine.store import open_reader

    hierarchy = write_hierarchy(tmp_path, WORKER)
    result = _run_with_budget(store_dir, hierarchy, "cost=1")
    reader = open_reader(store_dir)
    try:
        (run_gauges,) = [row for row in reader.budgets(result.run_id) if row.scope == "run"]
    finally:
        reader.close()
    cost = run_gauges.data["cost_usd"]
    assert cost["reserved"] == 0 and cost["limit"] == 1.0
    assert abs(cost["used"] - result.cost_usd) < 1e-9


def test_a_short_run_without_limits_writes_no_gauge_rows_but_one_with_limits_does(tmp_path: Path,
                                                                                   store_dir: Path) -> None:
    from engine.store import open_reader

    hierarchy = write_hierarchy(tmp_path, WORKER)

    async def go() -> tuple:
        with open_engine_store(store_dir) as store:
            async with Engine(store, latency_scale=0, runbooks=False) as engine:
                await engine.run(hierarchy, RunRequest(input="warm-up"))  # after the publisher's first pass
                free = await engine.run(hierarchy, RunRequest(input="go"))
                limited = await engine.run(hierarchy, RunRequest(input="go", budget=parse_budget_overrides(
                    "cost=1")))
                return free, limited

    free, limited = anyio.run(go)
    reader = open_reader(store_dir)
    try:
        assert reader.budgets(free.run_id) == []  # nothing to gauge, nothing stale to correct
        assert [row.scope for row in reader.budgets(limited.run_id)] == ["run"]
    finally:
        reader.close()


def test_withheld_tools_are_cached_per_agent_and_follow_every_breaker_and_flag_change(tmp_path: Path,
                                                                                      store_dir: Path) -> None:
    """The answer is cached between calls; a breaker transition (operator or time-driven) or a new safe-mode flag
    must show up on the very next ask."""
    from engine.controls.api import ControlAPI
    from engine.runtime.context import RunContext

    hierarchy = write_hierarchy(tmp_path, BREAKER)

    async def until(predicate) -> None:
        with anyio.fail_after(10):
            while not predicate():
                await anyio.sleep(0.01)

    async def go() -> list[dict[str, str]]:
        with open_engine_store(store_dir) as store:
            async with Engine(store, latency_scale=0, runbooks=False) as engine:
                compiled = engine.compile(hierarchy)
                ctx = RunContext(run_id="r1", seed=0, tenant=None, compiled=compiled, engine=engine,
                                 tracer=engine.tracer)
                agent = compiled.agents[compiled.spec.entry]
                breaker = engine.guards.breakers(compiled).get("tool", "flaky")
                seen = [dict(ctx.withheld_tools(agent))]
                assert ctx.withheld_tools(agent) is ctx.withheld_tools(agent)  # cached, not re-derived
                breaker.force_open()
                seen.append(dict(ctx.withheld_tools(agent)))
                breaker.reset()
                seen.append(dict(ctx.withheld_tools(agent)))
                api = ControlAPI(store_dir, "alice")
                try:
                    await anyio.to_thread.run_sync(lambda: api.set_flag("tool.flaky", "disabled", reason="test"))
                    await until(lambda: "tool.flaky" in engine.controls.flags)
                    seen.append(dict(ctx.withheld_tools(agent)))
                    await anyio.to_thread.run_sync(lambda: api.clear_flag("tool.flaky", reason="test"))
                    await until(lambda: "tool.flaky" not in engine.controls.flags)
                    seen.append(dict(ctx.withheld_tools(agent)))
                finally:
                    api.close()
                # An OPEN breaker becomes HALF_OPEN by time alone, with no transition until someone looks: such an
                # answer is never cached, so the tool is offered again once the wait has elapsed.
                for _ in range(4):
                    breaker.try_acquire().on_error(0.01, "boom")  # type: ignore[union-attr]
                seen.append(dict(ctx.withheld_tools(agent)))
                await anyio.sleep(0.35)  # BREAKER's wait_in_open is 0.3 s
                seen.append(dict(ctx.withheld_tools(agent)))
                return seen

    seen = anyio.run(go)
    circuit_open = {"flaky": "unavailable: circuit open"}
    assert seen == [{}, circuit_open, {}, {"flaky": "disabled by safe mode (tool.flaky=disabled)"}, {}, circuit_open,
                    {}]
