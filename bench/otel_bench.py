"""OpenTelemetry export's cost to the engine: the peer workload (14 model calls, 12 tool calls per run, zero-latency
scripted model, every span stored) with export off and on, in alternating processes, best of each.

"On" exports every span live over OTLP/HTTP protobuf to a sink in ANOTHER process on 127.0.0.1 (it decodes each
request with opentelemetry-proto and counts spans), so what is measured is what the engine process pays: the writer's
commit callback, the exporter thread's reads, mapping, encoding and HTTP, all competing for the engine's GIL.

    python -m bench otel            (part of `make bench`)
    python -m bench.otel_bench --probe on|off --runs 200   (one process, prints RESULT {...})
    python -m bench.otel_bench --sink                      (the receiver; prints its port, then serves)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def probe(mode: str, runs: int, endpoint: str | None) -> dict:
    import anyio

    from bench.peer_workload import HIERARCHY
    from engine.hierarchy.loader import load_hierarchy
    from engine.runtime.engine import Engine, RunRequest
    from engine.store import open_engine_store

    workdir = Path(tempfile.mkdtemp(prefix="fd_otel_bench_"))
    (workdir / "bench.yaml").write_text(HIERARCHY)
    store_dir = workdir / "store"
    store_dir.mkdir()
    if mode == "on":
        (store_dir / "config.toml").write_text(f'[otel]\nendpoint = "{endpoint}"\n')
    hierarchy = load_hierarchy(workdir / "bench.yaml")

    async def go() -> dict:
        cpu_before = exporter_cpu = 0.0
        with open_engine_store(store_dir) as store:
            async with Engine(store, latency_scale=0.0, runbooks=False) as engine:
                for _ in range(10):
                    await engine.run(hierarchy, RunRequest(input="warm up"))
                if engine.otel is not None:  # its start (a Python process importing protobuf) is not per call
                    engine.otel.wait_ready()
                    cpu_before = engine.otel.stats().cpu_s
                calls = 0
                t0 = time.perf_counter()
                for _ in range(runs):
                    result = await engine.run(hierarchy, RunRequest(input="do the thing"))
                    calls += result.model_calls
                elapsed = time.perf_counter() - t0
                exporter = engine.otel
                if exporter is not None:
                    exporter.stop(committed_seq=store.writer.flush() or store.writer.last_committed_seq)
                    exporter_cpu = exporter.stats().cpu_s - cpu_before
        stats = exporter.stats() if exporter is not None else None
        import sqlite3

        conn = sqlite3.connect(store_dir / "traces.db")
        spans = conn.execute("SELECT count(*) FROM spans").fetchone()[0]
        conn.close()
        return {"mode": mode, "us_per_model_call": 1e6 * elapsed / calls, "model_calls": calls, "spans": spans,
                "sent": stats.sent_spans if stats else 0, "exporter_cpu_s": exporter_cpu,
                "dropped": stats.dropped_spans if stats else 0, "pending": stats.pending_spans if stats else 0}

    return anyio.run(go)


def sink() -> None:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))  # a collector is usually elsewhere
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


def _probe_process(mode: str, runs: int, endpoint: str) -> dict:
    proc = subprocess.run([sys.executable, "-m", "bench.otel_bench", "--probe", mode, "--runs", str(runs),
                           "--endpoint", endpoint], capture_output=True, text=True, timeout=900, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    return {"error": (proc.stderr.strip().splitlines() or ["?"])[-1][:160]}


def measure(runs: int = 500, rounds: int = 3) -> dict:
    receiver = subprocess.Popen([sys.executable, "-m", "bench.otel_bench", "--sink"], stdout=subprocess.PIPE,
                                text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert receiver.stdout is not None
        endpoint = f"http://127.0.0.1:{receiver.stdout.readline().strip()}"
        best: dict[str, dict] = {}
        for _ in range(rounds):
            for mode in ("off", "on"):
                result = _probe_process(mode, runs, endpoint)
                if "error" in result:
                    return result
                if mode not in best or result["us_per_model_call"] < best[mode]["us_per_model_call"]:
                    best[mode] = result
        return {"off": best["off"], "on": best["on"], "rounds": rounds, "runs": runs}
    finally:
        receiver.terminate()
        receiver.wait(10)


def main_table(runs: int = 500, rounds: int = 3) -> None:
    from bench.__main__ import print_rows

    result = measure(runs, rounds)
    if "error" in result:
        print_rows("otel export", [("engine per model call, export on vs off", "failed", result["error"])])
        return
    off, on = result["off"], result["on"]
    overhead = 100 * (on["us_per_model_call"] - off["us_per_model_call"]) / off["us_per_model_call"]
    print_rows(f"otel export (peer workload, {runs} sequential runs, best of {rounds} alternating rounds)", [
        ("engine per model call, export off", f"{off['us_per_model_call']:.1f} us", ""),
        ("engine per model call, export on (OTLP/HTTP protobuf)", f"{on['us_per_model_call']:.1f} us", ""),
        ("overhead", f"{overhead:.1f} %", "target <= 10 %"),
        ("  spans stored / sent (with engine events) / dropped", f"{on['spans']} / {on['sent']} / {on['dropped']}",
         "every stored span sent, none dropped"),
        ("  exporter process CPU per model call (niced, beside the engine)",
         f"{1e6 * on['exporter_cpu_s'] / on['model_calls']:.1f} us", "not on the engine's thread"),
    ])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.otel_bench")
    parser.add_argument("--probe", choices=("on", "off"))
    parser.add_argument("--sink", action="store_true")
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--endpoint")
    args = parser.parse_args()
    if args.sink:
        sink()
    elif args.probe:
        print("RESULT " + json.dumps(probe(args.probe, args.runs, args.endpoint)))
    else:
        main_table(args.runs, args.rounds)
