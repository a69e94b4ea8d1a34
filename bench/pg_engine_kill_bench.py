"""Kill switch -> a `flightdeck run` engine stops the run: an engine wholly on a Postgres store (its ControlWorker
woken by LISTEN/NOTIFY) beside the same engine on a store directory (control.db, polled every 10 ms), in one run.

One real `flightdeck run` process per backend runs a busy hierarchy (an agent making 150 tool calls, one run at a
time, --repeat ROUNDS). Per round this process (the operator) waits for the engine's current run to be in flight,
sets a kill switch on that run with ControlAPI (its own connection, another process), and waits for the run to end.
Reported from the stored timestamps (both processes read the same wall clock): switch created -> acknowledged by the
engine (`acked`), and switch created -> the run recorded as ended `killed` (`runs.ended`): what "the engine stopped
the run" means to an operator. Postgres is the embedded server the tests use (tests/pg_support.py), fsync on.

`python -m bench pg-engine-kill` (part of `make bench`), or `python -m bench.pg_engine_kill_bench [--rounds N]`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.stats import percentile, wait_until

ROOT = Path(__file__).resolve().parent.parent


def _wait(condition: Any, timeout: float = 60.0) -> Any:
    return wait_until(condition, timeout=timeout, what="the engine")


def _busy(directory: Path) -> Path:
    from tests.engine.test_controls_process import BUSY

    path = directory / "busy.yaml"
    path.write_text(BUSY)
    return path


def _ended(reader: Any, run_id: str) -> Any:
    row = reader.get_run(run_id)
    return row if row is not None and row.status != "running" else None


def measure(store: str, rounds: int, workdir: Path) -> dict[str, list[float]]:
    """Ack and stop latencies in ms over `rounds` run-scoped kill switches on an engine on `store`."""
    from engine.controls.api import ControlAPI
    from engine.errors import StoreError
    from engine.store import open_trace_reads
    from engine.store.location import parse_store_location

    location = parse_store_location(store)
    engine = subprocess.Popen([sys.executable, "-m", "console.cli", "run", str(_busy(workdir)), "--store", store,
                               "--repeat", str(rounds), "--json"], cwd=ROOT, text=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    readers: list[Any] = []

    def reader_ready() -> bool:
        try:
            readers.append(open_trace_reads(location))
        except StoreError:
            return False
        return True

    ack: list[float] = []
    stop: list[float] = []
    try:
        _wait(reader_ready)
        reader = readers[0]
        with ControlAPI(store, "bench") as api:
            killed: set[str] = set()
            for _ in range(rounds):
                run = _wait(lambda: next((r for r in reader.list_runs(limit=5)
                                          if r.status == "running" and r.id not in killed), None))
                run_id = run.id
                _wait(lambda: reader.running_spans(run_id))  # noqa: B023 (in flight, not just recorded)
                switch = api.set_kill("run", run_id, "kill", "bench")
                killed.add(run_id)
                ended = _wait(lambda: _ended(reader, run_id))  # noqa: B023 (this round's run)
                # The engine acknowledges with the full snapshot, which on Postgres follows the kill it has acted
                # on (control_worker.py "Kills first"): the ack may land after the run's end is readable.
                acked = _wait(lambda: api.kill_switch(switch.id).acked)  # noqa: B023 (this round's switch)
                if ended.status != "killed" or ended.ended is None or acked is None:
                    raise RuntimeError(f"run {run.id} ended {ended.status}, switch acked {acked}")
                ack.append((acked - switch.created) * 1000)
                stop.append((ended.ended - switch.created) * 1000)
        reader.close()
        engine.wait(timeout=60)
    finally:
        if engine.poll() is None:
            engine.kill()
            engine.wait()
    return {"ack": ack, "stop": stop}


def rows(results: dict[str, dict[str, list[float]]]) -> list[tuple[str, str, str]]:
    out = []
    for backend, result in results.items():
        for name, label in (("ack", "set_kill -> engine acknowledged"), ("stop", "set_kill -> run ended killed")):
            values = result[name]
            target = "target p99 <= 100 ms (issue 16)" if backend == "postgres" and name == "stop" else ""
            out.append((f"{backend}: {label}",
                        f"p50 {statistics.median(values):6.1f} ms  p99 {percentile(values, 99):6.1f} ms  "
                        f"max {max(values):6.1f} ms", target))
    return out


def run(rounds: int = 30, pg_url: str | None = None) -> list[tuple[str, str, str]]:
    server = None
    if pg_url is None:
        from tests.pg_support import start_postgres

        server = start_postgres(durable=True)
        pg_url = server.create_database()
    try:
        with tempfile.TemporaryDirectory(prefix="fd_pgkill_bench_") as tmp:
            results = {"postgres": measure(pg_url, rounds, Path(tmp)),
                       "sqlite": measure(str(Path(tmp) / "store"), rounds, Path(tmp))}
    finally:
        if server is not None:
            server.stop()
    return rows(results)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pg_engine_kill_bench", description=__doc__)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--store", default=None, help="a postgresql:// URL (default: an embedded server)")
    args = parser.parse_args(argv)
    from bench.__main__ import print_rows

    print_rows(f"kill switch -> flightdeck run stops the run ({args.rounds} rounds each)", run(args.rounds, args.store))
    return 0


if __name__ == "__main__":
    sys.exit(main())
