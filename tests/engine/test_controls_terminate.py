"""terminate_engine with real processes: SIGTERM is enough for a healthy process, SIGKILL ends one that ignores
SIGTERM, and nothing is ever signalled unless it is this store's lock holder and ours."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.controls.api import ControlAPI, ControlError
from engine.controls.terminate import check_terminable, process_alive, read_lock_holder, terminate_engine
from engine.errors import InputError
from tests.engine_standin import start_engine_standin


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_sigterm_is_enough_for_a_process_that_exits_on_it(store_dir: Path,
                                                          children: list[subprocess.Popen[str]]) -> None:
    proc, engine_id = start_engine_standin(store_dir, "normal")
    children.append(proc)
    result = terminate_engine(store_dir, proc.pid, "alice", "did not ack kill switch #1", grace_s=10)
    assert result.signals == ("SIGTERM",) and result.exited and result.engine_id == engine_id
    assert proc.wait(timeout=10) == -signal.SIGTERM
    assert result.waited_s < 10


def test_sigkill_ends_a_process_that_ignores_sigterm(store_dir: Path,
                                                     children: list[subprocess.Popen[str]]) -> None:
    proc, engine_id = start_engine_standin(store_dir, "ignore-term")
    children.append(proc)
    result = terminate_engine(store_dir, proc.pid, "alice", "event loop wedged", grace_s=0.3)
    assert result.signals == ("SIGTERM", "SIGKILL") and result.exited
    assert proc.wait(timeout=10) == -signal.SIGKILL
    assert result.waited_s >= 0.3
    with ControlAPI(store_dir, "checker") as api:
        row = api.audit_log()[0]
        assert (row.action, row.actor, row.target, row.reason) == \
            ("engine_terminate", "alice", f"engine:{engine_id}", "event loop wedged")
        assert row.before["pid"] == proc.pid
        assert row.after["signals"] == ["SIGTERM", "SIGKILL"] and row.after["exited"] is True
        (engine,) = api.engines()
        assert engine.stopped is not None and not engine.alive
        assert api.verify_audit().ok


def test_refuses_a_process_that_is_not_the_lock_holder(store_dir: Path,
                                                       children: list[subprocess.Popen[str]]) -> None:
    holder, _ = start_engine_standin(store_dir, "normal")
    bystander, _ = start_engine_standin(store_dir / "elsewhere", "no-lock")
    children.extend([holder, bystander])
    with pytest.raises(ControlError, match=f"pid {bystander.pid} is not the engine of store"):
        terminate_engine(store_dir, bystander.pid, "alice", "wrong pid")
    assert bystander.poll() is None and holder.poll() is None
    with ControlAPI(store_dir, "checker") as api:
        assert api.audit_log() == []


def test_refuses_a_reused_pid_that_does_not_hold_the_lock(store_dir: Path,
                                                          children: list[subprocess.Popen[str]]) -> None:
    # An engine killed with SIGKILL leaves its pid in engine.lock; the pid may now be some other process of ours.
    bystander, _ = start_engine_standin(store_dir / "elsewhere", "no-lock")
    children.append(bystander)
    store_dir.mkdir()
    ControlAPI(store_dir, "setup").close()
    (store_dir / "engine.lock").write_text(json.dumps({"pid": bystander.pid, "host": os.uname().nodename,
                                                       "user": "alice", "started": time.time()}))
    with pytest.raises(ControlError, match="does not hold .*engine.lock"):
        terminate_engine(store_dir, bystander.pid, "alice", "stale lock")
    assert bystander.poll() is None


@pytest.mark.skipif(os.getuid() != 0 or shutil.which("sleep") is None,
                    reason="needs root to start a process as another user")
def test_refuses_another_users_process(store_dir: Path) -> None:
    other = subprocess.Popen(["sleep", "60"], user=65534)
    try:
        store_dir.mkdir()
        ControlAPI(store_dir, "setup").close()
        (store_dir / "engine.lock").write_text(json.dumps({"pid": other.pid, "host": os.uname().nodename}))
        with pytest.raises(ControlError, match="belongs to another user"):
            check_terminable(store_dir, other.pid)
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_refuses_without_a_lock_holder_and_bad_arguments(store_dir: Path) -> None:
    store_dir.mkdir()
    ControlAPI(store_dir, "setup").close()
    assert read_lock_holder(store_dir) is None
    with pytest.raises(ControlError, match="names no engine"):
        terminate_engine(store_dir, 4_000_000, "alice", "x")
    with pytest.raises(ControlError, match="this process itself"):
        terminate_engine(store_dir, os.getpid(), "alice", "x")
    with pytest.raises(InputError):
        terminate_engine(store_dir, 1, "alice", "x")
    with pytest.raises(InputError):
        terminate_engine(store_dir, 12345, "alice", "  ")


def test_process_alive_treats_zombies_as_gone(children: list[subprocess.Popen[str]], tmp_path: Path) -> None:
    proc, _ = start_engine_standin(tmp_path / "s", "no-lock")
    children.append(proc)
    assert process_alive(proc.pid)
    proc.kill()
    deadline = time.monotonic() + 10
    while process_alive(proc.pid) and time.monotonic() < deadline:  # not reaped: it stays a zombie
        time.sleep(0.01)
    assert not process_alive(proc.pid)
    assert proc.poll() is not None
