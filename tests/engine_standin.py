"""A stand-in engine process for the terminate tests: it holds a store's lock and registers in control.db like an
engine, then sleeps until signalled (mode "ignore-term": ignoring SIGTERM, like a wedged engine; "no-lock": holding
nothing)."""

from __future__ import annotations

import select
import subprocess
import sys
from pathlib import Path

import pytest

ENGINE_STANDIN = r"""
import signal, sys
from pathlib import Path
from engine.store.control import ControlDB
from engine.store.lock import StoreLock

store, mode = Path(sys.argv[1]), sys.argv[2]
if mode == "ignore-term":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a wedged engine that no longer reacts to SIGTERM
lock = None
if mode != "no-lock":
    store.mkdir(parents=True, exist_ok=True)
    lock = StoreLock.acquire(store)
    db = ControlDB.open(store)
    print(db.register_engine(version="test"), flush=True)
    db.close()
else:
    print("ready", flush=True)
while True:
    signal.pause()
"""


def start_engine_standin(store_dir: Path, mode: str) -> tuple[subprocess.Popen[str], str]:
    """Start the stand-in; returns the process and its first line (its engine id, or "ready")."""
    proc = subprocess.Popen([sys.executable, "-c", ENGINE_STANDIN, str(store_dir), mode], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 60)  # bounded wait for the child's first line
    if not ready:
        proc.kill()
        proc.wait()
        pytest.fail("the stand-in engine did not start within 60 s")
    return proc, proc.stdout.readline().strip()
