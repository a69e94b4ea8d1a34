"""The demo is the project's end-to-end test: the whole scenario, headless, in a real process."""

from __future__ import annotations

import faulthandler
import os
import select
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.store_support import read_until, store_lock_free, wait_until

ROOT = Path(__file__).resolve().parents[2]


def _demo(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "FLIGHTDECK_STORE"}
    return subprocess.run([sys.executable, "-m", "console.cli", "demo", *args], capture_output=True, text=True,
                           timeout=300, cwd=cwd, env={**env, "PYTHONPATH": str(ROOT)})


EVERY_BEAT = ("delegations three levels deep", "breaker opened and recovered through half-open",
              "looping pricing worker caught", "escalated, then timed out", "fired the cost-spike runbook",
              "capped the model tier", "on-call paged", "rolled back")


def _assert_every_beat(code: int, output: str) -> None:
    assert code == 0, output
    assert "all expected events happened" in output
    passed = [line for line in output.splitlines() if line.startswith("  ok   ")]
    for phrase in EVERY_BEAT:
        assert any(phrase in line for line in passed), (phrase, output)


def test_headless_demo_fires_every_guardrail_and_control(tmp_path: Path) -> None:
    """At --speed 20, beside a process that keeps a core busy (issue 15: the spend spike once never fired on a loaded
    machine): the scenario is driven by engine events and its own clock, so every beat still happens."""
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        proc = _demo("--headless", "--speed", "20", "--store", str(tmp_path / "demo"))
    finally:
        busy.kill()
        busy.wait()
    _assert_every_beat(proc.returncode, proc.stdout + proc.stderr)


def test_headless_demo_at_speed_1_beside_a_busy_core() -> None:
    """At --speed 1 (the scripted latency uncompressed, three minutes of scenario), beside a busy core and the rest of
    the test run: every beat happens. It started when collection ended and plays while the suite runs; this test
    runs last and waits for it (tests/background_demo.py)."""
    from tests import background_demo

    assert background_demo.started is not None, "collection did not start the background demo"
    # Run alone, this test waits out the whole scenario, longer than the suite's faulthandler_timeout (which is for
    # hangs): its own limit is background_demo.DEMO_LIMIT_S, so the stack dump timer is set past it.
    faulthandler.dump_traceback_later(background_demo.DEMO_LIMIT_S + 60, exit=False)
    code, output = background_demo.started.wait()
    assert "speed 1" in output.splitlines()[0], output
    _assert_every_beat(code, output)


def test_the_spike_answers_fit_their_model_deadline_at_speed_1() -> None:
    """At --speed 1 the scripted latency is not compressed but the model call deadline is wall time either way: a
    spike answer that outlasts it times out unbilled, and the cost-spike runbook never fires (seen: every spike call
    of a `demo --headless --speed 1` timed out at 60.0 s with $0 spent)."""
    from engine.demo.variants import SPIKE_OUTPUT_TOKENS, spike
    from engine.hierarchy.loader import load_hierarchy

    spiked = spike(load_hierarchy("deal-desk"))
    for name, model in spiked.spec.models.items():
        slowest = model.latency + SPIKE_OUTPUT_TOKENS * model.latency_per_token
        assert model.timeout > 1.5 * slowest, (name, model.timeout, slowest)


def test_demo_reset_starts_clean_and_never_deletes_a_foreign_directory(tmp_path: Path) -> None:
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_text("not a store")
    proc = _demo("--headless", "--reset", "--store", str(foreign))
    assert proc.returncode == 2 and "not a Flightdeck store" in proc.stderr
    assert (foreign / "holiday.jpg").exists()


def _start_demo(store: Path, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "FLIGHTDECK_STORE"}
    return subprocess.Popen([sys.executable, "-m", "console.cli", "demo", "--headless", "--store", str(store), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env={**env, "PYTHONPATH": str(ROOT)})


def _statuses(store: Path) -> list[str]:
    db = store / "traces.db"
    if not db.exists():
        return []
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return [row[0] for row in conn.execute("SELECT status FROM runs")]
    except sqlite3.Error:  # the schema is not there yet
        return []
    finally:
        conn.close()


@pytest.mark.parametrize("second_signal", [False, True])
def test_the_demo_stops_on_sigterm_recording_every_run(tmp_path: Path, second_signal: bool) -> None:
    """Like `flightdeck run`: stop admitting, let runs in flight finish for --grace, then kill what is left; every
    run ends with a recorded status, the lock is released, exit code 143; a second signal kills at once."""
    store = tmp_path / "demo"
    proc = _start_demo(store, "--speed", "2", "--grace", "1s" if not second_signal else "10m")
    try:
        wait_until(lambda: "running" in _statuses(store), timeout=60, what="a demo run in flight")
        proc.send_signal(signal.SIGTERM)
        seen = read_until(proc, "flightdeck: SIGTERM: admitting no new runs")
        if second_signal:  # a grace of ten minutes: only the second signal can end it within the timeout
            proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        err = seen + err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, out + err
    assert "Traceback" not in err
    assert "stopped on SIGTERM" in out
    statuses = _statuses(store)
    assert statuses and "running" not in statuses, statuses
    assert store_lock_free(store)


def _demo_in_pty(store: Path) -> tuple[subprocess.Popen[bytes], int]:
    """The interactive demo (console included) on a real pseudo-terminal: the process and the terminal's master end."""
    master, slave = os.openpty()
    env = {k: v for k, v in os.environ.items() if k != "FLIGHTDECK_STORE"}
    env.update(TERM="xterm-256color", PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "console.cli", "demo", "--store", str(store), "--speed", "2",
                             "--grace", "1s"], stdin=slave, stdout=slave, stderr=slave, cwd=ROOT, env=env,
                            start_new_session=True)
    os.close(slave)
    return proc, master


def test_the_demo_with_its_console_stops_on_sigterm_too(tmp_path: Path) -> None:
    """The interactive demo (console in a real pseudo-terminal, engine on its own thread): SIGTERM reaches the
    engine, the runs in flight get --grace, every run's end is recorded, the console closes, exit code 143."""
    store = tmp_path / "demo"
    proc, master = _demo_in_pty(store)
    screen = bytearray()

    def drain_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
        """Keep reading the console's output (it must never block on a full terminal) until `condition`."""
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            if select.select([master], [], [], 0.05)[0]:
                try:
                    screen.extend(os.read(master, 65536))
                except OSError:  # the terminal's other end closed: the process is exiting
                    pass

    try:
        drain_until(lambda: "running" in _statuses(store) or proc.poll() is not None, 60, "a demo run in flight")
        assert proc.poll() is None, screen[-2000:].decode("utf-8", "replace")
        proc.send_signal(signal.SIGTERM)
        drain_until(lambda: proc.poll() is not None, 60, "the demo to exit")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    assert proc.returncode == 143, screen[-2000:].decode("utf-8", "replace")
    statuses = _statuses(store)
    assert statuses and "running" not in statuses, statuses
    assert store_lock_free(store)


def test_the_demo_stops_on_sigterm_when_its_terminal_stopped_reading(tmp_path: Path) -> None:
    """A dropped ssh session or a frozen tmux client: the terminal stops reading, Textual's output blocks, and the
    UI's thread with it. Before: the engine's thread waited on the UI for every hint (app.call_from_thread), so
    SIGTERM stopped nothing; the runs stayed `running` and the process held the store's lock for ever. Now the
    engine stops its runs, records them, and the process exits 143 with the lock free."""
    import fcntl
    import struct
    import termios

    store = tmp_path / "demo"
    proc, master = _demo_in_pty(store)

    def unread() -> int:  # bytes the console wrote that nobody read
        return int(struct.unpack("i", fcntl.ioctl(master, termios.FIONREAD, b"\0\0\0\0"))[0])

    try:
        # Never read: once the terminal's buffer is full (4 KiB here) every write of the console blocks.
        wait_until(lambda: unread() >= 4095 or proc.poll() is not None, timeout=60)
        wait_until(lambda: "running" in _statuses(store) or proc.poll() is not None, timeout=60)
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 143
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    statuses = _statuses(store)
    assert statuses and "running" not in statuses, statuses
    assert store_lock_free(store)
