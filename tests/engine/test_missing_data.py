"""Missing data that comes back empty (`missing_when_empty`): the empty result is marked on its span, a
`tool.missing_data` event is recorded, the model is told not to invent it, and the run's span lists it; a tool
without the setting, or a result with data, is left alone. The deal-desk drill holds."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from engine.drills.runner import run_drills
from engine.drills.spec import load_drill
from engine.hierarchy.bundled import bundled_path
from engine.hierarchy.loader import load_hierarchy
from engine.runtime.results import RunResult
from tests.engine_helpers import events, run_sync, spans, write_hierarchy
from tests.fakes.openai_server import Behaviour, FakeOpenAIServer, RecordedRequest, call, text, tool_calls

DRILL = bundled_path("deal-desk").parent / "drills" / "missing-data-empty.yaml"


def _hierarchy(base_url: str, setting: str) -> str:
    return f"""
name: empty
entry: w
models:
  gpt: {{provider: openai, model: gpt-test, base_url: "{base_url}", timeout: 5s}}
tools:
  lookup: {{function: "tests.runtime_tools:lookup"{setting}}}
agents:
  w: {{contract: Looks things up., model: gpt, tools: [lookup]}}
"""


def _script(key: str) -> Callable[[RecordedRequest], Behaviour]:
    def script(request: RecordedRequest) -> Behaviour:
        if not request.has_tool_result:
            return tool_calls(call("lookup", {"key": key}))
        return text("done")
    return script


def _run(tmp_path: Path, store_dir: Path, key: str, setting: str) -> tuple[RunResult, list[RecordedRequest]]:
    with FakeOpenAIServer(responder=_script(key)) as server:
        hierarchy = write_hierarchy(tmp_path, _hierarchy(server.base_url, setting))
        (result,) = run_sync(store_dir, hierarchy, "go")
        return result, server.requests


@pytest.mark.parametrize(("key", "setting", "empty"), [
    ("none", ", missing_when_empty: [rows]", ["rows"]),
    ("gone", ", missing_when_empty: true", ["(result)"]),
    ("gone", ", missing_when_empty: [rows]", ["(result)"]),
])
def test_an_empty_result_is_marked_told_and_listed(tmp_path: Path, store_dir: Path, key: str, setting: str,
                                                   empty: list[str]) -> None:
    result, requests = _run(tmp_path, store_dir, key, setting)
    assert result.status == "completed"
    run_id = result.run_id
    (event,) = events(store_dir, run_id, kinds=["tool.missing_data"])
    assert event.agent == "w" and event.name == "lookup" and event.data == {"tool": "lookup", "empty": empty}
    recorded = spans(store_dir, run_id)
    tool = next(s for s in recorded if s.kind == "tool")
    assert tool.status == "ok" and tool.attributes["empty"] == empty
    run_span = next(s for s in recorded if s.kind == "run")
    assert run_span.attributes["missing_data"] == [{"agent": "w", "tool": "lookup", "empty": empty}]
    told = next(m for m in requests[-1].messages if m["role"] == "tool")
    assert "that data is missing" in told["content"] and "do not invent it" in told["content"]


@pytest.mark.parametrize(("key", "setting"), [("none", ""), ("some", ", missing_when_empty: [rows]"),
                                              ("none", ", missing_when_empty: false")])
def test_results_with_data_or_without_the_setting_are_left_alone(tmp_path: Path, store_dir: Path, key: str,
                                                                 setting: str) -> None:
    result, requests = _run(tmp_path, store_dir, key, setting)
    run_id = result.run_id
    assert not events(store_dir, run_id, kinds=["tool.missing_data"])
    assert "missing_data" not in next(s for s in spans(store_dir, run_id) if s.kind == "run").attributes
    assert "do not invent" not in next(m for m in requests[-1].messages if m["role"] == "tool")["content"]


def test_empty_result_drill_holds_and_fails_without_the_setting(tmp_path: Path) -> None:
    hierarchy = load_hierarchy("deal-desk")
    [held] = run_drills(hierarchy, [load_drill(DRILL)])
    assert held.held, held.evidence
    off = tmp_path / DRILL.name
    off.write_text(DRILL.read_text().replace("{missing_when_empty: [competitors]}", "{timeout: 10s}"))
    [failed] = run_drills(hierarchy, [load_drill(off)])
    assert not failed.held
    assert any(line.startswith("no event tool.missing_data") for line in failed.evidence)
