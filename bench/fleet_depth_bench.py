"""What a queue's fleet-wide max_depth costs a submission (issue 16, engine/serve/fleet_depth.py): one real
`flightdeck serve` on Postgres, one queue (`concurrency: 1`, its runs wait on a gate that never opens, so all but
one stay ENQUEUED) with max_depth M. Submissions are sent one at a time over HTTP until the queue is full, then
REFUSED more; each one's round trip is timed and put in a phase by the depth it met:
- far: depth below M - headroom (the fast path: no query, a check per `headroom` admissions),
- near: the last `headroom` places (one `enqueued_at_least` query per admission, under the queue's lock),
- refused: the queue full (429; a query at most every FULL_FOR_S).
The same submissions to one engine on a store directory (SQLite: per-engine counts, no query) are the reference.

`python -m bench fleet-depth`, or `python -m bench.fleet_depth_bench [--max-depth M]`.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.fleet_bench import HELD, Engine
from bench.stats import percentile
from engine.serve.fleet_depth import HEADROOM_DIV, HEADROOM_MIN

REFUSED = 200


def measure(store: str, max_depth: int, workdir: Path) -> dict[str, list[float]]:
    (workdir / "held.yaml").write_text(HELD)
    (workdir / "fleet.yaml").write_text(f"hierarchies:\n  - file: held.yaml\n"
                                        f"    queue: {{concurrency: 1, max_depth: {max_depth}}}\n")
    headroom = min(max_depth, max(HEADROOM_MIN, max_depth // HEADROOM_DIV))
    pg = store.startswith("postgresql://")
    engine = Engine(store, workdir, "depth/1" if pg else None)
    phases: dict[str, list[float]] = {"far": [], "near": [], "refused": []}
    try:
        host, port = engine.url.removeprefix("http://").rstrip("/").split(":")
        # http.client sends a small body in the same segment as the headers (httpx sends two: with delayed ACKs
        # that adds ~40 ms to every request on Linux loopback, which would hide what is measured here)
        client = http.client.HTTPConnection(host, int(port), timeout=60)
        body = json.dumps({"hierarchy": "held", "input": {}}).encode()
        try:
            admitted = 0
            while len(phases["refused"]) < REFUSED:
                started = time.perf_counter()
                client.request("POST", "/runs", body=body, headers={"Content-Type": "application/json"})
                response = client.getresponse()
                text = response.read()
                took = (time.perf_counter() - started) * 1000
                if response.status == 201:
                    # one run is dequeued and held at the gate: it left the queue
                    phases["far" if admitted - 1 < max_depth - headroom else "near"].append(took)
                    admitted += 1
                elif response.status == 429:
                    phases["refused"].append(took)
                else:
                    raise RuntimeError(f"submission answered {response.status}: {text!r}")
                if admitted > max_depth + 10:
                    raise RuntimeError(f"{admitted} runs admitted, max_depth is {max_depth}")
            phases["admitted"] = [float(admitted)]
        finally:
            client.close()
    finally:
        engine.stop()
    return phases


def rows(results: dict[str, dict[str, list[float]]]) -> list[tuple[str, str, str]]:
    out = []
    for name, phases in results.items():
        for phase in ("far", "near", "refused"):
            took = phases[phase]
            if took:
                out.append((f"{name}: {phase} ({len(took)} submissions)",
                            f"p50 {statistics.median(took):6.2f} ms  p99 {percentile(took, 99):6.2f} ms", ""))
        out.append((f"{name}: admitted before the first 429", f"{phases['admitted'][0]:.0f}", ""))
    return out


def run(max_depth: int = 1000) -> list[tuple[str, str, str]]:
    from tests.pg_support import start_postgres

    results: dict[str, dict[str, list[float]]] = {}
    server = start_postgres(durable=True)
    try:
        with tempfile.TemporaryDirectory(prefix="fd_depth_bench_") as tmp:
            for name in ("postgres", "sqlite"):
                workdir = Path(tmp) / name
                workdir.mkdir()
                store = server.create_database() if name == "postgres" else str(workdir / "store")
                results[f"{name}, max_depth {max_depth}"] = measure(store, max_depth, workdir)
    finally:
        server.stop()
    return rows(results)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet_depth_bench", description=__doc__)
    parser.add_argument("--max-depth", type=int, default=1000)
    args = parser.parse_args(argv)
    from bench.__main__ import print_rows

    print_rows(f"submission round trip by queue depth (one serve engine, max_depth {args.max_depth})",
               run(args.max_depth))
    return 0


if __name__ == "__main__":
    sys.exit(main())
