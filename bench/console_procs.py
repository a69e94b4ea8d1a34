"""The console benchmark's console process (bench/console_bench.py, measurements 4-7): `flightdeck console` on a
pseudo-terminal (cold start to first screen, idle CPU, RSS, a key sequence's effect), and the cached store of
1,000,000 events it opens."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

BIG_RUN = "bigrun000001"


def _proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def _proc_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def console_process(store: Path, marker: bytes, idle_s: float = 5.0, then_keys: bytes = b"",
                    then_marker: bytes = b"") -> dict[str, Any]:
    """Measurements 4-6 (and the 1M-event open): `flightdeck console` on a pseudo-terminal."""
    import fcntl
    import pty
    import select
    import struct
    import termios

    started = time.perf_counter()
    pid, fd = pty.fork()
    if pid == 0:
        os.environ["TERM"] = "xterm-256color"
        os.execv(sys.executable, [sys.executable, "-m", "console.cli", "console", "--store", str(store),
                                  "--operator", "bench", "--read-only"])
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 48, 160, 0, 0))
    output = b""
    result: dict[str, Any] = {}

    def pump(until: bytes, timeout: float) -> float | None:
        nonlocal output
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.02)
            if ready:
                try:
                    output += os.read(fd, 1 << 20)
                except OSError:
                    return None
            if until and until in output:
                return time.perf_counter()
        return None

    try:
        first = pump(marker, 30)
        result["cold_start_s"] = (first - started) if first else None
        if then_keys:
            output = b""
            t0 = time.perf_counter()
            os.write(fd, then_keys)
            shown = pump(then_marker, 30)
            result["then_s"] = (shown - t0) if shown else None
        pump(b"", 1.0)  # let the first polls settle
        cpu0, t0 = _proc_cpu_s(pid), time.perf_counter()
        pump(b"", idle_s)
        result["idle_cpu_pct"] = (_proc_cpu_s(pid) - cpu0) / (time.perf_counter() - t0) * 100
        result["rss_mb"] = _proc_rss_mb(pid)
        os.write(fd, b"q")
        pump(b"", 2.0)
    finally:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
        os.waitpid(pid, 0)
        os.close(fd)
    return result


def million_store(path: Path, events: int = 1_000_000) -> Path:
    """A store with at least `events` events: one run of 100,000 and runs of 100 until the total is reached. Each
    span also gets one engine event (as retries, guardrail checks and routing decisions do), so the count does not
    depend on how the writer coalesces spans. Built once and cached (it takes a while)."""
    marker = path / "complete"
    if marker.exists():
        return path
    import shutil

    from engine.store import open_engine_store

    shutil.rmtree(path, ignore_errors=True)
    t = 1.7e9
    with open_engine_store(path) as es:
        w = es.writer

        def run(run_id: str, spans: int, started: float) -> None:
            w.run_started(run_id, "million", None, es.engine_id, "bench", {"n": 1}, 0, "big", started, None)
            w.span_started(f"{run_id}-r", run_id, None, "run", None, "million", started, {})
            w.span_started(f"{run_id}-a", run_id, f"{run_id}-r", "agent", "a", "a", started, {})
            for i in range(spans):
                sid = f"{run_id}-{i}"
                w.span_started(sid, run_id, f"{run_id}-a", "llm" if i % 2 else "tool", "a", f"s{i}", started + i,
                               {"args": {"i": i}})
                w.event(run_id, sid, "guardrail.checked", "a", f"s{i}", {"i": i}, started + i + 0.1)
                w.span_ended(sid, run_id, "ok", started + i + 0.5, 10, 2, 0.00001, None, {"result": i})
                if w.over_capacity():
                    w.wait_for_space_blocking(5)
            w.span_ended(f"{run_id}-a", run_id, "ok", started + spans, 0, 0, 0.0, None, None)
            w.span_ended(f"{run_id}-r", run_id, "ok", started + spans, 0, 0, 0.0, None, None)
            w.run_progress(run_id, spans * 10, spans * 2, spans * 0.00001, spans, spans, 0)
            w.run_ended(run_id, "completed", started + spans + 1, {"ok": 1}, None)

        run(BIG_RUN, 50_000, t)
        n = 0
        while True:
            w.flush(120)
            if w.last_committed_seq >= events:
                break
            for _ in range(500):
                run(f"m{n:011d}", 49, t + 100_000 + n * 10)
                n += 1
    marker.write_text(str(events))
    return path
