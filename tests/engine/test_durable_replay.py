"""Replay on resume (issue 13): a durable run SIGKILLed mid-way resumes without asking the model again for the
steps it recorded, without running its pure tools again, and without paying for them twice. The model is a real
OpenAI-compatible server on 127.0.0.1 (tests/fakes/openai_server.py), which counts every request it gets, across
the killed subprocess and the engine that resumes the run. On both trace backends: the store directory's traces.db
and DBOS's durable.db, or a Postgres store holding both (issue 16: the replay is read from its trace tables)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.store import open_trace_reads
from tests.durable_support import Charging, flightdeck, replaying_text, run_once, script, steps_asked
from tests.fakes.openai_server import FakeOpenAIServer
from tests.trace_backends import TraceBackend


@pytest.mark.slow
def test_a_resumed_run_replays_recorded_model_and_pure_tool_calls(tmp_path: Path, trace_backend: TraceBackend
                                                                   ) -> None:
    with FakeOpenAIServer() as server:
        server.responder = script
        charging = Charging(tmp_path, replaying_text(server.base_url), pg_url=trace_backend.pg_url)
        crashed = charging.run("--input", "charge customer 1", crash=True)
        assert crashed.returncode == -9, crashed.stderr[-2000:]
        assert steps_asked(server.requests) == [0, 1]  # killed in the charge the second answer asked for
        resumed = charging.restart()
        assert len(resumed) == 1
        # The provider is asked only for what was not recorded: no request for steps 0 and 1 again.
        assert steps_asked(server.requests) == [0, 1, 2, 3]

        clean = tmp_path / "clean"
        clean.mkdir()
        never_crashed = run_once(clean / "store", charging.path, clean / "ledger.jsonl")  # on its own traces.db
        assert steps_asked(server.requests)[4:] == [0, 1, 2, 3]

    reader = open_trace_reads(charging.trace_location)
    try:
        run = reader.get_run(resumed[0])
        assert run is not None
        recorded = reader.spans(run.id)
    finally:
        reader.close()
    assert run.status == "completed", run.error
    assert never_crashed.status == "completed"
    # What the run cost is what a run that never crashed cost: the replayed steps were not billed again.
    assert run.cost_usd == pytest.approx(never_crashed.cost_usd)
    assert (run.tokens_in, run.tokens_out, run.model_calls) == (
        never_crashed.tokens_in, never_crashed.tokens_out, never_crashed.model_calls)
    # The pure lookup of step 0 ran once (before the crash); the charge ran again under its key (idempotent).
    lines = charging.lines()
    assert [line["lookup"] for line in lines if "lookup" in line] == [1, 2]
    assert [line["attempt"] for line in lines if "amount" in line] == [0, 1]

    replayed = [s for s in recorded if isinstance(s.attributes, dict) and s.attributes.get("replayed")]
    assert sorted((s.kind, s.attributes["path"]) for s in replayed) == [
        ("llm", "clerk.0"), ("llm", "clerk.1"), ("tool", "clerk.0.0")]
    assert all(s.cost_usd == 0 and s.tokens_in == 0 and s.tokens_out == 0 for s in replayed)
    assert run.resumed == 1 and run.replayed_steps == 3

    listed = flightdeck("runs", "--json", "--store", charging.store_arg)
    assert listed.returncode == 0, listed.stderr
    (row,) = json.loads(listed.stdout)
    assert (row["resumed"], row["replayed_steps"]) == (1, 3)
    trace = flightdeck("trace", run.id, "--store", charging.store_arg)
    assert trace.returncode == 0, trace.stderr
    assert "3 steps replayed" in trace.stdout
    assert trace.stdout.count("(replayed)") == 3
