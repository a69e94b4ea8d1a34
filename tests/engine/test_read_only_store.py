"""Read-only forensics: every read command, and the console with --read-only, works on a store whose files and
directory are read-only, and changes nothing on disk; a command that must write says the store is read-only.

Real subprocesses (`python -m console.cli ...`). Run as root, permission bits bind nobody, so the commands then run as
the unprivileged `nobody` user on a copy of the store outside pytest's private tmp directory."""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.controls.api import ControlAPI
from engine.runbooks.incidents import IncidentStore
from engine.store.control import ControlDB

WORKER = Path(__file__).parent.parent / "fixtures" / "hierarchies" / "worker.yaml"
ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _as_nobody(command: list[str]) -> list[str]:
    """`command` run as the unprivileged `nobody` when we are root (for whom mode bits bind nothing); as is otherwise.
    setpriv (util-linux) rather than Popen(user=...): it drops every capability along with the ids."""
    if os.getuid() != 0:
        return command
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: cannot drop to an unprivileged user")
    entry = pwd.getpwnam("nobody")
    return [setpriv, f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--clear-groups", *command]


def cli(store_dir: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "FLIGHTDECK_OPERATOR": "forensics", "PYTHONPATH": str(ROOT), "HOME": "/tmp"}
    environment.pop("FLIGHTDECK_STORE", None)
    proc = subprocess.run(_as_nobody([sys.executable, "-m", "console.cli", *args, "--store", str(store_dir)]),
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=timeout, env=environment,
                          cwd="/tmp")
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def _fingerprint(store: Path) -> dict[str, tuple[str, int]]:
    return {p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mode) for p in sorted(store.iterdir())}


@pytest.fixture(scope="module")
def read_only_store() -> Iterator[Path]:
    """A store with a run, controls, an approval, an incident and an anchored audit log, then made read-only."""
    base = Path(tempfile.mkdtemp(prefix="fd-ro-", dir="/tmp"))
    os.chmod(base, 0o755)  # traversable by `nobody`; the store inside is what is read-only
    store = base / "store"
    try:
        with ControlAPI(store, "alice") as api:
            api.set_flag("models.max_tier", "standard", reason="spend")
            api.set_kill("tool", "echo", "drain", "looks odd")
            api.override_breaker("tool:add", "reset", "clean slate")
            api.request_approval("r1", "s1", "worker", "add", {"a": 1}, "high", "why not", 600, "deny", "e1")
        incidents = IncidentStore(ControlDB.open(store))
        try:
            incidents.open_or_update(
                runbook="latency-spike", title="Latency spike", severity="sev3", apply_mode="suggest",
                scope="hierarchy:fixture-worker", readings=[], context={}, summary="p95 over 20 s", actor="engine:e1",
                engine_id="e1")
        finally:
            incidents.db.close()
        environment = {**os.environ, "FLIGHTDECK_OPERATOR": "alice"}
        run = subprocess.run([sys.executable, "-m", "console.cli", "run", str(WORKER), "--input",
                              json.dumps({"a": 2, "b": 3, "text": "hi"}), "--store", str(store)],
                             capture_output=True, text=True, timeout=120, env=environment)
        assert run.returncode == 0, run.stdout + run.stderr
        assert not (store / "traces.db-wal").exists()  # the engine closed cleanly: no side files to reuse
        for path in store.iterdir():
            path.chmod(0o444)
        store.chmod(0o555)
        yield store
    finally:
        store.chmod(0o700)
        shutil.rmtree(base)


READS: list[tuple[tuple[str, ...], str]] = [
    (("runs",), "fixture-worker"),
    (("usage",), "fixture-worker"),
    (("audit",), "flag_set"),
    (("audit", "verify"), "matches the engine's record"),
    (("kill", "--list"), "echo"),
    (("incidents",), "latency-spike"),
    (("approvals",), "add"),
    (("safe-mode", "list"), "models.max_tier"),
    (("breakers", "list"), "tool:add"),
    (("engines",), "stopped"),
]


def test_every_read_command_works_on_a_read_only_store(read_only_store: Path) -> None:
    before = _fingerprint(read_only_store)
    for args, expected in READS:
        proc = cli(read_only_store, *args)
        assert proc.returncode == 0 and expected in proc.stdout, (args, proc.stdout, proc.stderr)
    (run,) = json.loads(cli(read_only_store, "runs", "--json").stdout)
    trace = cli(read_only_store, "trace", run["id"])
    assert trace.returncode == 0 and "worker" in trace.stdout, trace.stderr
    incident = json.loads(cli(read_only_store, "incidents", "--json").stdout)[0]
    show = cli(read_only_store, "incident", "show", incident["id"])
    assert show.returncode == 0 and "Latency spike" in show.stdout, show.stderr
    assert _fingerprint(read_only_store) == before  # nothing written, nothing created, no mode changed


def test_a_command_that_writes_says_the_store_is_read_only(read_only_store: Path) -> None:
    before = _fingerprint(read_only_store)
    for args in (("safe-mode", "set", "approvals=all", "--reason", "x"),
                 ("kill", "--all", "--reason", "x", "--yes")):
        proc = cli(read_only_store, *args)
        assert proc.returncode == 3, (args, proc.stdout, proc.stderr)
        (line,) = proc.stderr.splitlines()
        assert "is read-only: this command changes the store and needs write access" in line, line
    assert _fingerprint(read_only_store) == before


CONSOLE = """
import asyncio, sys, time
from pathlib import Path
from console.app import create_app

async def main() -> None:
    app = create_app(Path(sys.argv[1]), operator="forensics", read_only=True, poll_interval=0.05)
    async with app.run_test(size=(160, 48)) as pilot:
        async def until(check, what):
            deadline = time.monotonic() + 20
            while not check():
                assert time.monotonic() < deadline, what
                await pilot.pause(0.02)
        runs = app.main.view("runs")
        await until(lambda: runs.table.total_count == 1, "runs")
        await until(lambda: app.main.header.snapshot is not None, "header")
        app.main.run_command(":audit")
        audit = app.main.view("audit")
        await until(lambda: audit.is_mounted and audit.verification is not None, "audit verification")
        print("runs", runs.table.total_count, "audit", audit.verification.ok, audit.verification.anchored_seq,
              "problem", app.notifier.store_problem)

asyncio.run(main())
"""


def test_console_read_only_works_on_a_read_only_store(read_only_store: Path) -> None:
    before = _fingerprint(read_only_store)
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "HOME": "/tmp", "TERM": "xterm-256color"}
    started = time.monotonic()
    proc = subprocess.run(_as_nobody([sys.executable, "-c", CONSOLE, str(read_only_store)]), capture_output=True,
                          text=True, timeout=120, env=environment, cwd="/tmp")
    assert proc.returncode == 0, proc.stdout + proc.stderr + f" after {time.monotonic() - started:.1f}s"
    assert proc.stdout.split() == ["runs", "1", "audit", "True", "5", "problem", "None"], proc.stdout
    assert _fingerprint(read_only_store) == before


def test_the_store_really_is_read_only_to_the_commands(read_only_store: Path) -> None:
    # Guards the tests above: were the store writable to them, they would prove nothing.
    assert not stat.S_IMODE(read_only_store.stat().st_mode) & 0o222
    probe = subprocess.run(_as_nobody([sys.executable, "-c", f"open({str(read_only_store / 'x')!r}, 'w')"]),
                           capture_output=True, text=True, timeout=60, cwd="/tmp")
    assert probe.returncode != 0 and "Permission denied" in probe.stderr


def test_a_wal_file_that_cannot_be_read_read_only_is_an_error_not_an_older_view(read_only_store: Path) -> None:
    base = Path(tempfile.mkdtemp(prefix="fd-ro-wal-", dir="/tmp"))
    os.chmod(base, 0o755)
    live, copy = base / "live", base / "copy"
    try:
        shutil.copytree(read_only_store, live)
        live.chmod(0o700)
        for path in live.iterdir():
            path.chmod(0o600)
        writer = sqlite3.connect(live / "traces.db", isolation_level=None)
        writer.execute("PRAGMA wal_autocheckpoint = 0")
        writer.execute("UPDATE runs SET error = 'changed after the copy was made'")  # lands in traces.db-wal only
        copy.mkdir()
        for name in ("traces.db", "traces.db-wal", "control.db"):  # a copy taken without the -shm file
            shutil.copy2(live / name, copy / name)
        writer.close()
        for path in copy.iterdir():
            path.chmod(0o444)
        copy.chmod(0o555)
        proc = cli(copy, "runs")
        assert proc.returncode == 3, proc.stdout + proc.stderr
        (line,) = proc.stderr.splitlines()
        assert "traces.db-wal holds commits not yet in traces.db" in line, line
    finally:
        if copy.exists():
            copy.chmod(0o700)
        shutil.rmtree(base)
