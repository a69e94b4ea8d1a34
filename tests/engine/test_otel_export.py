"""OpenTelemetry export, live from the engine: what a real OTLP/HTTP receiver on a loopback port got, decoded with
opentelemetry-proto (tests/fakes/otlp_receiver.py)."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import anyio
import pytest

from engine.export.mapping import span_id, trace_id
from engine.runtime.engine import Engine, RunRequest
from engine.store import open_engine_store
from tests.engine_helpers import events, fixture, run_sync, spans, write_hierarchy
from tests.fakes.otlp_receiver import OtlpReceiver, ReceivedSpan, reply

SECRET = "hunter2-very-secret-value"
OPENAI_STYLE = "sk-abcdefghijklmnopqrstuvwx"


def configure(store: Path, text: str) -> None:
    store.mkdir(parents=True, exist_ok=True)
    (store / "config.toml").write_text(text)


def has_root(received: list[ReceivedSpan], count: int = 1) -> bool:
    return sum(1 for s in received if s.name.startswith("run ") and not s.attrs.get("flightdeck.pending")) >= count


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def collector():
    with OtlpReceiver() as receiver:
        yield receiver


def test_the_run_tree_arrives_as_genai_spans(tmp_path: Path, collector: OtlpReceiver) -> None:
    store = tmp_path / "store"
    configure(store, f'[otel]\nendpoint = "{collector.endpoint}"\nservice_name = "deal-desk-prod"\n'
                     f'resource_attributes = {{ "deployment.environment" = "test" }}\n')
    [result] = run_sync(store, fixture("orchestrator"), {"sku": "pear"})
    assert result.status == "completed"
    received = collector.wait_for_spans(has_root)
    stored = spans(store, result.run_id)
    finished = [s for s in received if not s.attrs.get("flightdeck.pending")]
    # Every stored span exactly once, in one trace, with the stored tree.
    assert sorted(s.span.span_id for s in finished) == sorted(span_id(s.id) for s in stored)
    assert {s.span.trace_id for s in finished} == {trace_id(result.run_id)}
    by_id = {s.id: s for s in stored}
    for s in finished:
        row = by_id[s.attrs["flightdeck.span.id"]]
        expected_parent = span_id(row.parent_id) if row.parent_id else b""
        assert s.span.parent_span_id == expected_parent
    assert collector.requests[0].headers["content-type"] == "application/x-protobuf"
    assert finished[0].resource["service.name"] == "deal-desk-prod"
    assert finished[0].resource["deployment.environment"] == "test"

    root = next(s for s in finished if s.name == "run fixture-orchestrator")
    assert root.span.parent_span_id == b""
    assert root.attrs["flightdeck.run.status"] == "completed"
    assert root.attrs["flightdeck.model_calls"] == 6

    lead = next(s for s in finished if s.name == "invoke_agent lead")
    assert lead.attrs["gen_ai.operation.name"] == "invoke_agent"
    assert lead.attrs["gen_ai.agent.name"] == "lead"
    assert lead.span.parent_span_id == root.span.span_id

    chats = [s for s in finished if s.attrs.get("gen_ai.operation.name") == "chat"]
    assert len(chats) == 6
    stored_llm = {s.id: s for s in stored if s.kind == "llm"}
    for chat in chats:
        row = stored_llm[chat.attrs["flightdeck.span.id"]]
        assert chat.name == f"chat {row.model}"
        assert chat.attrs["gen_ai.request.model"] == row.model
        assert chat.attrs["gen_ai.provider.name"] == "flightdeck.scripted"
        assert chat.attrs["gen_ai.usage.input_tokens"] == row.tokens_in > 0
        assert chat.attrs["gen_ai.usage.output_tokens"] == row.tokens_out > 0
        assert chat.attrs["gen_ai.response.finish_reasons"] in (["stop"], ["tool_calls"])
        assert chat.attrs["flightdeck.cost_usd"] == pytest.approx(row.cost_usd)
        assert chat.span.kind == chat.span.SpanKind.SPAN_KIND_CLIENT

    lookup = next(s for s in finished if s.name == "execute_tool lookup")
    assert lookup.attrs["gen_ai.tool.name"] == "lookup"
    assert lookup.attrs["gen_ai.tool.call.id"] == "call_0_0"
    assert lookup.attrs["flightdeck.tool.risk"] == "low"
    handoff = next(s for s in finished if s.attrs.get("flightdeck.delegation.to") == "stock_worker")
    assert handoff.name == "execute_tool ask_stock_worker"
    assert handoff.attrs["gen_ai.tool.call.id"] == "call_0_d0"
    worker = next(s for s in finished if s.name == "invoke_agent stock_worker")
    assert worker.span.parent_span_id == handoff.span.span_id
    # Content is off by default: no inputs, outputs, arguments or results leave.
    for s in finished:
        assert not {"gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.tool.call.arguments",
                    "gen_ai.tool.call.result"} & set(s.attrs)
    assert b"pear" not in b"".join(r.body for r in collector.requests)


def test_content_is_exported_only_when_opted_in_and_always_redacted(tmp_path: Path, collector: OtlpReceiver,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FD_OTEL_TEST_SECRET", SECRET)
    monkeypatch.setenv("FD_OTEL_AUTH", "Basic c2VjcmV0LWhlYWRlcg==")
    store = tmp_path / "store"
    configure(store, f'[secrets]\nenv = ["FD_OTEL_TEST_SECRET"]\n'
                     f'[otel]\nendpoint = "{collector.endpoint}"\ncontent = true\nprotocol = "http/json"\n'
                     f'headers_env = {{ Authorization = "FD_OTEL_AUTH" }}\n')
    text = f"token {SECRET} and {OPENAI_STYLE}"
    [result] = run_sync(store, fixture("worker"), {"a": 2, "b": 3, "text": text})
    assert result.status == "completed"
    received = collector.wait_for_spans(has_root)
    assert collector.requests[0].headers["content-type"] == "application/json"
    assert collector.requests[0].headers["authorization"] == "Basic c2VjcmV0LWhlYWRlcg=="
    bodies = b"".join(r.body for r in collector.requests)
    assert SECRET.encode() not in bodies
    assert OPENAI_STYLE.encode() not in bodies
    assert b"c2VjcmV0LWhlYWRlcg" not in bodies  # the exporter's credentials never become span data
    echo = next(s for s in received if s.name == "execute_tool echo" and not s.attrs.get("flightdeck.pending"))
    assert "[REDACTED]" in echo.attrs["gen_ai.tool.call.arguments"]
    assert "[REDACTED]" in echo.attrs["gen_ai.tool.call.result"]
    assert '"times": 2' in echo.attrs["gen_ai.tool.call.arguments"]
    add = next(s for s in received if s.name == "execute_tool add")
    assert add.attrs["gen_ai.tool.call.result"] == "5"
    agent = next(s for s in received if s.name == "invoke_agent worker")
    assert "[REDACTED]" in agent.attrs["gen_ai.input.messages"]
    assert "gen_ai.output.messages" in agent.attrs


SLOW = """
name: slow
entry: thinker
models:
  slow:
    model: slow-model
    tier: standard
    price_in: 1
    price_out: 1
    latency: 1.0
    latency_per_token: 0
agents:
  thinker:
    contract: Thinks for a while, then answers.
    model: slow
scripts:
  thinker:
    - final: "done"
"""


def test_long_spans_are_visible_before_they_end(tmp_path: Path, collector: OtlpReceiver) -> None:
    store = tmp_path / "store"
    configure(store, f'[otel]\nendpoint = "{collector.endpoint}"\npending_after = "0.05s"\n')
    hierarchy = write_hierarchy(tmp_path, SLOW)

    async def go():
        with open_engine_store(store) as opened:
            async with Engine(opened, latency_scale=1.0, runbooks=False) as engine:
                assert engine.otel.wait_ready()  # a loaded machine may take a while to start the process
                return await engine.run(hierarchy, RunRequest(input="go"))

    result = anyio.run(go)
    assert result.status == "completed"
    received = collector.wait_for_spans(has_root)
    pending = [s for s in received if s.attrs.get("flightdeck.pending")]
    names = {s.name for s in pending}
    assert {"run slow (running)", "invoke_agent thinker (running)", "chat slow-model (running)"} <= names
    final_root = next(s for s in received if s.name == "run slow")
    pending_root = next(s for s in pending if s.name == "run slow (running)")
    # Announced before the run ended, under its own id, pointing at the real span.
    assert pending_root.span.end_time_unix_nano < final_root.span.end_time_unix_nano
    assert pending_root.span.span_id != final_root.span.span_id
    assert pending_root.attrs["flightdeck.pending_for"] == final_root.span.span_id.hex()
    first_pending = min(i for i, r in enumerate(collector.requests) if b"(running)" in r.body)
    first_root = min(i for i, r in enumerate(collector.requests) if b"run slow" in r.body and b"(running)" not in
                     r.body)
    assert first_pending < first_root


def test_retries_429_and_5xx_then_delivers(tmp_path: Path, collector: OtlpReceiver) -> None:
    store = tmp_path / "store"
    configure(store, f'[otel]\nendpoint = "{collector.endpoint}"\n')
    collector.enqueue(reply(429, b"slow down", retry_after="0.05"), reply(503, b"busy"))
    [result] = run_sync(store, fixture("worker"), {"a": 2, "b": 3, "text": "hi"})
    received = collector.wait_for_spans(has_root)
    assert len(collector.requests) >= 3  # the 429 and the 503 were retried
    assert len({s.span.span_id for s in received}) == len(spans(store, result.run_id))
    assert not events(store, kinds=["otel.dropped"])


def run_with_engine(store: Path, hierarchy, inputs):
    async def go():
        with open_engine_store(store) as opened:
            async with Engine(opened, runbooks=False) as engine:
                results = await engine.run_many(hierarchy, [RunRequest(input=i, seed=n) for n, i in
                                                            enumerate(inputs)], concurrency=2)
                exporter = engine.otel
            return results, exporter

    return anyio.run(go)


def test_a_dead_collector_costs_the_engine_nothing_and_drops_are_counted(tmp_path: Path) -> None:
    inputs = [{"sku": sku} for sku in ("apple", "pear", "plum", "apple")]
    plain, none = run_with_engine(tmp_path / "plain", fixture("orchestrator"), inputs)
    assert none is None  # no [otel], no OTEL_* variables: no exporter at all
    exported_store = tmp_path / "exported"
    configure(exported_store, f'[otel]\nendpoint = "http://127.0.0.1:{free_port()}"\ntimeout = "1s"\n')
    results, exporter = run_with_engine(exported_store, fixture("orchestrator"), inputs)
    def outcomes(rs):  # run_many reports in completion order
        return sorted((r.status, str(r.output), r.model_calls, r.tool_calls) for r in rs)

    assert outcomes(results) == outcomes(plain)
    stats = exporter.stats()
    assert stats.sent_spans == 0
    assert stats.dropped_spans == sum(len(spans(exported_store, r.run_id)) for r in results)
    assert "ConnectError" in (stats.last_error or "") or "breaker" in (stats.last_error or "")
    assert "dropped" in exporter.summary() and str(stats.dropped_spans) in exporter.summary()
    reported = events(exported_store, kinds=["otel.dropped"])
    assert reported and reported[-1].data["dropped_spans"] == stats.dropped_spans


def test_an_exporter_far_behind_the_store_skips_ahead_and_counts_what_it_skipped(tmp_path: Path) -> None:
    from engine.export.worker import skip_backlog
    from engine.store.files import TRACES_DB, connect

    store = tmp_path / "store"
    results = run_sync(store, fixture("worker"), *[{"a": n, "b": 1, "text": "x"} for n in range(5)])
    conn = connect(store / TRACES_DB, read_only=True)
    try:
        target = conn.execute("SELECT max(seq) FROM events").fetchone()[0]
        assert skip_backlog(conn, 0, target, target) == (0, 0)  # within the bound: nothing skipped
        last, skipped = skip_backlog(conn, 0, target, 10)
        expected = conn.execute("SELECT count(*) FROM events WHERE seq <= ? AND kind = 'span.ended'",
                                (target - 10,)).fetchone()[0]
    finally:
        conn.close()
    assert last == target - 10
    assert skipped == expected > 0
    assert len(results) == 5


RATE_LIMITED = """
name: rate-limited
entry: worker
models:
  small:
    model: fixture-small
    tier: economy
    price_in: 0.15
    price_out: 0.6
    latency: 0
    latency_per_token: 0
agents:
  worker:
    contract: Meets a provider that keeps rate-limiting it.
    model: small
scripts:
  worker:
    - fault: rate_limit
"""


def test_failures_are_error_spans_and_flightdeck_facts_are_span_events(tmp_path: Path,
                                                                       collector: OtlpReceiver) -> None:
    store = tmp_path / "store"
    configure(store, f'[otel]\nendpoint = "{collector.endpoint}"\n')
    [result] = run_sync(store, write_hierarchy(tmp_path, RATE_LIMITED), "go")
    assert result.status == "failed"
    received = collector.wait_for_spans(has_root)
    root = next(s for s in received if s.name == "run rate-limited")
    assert root.span.status.code == root.span.status.STATUS_CODE_ERROR
    assert root.attrs["flightdeck.run.status"] == "failed"
    chats = [s for s in received if s.name == "chat fixture-small"]
    stored = [e for e in events(store, result.run_id) if e.kind == "model.retry"]
    assert len(stored) >= 1 and len(chats) == len(stored) + 1  # the first attempt and each retry
    for chat in chats:
        assert chat.span.status.code == chat.span.status.STATUS_CODE_ERROR
        assert chat.attrs["error.type"] and chat.attrs["flightdeck.status"] != "ok"
    by_span = {s.attrs["flightdeck.span.id"]: s for s in received}
    for owner in {e.span_id for e in stored}:
        exported = [attrs for name, attrs in by_span[owner].events if name == "model.retry"]
        assert len(exported) == sum(1 for e in stored if e.span_id == owner)
        assert all(attrs and all(key.startswith("flightdeck.") for key in attrs) for attrs in exported)


def test_the_engine_outlives_its_exporter_process(tmp_path: Path, collector: OtlpReceiver) -> None:
    import os
    import signal

    store = tmp_path / "store"
    configure(store, f'[otel]\nendpoint = "{collector.endpoint}"\n')

    async def go():
        with open_engine_store(store) as opened:
            async with Engine(opened, runbooks=False) as engine:
                assert engine.otel.wait_ready()
                os.kill(engine.otel.pid, signal.SIGKILL)
                results = await engine.run_many(fixture("worker"), [RunRequest(input={"a": 1, "b": 2, "text": "x"},
                                                                               seed=n) for n in range(3)],
                                                concurrency=2)
                exporter = engine.otel
            return results, exporter

    results, exporter = anyio.run(go)
    assert [r.status for r in results] == ["completed"] * 3
    assert "ended unexpectedly" in (exporter.stats().last_error or "")
    assert "ended unexpectedly" in exporter.summary()


def test_the_writer_reports_each_commit_by_sequence_number_only(tmp_path: Path) -> None:
    seen: list[int] = []
    changed = threading.Condition()

    def on_seq(seq: int) -> None:
        with changed:
            seen.append(seq)
            changed.notify_all()

    def failing(seq: int) -> None:
        raise RuntimeError("a broken consumer must not stop the others")

    with open_engine_store(tmp_path / "store") as store:
        store.writer.on_commit_seq(failing)
        store.writer.on_commit_seq(on_seq)
        store.writer.event("r1", None, "note.one", None, None, {"n": 1}, 1.0)
        store.writer.event("r1", None, "note.two", None, None, {"n": 2}, 2.0)
        store.writer.flush()
        import sqlite3

        reader = sqlite3.connect(tmp_path / "store" / "traces.db")
        committed = reader.execute("SELECT max(seq) FROM events").fetchone()[0]
        reader.close()
        with changed:  # the callback may run just after flush() returns, on the acknowledgement thread
            assert changed.wait_for(lambda: bool(seen) and seen[-1] >= committed, timeout=5)
    assert seen == sorted(seen) and seen[-1] == committed


def test_run_level_events_ride_on_the_root_span(tmp_path: Path, collector: OtlpReceiver) -> None:
    from engine.export.pipeline import ExportPipeline
    from engine.export.records import EventRecord
    from engine.export.sender import Sender
    from engine.export.settings import ExportSettings
    from engine.export.worker import read_events
    from engine.store.files import TRACES_DB, connect
    from engine.store.redact import Redactor

    store = tmp_path / "store"
    [result] = run_sync(store, fixture("worker"), {"a": 1, "b": 2, "text": "x"})
    settings = ExportSettings(url=collector.url("/v1/traces"))
    sender = Sender(settings, wait=threading.Event().wait)
    pipeline = ExportPipeline(settings, Redactor(), sender)
    conn = connect(store / TRACES_DB, read_only=True)
    try:
        rows = read_events(conn, 0, 10**9)
        run_ended = next(i for i, row in enumerate(rows) if row.kind == "run.ended")
        breach = EventRecord(seq=10**6, ts=rows[run_ended].ts, run_id=result.run_id, span_id=None,
                             kind="budget.exceeded", agent=None, name="run", data='{"limit": "cost_usd", "used": 2}')
        pipeline.feed([*rows[:run_ended], breach, *rows[run_ended:]])
        pipeline.export_due(conn)
    finally:
        conn.close()
        sender.close()
    assert pipeline.stats().sent_spans == len(spans(store, result.run_id))
    root = next(s for s in collector.spans() if s.name == "run fixture-worker")
    assert root.events == [("budget.exceeded", {"flightdeck.name": "run", "flightdeck.limit": "cost_usd",
                                                "flightdeck.used": 2})]


def test_events_of_no_run_are_spans_of_their_own(tmp_path: Path, collector: OtlpReceiver) -> None:
    from engine.export.pipeline import ExportPipeline
    from engine.export.records import EventRecord
    from engine.export.sender import Sender
    from engine.export.settings import ExportSettings
    from engine.store.files import TRACES_DB, connect
    from engine.store.redact import Redactor

    store = tmp_path / "store"
    run_sync(store, fixture("worker"), {"a": 1, "b": 2, "text": "x"})
    settings = ExportSettings(url=collector.url("/v1/traces"))
    sender = Sender(settings, wait=threading.Event().wait)
    pipeline = ExportPipeline(settings, Redactor(), sender, engine_id="e1")
    transition = EventRecord(seq=7, ts=1_800_000_000.0, run_id=None, span_id=None, kind="breaker.transition",
                             agent=None, name="tool:lookup", data='{"from": "closed", "to": "open"}')
    anchor = EventRecord(seq=8, ts=1_800_000_000.0, run_id=None, span_id=None, kind="audit.head", agent=None,
                         name=None, data='{"seq": 1, "hash": "ab"}')
    pipeline.feed([transition, anchor])
    conn = connect(store / TRACES_DB, read_only=True)
    try:
        pipeline.export_due(conn)
    finally:
        conn.close()
        sender.close()
    [span] = collector.spans()
    assert span.name == "breaker.transition tool:lookup"
    assert span.span.parent_span_id == b"" and span.span.start_time_unix_nano == 1_800_000_000 * 10**9
    assert span.attrs == {"flightdeck.event": "breaker.transition", "flightdeck.engine.id": "e1",
                          "flightdeck.name": "tool:lookup", "flightdeck.from": "closed", "flightdeck.to": "open"}


def test_an_exporter_that_cannot_start_says_why_on_its_stats_pipe(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys
    from dataclasses import asdict

    from engine.export.settings import ExportSettings

    # The first stdin line, as LiveExporter.start writes it; the store is missing, so the process cannot start.
    settings = asdict(ExportSettings(url="http://127.0.0.1:9"))
    config = {"store_dir": str(tmp_path / "no-store-here"), "settings": settings, "secrets": [], "patterns": [],
              "max_field_bytes": 16384, "version": "", "engine_id": "e", "start_seq": 0}
    boot = "import sys; sys.path.insert(0, sys.argv[1]); from engine.export.worker import main; main()"
    done = subprocess.run([sys.executable, "-I", "-c", boot, str(Path(__file__).resolve().parents[2])],
                          input=json.dumps(config) + "\n", capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    last = json.loads(done.stdout.splitlines()[-1])
    assert last["final"] is True and "the exporter failed" in last["last_error"] and "no-store-here" in \
        last["last_error"]
