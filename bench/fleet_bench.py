"""A fleet of `flightdeck serve` engines (issue 16): events/s and kill-switch latency with one and three engines on
one Postgres, and one engine on a store directory (SQLite), in one run.

Per configuration: K real `flightdeck serve` processes (127.0.0.1, port 0, --speed 0) on the store, the Postgres
ones with FLIGHTDECK_ENGINE_ID fleet/1..K; this process is the client.
- Throughput: RUNS support-triage runs submitted over HTTP, round robin over the engines (whichever engine dequeues
  a run runs it: DBOS's queues are shared on Postgres), timed from the first submission to the last run recorded
  ended. events/s is the events those runs stored over that time; runs/s likewise.
- Kill latency: per round, HELD runs that wait on a gate file that never appears (tests/serve_tools.py wait_gate)
  spread over the engines; once all are in flight a global kill switch is set (ControlAPI, another connection) and
  the latency of each run is its recorded end (`killed`) minus the switch's creation: what "every engine stopped"
  means to an operator. p50/p99 over every run of every round; the switch is released before the next round.
Postgres is the embedded server the tests use (tests/pg_support.py), fsync on.

`python -m bench fleet` (part of `make bench`), or `python -m bench.fleet_bench [--runs N] [--rounds N]`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.stats import percentile, wait_until

ROOT = Path(__file__).resolve().parent.parent
HELD = """
name: held
entry: clerk
models:
  m: {model: m, tier: standard, price_in: 0.5, price_out: 1.5, latency: 0, latency_per_token: 0}
tools:
  wait_gate: {function: "tests.serve_tools:wait_gate"}
agents:
  clerk: {contract: Waits., model: m, tools: [wait_gate], max_steps: 5}
scripts:
  clerk:
    - tool: {name: wait_gate, args: {}}
    - final: done
"""
FLEET = """\
hierarchies:
  - file: support-triage
    name: work
    queue: {concurrency: 20, max_depth: 100000}
  - file: held.yaml
    queue: {concurrency: 10, max_depth: 1000}
"""
INPUT = {"ticket_id": "T-1", "customer_id": "CUS-001", "channel": "email", "subject": "bench",
         "body": "The desktop app crashes on start."}
HELD_PER_ENGINE = 4


class Store:
    """The store's tables, read directly (Postgres or traces.db), the way a console would from outside."""

    def __init__(self, store: str) -> None:
        self.store = store
        self.pg = store.startswith("postgresql://")

    def rows(self, sql: str, ids: list[str]) -> list[tuple[Any, ...]]:
        if self.pg:
            import psycopg

            with psycopg.connect(self.store, autocommit=True) as conn:
                return list(conn.execute(sql.replace("IN_IDS", "= ANY(%s)"), (ids,)).fetchall())
        conn = sqlite3.connect(f"file:{Path(self.store) / 'traces.db'}?mode=ro", uri=True, timeout=10)
        try:
            marks = ",".join("?" * len(ids))
            return list(conn.execute(sql.replace("IN_IDS", f"IN ({marks})"), ids).fetchall())
        finally:
            conn.close()

    def ended(self, ids: list[str]) -> dict[str, tuple[str, float]]:
        return {run: (status, ended) for run, status, ended in
                self.rows("SELECT id, status, ended FROM runs WHERE id IN_IDS AND status != 'running'", ids)}

    def running(self, ids: list[str]) -> int:
        return len(self.rows("SELECT DISTINCT run_id FROM spans WHERE run_id IN_IDS AND kind = 'tool' "
                             "AND status = 'running'", ids))


class Engine:
    def __init__(self, store: str, workdir: Path, engine_id: str | None) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT),
               "FLIGHTDECK_TEST_GATE": str(workdir / "never-opens")}
        env.pop("FLIGHTDECK_API_TOKEN", None)
        if engine_id is not None:
            env["FLIGHTDECK_ENGINE_ID"] = engine_id
        self.log = open(workdir / f"serve-{engine_id or 'sqlite'}.log".replace("/", "-"), "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "console.cli", "serve", "--store", store, "--fleet", str(workdir / "fleet.yaml"),
             "--listen", "127.0.0.1:0", "--grace", "5s", "--speed", "0"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=self.log, text=True, env=env)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("serving on "):
            self.proc.kill()
            raise RuntimeError(f"flightdeck serve did not start: {line!r}; see {self.log.name}")
        self.url = line.split()[-1]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


async def _submit(urls: list[str], hierarchy: str, count: int, body: Any) -> list[str]:
    clients = [httpx.AsyncClient(base_url=url, timeout=60) for url in urls]
    try:
        async def one(i: int) -> str:
            deadline = time.monotonic() + 30
            while True:
                response = await clients[i % len(clients)].post("/runs", json={"hierarchy": hierarchy,
                                                                                "input": body})
                # 503 just after the last round's release: the engine applies it a moment after it commits.
                if response.status_code == 503 and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                    continue
                if response.status_code != 201:
                    raise RuntimeError(f"submission refused: {response.status_code} {response.text}")
                return str(response.json()["run_id"])

        ids: list[str] = []
        for start in range(0, count, 50):  # 50 requests in flight at a time
            ids += await asyncio.gather(*(one(i) for i in range(start, min(count, start + 50))))
        return ids
    finally:
        for client in clients:
            await client.aclose()


def _wait(condition: Any, timeout: float = 120.0) -> Any:
    return wait_until(condition, timeout=timeout, what="the fleet")


def measure(store: str, engines: int, runs: int, rounds: int, workdir: Path) -> dict[str, Any]:
    from engine.controls.api import ControlAPI

    (workdir / "fleet.yaml").write_text(FLEET)
    (workdir / "held.yaml").write_text(HELD)
    pg = store.startswith("postgresql://")
    fleet = [Engine(store, workdir, f"fleet/{i + 1}" if pg else None) for i in range(engines)]
    reads = Store(store)
    try:
        urls = [engine.url for engine in fleet]
        started = time.time()
        ids = asyncio.run(_submit(urls, "work", runs, INPUT))
        _wait(lambda: len(reads.ended(ids)) == len(ids), timeout=600)
        last_end = max(ended for _status, ended in reads.ended(ids).values())
        elapsed = last_end - started
        (events,) = reads.rows("SELECT count(*) FROM events WHERE run_id IN_IDS", ids)[0]
        latencies: list[float] = []
        refused = 0
        with ControlAPI(store, "bench") as api:
            for _ in range(rounds):
                held = asyncio.run(_submit(urls, "held", HELD_PER_ENGINE * engines, {}))
                # A run dequeued by an engine that has not yet applied the last round's release is refused (it
                # obeys the switches it knows): counted, and left out of this round.
                _wait(lambda: reads.running(held) + len(refused_of(reads, held)) == len(held))  # noqa: B023
                gone = refused_of(reads, held)
                refused += len(gone)
                held = [run for run in held if run not in gone]
                switch = api.set_kill("global", None, "kill", "bench")
                ended = _wait(lambda: (lambda e: e if len(e) == len(held) else None)(reads.ended(held)))  # noqa: B023
                if {status for status, _ in ended.values()} != {"killed"}:
                    raise RuntimeError(f"held runs ended {sorted({s for s, _ in ended.values()})}, not killed")
                latencies += [(end - switch.created) * 1000 for _status, end in ended.values()]
                api.release(switch.id, reason="bench round over")
    finally:
        for engine in fleet:
            engine.stop()
    return {"events_s": events / elapsed, "runs_s": runs / elapsed, "kill": latencies, "refused": refused}


def refused_of(reads: Store, ids: list[str]) -> set[str]:
    return {run for run, (status, _) in reads.ended(ids).items() if status == "refused"}


def rows(results: dict[str, dict[str, Any]]) -> list[tuple[str, str, str]]:
    out = []
    for name, result in results.items():
        kill = result["kill"]
        assert isinstance(kill, list)
        out.append((f"{name}: throughput", f"{result['events_s']:8,.0f} events/s  {result['runs_s']:6.1f} runs/s",
                    ""))
        refused = f"  ({result['refused']} held run(s) refused)" if result["refused"] else ""
        out.append((f"{name}: global kill -> every run ended killed",
                    f"p50 {statistics.median(kill):6.1f} ms  p99 {percentile(kill, 99):6.1f} ms  "
                    f"max {max(kill):6.1f} ms{refused}",
                    "target p99 <= 100 ms (issue 16)" if name.startswith("postgres") else ""))
    return out


def run(runs: int = 300, rounds: int = 5, pg_url: str | None = None) -> list[tuple[str, str, str]]:
    from tests.pg_support import start_postgres

    server = None
    results: dict[str, dict[str, Any]] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="fd_fleet_bench_") as tmp:
            for engines in (1, 3):
                if pg_url is None:
                    server = server or start_postgres(durable=True)
                    url = server.create_database()
                else:
                    url = pg_url
                workdir = Path(tmp) / f"pg{engines}"
                workdir.mkdir()
                results[f"postgres, {engines} engine{'s' if engines > 1 else ''}"] = measure(
                    url, engines, runs, rounds, workdir)
            workdir = Path(tmp) / "sqlite"
            workdir.mkdir()
            results["sqlite, 1 engine"] = measure(str(workdir / "store"), 1, runs, rounds, workdir)
    finally:
        if server is not None:
            server.stop()
    return rows(results)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet_bench", description=__doc__)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--store", default=None, help="a postgresql:// URL (default: an embedded server)")
    args = parser.parse_args(argv)
    from bench.__main__ import print_rows

    print_rows(f"a fleet of flightdeck serve engines ({args.runs} runs; {args.rounds} kill rounds)",
               run(args.runs, args.rounds, args.store))
    return 0


if __name__ == "__main__":
    sys.exit(main())
