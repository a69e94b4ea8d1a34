"""`flightdeck demo --headless --speed 1` beside a busy core (issue 15), played in the background of the test run.

At speed 1 the scripted incident takes about three minutes of its own clock, and it is nearly all waiting: run in
the foreground it would add those minutes to every CI run. So when the test that checks it is collected, the demo
(and a process that keeps a core busy while it plays) starts as soon as collection ends, the test is moved to the
end of the run, and it waits there for the demo's exit. The rest of the suite is load beside it as well; the busy
process makes the load certain even when the test runs alone.

The busy process ends by itself when the demo is gone or after BUSY_LIMIT_S, so a killed pytest leaves no process
spinning; the session's end stops both either way."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEST_NAME = "test_headless_demo_at_speed_1_beside_a_busy_core"
DEMO_LIMIT_S = 420.0  # the scenario's clock ends at 180 s; a loaded CI machine gets more than twice that
BUSY_LIMIT_S = DEMO_LIMIT_S + 30

# Spins until the demo (its argv[1] pid) exits, the limit passes, or its parent (pytest) is gone.
BUSY = """
import os, sys, time
demo, parent, end = int(sys.argv[1]), os.getppid(), time.monotonic() + float(sys.argv[2])
n = 0
while time.monotonic() < end:
    n += 1
    if n % 200_000 == 0:
        try:
            os.kill(demo, 0)
        except OSError:
            break
        if os.getppid() != parent:
            break
"""


@dataclass
class BackgroundDemo:
    demo: subprocess.Popen[bytes]
    busy: subprocess.Popen[bytes]
    directory: Path
    started: float

    @property
    def output(self) -> Path:
        return self.directory / "demo.out"

    def wait(self) -> tuple[int, str]:
        """The demo's exit code and what it printed (stdout, then stderr)."""
        left = max(1.0, DEMO_LIMIT_S - (time.monotonic() - self.started))
        try:
            code = self.demo.wait(timeout=left)
        except subprocess.TimeoutExpired:
            self.stop()
            code = -1
        self.busy.kill()
        self.busy.wait()
        return code, self.output.read_text(errors="replace")

    def stop(self) -> None:
        for proc in (self.demo, self.busy):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


started: BackgroundDemo | None = None


def start() -> BackgroundDemo:
    global started
    directory = Path(tempfile.mkdtemp(prefix="flightdeck-speed1-"))
    env = {k: v for k, v in os.environ.items() if k != "FLIGHTDECK_STORE"}
    with (directory / "demo.out").open("wb") as out:
        demo = subprocess.Popen([sys.executable, "-m", "console.cli", "demo", "--headless", "--speed", "1",
                                 "--store", str(directory / "demo")], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT)})
    busy = subprocess.Popen([sys.executable, "-c", BUSY, str(demo.pid), str(BUSY_LIMIT_S)])
    started = BackgroundDemo(demo, busy, directory, time.monotonic())
    return started


def stop() -> None:
    if started is not None:
        started.stop()
