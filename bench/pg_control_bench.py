"""Kill switch -> a watching process wakes: LISTEN/NOTIFY on a Postgres store, beside the 10 ms data_version poll an
engine runs on control.db (engine/runtime/control_worker.py), measured the same way in one run.

Per round this process (the operator) calls ControlAPI.set_kill (or releases the switch, alternately) and another
process (the engine's side) reports the moment it saw the change: on Postgres a ControlWatcher.wait() returning, on
SQLite the poll loop seeing PRAGMA data_version change. Both processes read time.monotonic(), which is one clock
system-wide on Linux. Reported: from the set_kill call to the wake (what an operator waits for, including the write
transaction itself) and the write alone. The next round starts only after the watcher reported, so rounds never
overlap. Postgres is the embedded server the tests use (tests/pg_support.py), or `--store postgresql://...`.

`python -m bench pg-control` (part of `make bench`), or `python -m bench.pg_control_bench [--rounds N]`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.stats import percentile

ROOT = Path(__file__).resolve().parent.parent

PG_WATCHER = r"""
import sys
from engine.store.location import parse_store_location
from engine.store.pg.control_watch import ControlWatcher
watcher = ControlWatcher(parse_store_location(sys.argv[1]))
print("ready", flush=True)
while True:
    change = watcher.wait(30.0)
    if change is None:
        break
    if "kill_switches" in change.tables:
        print(repr(change.received), flush=True)
"""

SQLITE_POLLER = r"""
import sys, time
from engine.controls.api import ControlAPI
api = ControlAPI(sys.argv[1], "engine:bench")
last = api.data_version()
print("ready", flush=True)
deadline = time.monotonic() + 30.0
while time.monotonic() < deadline:
    version = api.data_version()
    if version != last:
        last = version
        print(repr(time.monotonic()), flush=True)
        deadline = time.monotonic() + 30.0
    time.sleep(0.01)  # the engine's ControlWorker poll interval (POLL_INTERVAL_S)
"""


def measure(store: str, watcher_code: str, rounds: int) -> dict[str, list[float]]:
    """Wake and write latencies in ms over `rounds` alternating set_kill / release actions on `store`."""
    from engine.controls.api import ControlAPI

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with ControlAPI(store, "bench") as api:
        api.set_flag("approvals", "default", reason="bench: create the store before the watcher opens it")
        watcher = subprocess.Popen([sys.executable, "-c", watcher_code, store], cwd=ROOT, env=env, text=True,
                                   stdout=subprocess.PIPE)
        assert watcher.stdout is not None
        try:
            if watcher.stdout.readline().strip() != "ready":
                raise RuntimeError("the watcher process did not start (run its code by hand to see why)")
            wake: list[float] = []
            write: list[float] = []
            switch_id: int | None = None
            for _ in range(rounds):
                began = time.monotonic()
                if switch_id is None:
                    switch_id = api.set_kill("global", None, "kill", "bench").id
                else:
                    api.release(switch_id, reason="bench")
                    switch_id = None
                written = time.monotonic()
                seen = float(watcher.stdout.readline())
                wake.append((seen - began) * 1000)
                write.append((written - began) * 1000)
        finally:
            watcher.kill()
            watcher.wait()
    return {"wake": wake, "write": write}


def rows(results: dict[str, dict[str, list[float]]]) -> list[tuple[str, str, str]]:
    out = []
    for backend, result in results.items():
        for name, label in (("wake", "set_kill called -> watcher woke"), ("write", "set_kill returned (the write)")):
            values = result[name]
            target = "target p99 <= 100 ms (issue 16)" if backend == "postgres" and name == "wake" else ""
            out.append((f"{backend}: {label}",
                        f"p50 {statistics.median(values):6.2f} ms  p99 {percentile(values, 99):6.2f} ms  "
                        f"max {max(values):6.2f} ms", target))
    return out


def run(rounds: int = 200, pg_url: str | None = None) -> list[tuple[str, str, str]]:
    server = None
    if pg_url is None:
        from tests.pg_support import start_postgres

        server = start_postgres()
        pg_url = server.create_database()
    try:
        with tempfile.TemporaryDirectory(prefix="fd_pgctl_bench_") as tmp:
            results = {"postgres": measure(pg_url, PG_WATCHER, rounds),
                       "sqlite": measure(str(Path(tmp) / "store"), SQLITE_POLLER, rounds)}
    finally:
        if server is not None:
            server.stop()
    return rows(results)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pg_control_bench", description=__doc__)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--store", default=None, help="a postgresql:// URL (default: an embedded server)")
    args = parser.parse_args(argv)
    from bench.__main__ import print_rows

    print_rows(f"control change -> watching process wakes ({args.rounds} rounds each)", run(args.rounds, args.store))
    return 0


if __name__ == "__main__":
    sys.exit(main())
