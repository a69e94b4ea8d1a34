"""Flightdeck engine: the headless runtime, trace store, guardrails, providers and runbook engine.

Kept import-light on purpose (`import engine` must stay well under 0.3 s): submodules are imported where used.
This package never imports `console`, `textual` or `rich`, and its packages import one way (the import-linter
contracts in pyproject.toml, docs/architecture.md); tests/engine/test_engine_isolation.py and
tests/engine/test_import_contracts.py prove it.
"""

__version__ = "0.1.0"
