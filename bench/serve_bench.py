"""Serve mode: accepted submissions per second at the HTTP API, submit -> first model call (p50/p99) with the queue
empty and with 1,000 runs queued, and the serve process's memory with 10,000 runs queued.

One real `flightdeck serve` on 127.0.0.1 (port 0) on a fresh store, driven over HTTP with httpx as a client would.
The fleet has two queues over the same hierarchy: `probe` (where latency is measured, one submission at a time;
its concurrency bound is far above what the probes keep running, so no probe waits for a slot) and
`backlog`, whose rate limit (one run an hour) keeps what is queued on it queued: the backlog costs the engine what a
real one would (DBOS's queue table and its polls, our counters, the published rows) without its runs' CPU hiding
the figure being measured. "First model call" is the `started` of the run's first `llm` span in traces.db, against
the client's clock just before the POST (one machine, one clock)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.stats import percentile

FLEET = """\
hierarchies:
  - file: support-triage
    name: probe
    queue: {concurrency: 1000, max_depth: 100000}
  - file: support-triage
    name: backlog
    queue: {concurrency: 1, rate_limit: 1/1h, max_depth: 100000}
"""
INPUT = {"ticket_id": "T-1", "customer_id": "CUS-001", "channel": "email", "subject": "bench",
         "body": "The desktop app crashes on start."}
READY = re.compile(r"serving on (http://127\.0\.0\.1:\d+)")
START_TIMEOUT_S = 60.0
FIRST_CALL_TIMEOUT_S = 60.0


def _rss_mib(pid: int) -> float:
    """RSS of the process and its children (the trace writer), from /proc."""
    total = 0
    pids = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(c) for c in children]
    except OSError:
        pass
    for one in pids:
        try:
            for line in Path(f"/proc/{one}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


class Serve:
    def __init__(self, store: Path, fleet: Path) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("FLIGHTDECK_API_TOKEN", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "console.cli", "serve", "--store", str(store), "--fleet", str(fleet),
             "--listen", "127.0.0.1:0", "--grace", "5s"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        self.url = self._wait_ready()

    def _wait_ready(self) -> str:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        seen = []
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            match = READY.search(line)
            if match:
                return match.group(1)
        self.proc.kill()
        raise RuntimeError("flightdeck serve did not start:\n" + "".join(seen[-20:]))

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _first_llm_started(traces: Path, run_id: str) -> float | None:
    conn = sqlite3.connect(f"file:{traces}?mode=ro", uri=True, timeout=5)
    try:
        row = conn.execute("SELECT min(started) FROM spans WHERE run_id = ? AND kind = 'llm'", (run_id,)).fetchone()
    except sqlite3.OperationalError:
        return None
    finally:
        conn.close()
    return None if row is None or row[0] is None else float(row[0])


async def _probe(client: httpx.AsyncClient, traces: Path, n: int) -> list[float]:
    """n runs one after another on the idle `probe` queue: ms from just before the POST to the first model call."""
    out = []
    for i in range(n):
        before = time.time()
        resp = await client.post("/runs", json={"hierarchy": "probe", "input": INPUT, "seed": i})
        resp.raise_for_status()
        run_id = resp.json()["run_id"]
        deadline = time.monotonic() + FIRST_CALL_TIMEOUT_S
        while (started := _first_llm_started(traces, run_id)) is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"run {run_id} made no model call in {FIRST_CALL_TIMEOUT_S:.0f} s")
            await asyncio.sleep(0.005)  # polling traces.db from outside, as a console would
        out.append((started - before) * 1000)
    return out


async def _flood(client: httpx.AsyncClient, n: int, concurrency: int, offset: int) -> float:
    """Submit n runs to the backlog from `concurrency` clients at once; returns accepted per second."""
    accepted = 0
    next_i = 0

    async def worker() -> None:
        nonlocal accepted, next_i
        while next_i < n:
            i = next_i
            next_i += 1
            resp = await client.post("/runs", json={"hierarchy": "backlog", "input": INPUT, "seed": offset + i})
            if resp.status_code in (200, 201):
                accepted += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return accepted / (time.perf_counter() - started)


async def _measure(url: str, store: Path, pid: int, probes: int) -> list[tuple[str, str, str]]:
    traces = store / "traces.db"
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        await _probe(client, traces, 3)  # warm-up: imports, first compile, DBOS's first queue poll
        empty = await _probe(client, traces, probes)
        rate = await _flood(client, 1000, 32, 0)
        queued_1k = await _probe(client, traces, probes)
        rss_1k = _rss_mib(pid)
        await _flood(client, 9000, 32, 1000)
        rss_10k = _rss_mib(pid)
        health = (await client.get("/health")).json()
    return [
        ("accepted submissions per second (32 clients, 1,000 POST /runs)", f"{rate:,.0f} /s", "target >= 500 /s"),
        ("submit -> first model call, queue empty: p50", f"{statistics.median(empty):.1f} ms", "target <= 100 ms"),
        ("  p99", f"{percentile(empty, 99):.1f} ms", "target <= 250 ms"),
        ("submit -> first model call, 1,000 queued: p50", f"{statistics.median(queued_1k):.1f} ms",
         "target <= 100 ms"),
        ("  p99", f"{percentile(queued_1k, 99):.1f} ms", "target <= 250 ms"),
        ("serve RSS (engine + writer), 1,000 queued", f"{rss_1k:,.0f} MiB", ""),
        ("serve RSS (engine + writer), 10,000 queued", f"{rss_10k:,.0f} MiB", "target <= 512 MiB"),
        ("  queued as the engine reports it (/health)", f"{health.get('queued', '?'):,}", "expect 9,999"),
    ]


def measure(probes: int = 50) -> list[tuple[str, str, str]]:
    with tempfile.TemporaryDirectory(prefix="fd-serve-bench-") as tmp:
        store = Path(tmp) / "store"
        fleet = Path(tmp) / "fleet.yaml"
        fleet.write_text(FLEET)
        serve = Serve(store, fleet)
        try:
            return asyncio.run(_measure(serve.url, store, serve.proc.pid, probes))
        finally:
            serve.stop()
