"""Helpers to run hierarchies on a real store inside tests and read back what the engine recorded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio

from engine.hierarchy.loader import Hierarchy, load_hierarchy
from engine.runtime.engine import Engine, RunRequest
from engine.runtime.results import RunResult
from engine.store import open_engine_store, open_reader
from engine.store.control_rows import Approval
from engine.store.trace_rows import EventRow, RunRow, SpanRow

FIXTURES = Path(__file__).parent / "fixtures" / "hierarchies"


def fixture(name: str) -> Hierarchy:
    return load_hierarchy(FIXTURES / f"{name}.yaml")


def write_hierarchy(tmp_path: Path, text: str, name: str = "h.yaml") -> Hierarchy:
    path = tmp_path / name
    path.write_text(text)
    return load_hierarchy(path)


def run_sync(store_dir: Path, hierarchy: Hierarchy, *inputs: Any, latency_scale: float = 0.0,
             concurrency: int = 1, seed: int = 0) -> list[RunResult]:
    """Run each input once (concurrently up to `concurrency`) and return results in input order."""

    async def go() -> list[RunResult]:
        with open_engine_store(store_dir) as store:
            async with Engine(store, latency_scale=latency_scale, runbooks=False) as engine:
                results = await engine.run_many(hierarchy, [RunRequest(input=i, seed=seed + n)
                                                            for n, i in enumerate(inputs)], concurrency=concurrency)
        return results

    results = anyio.run(go)
    return results


def spans(store_dir: Path, run_id: str) -> list[SpanRow]:
    reader = open_reader(store_dir)
    try:
        return reader.spans(run_id)
    finally:
        reader.close()


def events(store_dir: Path, run_id: str | None = None, kinds: list[str] | None = None) -> list[EventRow]:
    reader = open_reader(store_dir)
    try:
        return reader.events_after(0, limit=100_000, run_id=run_id, kinds=kinds)
    finally:
        reader.close()


def get_run(store_dir: Path, run_id: str) -> RunRow:
    reader = open_reader(store_dir)
    try:
        run = reader.get_run(run_id)
        assert run is not None
        return run
    finally:
        reader.close()


def overlap(a: SpanRow, b: SpanRow) -> bool:
    assert a.ended is not None and b.ended is not None
    return a.started < b.ended and b.started < a.ended


class Approver:
    """A second operator, as a thread: decides every pending approval through the real control API.

    `policy(row) -> "approve" | "deny" | None` (None: leave it pending). Use as a context manager."""

    def __init__(self, store_dir: Path, policy: Any = None, operator: str = "test-operator") -> None:
        import threading

        self.store_dir = store_dir
        self.policy = policy or (lambda row: "approve")
        self.operator = operator
        self.decided: list[Approval] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Approver:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        from engine.controls.api import ControlAPI

        api = None
        while not self._stop.is_set():
            if api is None and (self.store_dir / "control.db").exists():
                api = ControlAPI(self.store_dir, self.operator)
            if api is not None:
                for row in api.pending_approvals():
                    verdict = self.policy(row)
                    if verdict == "approve":
                        self.decided.append(api.approve(row.id, "approved by the test operator"))
                    elif verdict == "deny":
                        self.decided.append(api.deny(row.id, "denied by the test operator"))
            self._stop.wait(0.02)  # an operator's reaction time, not a wait for the code under test
        if api is not None:
            api.close()
