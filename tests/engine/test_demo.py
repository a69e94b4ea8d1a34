"""The demo is the project's end-to-end test: the whole scenario, headless, in a real process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _demo(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "FLIGHTDECK_STORE"}
    return subprocess.run([sys.executable, "-m", "console.cli", "demo", *args], capture_output=True, text=True,
                           timeout=300, cwd=cwd, env={**env, "PYTHONPATH": str(ROOT)})


def test_headless_demo_fires_every_guardrail_and_control(tmp_path: Path) -> None:
    proc = _demo("--headless", "--speed", "10", "--store", str(tmp_path / "demo"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "all expected events happened" in proc.stdout
    passed = [line for line in proc.stdout.splitlines() if line.startswith("  ok   ")]
    for phrase in ("delegations three levels deep", "breaker opened and recovered through half-open",
                   "looping pricing worker caught", "escalated, then timed out", "fired the cost-spike runbook",
                   "capped the model tier", "on-call paged", "rolled back"):
        assert any(phrase in line for line in passed), (phrase, proc.stdout)


def test_demo_reset_starts_clean_and_never_deletes_a_foreign_directory(tmp_path: Path) -> None:
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_text("not a store")
    proc = _demo("--headless", "--reset", "--store", str(foreign))
    assert proc.returncode == 2 and "not a Flightdeck store" in proc.stderr
    assert (foreign / "holiday.jpg").exists()
