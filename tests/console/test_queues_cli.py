"""`flightdeck queues` as an operator runs it (real subprocesses, a real store whose queue rows were written through
the engine store's writer): the table and --json, pause / drain / open setting and clearing the flags (audited),
and the refusals (unknown queue or tenant, a draining tenant, no reason) as one line and exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.controls.api import ControlAPI
from tests.console.test_console_queues import QUEUES, SCHEDULES, write_queues

pytestmark = pytest.mark.slow


def cli(store: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FLIGHTDECK_OPERATOR": "alice", "TZ": "UTC"}
    env.pop("FLIGHTDECK_STORE", None)
    proc = subprocess.run([sys.executable, "-m", "console.cli", "queues", *args, "--store", str(store)],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60, env=env)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def live_store(store: Path, *, updated: float | None = None) -> Path:
    """Queue rows as a live engine publishes them: `updated` now, schedules relative to now."""
    now = time.time()
    offset = now - 1_800_000_000.0
    schedules = tuple((*s[:4], s[4] + offset, None if s[5] is None else s[5] + offset, s[6]) for s in SCHEDULES)
    write_queues(store, QUEUES, updated=now if updated is None else updated, schedules=schedules)
    return store


def test_list_shows_queues_deepest_first_with_tenants_and_schedules(store_dir: Path) -> None:
    proc = cli(live_store(store_dir))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:3] == ["QUEUE", "ADMISSION", "DEPTH"]
    names = [line.split()[0] if not line.startswith("  tenant") else line.split()[1] for line in lines[1:6]]
    assert names == ["deal-desk", "acme", "initech", "support-triage", "globex"]
    assert "430/500" in lines[1] and "BACKED UP: 86% of max depth 500" in lines[1]
    assert "4 · 10/1s · max 500" in lines[1]
    assert "as of" not in proc.stdout
    schedule_lines = [line for line in lines if line.startswith(("quarter-close", "nightly-digest"))]
    assert schedule_lines[0].startswith("quarter-close")
    assert "in 29s" in schedule_lines[0] or "in 30s" in schedule_lines[0]
    assert "in 4m" in schedule_lines[1] and "23h 55m ago" in schedule_lines[1]


def test_json_and_stale_rows(store_dir: Path) -> None:
    live_store(store_dir, updated=time.time() - 120)
    proc = cli(store_dir, "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert [(q["queue"], q["tenant"]) for q in data["queues"]][:2] == [("deal-desk", ""), ("deal-desk", "acme")]
    assert data["queues"][0]["backed_up"] == "86% of max depth 500" and data["queues"][0]["pending"] is None
    assert [s["name"] for s in data["schedules"]] == ["quarter-close", "nightly-digest"]
    assert (data["stale"], data["engine_alive"]) == (True, False)
    table = cli(store_dir)
    assert table.stdout.startswith("as of ") and "no engine is running" in table.stdout.splitlines()[0]


def test_empty_store_says_how_to_start_serve_mode(store_dir: Path) -> None:
    proc = cli(store_dir)
    assert proc.returncode == 3 and "no store at" in proc.stderr  # a typo in --store is not an empty store
    store_dir.mkdir()
    proc = cli(store_dir)
    assert proc.returncode == 0, proc.stderr
    assert "no queue published on this store: start serve mode with `flightdeck serve`" in proc.stdout


def test_pause_drain_open_set_and_clear_the_flags_audited(store_dir: Path) -> None:
    live_store(store_dir)
    assert cli(store_dir, "pause", "deal-desk", "--tenant", "acme", "--reason", "acme floods").returncode == 0
    proc = cli(store_dir, "drain", "deal-desk", "--reason", "deploy")
    assert proc.returncode == 0, proc.stderr
    assert "queue.deal-desk=draining set by alice" in proc.stdout
    listing = json.loads(cli(store_dir, "--json").stdout)
    assert listing["flags"] == {"tenant.acme": "paused", "queue.deal-desk": "draining"}
    assert listing["queues"][0]["pending"] == "draining"  # no engine applied it yet
    proc = cli(store_dir, "open", "deal-desk", "--reason", "deploy done")
    assert proc.returncode == 0, proc.stderr
    assert "queue.deal-desk=draining cleared by alice" in proc.stdout
    with ControlAPI(store_dir, "checker") as api:
        flags = {f.name: (f.value, f.operator, f.reason) for f in api.active_flags()}
        log = sorted((r.action, r.target, r.reason) for r in api.audit_log() if r.actor == "alice")
    assert flags == {"tenant.acme": ("paused", "alice", "acme floods")}
    assert log == [("flag_cleared", "queue.deal-desk@global", "deploy done"),
                   ("flag_set", "queue.deal-desk@global", "deploy"),
                   ("flag_set", "tenant.acme@global", "acme floods")]


def test_refusals_are_one_line_and_exit_2(store_dir: Path) -> None:
    live_store(store_dir)
    cases = [
        (("pause", "deal-dsk", "--reason", "x"), "QUEUE: unknown queue 'deal-dsk'; did you mean 'deal-desk'?"),
        (("pause", "deal-desk", "--tenant", "acmee", "--reason", "x"),
         "--tenant: no tenant 'acmee' on queue 'deal-desk'; did you mean 'acme'?"),
        (("drain", "deal-desk", "--tenant", "acme", "--reason", "x"), "--tenant: a tenant is paused or open"),
        (("pause", "deal-desk"), "--reason: is required"),
        (("pause", "--reason", "x"), "QUEUE: `queues pause` needs the queue"),
    ]
    for args, message in cases:
        proc = cli(store_dir, *args)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert message in proc.stderr, (args, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    with ControlAPI(store_dir, "checker") as api:
        assert api.active_flags() == [] and [r for r in api.audit_log() if r.actor == "alice"] == []
