"""Demo-speed copies of the shipped runbooks, written to STORE/runbooks/ (which overrides the shipped ones by id):
the same actions, with detection windows and rollback delays scaled to a three-minute scenario.

Until the runbook engine is available this installs nothing."""

from __future__ import annotations

from pathlib import Path


def install_demo_runbooks(store_dir: Path, speed: float) -> list[Path]:
    return []
