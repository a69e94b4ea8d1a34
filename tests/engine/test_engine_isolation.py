"""The engine is headless: importing it, and running a hierarchy with it, never pulls in the UI stack."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PROBE = r"""
import sys
import anyio
import engine
from engine.hierarchy.loader import load_hierarchy
from engine.runtime.engine import Engine, RunRequest
from engine.store import open_engine_store

async def main():
    hierarchy = load_hierarchy("deal-desk")
    with open_engine_store(sys.argv[1]) as store:
        async with Engine(store, latency_scale=0) as eng:
            result = await eng.run(hierarchy, RunRequest(input={"account": "ACME-001", "product": "platform",
                                                                "seats": 100, "requested_discount_pct": 5}))
    assert result.model_calls > 0, result

anyio.run(main)
leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("textual", "rich", "console"))
print("LEAKED:" + ",".join(leaked))
"""


def test_engine_never_imports_ui(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path / "store")], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "LEAKED:\n" in proc.stdout or proc.stdout.strip() == "LEAKED:", proc.stdout


def test_engine_sources_do_not_import_ui() -> None:
    # A static check catches imports in modules the probe above does not happen to load.
    root = Path(__file__).resolve().parents[2] / "engine"
    offenders = []
    for path in root.rglob("*.py"):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            stripped = line.strip()
            if stripped.startswith(("import ", "from ")) and any(
                    f" {name}" in stripped.split(" import ")[0] + " " and
                    stripped.split()[1].split(".")[0] == name for name in ("textual", "rich", "console")):
                offenders.append(f"{path.relative_to(root.parent)}:{number}: {stripped}")
    assert offenders == []
