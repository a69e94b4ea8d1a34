"""Durable engines on a Postgres store in subprocesses (issue 16): each on a store directory of its own (lock,
control.db) with its traces and DBOS's system tables in one Postgres database, running deal-desk runs whose side
effects the example tools write to a ledger file (engine/examples/ledger.py) that the tests read to count every
execution across processes.

`start(store_dir, url, mode, runs, ledger)` runs tests/store_pg/pg_durable_child.py: mode `run` runs `runs` runs
and prints `done [statuses]`; `resume` opens an engine (which takes over its directory's dead predecessors at once),
waits for what it took to end and prints `resumed [run ids]`; `standby` opens an engine that takes over engines
whose heartbeat stops (after STALE_AFTER_S), prints `ready <engine id>`, and on a line on its stdin waits for what
it took to end, prints `took <json>` and exits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg

from tests.store_support import REPO_ROOT

STALE_AFTER_S = 2.0  # the standby engines' takeover threshold (the default, 10 s, would only slow the tests)


def start(store_dir: Path, url: str, mode: str, runs: int, ledger: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "FLIGHTDECK_EXAMPLE_LEDGER": str(ledger), "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.Popen([sys.executable, "-m", "tests.store_pg.pg_durable_child", str(store_dir), url, mode,
                             str(runs), str(STALE_AFTER_S)], cwd=REPO_ROOT, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def ledger_lines(ledger: Path) -> list[dict[str, Any]]:
    if not ledger.exists():
        return []
    return [json.loads(line) for line in ledger.read_text().splitlines() if line.strip()]


def query(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return list(conn.execute(sql, params).fetchall())


def assert_each_side_effect_once(ledger: Path) -> None:
    lines = ledger_lines(ledger)
    executed = [line["idempotency_key"] for line in lines if not line.get("duplicate_suppressed")]
    assert executed, "no side effect ran"
    assert len(executed) == len(set(executed)), "a side effect ran twice"
    assert not [line for line in lines if line.get("duplicate_suppressed")], "a recorded side effect ran again"
