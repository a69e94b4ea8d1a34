"""The import contracts in pyproject.toml ([tool.importlinter]) hold: the engine never imports the console, textual or
rich, and its packages import one way (docs/architecture.md, Import layers). The same check `make check` runs; here
too because it is cheap (lint-imports reads the source, it imports nothing: well under a second)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_LINT = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"


def test_import_contracts_hold() -> None:
    proc = subprocess.run([sys.executable, "-c", _LINT, "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
