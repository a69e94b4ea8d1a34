"""Shared fixtures. Stores are real directories under pytest's tmp_path; nothing touches the network."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture(autouse=True)
def _no_ambient_store(monkeypatch: pytest.MonkeyPatch) -> None:
    # A developer's FLIGHTDECK_STORE must never leak into tests.
    monkeypatch.delenv("FLIGHTDECK_STORE", raising=False)
