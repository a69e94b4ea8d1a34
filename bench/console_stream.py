"""The console benchmark's streaming measurements (bench/console_bench.py, measurements 1 and 2): an engine process
(`python -m bench.console_stream STORE RATE SECONDS OUT`, a subprocess holding the store through open_engine_store
and its TraceWriter) writes events at a steady rate while the console, in this process, watches one run; event on
screen after commit, and key-press latency while streaming."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.stats import percentile

WATCHED_RUN = "watched00001"


# -- the engine process ---------------------------------------------------------------------------------------

def writer_main(store: str, rate: float, seconds: float, out: str) -> None:
    """A store-owning engine process that emits `rate` events/s for `seconds`, then writes commit times."""
    from engine.store import open_engine_store

    commits: dict[int, float] = {}
    with open_engine_store(store) as es:
        writer = es.writer

        def on_commit(events: list[Any]) -> None:
            now = time.time()
            for seq, _kind, run_id, *_ in events:
                if run_id == WATCHED_RUN:
                    commits[seq] = now

        writer.on_commit(on_commit)
        emitted = 0
        counter = 0
        t0 = time.time()
        writer.run_started(WATCHED_RUN, "bench-watch", None, es.engine_id, "bench", {"task": "watch me"}, 0,
                           "bench", t0, None)
        writer.span_started(f"{WATCHED_RUN}-root", WATCHED_RUN, None, "run", None, "bench-watch", t0, {})
        writer.span_started(f"{WATCHED_RUN}-agent", WATCHED_RUN, f"{WATCHED_RUN}-root", "agent", "watcher",
                            "watcher", t0, {"task": "watch"})
        background: list[list[Any]] = []  # [run_id, spans emitted]
        run_no = 0
        start = time.perf_counter()
        tick = 0.01
        per_tick = rate * tick
        debt = 0.0
        while time.perf_counter() - start < seconds:
            debt += per_tick
            while debt >= 1:
                now = time.time()
                counter += 1
                if counter % 5 == 0:  # a fifth of the traffic goes to the watched run (its tail streams)
                    span_id = f"w{counter:09d}"
                    writer.span_started(span_id, WATCHED_RUN, f"{WATCHED_RUN}-agent", "llm", "watcher", "model-x",
                                        now, {"step": counter, "input_tail": "x" * 40})
                    writer.span_ended(span_id, WATCHED_RUN, "ok", now, 100, 20, 0.0001, "model-x",
                                      {"content": "ok", "latency_ms": 1.0})
                    writer.run_progress(WATCHED_RUN, counter * 100, counter * 20, counter * 0.0001, counter, 0, 1)
                    debt -= 2
                    emitted += 2
                    continue
                if len(background) < 8:
                    run_no += 1
                    run_id = f"bg{run_no:010d}"
                    writer.run_started(run_id, "bench-bg", None, es.engine_id, "bench", {"n": run_no}, run_no,
                                       f"tenant{run_no % 7}", now, None)
                    writer.span_started(f"{run_id}-root", run_id, None, "run", None, "bench-bg", now, {})
                    background.append([run_id, 0])
                    debt -= 2
                    emitted += 2
                    continue
                entry = background[counter % len(background)]
                run_id, n = entry
                span_id = f"{run_id}-{n}"
                writer.span_started(span_id, run_id, f"{run_id}-root", "tool" if n % 2 else "llm", "worker",
                                    f"step{n}", now, {"args": {"n": n}})
                writer.span_ended(span_id, run_id, "ok", now, 50, 10, 0.00005, None, {"result": n})
                entry[1] = n + 1
                writer.run_progress(run_id, (n + 1) * 50, (n + 1) * 10, (n + 1) * 0.00005, n + 1, n, 1)
                debt -= 2
                emitted += 2
                if n + 1 >= 20:
                    writer.span_ended(f"{run_id}-root", run_id, "ok", now, 0, 0, 0.0, None, None)
                    writer.run_ended(run_id, "completed" if run_no % 11 else "failed", now, {"ok": True},
                                     None if run_no % 11 else "bench failure")
                    background.remove(entry)
                    debt -= 2
                    emitted += 2
            if writer.over_capacity():
                writer.wait_for_space_blocking(1.0)
            time.sleep(tick)
        elapsed = time.perf_counter() - start
        writer.span_ended(f"{WATCHED_RUN}-agent", WATCHED_RUN, "ok", time.time(), 0, 0, 0.0, None, None)
        writer.span_ended(f"{WATCHED_RUN}-root", WATCHED_RUN, "ok", time.time(), 0, 0, 0.0, None, None)
        writer.run_ended(WATCHED_RUN, "completed", time.time(), {"done": True}, None)
        writer.flush()
    Path(out).write_text(json.dumps({"commits": commits, "emitted": emitted, "elapsed": elapsed}))


# -- measurements ---------------------------------------------------------------------------------------------

async def _wait(pred: Any, timeout: float, what: str) -> None:
    import asyncio

    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def streaming(rate: float, seconds: float) -> dict[str, Any]:
    """Measurements 1 and 2 (the console in this process, the engine in a subprocess)."""
    import asyncio

    from textual import events as tevents

    # console before Textual, as on every console path: importing it sets Textual's frame rate (console/__init__.py)
    from console.app import create_app
    from console.widgets.span_detail import EventTail

    tmp = Path(tempfile.mkdtemp(prefix="fd-console-bench-"))
    store = tmp / "store"
    out = tmp / "commits.json"
    proc = subprocess.Popen([sys.executable, "-m", "bench.console_stream", str(store), str(rate), str(seconds),
                             str(out)], cwd=str(Path(__file__).resolve().parent.parent))
    keys: list[float] = []
    watching: list[float] = []
    added: list[tuple[float, list[int]]] = []  # (time.time() when the Log got them, watched seqs)
    refreshes: list[tuple[float, float]] = []  # (start, end) of every screen refresh, time.time()
    handled: list[float] = []  # when the key's action ran

    from textual.screen import Screen

    from console.screens.run import RunView
    from engine.store.trace_rows import EventRow

    original_add = EventTail.add_events
    original_refresh = Screen._on_timer_update
    original_toggle = RunView.action_toggle_raw

    def add_events(self: EventTail, evs: list[EventRow], skipped: int = 0) -> None:
        original_add(self, evs, skipped)
        added.append((time.time(), [e.seq for e in evs if e.run_id == WATCHED_RUN]))

    def on_timer_update(self: Screen[Any]) -> None:
        started = time.time()
        original_refresh(self)
        refreshes.append((started, time.time()))

    def toggle(self: RunView) -> None:
        original_toggle(self)
        handled.append(time.time())

    def painted_after(moment: float) -> float | None:
        """End of the first screen refresh that began at or after `moment` (the frame that shows the change)."""
        for begin, end in refreshes:
            if begin >= moment:
                return end
        return None

    EventTail.add_events = add_events  # type: ignore[method-assign]
    Screen._on_timer_update = on_timer_update  # type: ignore[method-assign]
    RunView.action_toggle_raw = toggle  # type: ignore[method-assign]

    async def run() -> None:
        deadline = time.monotonic() + 30
        while not (store / "traces.db").exists():
            if time.monotonic() > deadline:
                raise RuntimeError("the engine process did not create the store")
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        app = create_app(store, operator="bench", read_only=True)
        async with app.run_test(size=(160, 48)) as pilot:
            await _wait(lambda: app.main.view("runs").table.total_count > 0, 20, "runs")
            app.main.run_command(f":run {WATCHED_RUN}")
            view = app.main.view("run")
            await _wait(lambda: view.active and view.events.count > 0, 20, "the watched run")  # built on first use
            watching.append(time.time())  # events committed before the view was live are backlog, not latency
            begin = time.monotonic()
            while proc.poll() is None and time.monotonic() - begin < seconds + 5:
                await asyncio.sleep(0.12)
                # A key with a visible effect: j toggles the span detail's raw JSON view.
                count = len(handled)
                sent = time.time()
                app._driver.send_message(tevents.Key("j", "j"))  # type: ignore[union-attr]
                while len(handled) == count:
                    await asyncio.sleep(0.001)
                while painted_after(handled[-1]) is None:
                    await asyncio.sleep(0.001)
                keys.append((painted_after(handled[-1]) - sent) * 1000)  # type: ignore[operator]
                if os.environ.get("FD_BENCH_DEBUG"):
                    print("key: handled +%.0f ms, painted +%.0f ms" % ((handled[-1] - sent) * 1000, keys[-1]),
                          file=sys.stderr)
            await asyncio.sleep(0.5)
            await pilot.press("q")

    try:
        asyncio.run(run())
    finally:
        EventTail.add_events = original_add  # type: ignore[method-assign]
        Screen._on_timer_update = original_refresh  # type: ignore[method-assign]
        RunView.action_toggle_raw = original_toggle  # type: ignore[method-assign]
        proc.wait(60)
    shown: dict[int, float] = {}
    for moment, seqs in added:
        end = painted_after(moment)
        if end is not None:
            for seq in seqs:
                shown.setdefault(seq, end)
    data = json.loads(out.read_text())
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    commits = {int(k): v for k, v in data["commits"].items()}
    live = {s: c for s, c in commits.items() if watching and c >= watching[0] + 0.5}
    lat = [(shown[s] - c) * 1000 for s, c in live.items() if s in shown]
    return {
        "rate": data["emitted"] / data["elapsed"],
        "event_p50": percentile(lat, 50), "event_p95": percentile(lat, 95), "events_measured": len(lat),
        "events_committed": len(live),
        "key_p50": percentile(keys, 50), "key_p95": percentile(keys, 95), "keys": len(keys),
    }


if __name__ == "__main__":
    writer_main(sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4])
