"""Issue 11, section 1: the engine stops when its record fails. Real engine processes (`flightdeck run`), real
SQLite files, real signals: the trace writer killed under it, traces.db full, SIGTERM/SIGHUP from a supervisor."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from engine.errors import StoreError
from engine.store import open_engine_store, open_reader
from tests.store_fault_tools import read_journal
from tests.store_support import read_until, rows, store_lock_free, wait_until

ROOT = Path(__file__).resolve().parents[2]


def clerk_hierarchy(steps: int, pause: float) -> str:
    """One agent that alternates a slow read-only step and a side effect (`record`), `steps` times."""
    script = "".join(f"    - tool: {{name: pause, args: {{seconds: {pause}, step: {i}}}}}\n"
                     f"    - tool: {{name: record, args: {{note: step-{i}}}}}\n" for i in range(steps))
    return f"""
name: clerk
entry: clerk
models:
  m: {{model: m, tier: standard, price_in: 0.5, price_out: 1.5, latency: 0, latency_per_token: 0}}
tools:
  record: {{function: "tests.store_fault_tools:record", side_effects: true}}
  pause: {{function: "tests.store_fault_tools:pause"}}
agents:
  clerk: {{contract: Records things., model: m, tools: [record, pause], max_steps: {2 * steps + 5}}}
scripts:
  clerk:
{script}    - final: done
"""


def start_engine(tmp_path: Path, *args: str, steps: int = 200, pause: float = 0.01,
                 env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], Path, Path]:
    store = tmp_path / "store"
    hierarchy = tmp_path / "clerk.yaml"
    hierarchy.write_text(clerk_hierarchy(steps, pause))
    journal = tmp_path / "journal.txt"
    engine = subprocess.Popen([sys.executable, "-m", "console.cli", "run", str(hierarchy), "--store", str(store),
                               *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT), "FLIGHTDECK_TEST_JOURNAL": str(journal),
                                   **(env or {})})
    return engine, store, journal


def committed(store: Path, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
    try:
        with open_reader(store) as reader:
            return reader.query(sql, params)
    except StoreError:  # not created yet
        return []


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            found += [int(p) for p in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
        except OSError:
            pass
    return found


def finish(engine: subprocess.Popen[str], timeout: float) -> tuple[str, str]:
    try:
        return engine.communicate(timeout=timeout)
    finally:
        if engine.poll() is None:
            engine.kill()
            engine.communicate()


def test_killing_the_trace_writer_stops_the_engine_with_exit_3(tmp_path: Path) -> None:
    engine, store, journal = start_engine(tmp_path, "--repeat", "8", "--concurrency", "4")
    try:
        wait_until(lambda: len(committed(store, "SELECT id FROM spans WHERE name = 'record'")) >= 20, timeout=60,
                   what="side effects under way")
        [writer] = children(engine.pid)
        os.kill(writer, signal.SIGKILL)
        killed_at = time.time()
    finally:
        out, err = finish(engine, timeout=30)
    exited_at = time.time()
    assert engine.returncode == 3, err
    assert "Traceback" not in err
    # Besides the start line and the progress lines ([n/N] run ... killed): one line naming the cause.
    problems = [line for line in err.splitlines() if not line.startswith(("[", "running clerk"))]
    assert len(problems) == 1, err
    assert "trace writer process" in problems[0] and "killed by signal 9" in problems[0], problems
    assert exited_at - killed_at < 10
    # Write-ahead: every side effect that ran had its start committed first (the store knows each one).
    side_effects = read_journal(str(journal))
    starts = committed(store, "SELECT id FROM spans WHERE name = 'record'")
    assert 0 < len(side_effects) <= len(starts)
    # Nothing started after the writer's death was noticed (within 1 s).
    assert max(ts for ts, _ in side_effects) < killed_at + 1.0
    # The lock is free and the next engine starts normally, marking the runs left running abandoned.
    assert store_lock_free(store)
    with open_engine_store(store) as next_engine:
        assert next_engine.abandoned_runs
    statuses = {row["status"] for row in committed(store, "SELECT status FROM runs")}
    assert "running" not in statuses and "abandoned" in statuses


def running_runs(store: Path) -> list[Any]:
    return committed(store, "SELECT id FROM runs WHERE status = 'running'")


def test_sigterm_lets_runs_in_flight_finish_and_starts_no_new_ones(tmp_path: Path) -> None:
    engine, store, _ = start_engine(tmp_path, "--repeat", "9", "--concurrency", "3", "--json", steps=15, pause=0.05)
    try:
        wait_until(lambda: len(running_runs(store)) == 3, timeout=60, what="3 runs in flight")
        engine.send_signal(signal.SIGTERM)
    finally:
        out, err = finish(engine, timeout=60)
    assert engine.returncode == 143, err
    assert "Traceback" not in err and "SIGTERM: admitting no new runs; 3 in flight get 30s" in err
    results = json.loads(out)
    # The three in flight finished (well within the grace period); the six not started were never started.
    assert [r["status"] for r in results] == ["completed"] * 3
    assert sorted(r[0] for r in rows(store / "traces.db", "SELECT status FROM runs")) == ["completed"] * 3
    assert store_lock_free(store)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_grace_period_ends_by_killing_what_is_left_and_recording_it(tmp_path: Path, signum: int) -> None:
    engine, store, _ = start_engine(tmp_path, "--repeat", "3", "--concurrency", "3", "--grace", "300ms",
                                    steps=300, pause=0.1)
    try:
        wait_until(lambda: len(running_runs(store)) == 3, timeout=60, what="3 runs in flight")
        signalled = time.monotonic()
        engine.send_signal(signum)
    finally:
        _, err = finish(engine, timeout=60)
    assert engine.returncode == 143, err
    assert time.monotonic() - signalled < 15  # runs that would take 30 s more were stopped after the grace period
    assert "Traceback" not in err
    name = signal.Signals(signum).name
    ended = rows(store / "traces.db", "SELECT status, error FROM runs")
    assert len(ended) == 3
    for status, error in ended:
        assert status == "killed" and f"shutting down ({name}; the 0.3s grace period ended)" in error
    # Each run's root span was closed too, and the lock is free for the next engine.
    assert not rows(store / "traces.db", "SELECT id FROM spans WHERE status = 'running'")
    assert store_lock_free(store)


def test_a_second_signal_kills_at_once_still_recording(tmp_path: Path) -> None:
    engine, store, _ = start_engine(tmp_path, "--repeat", "2", "--concurrency", "2", "--grace", "10m",
                                    steps=300, pause=0.1)
    try:
        wait_until(lambda: len(running_runs(store)) == 2, timeout=60, what="2 runs in flight")
        engine.send_signal(signal.SIGTERM)
        # Pending signals are delivered lowest number first: send the second only once the first was handled.
        read_until(engine, "SIGTERM: admitting no new runs")
        engine.send_signal(signal.SIGINT)
        signalled = time.monotonic()
    finally:
        _, err = finish(engine, timeout=60)
    assert time.monotonic() - signalled < 15
    assert engine.returncode == 143, err
    ended = rows(store / "traces.db", "SELECT status, error FROM runs")
    assert [status for status, _ in ended] == ["killed", "killed"]
    assert all("shutting down (SIGINT)" in error for _, error in ended)


# An engine on a store whose traces.db is capped (PRAGMA max_page_count, as on a full disk) until the test creates
# the file named by argv[3]: then the cap is lifted, as when an operator frees space.
_CAPPED_ENGINE = """
import os, sys, anyio
from engine.hierarchy.loader import load_hierarchy
from engine.runtime.engine import Engine, RunRequest
from engine.store import open_engine_store

store_dir, hierarchy_file, lift_file = sys.argv[1:4]
hierarchy = load_hierarchy(hierarchy_file)

async def main():
    with open_engine_store(store_dir) as store:
        async with Engine(store) as engine:
            async def lift():
                while not os.path.exists(lift_file):
                    await anyio.sleep(0.02)
                store.writer.set_page_limit(None)
            async with anyio.create_task_group() as group:
                group.start_soon(lift)
                results = await engine.run_many(hierarchy, [RunRequest(input="go", seed=i) for i in range(4)],
                                                concurrency=2)
            print(" ".join(sorted(r.status for r in results)))

anyio.run(main)
"""


def engines_json(store: Path) -> list[dict[str, Any]]:
    out = subprocess.run([sys.executable, "-m", "console.cli", "engines", "--json", "--store", str(store)],
                         capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                         timeout=30)
    return json.loads(out.stdout) if out.returncode == 0 else []


def test_a_full_traces_db_holds_calls_shows_degraded_and_carries_on_when_space_returns(tmp_path: Path) -> None:
    store, journal, lift = tmp_path / "store", tmp_path / "journal.txt", tmp_path / "lift"
    hierarchy = tmp_path / "clerk.yaml"
    hierarchy.write_text(clerk_hierarchy(60, 0.005))
    engine = subprocess.Popen([sys.executable, "-c", _CAPPED_ENGINE, str(store), str(hierarchy), str(lift)],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT), "FLIGHTDECK_TEST_JOURNAL": str(journal),
                                   "FLIGHTDECK_TRACES_MAX_PAGES": "40"})
    try:
        degraded = wait_until(lambda: [e["store"] for e in engines_json(store)
                                       if e["holds_lock"] and e["store"]["state"] == "degraded"], timeout=60,
                              what="`flightdeck engines` to show the store degraded")[0]
        assert "database or disk is full" in degraded["error"]
        # Held, not failed: give the engine time in which it could misbehave, then free the space.
        time.sleep(1.5)
        held_until = time.time()
        lift.touch()
    finally:
        out, err = finish(engine, timeout=120)
    assert engine.returncode == 0, err
    assert out.split() == ["completed"] * 4
    assert "Traceback" not in err
    assert "trace store degraded: " in err and "trace store recovered after" in err
    # No side effect ran while the store could not record it (from 1 s after it failed until space returned)...
    side_effects = read_journal(str(journal))
    assert len(side_effects) == 4 * 60
    assert not [ts for ts, _ in side_effects if degraded["since"] + 1.0 < ts < held_until]
    # ...and everything was stored in the end: every side effect's span, the degradation and the recovery.
    assert len(committed(store, "SELECT id FROM spans WHERE name = 'record' AND status = 'ok'")) == 4 * 60
    events = {row["kind"]: row["data"] for row in committed(
        store, "SELECT kind, data FROM events WHERE kind IN ('store.degraded', 'store.recovered')")}
    assert set(events) == {"store.degraded", "store.recovered"}
    assert events["store.recovered"]["degraded_s"] >= 1.5
    assert [e["store"]["state"] for e in engines_json(store) if e["holds_lock"]] == []  # stopped: lock released


def test_on_store_error_exit_stops_the_engine_with_exit_3_and_no_traceback(tmp_path: Path) -> None:
    engine, store, journal = start_engine(tmp_path, "--repeat", "50", "--concurrency", "2", "--on-store-error",
                                          "exit", steps=100, pause=0.005,
                                          env={"FLIGHTDECK_TRACES_MAX_PAGES": "40"})
    out, err = finish(engine, timeout=60)
    assert engine.returncode == 3, err
    assert "Traceback" not in err
    problems = [line for line in err.splitlines() if not line.startswith(("[", "running clerk"))]
    assert len(problems) == 1 and "database or disk is full" in problems[0], err
    # The engine stopped instead of running the other runs unrecorded: every side effect's start is stored.
    side_effects = read_journal(str(journal))
    assert 0 < len(side_effects) <= len(committed(store, "SELECT id FROM spans WHERE name = 'record'"))
    assert len(side_effects) < 50 * 100
    assert store_lock_free(store)


def _can_mount_tmpfs(tmp_path: Path) -> bool:
    probe = tmp_path / "probe"
    probe.mkdir()
    try:
        return subprocess.run(["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size=1m tmpfs {probe}"],
                              capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def test_a_full_file_system_with_on_store_error_exit(tmp_path: Path) -> None:
    """A real ENOSPC: the engine runs on a 3 MiB tmpfs (in a private mount namespace) that fills up."""
    if not _can_mount_tmpfs(tmp_path):
        pytest.skip("cannot mount a tmpfs here (needs unshare -m and CAP_SYS_ADMIN)")
    disk, saved, journal = tmp_path / "disk", tmp_path / "saved", tmp_path / "journal.txt"
    disk.mkdir()
    saved.mkdir()
    hierarchy = tmp_path / "clerk.yaml"
    hierarchy.write_text(clerk_hierarchy(200, 0.001))
    # The store lives and dies with the mount namespace: copy traces.db out before leaving it.
    script = (f"mount -t tmpfs -o size=3m tmpfs {disk} || exit 99; "
              f"{sys.executable} -m console.cli run {hierarchy} --store {disk}/store --repeat 300 --concurrency 4 "
              f"--on-store-error exit; code=$?; cp {disk}/store/traces.db* {saved}/; exit $code")
    engine = subprocess.Popen(["unshare", "-m", "sh", "-c", script], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT), "FLIGHTDECK_TEST_JOURNAL": str(journal)})
    _, err = finish(engine, timeout=120)
    assert engine.returncode == 3, err
    assert "Traceback" not in err
    assert "disk is full" in err.splitlines()[-1] and "--on-store-error is exit" in err.splitlines()[-1], err
    # Far from the 300 runs the engine was asked for, and no side effect the store does not know about.
    side_effects = read_journal(str(journal))
    starts = rows(saved / "traces.db", "SELECT count(*) FROM spans WHERE name = 'record'")[0][0]
    assert 0 < len(side_effects) <= starts
    assert len(side_effects) < 300 * 200


def test_starting_on_a_full_file_system_is_one_line_and_exit_3(tmp_path: Path) -> None:
    if not _can_mount_tmpfs(tmp_path):
        pytest.skip("cannot mount a tmpfs here (needs unshare -m and CAP_SYS_ADMIN)")
    disk = tmp_path / "disk"
    disk.mkdir()
    hierarchy = tmp_path / "clerk.yaml"
    hierarchy.write_text(clerk_hierarchy(3, 0.001))
    run = f"{sys.executable} -m console.cli run {hierarchy} --store {disk}/store"
    # A store used once, then the disk fills up (with something else), then an engine starts on it.
    script = (f"mount -t tmpfs -o size=3m tmpfs {disk} || exit 99; {run} >/dev/null 2>&1 || exit 98; "
              f"dd if=/dev/zero of={disk}/fill bs=64k 2>/dev/null; {run}")
    engine = subprocess.run(["unshare", "-m", "sh", "-c", script], cwd=ROOT, capture_output=True, text=True,
                            timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT),
                                              "FLIGHTDECK_TEST_JOURNAL": str(tmp_path / "journal.txt")})
    assert engine.returncode == 3, engine.stderr
    assert "Traceback" not in engine.stderr
    problems = [line for line in engine.stderr.splitlines() if not line.startswith("running clerk")]
    assert len(problems) == 1 and problems[0].startswith("flightdeck: cannot "), engine.stderr
