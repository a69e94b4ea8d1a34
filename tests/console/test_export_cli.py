"""`flightdeck export otlp` and the export line of `flightdeck run`: real subprocesses, a real store and a real
OTLP/HTTP receiver on a loopback port."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from engine.export.mapping import span_id
from tests.engine_helpers import fixture, run_sync, spans
from tests.fakes.otlp_receiver import OtlpReceiver

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "hierarchies"


def flightdeck(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_") and k != "FLIGHTDECK_STORE"}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "console.cli", *args], capture_output=True, text=True, timeout=120,
                          cwd=ROOT, env=full_env)


def test_replay_sends_every_span_of_the_run(tmp_path: Path) -> None:
    store = tmp_path / "store"
    [first, second] = run_sync(store, fixture("orchestrator"), {"sku": "pear"}, {"sku": "plum"})
    with OtlpReceiver() as collector:
        done = flightdeck("export", "otlp", "--run", first.run_id[:8], "--store", str(store), "--json",
                          env={"OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint})
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        stored = spans(store, first.run_id)
        assert (report["runs"], report["spans"], report["failed_spans"]) == (1, len(stored), 0)
        assert sorted(s.span.span_id for s in collector.spans()) == sorted(span_id(s.id) for s in stored)

        done = flightdeck("export", "otlp", "--since", "1h", "--store", str(store), "--endpoint",
                          collector.endpoint, "--protocol", "http/json")
        assert done.returncode == 0, done.stderr
        assert "exported 2 run(s)" in done.stdout
        assert collector.requests[-1].headers["content-type"] == "application/json"
        roots = [s for s in collector.spans() if s.name == "run fixture-orchestrator"]
        assert len(roots) == 3  # one from the first export, two from the second (same ids: backends dedupe)
    del second


def test_replay_errors_are_one_line_and_exit_codes(tmp_path: Path) -> None:
    store = tmp_path / "store"
    run_sync(store, fixture("worker"), {"a": 1, "b": 2, "text": "x"})
    done = flightdeck("export", "otlp", "--since", "1h", "--store", str(store))
    assert done.returncode == 2 and "no OTLP endpoint" in done.stderr and "Traceback" not in done.stderr
    done = flightdeck("export", "otlp", "--run", "nope", "--store", str(store), "--endpoint", "http://127.0.0.1:9")
    assert done.returncode == 2 and "no run 'nope'" in done.stderr
    done = flightdeck("export", "otlp", "--since", "soon", "--store", str(store), "--endpoint", "http://127.0.0.1:9")
    assert done.returncode == 2 and "--since" in done.stderr
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    done = flightdeck("export", "otlp", "--since", "1h", "--store", str(store), "--endpoint",
                      f"http://127.0.0.1:{port}")
    assert done.returncode == 1 and "not delivered" in done.stderr and "Traceback" not in done.stderr


def test_run_reports_the_export_and_its_drops_on_stderr(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    done = flightdeck("run", str(FIXTURES / "worker.yaml"), "--input", '{"a": 1, "b": 2, "text": "x"}', "--store",
                      str(tmp_path / "store"), env={"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}"})
    assert done.returncode == 0, done.stderr
    line = next(line for line in done.stderr.splitlines() if "otel export" in line)
    assert f"http://127.0.0.1:{port}/v1/traces" in line and "0 span(s) sent" in line and "dropped" in line
    assert " 0 dropped" not in line


def test_run_refuses_bad_export_variables_before_starting(tmp_path: Path) -> None:
    done = flightdeck("run", str(FIXTURES / "worker.yaml"), "--input", '{"a": 1, "b": 2, "text": "x"}', "--store",
                      str(tmp_path / "store"), env={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",
                                                    "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})
    assert done.returncode == 2, done.stderr
    assert "OTEL_EXPORTER_OTLP_PROTOCOL" in done.stderr and "Traceback" not in done.stderr


def test_replay_redacts_with_the_current_rules_even_what_was_stored_before_them(tmp_path: Path) -> None:
    store = tmp_path / "store"
    [result] = run_sync(store, fixture("worker"), {"a": 1, "b": 2, "text": "customer cust-123456 asked"})
    assert "cust-123456" in json.dumps([s.as_dict() for s in spans(store, result.run_id)])  # stored before the rule existed
    (store / "config.toml").write_text('[redaction]\npatterns = ["cust-[0-9]{6}"]\n')
    with OtlpReceiver() as collector:
        done = flightdeck("export", "otlp", "--run", result.run_id, "--store", str(store), "--content",
                          "--endpoint", collector.endpoint)
        assert done.returncode == 0, done.stderr
        bodies = b"".join(r.body for r in collector.requests)
    assert b"cust-123456" not in bodies
    assert b"[REDACTED]" in bodies and b"gen_ai.tool.call.arguments" in bodies


def test_engines_shows_a_live_engine_whose_exporter_drops_spans(tmp_path: Path) -> None:
    """The engine never waits for its exporter, so a dead collector must show where an operator looks: `flightdeck
    engines` (the lock file's `export` field), while the engine still runs."""
    import anyio

    from engine.controls.terminate import read_lock_holder
    from engine.runtime.engine import Engine, RunRequest
    from engine.store import open_engine_store

    with socket.socket() as probe:  # a port nobody listens on: the collector is down
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]
    store = tmp_path / "store"
    store.mkdir(mode=0o700)
    (store / "config.toml").write_text(f'[otel]\nendpoint = "http://127.0.0.1:{dead}"\ntimeout = "1s"\n')

    def dropped() -> int:
        export = (read_lock_holder(store) or {}).get("export") or {}
        return int(export.get("dropped_spans") or 0)

    async def go() -> tuple[subprocess.CompletedProcess[str], subprocess.CompletedProcess[str]]:
        with open_engine_store(store) as opened:
            async with Engine(opened, runbooks=False) as engine:
                await engine.run_many(fixture("orchestrator"), [RunRequest(input={"sku": "pear"}, seed=1)],
                                      concurrency=1)
                with anyio.fail_after(60):
                    while dropped() == 0:  # the exporter gives up on its first batch after its retries
                        await anyio.sleep(0.05)
                listed = await anyio.to_thread.run_sync(lambda: flightdeck("engines", "--json", "--store", str(store)))
                shown = await anyio.to_thread.run_sync(lambda: flightdeck("engines", "--store", str(store)))
        return listed, shown

    listed, shown = anyio.run(go)
    assert listed.returncode == 0, listed.stderr
    (engine,) = json.loads(listed.stdout)
    assert engine["holds_lock"] and engine["export"]["dropped_spans"] > 0
    assert engine["export"]["endpoint"] == f"http://127.0.0.1:{dead}/v1/traces" and engine["export"]["error"]
    assert shown.returncode == 0 and "export DROPPING" in shown.stdout, shown.stdout
    assert f"OpenTelemetry export to http://127.0.0.1:{dead}/v1/traces" in shown.stdout
    assert "flightdeck export otlp --since" in shown.stdout
    # Once the engine has stopped, the lock is free and nothing claims a live exporter.
    after = flightdeck("engines", "--json", "--store", str(store))
    assert json.loads(after.stdout)[0]["export"] is None
