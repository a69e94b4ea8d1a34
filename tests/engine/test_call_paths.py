"""Call paths of pipeline stages (issue 13): two stages running the same agent get paths of their own, so their side
effects have keys of their own and a resume replays each stage's own record; a run recorded before stages had a
frame (path format 1) keeps its paths when it resumes, or is refused when they are ambiguous."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import anyio
import pytest

from engine.controls.api import ControlAPI
from engine.errors import InputError
from engine.guardrails.budget import BudgetLimits
from engine.hierarchy.loader import load_hierarchy
from engine.runtime.call_paths import path_format_of, shared_prefixes
from engine.runtime.engine import Engine, RunRequest
from engine.runtime.retry import retry_hierarchy
from engine.runtime.retry_preview import preview_retry
from engine.store import open_engine_store
from tests.durable_support import TWICE, Charging, flightdeck
from tests.engine_helpers import events, get_run, spans

# The same stages, each with an agent of its own: format-1 paths are unambiguous here.
DISTINCT = TWICE.replace("{name: second, agent: clerk}", "{name: second, agent: checker}").replace(
    "  clerk:\n    contract: Charges customers.", "  checker:\n    contract: Charges again.\n    model: m\n"
    "    tools: [charge]\n    max_steps: 5\n    output: {amount: integer}\n  clerk:\n    contract: Charges customers."
).replace("scripts:\n  clerk:", "scripts:\n  checker:\n    - tool: {name: charge, args: {amount: \"{input.amount}\"}}\n"
          "    - final: {amount: 7}\n  clerk:")


def _engine_run(charging: Charging, job: Any) -> Any:
    os.environ["FLIGHTDECK_TEST_LEDGER"] = str(charging.ledger)

    async def go() -> Any:
        with open_engine_store(charging.store) as store:
            async with Engine(store, latency_scale=0.0, runbooks=False, durable=True, auto_resume=False) as engine:
                return await job(engine)

    return anyio.run(go)


def _stopped_after_the_first_stage(charging: Charging, path_format: int = 2) -> str:
    """A durable run whose second stage's charge its budget refuses (one tool call): the first stage's charge is
    recorded; the pipeline, and so the run, ends failed. Returns its id."""
    hierarchy = load_hierarchy(str(charging.path))
    request = RunRequest(input={"amount": 5}, budget=BudgetLimits(tool_calls=1), path_format=path_format)
    result = _engine_run(charging, lambda engine: engine.run(hierarchy, request))
    assert result.status == "failed" and "exhausted on tool_calls" in (result.error or ""), result.error
    assert [line["amount"] for line in charging.lines()] == [5]
    return str(result.run_id)


def _resume(charging: Charging, run_id: str) -> Any:
    return _engine_run(charging, lambda engine: engine.durable.resume_run(run_id, BudgetLimits(tool_calls=10)))


def _llm_spans(store: Path, run_id: str) -> list[Any]:
    return [s for s in spans(store, run_id) if s.kind == "llm"]


def test_two_stages_running_one_agent_keep_their_own_keys_and_records_across_a_resume(tmp_path: Path) -> None:
    charging = Charging(tmp_path, TWICE)
    run_id = _stopped_after_the_first_stage(charging)
    first_try = {s.attributes["path"]: s.id for s in _llm_spans(charging.store, run_id)}
    assert sorted(first_try) == ["flow/first>clerk.0", "flow/first>clerk.1", "flow/second>clerk.0"]

    resumed = _resume(charging, run_id)
    assert resumed.status == "completed", resumed.error
    # Each stage's side effect ran exactly once, under a key of its own.
    assert [(line["amount"], line["idempotency_key"]) for line in charging.lines()] == [
        (5, f"{run_id}:flow/first>clerk.0.0"), (7, f"{run_id}:flow/second>clerk.0.0")]
    # The resume replayed each stage's own recorded answers (the first stage's charge of 5, the second's of 7).
    replayed = {s.attributes["path"]: s for s in _llm_spans(charging.store, run_id) if s.attributes.get("replayed")}
    assert {path: s.attributes["replayed_from"]["span"] for path, s in replayed.items()} == first_try
    assert replayed["flow/second>clerk.0"].attributes["tool_calls"][0]["arguments"] == {"amount": 7}
    assert replayed["flow/first>clerk.0"].attributes["tool_calls"][0]["arguments"] == {"amount": 5}
    assert get_run(charging.store, run_id).attributes["paths"] == 2


def test_a_durable_run_does_the_side_effects_of_both_stages(tmp_path: Path) -> None:
    # With one path for both stages, the second stage's charge found the first's key recorded and was skipped
    # even in a run that never stopped.
    charging = Charging(tmp_path, TWICE)
    hierarchy = load_hierarchy(str(charging.path))
    result = _engine_run(charging, lambda engine: engine.run(hierarchy, RunRequest(input={"amount": 5})))
    assert result.status == "completed", result.error
    assert [(line["amount"], line["idempotency_key"]) for line in charging.lines()] == [
        (5, f"{result.run_id}:flow/first>clerk.0.0"), (7, f"{result.run_id}:flow/second>clerk.0.0")]


@pytest.mark.slow
def test_a_pipeline_killed_after_its_first_stage_resumes_both_side_effects_once(tmp_path: Path) -> None:
    charging = Charging(tmp_path, TWICE)
    env = {**charging.env, "FLIGHTDECK_TEST_CRASH_MARKER": str(charging.marker),
           "FLIGHTDECK_TEST_CRASH_BEFORE_AMOUNT": "7"}
    crashed = flightdeck("run", str(charging.path), "--durable", "--speed", "0", "--store", str(charging.store),
                         "--input", '{"amount": 5}', env=env)
    assert crashed.returncode == -9, crashed.stderr[-2000:]  # SIGKILLed as the second stage's charge started
    assert [line["amount"] for line in charging.lines()] == [5]
    (run_id,) = charging.restart()
    run = get_run(charging.store, run_id)
    assert run.status == "completed", run.error
    keys = [(line["amount"], line["idempotency_key"]) for line in charging.lines()]
    assert keys == [(5, f"{run_id}:flow/first>clerk.0.0"), (7, f"{run_id}:flow/second>clerk.0.0")]


def test_a_run_recorded_with_format_1_paths_resumes_under_them_when_they_are_unambiguous(tmp_path: Path) -> None:
    charging = Charging(tmp_path, DISTINCT)
    run_id = _stopped_after_the_first_stage(charging, path_format=1)
    resumed = _resume(charging, run_id)
    assert resumed.status == "completed", resumed.error
    # The first charge's record is found under its old key (not charged again), the second runs under an old-style
    # key too: the run kept the format its record has.
    assert [(line["amount"], line["idempotency_key"]) for line in charging.lines()] == [
        (5, f"{run_id}:clerk.0.0"), (7, f"{run_id}:checker.0.0")]
    assert get_run(charging.store, run_id).attributes["paths"] == 1


def test_a_format_1_run_whose_stages_share_an_agent_is_refused_with_the_reason(tmp_path: Path) -> None:
    charging = Charging(tmp_path, TWICE)
    run_id = _stopped_after_the_first_stage(charging, path_format=1)
    store = ["--store", str(charging.store)]
    refused = flightdeck("resume", run_id, "--reason", "try", "--yes", *store, env=charging.env)
    assert refused.returncode == 2, refused.stderr
    assert "before pipeline stages had call paths" in refused.stderr
    assert "'flow' runs agent 'clerk' in stages 'first' and 'second'" in refused.stderr
    assert "Traceback" not in refused.stderr
    conn = sqlite3.connect(f"file:{charging.store / 'control.db'}?mode=ro", uri=True)
    try:
        assert conn.execute("SELECT count(*) FROM audit").fetchone() == (0,)  # nothing written
    finally:
        conn.close()
    # The engine refuses it too (an engine starting on the store, an API resume): the run ends failed, saying why,
    # and nothing is charged again.
    resumed = _resume(charging, run_id)
    assert resumed.status == "failed" and "before pipeline stages had call paths" in (resumed.error or "")
    assert [line["amount"] for line in charging.lines()] == [5]
    (event,) = events(charging.store, run_id, ["run.not_resumed"])
    assert "cannot carry on run" in json.dumps(event.data)
    # And a retry of it, before anything is written.
    span = next(s.id for s in _llm_spans(charging.store, run_id))
    with pytest.raises(InputError, match="before pipeline stages had call paths"):
        retry_hierarchy(preview_retry(charging.store, run_id, span))


def test_shared_prefixes_follow_routers_and_nested_pipelines(tmp_path: Path) -> None:
    text = TWICE.replace("{name: second, agent: clerk}", "{name: second, agent: pick}").replace(
        "  clerk:\n", "  pick:\n    kind: router\n    contract: Picks.\n    default_route: inner\n"
        "  inner:\n    kind: pipeline\n    contract: Nested.\n    stages:\n      - {name: only, agent: clerk}\n"
        "  clerk:\n", 1)
    path = tmp_path / "nested.yaml"
    path.write_text(text)
    (shared,) = shared_prefixes(load_hierarchy(str(path)).spec)
    assert (shared.pipeline, shared.agent, shared.stages) == ("flow", "clerk", ("first", "second"))
    distinct = tmp_path / "distinct.yaml"
    distinct.write_text(DISTINCT)
    assert shared_prefixes(load_hierarchy(str(distinct)).spec) == []
    # A row without `paths` was written before formats were recorded.
    assert path_format_of({}) == 1 and path_format_of({"paths": 2}) == 2 and path_format_of(None) == 1


def test_stage_frames_keep_the_structural_order_a_retry_uses() -> None:
    from engine.runtime.replay import precedes

    # Within one stage, steps are ordered as in any agent; stages are not ordered against each other (they may run
    # in parallel): a retry from a step of one stage runs the other stages' calls again.
    assert precedes("flow/second>clerk.0", "flow/second>clerk.1")
    assert precedes("flow/second>clerk.0.0", "flow/second>clerk.1")
    assert not precedes("flow/first>clerk.1", "flow/second>clerk.0")
    assert not precedes("flow/second>clerk.0", "flow/first>clerk.1")


@pytest.mark.slow
def test_serve_mode_refuses_to_resume_a_run_with_ambiguous_call_paths(tmp_path: Path) -> None:
    from engine.serve.contracts import Refused
    from tests.serve_support import Serving

    charging = Charging(tmp_path, TWICE)
    run_id = _stopped_after_the_first_stage(charging, path_format=1)
    serving = Serving(tmp_path)  # a fleet on the same store

    async def body(fleet: Any) -> str:
        with pytest.raises(Refused) as refused:
            await fleet.resume(run_id, actor="bob")
        assert refused.value.status == 409
        return str(refused.value)

    assert "before pipeline stages had call paths" in serving.serve(body)
    with ControlAPI(charging.store, "auditor") as api:
        assert [e for e in api.audit_log(limit=50) if e.action == "resume"] == []
    assert [line["amount"] for line in charging.lines()] == [5]
