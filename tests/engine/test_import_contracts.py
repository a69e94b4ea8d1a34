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


def test_psycopg_and_dbos_are_confined_to_their_packages_by_a_contract() -> None:
    # The contracts `test_import_contracts_hold` runs: psycopg only in engine/store/pg/, DBOS only in engine/durable/,
    # checked over the engine and the console alike (tests and bench may import either).
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]
    assert {"engine", "console"} <= set(config["root_packages"])
    forbidden = {tuple(c["forbidden_modules"]): c for c in config["contracts"] if c["type"] == "forbidden"}
    # The one module outside its package allowed psycopg: the eval results on Postgres (pyproject.toml says why).
    exceptions = {"psycopg": ["engine.scoring.results_pg -> psycopg"], "dbos": []}
    for module, home in (("psycopg", "engine.store.pg"), ("dbos", "engine.durable")):
        contract = forbidden[(module,)]
        assert set(contract["source_modules"]) == {"engine", "console"}
        assert contract["ignore_imports"] == [f"{home}.** -> {module}", *exceptions[module]]


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
