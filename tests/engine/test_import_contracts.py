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


def test_no_test_module_imports_another_test_modules_private_names() -> None:
    # Shared test helpers live in plain modules under tests/ (engine_helpers, store_support, ...), not behind a
    # leading underscore in some other test file.
    import ast

    offenders = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and ".test_" in f".{node.module}":
                offenders += [f"{path.relative_to(ROOT)}: {node.module}.{alias.name}"
                              for alias in node.names if alias.name.startswith("_")]
    assert not offenders, offenders


def test_no_module_imports_another_modules_private_names() -> None:
    # A leading underscore means "this module's business": engine/ and console/ import each other's public names
    # only (a name needed elsewhere is made public where it lives, or moved to the module both use).
    import ast

    offenders = []
    for package in ("engine", "console"):
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                        and node.module.split(".")[0] in ("engine", "console"):
                    offenders += [f"{path.relative_to(ROOT)}: {node.module}.{alias.name}" for alias in node.names
                                  if alias.name.startswith("_") and not alias.name.startswith("__")]
    assert not offenders, offenders
