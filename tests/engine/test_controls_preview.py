"""preview_kill against a real trace store (traces.db written by the engine's TraceWriter, and a Postgres store
written by PgBatchWriter: `trace_backend`): exactly the in-flight work a switch of each scope would stop, and nothing
that already finished."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from engine.controls.preview import preview_kill
from engine.errors import InputError
from engine.store import open_engine_store
from tests.trace_backends import TraceBackend


def write_running_store(store: Path | TraceBackend) -> None:
    """Two running runs and a finished one:

    run-a (deal-desk, running): agent planner running, its llm call running, agent pricer running with a
    crm_lookup tool call running; a finished crm_lookup call.
    run-b (support, running): agent triage running with a kb_search call running and a crm_lookup call running.
    run-c (deal-desk, completed): everything ended.

    A Path is a store directory written by an engine's store (tests/console/test_controls_cli.py uses that).
    """
    if isinstance(store, TraceBackend):
        writer = store.writer()
        try:
            _emit_running(writer, "eng-1")
        finally:
            writer.close()
        return
    with open_engine_store(store) as engine_store:
        _emit_running(engine_store.writer, engine_store.engine_id)


def _emit_running(w: Any, engine_id: str) -> None:
    now = time.time()
    for run_id, hierarchy, started in (("run-a", "deal-desk", now - 30), ("run-b", "support", now - 20),
                                       ("run-c", "deal-desk", now - 60)):
        w.run_started(run_id, hierarchy, None, engine_id, "test", {}, 0, None, started)
        w.span_started(f"{run_id}-root", run_id, None, "run", None, hierarchy, started)
    w.span_started("a-planner", "run-a", "run-a-root", "agent", "planner", "planner", now - 29)
    w.span_started("a-llm", "run-a", "a-planner", "llm", "planner", "sim-large", now - 5)
    w.span_started("a-pricer", "run-a", "a-planner", "agent", "pricer", "pricer", now - 20)
    w.span_started("a-crm", "run-a", "a-pricer", "tool", "pricer", "crm_lookup", now - 3)
    w.span_started("a-crm-done", "run-a", "a-pricer", "tool", "pricer", "crm_lookup", now - 15)
    w.span_ended("a-crm-done", "run-a", "ok", now - 14)
    w.span_started("b-triage", "run-b", "run-b-root", "agent", "triage", "triage", now - 19)
    w.span_started("b-kb", "run-b", "b-triage", "tool", "triage", "kb_search", now - 2)
    w.span_started("b-crm", "run-b", "b-triage", "tool", "triage", "crm_lookup", now - 1)
    w.span_started("c-planner", "run-c", "run-c-root", "agent", "planner", "planner", now - 59)
    w.span_started("c-crm", "run-c", "c-planner", "tool", "planner", "crm_lookup", now - 58)
    w.span_ended("c-crm", "run-c", "ok", now - 57)
    w.span_ended("c-planner", "run-c", "ok", now - 50)
    w.span_ended("run-c-root", "run-c", "ok", now - 50)
    w.run_ended("run-c", "completed", now - 50)
    w.flush()


@pytest.fixture
def traces(trace_backend: TraceBackend) -> TraceBackend:
    write_running_store(trace_backend)
    return trace_backend


def _preview(backend: TraceBackend, scope: str, target: str | None, run_id: str | None = None) -> tuple[
        list[str], list[str], list[str]]:
    with backend.reader() as reader:
        p = preview_kill(reader, scope, target, run_id)
    return [r["id"] for r in p.runs], sorted(a["span_id"] for a in p.agents), sorted(c["span_id"] for c in p.calls)


def test_global_lists_all_in_flight_work(traces: TraceBackend) -> None:
    assert _preview(traces, "global", None) == (
        ["run-a", "run-b"], ["a-planner", "a-pricer", "b-triage"], ["a-crm", "a-llm", "b-crm", "b-kb"])


def test_run_scope(traces: TraceBackend) -> None:
    assert _preview(traces, "run", "run-b") == (["run-b"], ["b-triage"], ["b-crm", "b-kb"])
    assert _preview(traces, "run", "run-c") == ([], [], [])  # finished: nothing to stop
    assert _preview(traces, "run", "no-such-run") == ([], [], [])


def test_hierarchy_scope(traces: TraceBackend) -> None:
    assert _preview(traces, "hierarchy", "deal-desk") == (
        ["run-a"], ["a-planner", "a-pricer"], ["a-crm", "a-llm"])


def test_agent_scope(traces: TraceBackend) -> None:
    assert _preview(traces, "agent", "pricer") == (["run-a"], ["a-pricer"], ["a-crm"])
    assert _preview(traces, "agent", "planner") == (["run-a"], ["a-planner"], ["a-llm"])
    assert _preview(traces, "agent", "triage", run_id="run-a") == ([], [], [])
    assert _preview(traces, "agent", "triage", run_id="run-b") == (["run-b"], ["b-triage"], ["b-crm", "b-kb"])


def test_tool_scope(traces: TraceBackend) -> None:
    assert _preview(traces, "tool", "crm_lookup") == (["run-a", "run-b"], [], ["a-crm", "b-crm"])
    assert _preview(traces, "tool", "kb_search") == (["run-b"], [], ["b-kb"])
    assert _preview(traces, "tool", "nothing") == ([], [], [])


def test_preview_details_and_json(traces: TraceBackend) -> None:
    with traces.reader() as reader:
        preview = preview_kill(reader, "tool", "kb_search")
    assert not preview.empty
    assert preview.runs[0]["hierarchy"] == "support" and preview.runs[0]["status"] == "running"
    call = preview.calls[0]
    assert (call["kind"], call["name"], call["agent"], call["run_id"]) == ("tool", "kb_search", "triage", "run-b")
    assert preview.to_json()["calls"][0]["span_id"] == "b-kb"


def test_preview_validates_scope(traces: TraceBackend) -> None:
    with traces.reader() as reader:
        with pytest.raises(InputError):
            preview_kill(reader, "tenant", "x")
        with pytest.raises(InputError):
            preview_kill(reader, "run", None)
