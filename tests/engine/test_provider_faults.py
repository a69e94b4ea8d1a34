"""Provider faults and their accounting (issue 11, section 2), against the fake OpenAI server on 127.0.0.1 and real
stores under tmp_path: long Retry-After waits, waits past the run's wall time, the breaker checked before a
backoff, usage billed from malformed answers, estimated token counts marked, and breaker openings that say what
tripped them."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from engine.clock import FakeClock
from engine.guardrails.breaker import BreakerConfig, BreakerState, BreakerTransition, CircuitBreaker, TripFigures
from engine.guardrails.budget import parse_budget_overrides
from engine.hierarchy.loader import Hierarchy
from engine.providers.base import MalformedResponse, ModelRequest, UserMessage
from engine.providers.openai import OpenAIProvider
from engine.runtime.engine import Engine, RunRequest
from engine.runtime.results import RunResult
from engine.store import open_engine_store, open_reader
from tests.engine_helpers import events, get_run, spans, write_hierarchy
from tests.fakes.openai_server import (
    FakeOpenAIServer,
    empty_choices,
    missing_usage,
    rate_limited,
    server_error,
    text,
)

ROOT = Path(__file__).resolve().parents[2]
# Every run here is bounded: without the fixes they would park for Retry-After (20 s to 600 s), and a test that
# hangs is worse than one that fails.
RUN_BOUND_S = 15.0


def _run(store_dir: Path, hierarchy: Hierarchy, budget: str | None = None,
         after: Any = None) -> tuple[RunResult, float]:
    """One run on a real engine and store, bounded by RUN_BOUND_S; (result, seconds it took)."""

    async def go() -> tuple[RunResult, float]:
        with open_engine_store(store_dir) as store:
            async with Engine(store, latency_scale=0, runbooks=False) as engine:
                started = time.monotonic()
                with anyio.fail_after(RUN_BOUND_S):
                    result = await engine.run(hierarchy, RunRequest(
                        input="hi", budget=parse_budget_overrides(budget) if budget else None))
                took = time.monotonic() - started
                if after is not None:
                    after(engine, hierarchy)
                return result, took

    return anyio.run(go)


def _chain(tmp_path: Path, primary_url: str, backup_url: str | None, *, primary_extra: str = "",
           agent_extra: str = "", tail: str = "") -> Hierarchy:
    fallback = ", fallback: [backup]" if backup_url else ""
    backup = (f'  backup: {{provider: openai, model: gpt-backup, tier: economy, base_url: "{backup_url}", '
              'timeout: 5s}\n') if backup_url else ""
    return write_hierarchy(tmp_path, f"""
name: faults
entry: w
models:
  primary: {{provider: openai, model: gpt-primary, tier: strong, base_url: "{primary_url}", timeout: 5s{primary_extra}}}
{backup}agents:
  w: {{contract: Answers., model: primary{fallback}, retry: {{max_attempts: 3, initial_backoff: 0.001,
      max_backoff: 0.002}}{agent_extra}}}
{tail}""")


# -- Retry-After longer than the model's max_retry_after ------------------------------------------------------------


def test_a_long_retry_after_moves_to_the_fallback_at_once(tmp_path: Path, store_dir: Path) -> None:
    with FakeOpenAIServer(default=rate_limited(retry_after=600)) as primary, \
            FakeOpenAIServer(default=text("from the backup")) as backup:
        hierarchy = _chain(tmp_path, primary.base_url, backup.base_url)
        result, took = _run(store_dir, hierarchy)
        assert primary.request_count == 1 and backup.request_count == 1
    assert result.status == "completed" and result.output == "from the backup"
    assert took < 5.0  # not 600 s: a wait longer than max_retry_after (default 30 s) is a failure of the model
    (skipped,) = events(store_dir, result.run_id, kinds=["model.retry_skipped"])
    assert skipped.name == "gpt-primary"
    assert skipped.data["retry_after"] == 600 and skipped.data["max_retry_after"] == 30
    assert skipped.data["reason"] == "Retry-After of 600s is longer than max_retry_after 30s"
    assert events(store_dir, result.run_id, kinds=["model.retry"]) == []
    (fallback,) = events(store_dir, result.run_id, kinds=["model.fallback"])
    assert "not retried: Retry-After of 600s is longer than max_retry_after 30s" in fallback.data["reason"]


def test_max_retry_after_is_set_per_model(tmp_path: Path, store_dir: Path) -> None:
    with FakeOpenAIServer() as primary, FakeOpenAIServer(default=text("from the backup")) as backup:
        hierarchy = _chain(tmp_path, primary.base_url, backup.base_url, primary_extra=", max_retry_after: 1s")
        # Within the model's limit: Retry-After is honoured and the same model answers.
        primary.enqueue(rate_limited(retry_after=0.3), text("from the primary"))
        honoured, _ = _run(store_dir, hierarchy)
        first, second = primary.requests
        # 2 s is over this model's 1 s (the default of 30 s would wait): no wait at all, the backup answers.
        primary.enqueue(rate_limited(retry_after=2))
        moved_on, took = _run(store_dir, hierarchy)
        assert primary.request_count == 3 and backup.request_count == 1
    assert honoured.output == "from the primary" and second.received - first.received >= 0.3
    assert moved_on.output == "from the backup" and took < 2.0
    (skipped,) = events(store_dir, moved_on.run_id, kinds=["model.retry_skipped"])
    assert skipped.data["max_retry_after"] == 1.0 and skipped.data["retry_after"] == 2


def test_max_retry_after_is_documented_and_validated(tmp_path: Path) -> None:
    from engine.errors import InputError

    with pytest.raises(InputError) as caught:
        _chain(tmp_path, "http://127.0.0.1:9/v1", None, primary_extra=", max_retry_after: soon")
    assert "max_retry_after" in str(caught.value)
    assert "`max_retry_after`" in (ROOT / "docs" / "hierarchies.md").read_text()


def test_plan_retry_wait_boundaries() -> None:
    import random

    from engine.hierarchy.schema import RetryPolicy
    from engine.runtime.guards import plan_retry_wait

    policy = RetryPolicy(initial_backoff=0.001, max_backoff=0.001)
    rng = random.Random(0)
    assert plan_retry_wait(policy, 1, 30.0, rng, max_retry_after=30.0, time_left=None).delay_s == 30.0  # at the limit
    over = plan_retry_wait(policy, 1, 30.5, rng, max_retry_after=30.0, time_left=None)
    assert over.give_up == "Retry-After of 30.5s is longer than max_retry_after 30s"
    assert plan_retry_wait(policy, 1, 2.0, rng, max_retry_after=30.0, time_left=2.5).give_up is None
    short = plan_retry_wait(policy, 1, 2.0, rng, max_retry_after=30.0, time_left=1.5)
    assert short.give_up == "a wait of 2s would outlast the 1.5s of wall time left"
    assert plan_retry_wait(policy, 1, None, rng, max_retry_after=30.0, time_left=0.0).give_up is not None
    scaled = plan_retry_wait(policy, 1, 2.0, rng, max_retry_after=30.0, time_left=None, scale=0.5)
    assert scaled.delay_s == 1.0  # scripted models wait on the demo's clock


# -- no wait outlasts the wall time the run has left ------------------------------------------------------------------


@pytest.mark.parametrize("where", ["run", "agent"])
def test_no_retry_wait_outlasts_the_wall_time_left(tmp_path: Path, store_dir: Path, where: str) -> None:
    # Retry-After 20 s is within max_retry_after (60 s here), but the run (or the agent invocation) has 1 s left.
    agent_budget = ", budget: {wall_time_s: 1s}" if where == "agent" else ""
    with FakeOpenAIServer(default=rate_limited(retry_after=20)) as primary:
        hierarchy = _chain(tmp_path, primary.base_url, None, primary_extra=", max_retry_after: 60s",
                           agent_extra=agent_budget)
        result, took = _run(store_dir, hierarchy, budget="wall=1s" if where == "run" else None)
        assert primary.request_count == 1
    assert took < 3.0  # not 20 s
    assert result.status == "failed"
    assert result.error is not None and "of wall time left" in result.error
    (skipped,) = events(store_dir, result.run_id, kinds=["model.retry_skipped"])
    assert skipped.data["reason"].startswith("a wait of 20s would outlast the ")


# -- the breaker is checked before sleeping a backoff ----------------------------------------------------------------


def test_the_breaker_is_checked_before_a_backoff(tmp_path: Path, store_dir: Path) -> None:
    # The first failure trips the primary's breaker (a window of one call); Retry-After asks for 3 s.
    with FakeOpenAIServer(default=server_error(503, retry_after=3)) as primary, \
            FakeOpenAIServer(default=text("from the backup")) as backup:
        hierarchy = _chain(tmp_path, primary.base_url, backup.base_url, tail="""
breakers:
  defaults: {sliding_window_size: 1, minimum_calls: 1, wait_in_open: 60s}
""")
        result, took = _run(store_dir, hierarchy)
        assert primary.request_count == 1
    assert result.output == "from the backup"
    assert took < 2.5  # no 3 s backoff that could only end in "circuit open"
    assert events(store_dir, result.run_id, kinds=["model.retry"]) == []  # and no retry charged to the budget
    (fallback,) = events(store_dir, result.run_id, kinds=["model.fallback"])
    assert fallback.data["reason"].startswith("gpt-primary: server error (HTTP 503)")
    assert fallback.data["reason"].endswith("(not retried: circuit openai/gpt-primary is open)")


# -- usage on a malformed 200 is billed -------------------------------------------------------------------------------


def test_usage_reported_on_a_malformed_200_is_billed(tmp_path: Path, store_dir: Path) -> None:
    with FakeOpenAIServer(default=empty_choices(prompt_tokens=1000, completion_tokens=50)) as server:
        hierarchy = _chain(tmp_path, server.base_url, None, primary_extra=", price_in: 1, price_out: 2")
        result, _ = _run(store_dir, hierarchy, budget="cost=1")
    assert result.status == "failed" and "response has no choices" in (result.error or "")
    cost = (1000 * 1 + 50 * 2) / 1_000_000
    assert (result.tokens_in, result.tokens_out) == (1000, 50)
    assert result.cost_usd == pytest.approx(cost)
    run = get_run(store_dir, result.run_id)
    assert (run.tokens_in, run.tokens_out, run.cost_usd) == (1000, 50, pytest.approx(cost))
    (llm,) = [s for s in spans(store_dir, result.run_id) if s.kind == "llm"]
    assert llm.status == "error" and llm.attributes["error_kind"] == "malformed_response"
    assert (llm.tokens_in, llm.tokens_out, llm.cost_usd) == (1000, 50, pytest.approx(cost))


async def _complete_malformed(server: FakeOpenAIServer) -> MalformedResponse:
    async with OpenAIProvider(base_url=server.base_url, api_key_env=None, default_timeout=5.0) as provider:
        with pytest.raises(MalformedResponse) as caught:
            await provider.complete(ModelRequest(model="gpt-test", messages=[UserMessage("hi")]))
    return caught.value


def test_the_provider_hands_back_the_usage_of_an_unusable_answer() -> None:
    with FakeOpenAIServer(default=empty_choices(prompt_tokens=7, completion_tokens=3)) as server:
        billed = anyio.run(_complete_malformed, server)
    assert billed.usage is not None and (billed.usage.input_tokens, billed.usage.output_tokens) == (7, 3)
    with FakeOpenAIServer(default=empty_choices(usage=False)) as server:
        assert anyio.run(_complete_malformed, server).usage is None  # nothing reported: nothing invented


# -- estimated token counts are marked ------------------------------------------------------------------------------


def _trace_cli(store_dir: Path, run_id: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("FLIGHTDECK_STORE", None)
    proc = subprocess.run([sys.executable, "-m", "console.cli", "trace", run_id, "--store", str(store_dir)],
                          capture_output=True, text=True, timeout=60, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_estimated_token_counts_are_marked_in_the_span_the_cli_and_the_console(tmp_path: Path,
                                                                                store_dir: Path) -> None:
    from console.widgets.span_detail import span_detail
    from console.widgets.span_tree import span_label

    with FakeOpenAIServer(default=missing_usage("an answer of some length")) as server:
        hierarchy = _chain(tmp_path, server.base_url, None)
        estimated, _ = _run(store_dir, hierarchy)
        server.default = text("counted", prompt_tokens=12, completion_tokens=3)
        counted, _ = _run(store_dir, hierarchy)
    (llm,) = [s for s in spans(store_dir, estimated.run_id) if s.kind == "llm"]
    assert llm.attributes["tokens_estimated"] is True and llm.tokens_in > 0 and llm.tokens_out > 0
    (exact,) = [s for s in spans(store_dir, counted.run_id) if s.kind == "llm"]
    assert "tokens_estimated" not in exact.attributes and (exact.tokens_in, exact.tokens_out) == (12, 3)

    out = _trace_cli(store_dir, estimated.run_id)
    (llm_line,) = [line for line in out.splitlines() if "llm gpt-primary" in line]
    assert f"~{llm.tokens_in}→{llm.tokens_out} tok" in llm_line
    assert out.splitlines()[0].split("  ")[3].startswith("~")  # the run's total includes the estimate
    assert "~ estimated:" in out
    assert "~" not in _trace_cli(store_dir, counted.run_id)

    assert f"~{llm.tokens_in}→{llm.tokens_out} tok" in span_label(llm.as_dict()).plain
    assert "~" not in span_label(exact.as_dict()).plain
    detail = span_detail(llm.as_dict(), raw=False, now=time.time()).plain
    assert f"~{llm.tokens_in} in → ~{llm.tokens_out} out" in detail and "estimated" in detail
    assert "~" not in span_detail(exact.as_dict(), raw=False, now=time.time()).plain


# -- a breaker opening says what tripped it --------------------------------------------------------------------------


def test_an_opening_carries_the_window_that_tripped_it() -> None:
    seen: list[BreakerTransition] = []
    clock = FakeClock()
    breaker = CircuitBreaker("gpt", "model", BreakerConfig(sliding_window_size=4, minimum_calls=4,
                                                            wait_in_open=30.0), clock, seen.append)
    outcomes = [True, False, False, False]  # one success, three failures: 75% >= 50%
    for ok in outcomes:
        permit = breaker.try_acquire()
        assert permit is not None
        permit.on_success(0.1) if ok else permit.on_error(0.1, "unavailable")
    (opened,) = seen
    trip = TripFigures(failure_rate=75.0, slow_call_rate=0.0, calls=4, failed_calls=3, slow_calls=0)
    assert opened.to_state is BreakerState.OPEN and opened.snapshot.tripped_by == trip
    assert opened.snapshot.calls_in_window == 0  # the new state's own window starts empty, as before
    clock.advance(10)
    assert breaker.snapshot().tripped_by == trip  # still what an operator sees while it stays open
    clock.advance(20)
    assert breaker.snapshot().state is BreakerState.HALF_OPEN and breaker.snapshot().tripped_by is None


def test_the_breaker_opened_event_and_row_carry_the_failure_rate_that_tripped_it(tmp_path: Path,
                                                                                    store_dir: Path) -> None:
    def publish_while_open(engine: Engine, hierarchy: Hierarchy) -> None:
        breaker = engine.guards.breakers(engine.compile(hierarchy)).get("model", "openai/gpt-primary")
        assert breaker.state is BreakerState.OPEN
        engine.publisher.publish()  # the once-a-second refresh, which used to overwrite the row with -1% of 0

    with FakeOpenAIServer(default=server_error(500)) as primary:
        hierarchy = _chain(tmp_path, primary.base_url, None, tail="""
breakers:
  defaults: {sliding_window_size: 2, minimum_calls: 2, wait_in_open: 60s}
""")
        result, _ = _run(store_dir, hierarchy, after=publish_while_open)
    assert result.status == "failed"
    (opened,) = [e for e in events(store_dir, kinds=["breaker.transition"]) if e.data["to"] == "open"]
    assert opened.data["key"] == "model:openai/gpt-primary"
    assert (opened.data["failure_rate"], opened.data["calls_in_window"]) == (100.0, 2)
    reader = open_reader(store_dir)
    try:
        (row,) = reader.breakers()
    finally:
        reader.close()
    assert row.state == "open"
    assert (row.failure_rate, row.calls_in_window, row.failed_calls) == (100.0, 2, 2)
