#!/usr/bin/env python3
"""Flightdeck's engine on the shared peer workload (shared/bench-peers/harness.py): a supervisor, three workers,
14 model calls and 12 tool calls per run, zero-latency scripted model, EVERY span written to the SQLite store.

Run it through `python -m bench peers` (side by side with the bare loop and the peers) or alone:
    python bench/flightdeck_hierarchy.py --trace sqlite --runs 200 --concurrent 50 --reps 5
`--trace durable`: the same with `Engine(durable=True)` (every run a DBOS workflow in STORE/durable.db).
"""

import time

T0 = time.perf_counter()
import engine  # noqa: E402
from engine.runtime.engine import Engine, RunRequest  # noqa: E402
from engine.store import open_engine_store  # noqa: E402

IMPORT_S = time.perf_counter() - T0

import os  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

HERE = Path(__file__).resolve().parent
PEERS = Path(os.environ.get("FLIGHTDECK_BENCH_PEERS", HERE.parent.parent / "shared" / "bench-peers"))
sys.path.insert(0, str(PEERS))
sys.path.insert(0, str(HERE.parent))
import harness  # noqa: E402

from bench.peer_workload import HIERARCHY  # noqa: E402


def _disable_guardrails() -> None:
    """For `--trace noguards` only: budgets, breakers and withheld-tool checks become no-ops, so the difference to
    `--trace sqlite` is what the guardrails cost per model call. Never used outside this benchmark."""
    from engine.guardrails.breaker import CircuitBreaker
    from engine.guardrails.budget import BudgetLedger
    from engine.runtime.context import RunContext

    class _Permit:
        def on_success(self, duration_s: float) -> None: ...
        def on_error(self, duration_s: float, kind: str) -> None: ...
        def release(self) -> None: ...

    class _Held:
        ok = True

    permit, held = _Permit(), _Held()
    CircuitBreaker.try_acquire = lambda self: permit  # type: ignore[method-assign]
    BudgetLedger.reserve = lambda self, scope_id, demand: held  # type: ignore[method-assign,assignment]
    BudgetLedger.settle = lambda self, reservation, actual, labels=None: None  # type: ignore[method-assign]
    BudgetLedger.release = lambda self, reservation: None  # type: ignore[method-assign]
    BudgetLedger.check = lambda self, scope_id: None  # type: ignore[method-assign]
    BudgetLedger.step_output_cap = lambda self, scope_id, input_tokens=0: None  # type: ignore[method-assign]
    RunContext.withheld_tools = lambda self, agent: {}  # type: ignore[method-assign]


def build(trace_mode: str):
    from contextlib import AsyncExitStack

    if trace_mode == "noguards":
        _disable_guardrails()

    from engine.hierarchy.loader import load_hierarchy

    workdir = Path(tempfile.mkdtemp(prefix="fd_bench_"))
    path = workdir / "bench.yaml"
    path.write_text(HIERARCHY)
    hierarchy = load_hierarchy(path)
    store = open_engine_store(workdir / "store")
    stack = AsyncExitStack()
    state: dict[str, Engine] = {}

    async def run_once() -> str:
        eng = state.get("engine")
        if eng is None:
            eng = state["engine"] = await stack.enter_async_context(
                Engine(store, latency_scale=0.0, runbooks=False, durable=trace_mode == "durable"))
        result = await eng.run(hierarchy, RunRequest(input="do the thing"))
        harness.COUNTERS.model_calls += result.model_calls
        harness.COUNTERS.tool_calls += 3  # the three delegations count as tool calls in the shared workload
        # run, agents, llm, tools, handoffs
        harness.COUNTERS.spans += 1 + 4 + result.model_calls + result.tool_calls + 3
        if result.status != "completed":
            raise RuntimeError(f"run {result.run_id} ended {result.status}: {result.error}")
        return str(result.output)

    return run_once


if __name__ == "__main__":
    import sqlite3

    harness.main("flightdeck", {"flightdeck": engine.__version__, "sqlite": sqlite3.sqlite_version}, build,
                 ("sqlite", "noguards", "durable"), IMPORT_S,
                 notes="every span and event committed to traces.db by the engine's writer thread")
