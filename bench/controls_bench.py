"""Kill-switch and safe-mode flag latency: an engine in another process busy with 100 concurrent runs; this process
writes controls to control.db and measures, per trial:

- ack: from the control row's creation to the engine's acknowledgement (the engine applied it);
- stop: from creation to the last model/tool call that started anyway (no new call may start after the engine
  applied the switch; this is the window in which one still could);
- cancel: for a final `kill`, from creation to the end of the last in-flight call it cancelled.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.stats import percentile

ROOT = Path(__file__).resolve().parent.parent
BUSY = """
name: busy
entry: w
models:
  m: {model: m, tier: standard, price_in: 0.5, price_out: 1.5, latency: 0.02, latency_per_token: 0}
tools:
  add: {function: "tests.fixture_tools:add"}
agents:
  w: {contract: Adds for a long time., model: m, tools: [add], max_steps: 1000}
scripts:
  w:
""" + "".join(f"    - tool: {{name: add, args: {{a: {i}, b: 1}}}}\n" for i in range(900)) + "    - final: added\n"


def _wait(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached (is the engine process running? run it by hand to see)")
        time.sleep(0.002)


def run_controls_bench(trials: int = 30, runs: int = 100) -> dict[str, list[float]]:
    from engine.controls.api import ControlAPI
    from engine.errors import StoreError
    from engine.store import open_reader

    workdir = Path(tempfile.mkdtemp(prefix="fd_ctl_bench_"))
    store = workdir / "store"
    hierarchy = workdir / "busy.yaml"
    hierarchy.write_text(BUSY)
    engine = subprocess.Popen([sys.executable, "-m", "console.cli", "run", str(hierarchy), "--store", str(store),
                               "--repeat", str(runs), "--concurrency", str(runs), "--json"], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    results: dict[str, list[float]] = {"pause ack": [], "pause stop": [], "flag ack": [], "kill cancel": []}
    try:
        readers = []

        def ready() -> bool:
            try:
                readers.append(open_reader(store))
            except StoreError:
                return False
            return True

        _wait(ready)
        reader = readers[0]
        _wait(lambda: len([s for s in reader.running_spans() if s.kind == "agent"]) >= runs)
        api = ControlAPI(store, "bench")
        for _ in range(trials):
            switch = api.set_kill("global", None, "pause", "bench")
            _wait(lambda: api.kill_switch(switch.id).acked is not None)  # noqa: B023 (called in this iteration)
            created, acked = switch.created, api.kill_switch(switch.id).acked
            results["pause ack"].append(acked - created)
            time.sleep(0.15)  # let calls that were in flight finish and reach the store
            started = reader.query("SELECT max(started) AS m FROM spans WHERE kind IN ('llm', 'tool') "
                                   "AND started >= ?", (created,))[0]["m"]
            results["pause stop"].append(max(0.0, (started or created) - created))
            api.release(switch.id, reason="bench")
            time.sleep(0.05)
            flag = api.set_flag("tool.add", "disabled", reason="bench")
            _wait(lambda: any(f.id == flag.id and f.acked  # noqa: B023 (called in this iteration)
                              for f in api.active_flags()))
            acked_flag = next(f for f in api.active_flags() if f.id == flag.id).acked
            results["flag ack"].append((acked_flag or 0.0) - flag.created)
            api.clear_flag("tool.add", reason="bench")
        switch = api.set_kill("global", None, "kill", "bench: stop")
        engine.wait(timeout=60)
        ended = reader.query("SELECT max(ended) AS m FROM spans WHERE kind IN ('llm', 'tool') "
                             "AND status IN ('cancelled', 'outcome_unknown')", ())[0]["m"]
        if ended:
            results["kill cancel"].append(ended - switch.created)
        reader.close()
        api.close()
    finally:
        if engine.poll() is None:
            engine.kill()
    return results


def main_table(trials: int = 30) -> None:
    results = run_controls_bench(trials)
    print("\ncontrols: an engine busy with 100 concurrent runs in another process (ms)")
    print(f"  {'measurement':34s} {'n':>4s} {'p50':>8s} {'p99':>8s}   target")
    labels = {"pause ack": "kill switch applied (ack)", "pause stop": "last call started after the write",
              "flag ack": "safe-mode flag applied (ack)", "kill cancel": "in-flight calls cancelled (kill)"}
    for key, values in results.items():
        if not values:
            print(f"  {labels[key]:34s}    0        -        -")
            continue
        print(f"  {labels[key]:34s} {len(values):4d} {statistics.median(values) * 1000:8.1f} "
              f"{percentile(values, 99) * 1000:8.1f}   p99 < 100 ms")


if __name__ == "__main__":
    main_table(int(sys.argv[1]) if len(sys.argv) > 1 else 30)
