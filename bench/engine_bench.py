"""Engine benchmarks: the shared peer workload side by side, 50-concurrent scaling, startup times, and peak memory
with 1,000 concurrent deal-desk runs. Each measurement runs in its own process so figures do not bleed."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PEERS_DIR = Path(os.environ.get("FLIGHTDECK_BENCH_PEERS", ROOT.parent / "shared" / "bench-peers"))


def _result_line(output: str) -> dict | None:
    for line in output.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    return None


def run_peer(script: Path, trace: str, runs: int, concurrent: int, reps: int) -> dict | None:
    proc = subprocess.run([sys.executable, str(script), "--trace", trace, "--runs", str(runs), "--concurrent",
                           str(concurrent), "--reps", str(reps), "--warmup", "10"],
                          capture_output=True, text=True, timeout=900, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return {"framework": script.stem.replace("_hierarchy", ""), "trace": trace, "error": tail[:120]}
    return _result_line(proc.stdout)


def peers(runs: int = 200, concurrent: int = 50, reps: int = 5) -> list[dict]:
    """Flightdeck and every peer script available in shared/bench-peers, in one sweep."""
    rows: list[dict] = []
    ours = ROOT / "bench" / "flightdeck_hierarchy.py"
    jobs: list[tuple[Path, str]] = [(ours, "sqlite"), (ours, "durable")]
    if PEERS_DIR.is_dir():
        jobs += [(PEERS_DIR / "bare_hierarchy.py", "off"), (PEERS_DIR / "bare_hierarchy.py", "sqlite")]
        for name in ("langgraph", "openai_agents", "pydantic_ai"):
            jobs.append((PEERS_DIR / f"{name}_hierarchy.py", "off"))
    for script, trace in jobs:
        if not script.exists():
            continue
        print(f"  … {script.stem} trace={trace}", file=sys.stderr, flush=True)
        result = run_peer(script, trace, runs, concurrent, reps)
        if result is not None:
            rows.append(result)
    return rows


MEMORY_PROBE = r"""
import anyio, resource, sys, tempfile, time
from pathlib import Path
from engine.hierarchy.loader import load_hierarchy
from engine.hierarchy.bundled import sample_inputs
from engine.runtime.engine import Engine, RunRequest
from engine.store import open_engine_store

n = int(sys.argv[1])
hierarchy = load_hierarchy("deal-desk")
deals = sample_inputs("deal-desk")
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

async def main():
    with open_engine_store(Path(tempfile.mkdtemp()) / "store", max_queue=1_000_000) as store:
        async with Engine(store, latency_scale=float(sys.argv[2])) as engine:
            t0 = time.perf_counter()
            results = await engine.run_many(hierarchy, [RunRequest(input=deals[i % len(deals)], seed=i)
                                                        for i in range(n)], concurrency=n)
            elapsed = time.perf_counter() - t0
    done = sum(r.status == "completed" for r in results)
    # The engine process plus its trace-writer process (a child, ended when the store closed): both peaks, summed,
    # as an upper bound of what the engine needs.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss + resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(f"RESULT {done} {elapsed:.3f} {base / 1024:.1f} {peak / 1024:.1f}")

anyio.run(main)
"""


def memory(runs: int = 1000, latency_scale: float = 0.2) -> dict:
    proc = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(runs), str(latency_scale)], capture_output=True,
                          text=True, timeout=900, cwd=ROOT)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        return {"error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
    done, elapsed, base, peak = line.split()[1:]
    return {"runs": runs, "completed": int(done), "seconds": float(elapsed), "rss_base_mib": float(base),
            "rss_peak_mib": float(peak)}


def startup(repeat: int = 5) -> dict:
    """Best of `repeat` starts, as an installed Flightdeck starts: with compiled bytecode. A warm-up run writes the
    .pyc files first (PYTHONDONTWRITEBYTECODE, if set, is dropped for these runs: without bytecode every start
    compiles every module, which no installed copy does)."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}

    def best(cmd: list[str]) -> float:
        subprocess.run(cmd, capture_output=True, check=True, cwd=ROOT, env=env)  # warm-up: writes bytecode
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            subprocess.run(cmd, capture_output=True, check=True, cwd=ROOT, env=env)
            times.append(time.perf_counter() - t0)
        return min(times)

    def import_time(modules: str) -> float:
        probe = f"import time; t = time.perf_counter(); import {modules}; print(time.perf_counter() - t)"
        runs = [subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT,
                               env=env).stdout for _ in range(repeat + 1)]
        return min(float(out) for out in runs[1:])

    flightdeck = Path(sys.executable).with_name("flightdeck")
    version_cmd = [str(flightdeck), "--version"] if flightdeck.exists() else [sys.executable, "-m", "console.cli",
                                                                              "--version"]
    return {"import_package_s": import_time("engine"),
            "import_engine_s": import_time("engine.runtime.engine, engine.store, engine.hierarchy.loader"),
            "version_s": best(version_cmd)}


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
