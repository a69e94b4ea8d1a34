"""`flightdeck retry RUN --from SPAN` (issue 13): a new run that replays the original's calls before the span and
runs the span and what follows. The model is a real OpenAI-compatible server on 127.0.0.1 that counts requests;
the tools write a ledger line each time they really run."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import anyio
import pytest

from engine.runtime.engine import Engine
from engine.runtime.retry import new_run_id, retry_hierarchy, start_retry
from engine.runtime.retry_preview import RetryPreview, preview_retry
from engine.store import open_engine_store
from tests.durable_support import Charging, flightdeck, replaying_text, run_once, script, steps_asked
from tests.engine_helpers import get_run, spans
from tests.fakes.openai_server import FakeOpenAIServer


def _span(store: Path, run_id: str, kind: str, path: str) -> str:
    return next(s.id for s in spans(store, run_id) if s.kind == kind and s.attributes.get("path") == path)


def _retry(store: Path, preview: RetryPreview) -> Any:
    hierarchy, _changed = retry_hierarchy(preview)

    async def go() -> Any:
        with open_engine_store(store) as engine_store:
            async with Engine(engine_store, latency_scale=0.0, runbooks=False, durable=preview.durable,
                              auto_resume=False) as engine:
                return await start_retry(engine, preview, hierarchy, new_run_id())

    return anyio.run(go)


def _snapshot(store: Path, run_id: str) -> Any:
    conn = sqlite3.connect(f"file:{store / 'traces.db'}?mode=ro", uri=True)
    try:
        return (conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchall(),
                conn.execute("SELECT * FROM spans WHERE run_id = ? ORDER BY id", (run_id,)).fetchall())
    finally:
        conn.close()


def _audit(store: Path) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"file:{store / 'control.db'}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT action, target, after, reason FROM audit ORDER BY id").fetchall()
    finally:
        conn.close()


@pytest.mark.slow
def test_a_retry_replays_what_came_before_the_span_and_runs_the_rest(tmp_path: Path) -> None:
    with FakeOpenAIServer() as server:
        server.responder = script
        charging = Charging(tmp_path, replaying_text(server.base_url))
        original = run_once(charging.store, charging.path, charging.ledger)
        assert original.status == "completed"
        assert steps_asked(server.requests) == [0, 1, 2, 3]
        before = _snapshot(charging.store, original.run_id)
        # From the second lookup: both model calls before it, the first lookup and the charge replay.
        span = _span(charging.store, original.run_id, "tool", "clerk.2.0")
        preview = preview_retry(charging.store, original.run_id, span)
        assert sorted(s.attributes["path"] for s in preview.replays) == [
            "clerk.0", "clerk.0.0", "clerk.1", "clerk.1.0", "clerk.2"]
        assert [s.attributes["path"] for s in preview.runs_again] == ["clerk.2.0", "clerk.3"]
        assert preview.side_effects_again == []
        retried = _retry(charging.store, preview)
        # The provider was asked once more: for the last step only.
        assert steps_asked(server.requests) == [0, 1, 2, 3, 3]

    assert retried.status == "completed" and retried.run_id != original.run_id
    assert retried.output == original.output
    # Only the span and what follows ran: the charge was not done again, the second lookup was.
    lines = charging.lines()
    assert [line["lookup"] for line in lines if "lookup" in line] == [1, 2, 2]
    assert len([line for line in lines if "amount" in line]) == 1
    row = get_run(charging.store, retried.run_id)
    assert row.attributes["retry_of"] == original.run_id and row.attributes["retry_from"] == span
    assert row.replayed_steps == 5 and retried.model_calls == 1
    # Billed for the one model call it made.
    assert 0 < retried.cost_usd < original.cost_usd
    replayed = [s for s in spans(charging.store, retried.run_id) if s.attributes.get("replayed")]
    assert len(replayed) == 5 and all(s.attributes["replayed_from"]["run"] == original.run_id for s in replayed)
    assert _snapshot(charging.store, original.run_id) == before  # the original is untouched


@pytest.mark.slow
def test_a_recorded_answer_that_no_longer_fits_runs_again(tmp_path: Path) -> None:
    with FakeOpenAIServer() as server:
        server.responder = script
        charging = Charging(tmp_path, replaying_text(server.base_url))
        original = run_once(charging.store, charging.path, charging.ledger)
        span = _span(charging.store, original.run_id, "llm", "clerk.3")
        # The tool the recorded answers ask for is renamed: those answers no longer fit, and are asked again.
        charging.path.write_text(charging.path.read_text().replace("lookup", "find").replace(
            "tests.durable_tools:find", "tests.durable_tools:lookup"))
        preview = preview_retry(charging.store, original.run_id, span)
        hierarchy, changed = retry_hierarchy(preview)
        assert changed
        retried = _retry(charging.store, preview)
        asked = steps_asked(server.requests)[4:]
    assert retried.status == "completed", retried.error
    assert asked[0] == 0  # step 0's recorded answer (lookup) no longer fits: the model was asked again
    # Step 1's answer (charge) still fits: it replays, and so does the charge (never done twice).
    assert 1 not in asked
    assert len([line for line in charging.lines() if "amount" in line]) == 1


@pytest.mark.slow
def test_retry_cli_previews_audits_and_exits_with_the_new_runs_code(tmp_path: Path) -> None:
    with FakeOpenAIServer() as server:
        server.responder = script
        charging = Charging(tmp_path, replaying_text(server.base_url))
        original = run_once(charging.store, charging.path, charging.ledger)
        other = run_once(charging.store, charging.path, charging.ledger)
        store = ["--store", str(charging.store)]
        runs_before = len(json.loads(flightdeck("runs", "--json", *store).stdout))
        root = next(s.id for s in spans(charging.store, original.run_id) if s.kind == "run")
        for span, said in ((_span(charging.store, other.run_id, "tool", "clerk.0.0"), "it is a span of run"),
                           ("nope", "has no span"), (root, "is a run span"), (root[:4], "is ambiguous")):
            bad = flightdeck("retry", original.run_id, "--from", span, "--reason", "x", "--yes", *store)
            assert bad.returncode == 2 and said in bad.stderr, bad.stderr
            assert "Traceback" not in bad.stderr
        no_reason = flightdeck("retry", original.run_id, "--from", root, "--yes", *store)
        assert no_reason.returncode == 2 and "--reason" in no_reason.stderr
        assert _audit(charging.store) == []
        assert len(json.loads(flightdeck("runs", "--json", *store).stdout)) == runs_before  # nothing written

        charge = _span(charging.store, original.run_id, "tool", "clerk.1.0")
        done = flightdeck("retry", original.run_id[:8], "--from", charge, "--reason", "charge failed upstream",
                          "--yes", "--json", *store, env=charging.env)
        assert done.returncode == 0, done.stderr
    assert "SIDE EFFECT(S) WILL BE DONE AGAIN" in done.stderr and "charge" in done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "completed" and result["retry_of"] == original.run_id
    assert result["replayed_steps"] == 3  # the model calls of steps 0 and 1, and the first lookup
    ((action, target, after, reason),) = _audit(charging.store)
    after = json.loads(after)
    assert (action, target, reason) == ("retry", f"run:{original.run_id}", "charge failed upstream")
    assert after["new_run_id"] == result["id"] and after["span"] == charge
    assert after["side_effects_again"] == ["charge"]
    # The charge ran again, under the new run's key.
    keys = [line["idempotency_key"] for line in charging.lines() if "amount" in line]
    assert keys[-1] == f"{result['id']}:clerk.1.0"
