"""Failure handling in the runtime: bad model output, failing tools and children, loops, step limits, invalid final
answers, least privilege. Each failure is traced and handed back; none crashes a run or disturbs another run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.engine_helpers import events, run_sync, spans, write_hierarchy
from tests.fakes.openai_server import FakeOpenAIServer, RecordedRequest, call, text, tool_calls

MODELS = """
models:
  small: {model: m-small, tier: economy, price_in: 0.15, price_out: 0.6, latency: 0, latency_per_token: 0}
tools:
  add: {function: "tests.fixture_tools:add"}
  fail: {function: "tests.fixture_tools:fail"}
  echo: {function: "tests.fixture_tools:echo"}
  record: {function: "tests.fixture_tools:record", side_effects: true}
"""


def _statuses(rows: list[dict], kind: str) -> dict[str, str]:
    return {r.name: r.status for r in rows if r.kind == kind}


def test_failing_child_hands_parent_an_error_and_parent_finishes(tmp_path: Path, store_dir: Path) -> None:
    hierarchy = write_hierarchy(tmp_path, "name: iso\nentry: lead\n" + MODELS + """
agents:
  lead: {contract: Leads., model: small, delegates: [good, broken]}
  good: {contract: Works., model: small, tools: [add]}
  broken: {contract: Breaks., model: small}
scripts:
  lead:
    - delegate: [{agent: good, task: add}, {agent: broken, task: break}]
    - final: partial answer
  good:
    - tool: {name: add, args: {a: 1, b: 2}}
    - final: "3"
  broken:
    - fault: bad_request
""")
    (result,) = run_sync(store_dir, hierarchy, "go")
    assert result.status == "completed"
    assert result.output == "partial answer"
    recorded = spans(store_dir, result.run_id)
    assert _statuses(recorded, "agent") == {"lead": "ok", "good": "ok", "broken": "error"}
    assert _statuses(recorded, "delegation") == {"lead -> good": "ok", "lead -> broken": "error"}


def test_tool_exception_becomes_an_error_result_and_the_agent_goes_on(tmp_path: Path, store_dir: Path) -> None:
    hierarchy = write_hierarchy(tmp_path, "name: toolfail\nentry: w\n" + MODELS + """
agents:
  w: {contract: Tries., model: small, tools: [fail, add]}
scripts:
  w:
    - tool: {name: fail, args: {reason: disk on fire}}
    - tool: {name: add, args: {a: 2, b: 2}}
    - final: recovered
""")
    (result,) = run_sync(store_dir, hierarchy, "go")
    assert result.status == "completed" and result.output == "recovered"
    tools = [s for s in spans(store_dir, result.run_id) if s.kind == "tool"]
    assert [(t.name, t.status) for t in tools] == [("fail", "error"), ("add", "ok")]
    assert "disk on fire" in tools[0].attributes["error"]


def test_repeated_identical_calls_end_the_invocation_as_a_loop(tmp_path: Path, store_dir: Path) -> None:
    hierarchy = write_hierarchy(tmp_path, "name: loop\nentry: lead\n" + MODELS + """
agents:
  lead: {contract: Leads., model: small, delegates: [looper]}
  looper: {contract: Loops., model: small, tools: [add], max_steps: 50}
scripts:
  lead:
    - delegate: [{agent: looper, task: add forever}]
    - final: gave up on the looper
  looper:
    - tool: {name: add, args: {a: 1, b: 1}}
      repeat: forever
""")
    (result,) = run_sync(store_dir, hierarchy, "go")
    assert result.status == "completed"
    recorded = spans(store_dir, result.run_id)
    assert _statuses(recorded, "agent")["looper"] == "loop_detected"
    # Default threshold 3: the third identical call is caught before it runs.
    assert len([s for s in recorded if s.kind == "tool"]) == 2
    (loop,) = events(store_dir, result.run_id, kinds=["loop.detected"])
    assert loop.agent == "looper" and loop.data["count"] == 3 and loop.data["rule"] == "repeated_call"


def test_step_limit_is_always_in_force(tmp_path: Path, store_dir: Path) -> None:
    hierarchy = write_hierarchy(tmp_path, "name: steps\nentry: w\n" + MODELS + """
agents:
  w: {contract: Counts., model: small, tools: [add], max_steps: 3}
scripts:
  w:
    - tool: {name: add, args: {a: 1, b: 1}}
    - tool: {name: add, args: {a: 1, b: 2}}
    - tool: {name: add, args: {a: 1, b: 3}}
    - tool: {name: add, args: {a: 1, b: 4}}
    - final: never reached
""")
    (result,) = run_sync(store_dir, hierarchy, "go")
    assert result.status == "loop_detected"
    assert result.model_calls == 3
    (event,) = events(store_dir, result.run_id, kinds=["loop.detected"])
    assert event.data == {"rule": "step_limit", "max_steps": 3}


def test_invalid_final_answer_is_retried_then_accepted(tmp_path: Path, store_dir: Path) -> None:
    hierarchy = write_hierarchy(tmp_path, "name: contract\nentry: w\n" + MODELS + """
agents:
  w:
    contract: Answers with a number.
    model: small
    output: {total: integer, note: string?}
scripts:
  w:
    - final: "the total is four"
    - final: {total: "not a number"}
    - final: {total: 4}
""")
    (result,) = run_sync(store_dir, hierarchy, "go")
    assert result.status == "completed", result.error
    assert result.output == {"total": 4, "note": None}
    assert len(events(store_dir, result.run_id, kinds=["validation.failed"])) == 2


def test_persistently_invalid_answer_fails_validation_with_the_errors(tmp_path: Path, store_dir: Path) -> None:
    hierarchy = write_hierarchy(tmp_path, "name: contract2\nentry: w\n" + MODELS + """
agents:
  w: {contract: Answers with a number., model: small, output: {total: integer}}
scripts:
  w:
    - final: {total: nope}
      repeat: forever
""")
    (result,) = run_sync(store_dir, hierarchy, "go")
    assert result.status == "failed"
    assert "output contract violated 3 times" in result.error and "total" in result.error


def test_handoff_that_breaks_the_child_input_contract_is_refused(tmp_path: Path, store_dir: Path) -> None:
    hierarchy = write_hierarchy(tmp_path, "name: handoff\nentry: lead\n" + MODELS + """
agents:
  lead: {contract: Leads., model: small, delegates: [child]}
  child: {contract: Needs an account., model: small, input: {account: string}}
scripts:
  lead:
    - delegate: [{agent: child, task: look, context: {acct: typo}}]
    - final: done anyway
""")
    (result,) = run_sync(store_dir, hierarchy, "go")
    assert result.status == "completed"
    recorded = spans(store_dir, result.run_id)
    (delegation,) = [s for s in recorded if s.kind == "delegation"]
    assert delegation.status == "validation_failed"
    assert "account" in delegation.attributes["error"]
    assert "child" not in _statuses(recorded, "agent")  # the child never ran


def test_one_failing_run_does_not_disturb_the_others(tmp_path: Path, store_dir: Path) -> None:
    hierarchy = write_hierarchy(tmp_path, "name: many\nentry: w\n" + MODELS + """
agents:
  w: {contract: Adds., model: small, tools: [add], input: {a: integer, b: integer}}
scripts:
  w:
    - tool: {name: add, args: {a: "{input.a}", b: "{input.b}"}}
    - final: "done {input.a}"
""")
    inputs = [{"a": i, "b": 1} for i in range(12)]
    inputs[5] = {"a": "not a number"}
    results = run_sync(store_dir, hierarchy, *inputs, concurrency=6)
    statuses = sorted(r.status for r in results)
    assert statuses.count("completed") == 11 and statuses.count("failed") == 1
    failed = next(r for r in results if r.status == "failed")
    assert "input contract" in failed.error


# --- with a real OpenAI-compatible server on loopback: what a live model may send --------------------------------

def _openai_hierarchy(tmp_path: Path, base_url: str) -> object:
    return write_hierarchy(tmp_path, f"""
name: live
entry: w
models:
  gpt: {{provider: openai, model: gpt-test, base_url: "{base_url}", timeout: 5s}}
tools:
  add: {{function: "tests.fixture_tools:add"}}
  record: {{function: "tests.fixture_tools:record", side_effects: true}}
agents:
  w: {{contract: Adds numbers., model: gpt, tools: [add], max_steps: 6}}
""")


def test_live_model_output_errors_go_back_to_the_model(tmp_path: Path, store_dir: Path) -> None:
    from tests import fixture_tools

    fixture_tools.clear_journal()
    with FakeOpenAIServer() as server:
        server.enqueue(
            tool_calls(call("record", {"note": "exfiltrate"})),  # not this agent's tool (least privilege)
            tool_calls(call("add", {"a": "one", "b": 2})),         # invalid arguments
            tool_calls(call("add", '{"a": 1, "b": ')),             # malformed JSON
            tool_calls(call("add", {"a": 1, "b": 2})),
            text("the sum is 3"),
        )
        hierarchy = _openai_hierarchy(tmp_path, server.base_url)
        (result,) = run_sync(store_dir, hierarchy, "add 1 and 2")
        requests: list[RecordedRequest] = server.requests
    assert result.status == "completed" and result.output == "the sum is 3"
    assert fixture_tools.journal() == []  # the forbidden side effect never happened
    tool_messages = [json.loads(m["content"]) for m in requests[-1].messages if m["role"] == "tool"]
    assert "not available to agent w" in tool_messages[0]["error"]
    assert "invalid arguments for add" in tool_messages[1]["error"]
    assert "not valid JSON" in tool_messages[2]["error"]
    assert tool_messages[3] == 3
    recorded = spans(store_dir, result.run_id)
    assert [(s.name, s.status) for s in recorded if s.kind == "tool"] == [
        ("record", "denied"), ("add", "error"), ("add", "error"), ("add", "ok")]
    (blocked,) = events(store_dir, result.run_id, kinds=["tool.blocked"])
    assert blocked.data["tool"] == "record"
    # The tools offered to the model are exactly the agent's own.
    assert [t["function"]["name"] for t in requests[0].json["tools"]] == ["add"]


@pytest.mark.parametrize("reply", ["empty", "error_object"])
def test_unusable_live_responses_fail_the_agent_cleanly(tmp_path: Path, store_dir: Path, reply: str) -> None:
    from tests.fakes.openai_server import empty_choices, error_object

    with FakeOpenAIServer(default=empty_choices() if reply == "empty" else error_object()) as server:
        hierarchy = _openai_hierarchy(tmp_path, server.base_url)
        (result,) = run_sync(store_dir, hierarchy, "add")
    assert result.status == "failed"
    assert result.error and "gpt-test" in result.error
    (llm, *_) = [s for s in spans(store_dir, result.run_id) if s.kind == "llm"]
    assert llm.status == "error" and llm.attributes["error_kind"] == "malformed_response"
