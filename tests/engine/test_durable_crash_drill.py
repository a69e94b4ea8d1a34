"""The crash drill (issue 13): a durable engine running deal-desk runs (approvals decided by a second operator) is
SIGKILLed at random points; the next engine resumes what it left in flight. Every interrupted run completes or
waits in needs_reconcile, no side effect happens twice (the tools' ledger file counts every execution across
processes), and no span committed before the kill is lost."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.engine_helpers import Approver
from tests.store_support import REPO_ROOT, store_lock_free, wait_until

_CHILD = """
import json, sys
import anyio
from engine.hierarchy.loader import load_hierarchy
from engine.runtime.engine import Engine, RunRequest
from engine.store import open_engine_store

store_dir, mode, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
hierarchy = load_hierarchy("deal-desk")
samples = json.loads((hierarchy.path.parent / "deals.json").read_text())
inputs = [samples[i % len(samples)] for i in range(runs)]

async def main():
    store = open_engine_store(store_dir)
    try:
        async with Engine(store, latency_scale=0.01, durable=True, auto_resume=mode != "no-resume") as engine:
            if mode == "run":
                results = await engine.run_many(hierarchy, [RunRequest(input=x, seed=i) for i, x in
                                                            enumerate(inputs)], concurrency=3)
                print("done", [r.status for r in results], flush=True)
            else:
                print("resumed", engine.durable.resumed, flush=True)
    finally:
        store.close()

anyio.run(main)
"""


def _start(store_dir: Path, mode: str, runs: int, ledger: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "FLIGHTDECK_EXAMPLE_LEDGER": str(ledger), "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.Popen([sys.executable, "-c", _CHILD, str(store_dir), mode, str(runs)], cwd=REPO_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _ledger_lines(ledger: Path) -> list[dict[str, object]]:
    if not ledger.exists():
        return []
    return [json.loads(line) for line in ledger.read_text().splitlines() if line.strip()]


def _query(store_dir: Path, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(f"file:{store_dir / 'traces.db'}?mode=ro", uri=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


@pytest.mark.slow
@pytest.mark.parametrize("trial", range(3))
def test_sigkilled_durable_engine_resumes_without_duplicate_side_effects(tmp_path: Path, trial: int) -> None:
    rng = random.Random(1300 + trial)
    store_dir, ledger = tmp_path / "store", tmp_path / "ledger.jsonl"
    kill_after = rng.randint(1, 5)  # side effects executed before the kill: the kill lands around the next ones
    with Approver(store_dir):
        child = _start(store_dir, "run", 4, ledger)
        try:
            wait_until(lambda: child.poll() is not None or len(_ledger_lines(ledger)) >= kill_after, timeout=120,
                       what=f"{kill_after} side effects")
            assert child.poll() is None, child.communicate()[1][-3000:]
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=30)
        finally:
            if child.poll() is None:
                child.kill()
        wait_until(lambda: store_lock_free(store_dir), timeout=30, what="the dead engine's writer to exit")
        committed = {row[0] for row in _query(store_dir, "SELECT id FROM spans")}
        interrupted = {row[0] for row in _query(store_dir, "SELECT id FROM runs WHERE status = 'running'")}

        again = _start(store_dir, "resume", 0, ledger)
        out, err = again.communicate(timeout=180)
        assert again.returncode == 0, err[-3000:]

    runs = dict(_query(store_dir, "SELECT id, status FROM runs"))
    assert interrupted, "the kill landed after every run had ended: nothing was interrupted"
    for run_id in interrupted:
        assert runs[run_id] in ("completed", "needs_reconcile"), (run_id, runs[run_id], err[-2000:])
    resumed = dict(_query(store_dir, "SELECT id, resumed FROM runs"))
    assert all(resumed[run_id] == 1 for run_id in interrupted if runs[run_id] == "completed")
    lines = _ledger_lines(ledger)
    executed = [line["idempotency_key"] for line in lines if not line.get("duplicate_suppressed")]
    assert len(executed) == len(set(executed)), "a side effect ran twice"
    assert not [line for line in lines if line.get("duplicate_suppressed")], "a recorded side effect ran again"
    after = {row[0] for row in _query(store_dir, "SELECT id FROM spans")}
    assert committed <= after, "a span committed before the kill is gone"


@pytest.mark.slow
def test_no_resume_leaves_interrupted_runs_abandoned(tmp_path: Path) -> None:
    store_dir, ledger = tmp_path / "store", tmp_path / "ledger.jsonl"
    with Approver(store_dir):
        child = _start(store_dir, "run", 3, ledger)
        try:
            wait_until(lambda: child.poll() is not None or len(_ledger_lines(ledger)) >= 1, timeout=120,
                       what="a side effect")
            assert child.poll() is None, child.communicate()[1][-3000:]
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=30)
        finally:
            if child.poll() is None:
                child.kill()
        wait_until(lambda: store_lock_free(store_dir), timeout=30, what="the dead engine's writer to exit")
        interrupted = {row[0] for row in _query(store_dir, "SELECT id FROM runs WHERE status = 'running'")}
        executed = len(_ledger_lines(ledger))
        again = _start(store_dir, "no-resume", 0, ledger)
        out, err = again.communicate(timeout=120)
        assert again.returncode == 0, err[-3000:]
    assert interrupted
    assert "resumed []" in out
    runs = dict(_query(store_dir, "SELECT id, status FROM runs"))
    assert all(runs[run_id] == "abandoned" for run_id in interrupted)
    assert len(_ledger_lines(ledger)) == executed  # nothing ran again
