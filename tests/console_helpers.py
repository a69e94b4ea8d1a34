"""Stores for the console tests: real store files written through the engine's own writer.

- `fixed_store(dir)`: deterministic ids, timestamps and figures (for snapshots and exact assertions), written with
  TraceWriter and ControlDB exactly as the engine writes them, with a fixed clock (FIXED_NOW).
- `engine_store(dir, n)`: runs of the bundled deal-desk hierarchy by the real Engine (latency_scale=0).
- `wait_for(pilot, predicate)`: wait on a condition (pilot.pause() between checks) with a bounded deadline.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

FIXED_NOW = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC
ENGINE_ID = "e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0"

EVIL = "[bold red]x[/] [link=https://evil.example]click me[/link] [/] \x1b[31mred\x1b[0m ]]"


class FixedClock:
    """engine.clock.Clock for ControlDB: always FIXED_NOW - 1 (the engine's last heartbeat, 1 s before 'now')."""

    def __init__(self, now: float = FIXED_NOW - 1.0) -> None:
        self.now = now

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now


def fixed_clock() -> float:
    return FIXED_NOW


def span_id_of(run_id: str, n: int) -> str:
    return f"{run_id}-{n:02d}"


class _Writer:
    """Emits a run with spans through TraceWriter, with explicit times and ids."""

    def __init__(self, writer: Any, run_id: str) -> None:
        self.w = writer
        self.run_id = run_id
        self.counter = 0

    def span(self, parent: str | None, kind: str, agent: str | None, name: str, start: float, end: float | None,
             status: str = "ok", tokens: tuple[int, int] = (0, 0), cost: float = 0.0, model: str | None = None,
             attrs: dict[str, Any] | None = None, end_attrs: dict[str, Any] | None = None) -> str:
        self.counter += 1
        span_id = span_id_of(self.run_id, self.counter)
        self.w.span_started(span_id, self.run_id, parent, kind, agent, name, start, attrs or {})
        if end is not None:
            self.w.span_ended(span_id, self.run_id, status, end, tokens[0], tokens[1], cost, model, end_attrs)
        return span_id


def _open_writer(store_dir: Path, flush_interval: float = 3600.0) -> Any:
    """A TraceWriter on a (new) store. The default commits only on flush()/close() (or a full queue), so what a
    fixture writes between two flushes is one batch: the writer's coalescing (a span that starts and ends in one
    batch gets one span.ended event) then does not depend on timing, and the stored events are the same on
    every run."""
    from engine.store.engine_store import open_traces_db
    from engine.store.files import TRACES_DB, ensure_store_dir
    from engine.store.writer import TraceWriter

    ensure_store_dir(store_dir)
    conn = open_traces_db(store_dir / TRACES_DB)
    conn.close()
    return TraceWriter(store_dir / TRACES_DB, flush_interval=flush_interval)


def register_engine(store_dir: Path, *, heartbeat: float = FIXED_NOW - 1.0, stopped: bool = False) -> None:
    from engine.store.control import ControlDB

    control = ControlDB.open(store_dir, clock=FixedClock(heartbeat))  # type: ignore[arg-type]
    try:
        control.register_engine(version="test", pid=4242, host="ops-host", user="tester", started=FIXED_NOW - 3600,
                                 engine_id=ENGINE_ID)
        if stopped:
            control.mark_stopped(ENGINE_ID, heartbeat)
    finally:
        control.close()


def write_deal_run(writer: Any, run_id: str, *, started: float, status: str = "completed", tenant: str | None = "acme",
                   error: str | None = None, hierarchy: str = "deal-desk", text: str | None = None,
                   running: bool = False, attributes: dict[str, Any] | None = None,
                   engine_id: str = ENGINE_ID) -> None:
    """A deal-desk-shaped run: supervisor -> llm, route, delegation -> pricing -> llm, tool; then legal.
    `attributes` go into the run row's (a durable run that resumed: {"resumed": 2, "replayed_steps": 3})."""
    text = text if text is not None else "Quote 100 seats of platform for ACME-001"
    w = _Writer(writer, run_id)
    t = started
    writer.run_started(run_id, hierarchy, "hash-" + hierarchy, engine_id, "test", {"task": text, "seats": 100},
                       7, tenant, t, {"entry": "supervisor", **(attributes or {})})
    root = w.span(None, "run", None, hierarchy, t, None, attrs={"input": {"task": text}, "tenant": tenant})
    sup = w.span(root, "agent", "supervisor", "supervisor", t + 0.01, None,
                 attrs={"task": text, "context": {"account": "ACME-001", "seats": 100}})
    w.span(sup, "llm", "supervisor", "gpt-4o-mini", t + 0.02, t + 0.84, tokens=(1200, 180), cost=0.00031,
           model="gpt-4o-mini", attrs={"step": 0, "messages": 2, "tier": "standard", "input_tail": text},
           end_attrs={"content": "Route the pricing question to the pricing desk.", "tool_calls": [
               {"id": "c1", "name": "delegate_pricing", "arguments": {"task": "price it"}}],
               "finish_reason": "tool_calls", "latency_ms": 820.0, "cached": False})
    route = w.span(sup, "route", "triage", "triage", t + 0.85, t + 0.86,
                   attrs={"rule": "pricing-keywords", "to": "pricing", "matched": {"keyword": "seats"}})
    deleg = w.span(sup, "delegation", "supervisor", "supervisor -> pricing", t + 0.87, None,
                   attrs={"to": "pricing", "task": "price it", "context": {"seats": 100}})
    pricing = w.span(deleg, "agent", "pricing", "pricing", t + 0.88, None, attrs={"task": "price it"})
    w.span(pricing, "llm", "pricing", "gpt-4o", t + 0.89, t + 1.90, tokens=(2300, 410), cost=0.0112, model="gpt-4o",
           attrs={"step": 0, "messages": 2, "tier": "strong", "input_tail": "price it"},
           end_attrs={"content": "I will ask for a quote.", "tool_calls": [], "latency_ms": 1010.0})
    tool_failed = status in ("failed", "needs_reconcile")
    w.span(pricing, "tool", "pricing", "price_quote", t + 1.91, t + 2.31,
           status="outcome_unknown" if status == "needs_reconcile" else "error" if tool_failed else "ok",
           attrs={"args": {"product": "platform", "seats": 100}, "reason": "The buyer asked for 100 seats; I need "
                  "the list price before any discount.", "risk": "low", "side_effects": False},
           end_attrs=_unknown_outcome(run_id) if status == "needs_reconcile"
           else {"error": "upstream 503 from pricing-api", "error_kind": "tool_error"} if tool_failed
           else {"result": {"list_price": 42000, "currency": "USD"}})
    if running:
        writer.run_progress(run_id, 3500, 590, 0.01151, 2, 1, 2)
        return
    w.span(sup, "stage", "legal", "review", t + 2.32, t + 2.50, attrs={"after": []})
    end = t + 2.6
    agent_status = {"completed": "ok", "failed": "error", "budget_exceeded": "budget_exceeded",
                    "loop_detected": "loop_detected", "killed": "cancelled"}.get(status, "error")
    writer.span_ended(span_id_of(run_id, 6), run_id, agent_status, end - 0.05, 2300, 410, 0.0112, None,
                      {"output": None if error else {"price": 39900}, "error": error})
    writer.span_ended(span_id_of(run_id, 5), run_id, "ok" if not error else "error", end - 0.04, 0, 0, 0.0, None,
                      {"status": "ok" if not error else "error", "error": error})
    writer.span_ended(span_id_of(run_id, 2), run_id, agent_status, end - 0.02, 3500, 590, 0.01151, None,
                      {"output": None if error else {"decision": "proposal_sent"}, "error": error})
    writer.span_ended(span_id_of(run_id, 1), run_id, agent_status, end - 0.01, 3500, 590, 0.01151, None,
                      {"output": None if error else {"decision": "proposal_sent"}, "error": error})
    writer.run_progress(run_id, 3500, 590, 0.01151, 2, 1, 0)
    writer.run_ended(run_id, status, end, None if error else {"decision": "proposal_sent", "price": 39900}, error)


def _unknown_outcome(run_id: str) -> dict[str, Any]:
    """The end attributes the engine writes on a side effect it died during (engine/runtime/tool_call.py): what
    `flightdeck reconcile` and the approvals view's RECONCILE rows read."""
    key = f"{run_id}:pricing/price_quote#0"
    return {"error": RECONCILE_ERROR.replace("9f8e7d6c5b4a", run_id), "needs_reconcile": True,
            "idempotency_key": key, "call": "pricing/price_quote"}


# (id, minutes ago, status, tenant, error, hierarchy)
FIXED_RUNS: tuple[tuple[str, float, str, str | None, str | None, str], ...] = (
    ("c3d4e5f6a1b2", 0.2, "running", "initech", None, "support-triage"),
    ("b2c3d4e5f6a1", 1.0, "failed", "globex", "pricing: price_quote failed: upstream 503 from pricing-api",
     "deal-desk"),
    ("a1b2c3d4e5f6", 2.0, "completed", "acme", None, "deal-desk"),
    ("d4e5f6a1b2c3", 5.0, "budget_exceeded", "acme", "run budget of $0.01 exceeded", "deal-desk"),
    ("e5f6a1b2c3d4", 9.0, "loop_detected", None, "loop detected: price_quote called 3 times with the same "
     "arguments", "deal-desk"),
    ("f6a1b2c3d4e5", 15.0, "completed", "umbrella", None, "support-triage"),
    ("0a1b2c3d4e5f", 31.0, "completed", "acme", None, "deal-desk"),
    ("1b2c3d4e5f0a", 47.0, "killed", "globex", "killed by operator alice", "deal-desk"),
    ("2c3d4e5f0a1b", 75.0, "completed", "initech", None, "deal-desk"),
    ("3d4e5f0a1b2c", 190.0, "completed", "acme", None, "support-triage"),
)


def fixed_store(store_dir: Path, runs: tuple[tuple[str, float, str, str | None, str | None, str], ...] = FIXED_RUNS,
                *, text: str | None = None, engine: bool = True) -> Path:
    """A store with fixed content (see FIXED_RUNS); every id, time and figure is the same on every call."""
    writer = _open_writer(store_dir)
    try:
        for run_id, minutes_ago, status, tenant, error, hierarchy in reversed(runs):
            write_deal_run(writer, run_id, started=FIXED_NOW - minutes_ago * 60, status=status, tenant=tenant,
                           error=error, hierarchy=hierarchy, text=text, running=status == "running")
            writer.flush()  # one batch per run
    finally:
        writer.close()
    if engine:
        register_engine(store_dir)
    return store_dir


# Durable runs (flightdeck run --durable): (id, minutes ago, status, error, resumed, replayed_steps)
RECONCILE_ERROR = ("side effect 9f8e7d6c5b4a:pricing/price_quote#0 (price_quote) started but its outcome is unknown "
                   "(the engine died during it) and the tool is not declared idempotent: an operator must "
                   "reconcile it")
DURABLE_RUNS: tuple[tuple[str, float, str, str | None, int, int], ...] = (
    ("9f8e7d6c5b4a", 0.5, "needs_reconcile", RECONCILE_ERROR, 1, 2),
    ("8e7d6c5b4a9f", 3.0, "completed", None, 2, 3),
    ("7d6c5b4a9f8e", 4.0, "needs_reconcile", RECONCILE_ERROR.replace("9f8e7d6c5b4a", "7d6c5b4a9f8e"), 1, 1),
)


def durable_store(store_dir: Path) -> Path:
    """fixed_store plus durable runs: two waiting in needs_reconcile, one completed after resuming twice."""
    fixed_store(store_dir)
    write_durable_runs(store_dir)
    return store_dir


def write_durable_runs(store_dir: Path) -> None:
    """DURABLE_RUNS into an existing store."""
    writer = _open_writer(store_dir)
    try:
        for run_id, minutes_ago, status, error, resumed, replayed in reversed(DURABLE_RUNS):
            write_deal_run(writer, run_id, started=FIXED_NOW - minutes_ago * 60, status=status, tenant="acme",
                           error=error, attributes={"resumed": resumed, "replayed_steps": replayed, "durable": True})
            writer.flush()
    finally:
        writer.close()


def add_durable_run(store_dir: Path, run_id: str, *, minutes_ago: float, status: str,
                    error: str | None = None, attributes: dict[str, Any] | None = None) -> None:
    """One more durable run (run attributes `durable: true`, as `flightdeck run --durable` records, and any
    `attributes` given) in a store."""
    writer = _open_writer(store_dir)
    try:
        write_deal_run(writer, run_id, started=FIXED_NOW - minutes_ago * 60, status=status, error=error,
                       attributes={"durable": True, **(attributes or {})})
    finally:
        writer.close()


def evil_store(store_dir: Path) -> Path:
    """Untrusted text everywhere it can be: run input, tenant, hierarchy name, agent names, tool args and
    results, model output, errors, event names."""
    writer = _open_writer(store_dir)
    try:
        run_id = "badbadbadbad"
        t = FIXED_NOW - 60
        writer.run_started(run_id, f"h{EVIL}", None, ENGINE_ID, "test", {"task": EVIL}, 1, EVIL, t, None)
        w = _Writer(writer, run_id)
        root = w.span(None, "run", None, f"h{EVIL}", t, None, attrs={"input": EVIL})
        agent = w.span(root, "agent", EVIL, EVIL, t + 0.1, None, attrs={"task": EVIL, "context": {EVIL: EVIL}})
        w.span(agent, "llm", EVIL, EVIL, t + 0.2, t + 0.3, tokens=(10, 5), cost=0.001, model=EVIL,
               attrs={"input_tail": EVIL}, end_attrs={"content": EVIL, "tool_calls": [{"name": EVIL,
                                                                                      "arguments": {"x": EVIL}}]})
        w.span(agent, "tool", EVIL, EVIL, t + 0.4, t + 0.5, status="error", attrs={"args": {"q": EVIL, EVIL: 1},
                                                                                    "reason": EVIL},
               end_attrs={"error": EVIL, "result": EVIL})
        w.span(agent, "delegation", EVIL, EVIL, t + 0.6, t + 0.7, attrs={"to": EVIL, "task": EVIL})
        writer.event(run_id, None, "custom.event", EVIL, EVIL, {"note": EVIL}, t + 0.8)
        writer.run_progress(run_id, 10, 5, 0.001, 1, 1, 1)
        writer.run_ended(run_id, "failed", t + 1.0, EVIL, EVIL)
    finally:
        writer.close()
    register_engine(store_dir)
    return store_dir


def engine_store(store_dir: Path, runs: int = 6, *, concurrency: int = 3, tenant: str | None = None) -> list[Any]:
    """Run the bundled deal-desk hierarchy `runs` times with the real engine (no simulated latency)."""
    import anyio

    from engine.hierarchy.loader import load_hierarchy
    from engine.runtime.engine import Engine, RunRequest
    from engine.store import open_engine_store

    hierarchy = load_hierarchy("deal-desk")
    samples = [
        {"account": "ACME-001", "product": "platform", "seats": 100, "requested_discount_pct": 5},
        {"account": "GLOBEX-002", "product": "analytics", "seats": 40, "requested_discount_pct": 10},
    ]
    requests = [RunRequest(input=samples[i % len(samples)], seed=i, tenant=tenant) for i in range(runs)]

    async def go() -> list[Any]:
        with open_engine_store(store_dir) as store:
            async with Engine(store, latency_scale=0, runbooks=False) as eng:
                return await eng.run_many(hierarchy, requests, concurrency=concurrency)

    return anyio.run(go)


def event_count(store_dir: Path, run_id: str) -> int:
    from engine.store import open_reader

    reader = open_reader(store_dir)
    try:
        return len(reader.events_after(0, limit=1_000_000, run_id=run_id))
    finally:
        reader.close()


async def wait_for(pilot: Any, predicate: Callable[[], bool], *, timeout: float = 10.0, what: str = "") -> None:
    """Pause the pilot until `predicate()` is true; fail after `timeout` seconds (no fixed sleeps)."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        await pilot.pause(0.02)


SNAPSHOT_SIZES = [(160, 48), (100, 30)]


@pytest.fixture(autouse=True)
def utc() -> Iterator[None]:
    """Snapshot modules import this autouse fixture: clock times on screen are local time, so the zone is pinned
    to UTC while each snapshot test runs and the images match on every machine."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if before is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = before
    time.tzset()


# A failed deal-desk run recorded with call paths (as the engine records them), for retry-from-a-span (issue 13):
# supervisor -> pricing (price_quote, apply_discount: a side effect) -> proposal_writer (send_proposal: a side
# effect, which failed).
RETRY_RUN = "5e5e5e5e5e5e"


def retry_store(store_dir: Path, *, budget: dict[str, Any] | None = None) -> Path:
    """fixed_store (no engine registered) plus RETRY_RUN (started with `budget`: its --budget overrides). Its spans: span_id_of(RETRY_RUN, n), n = 1 run, 2 supervisor, 3 its first model
    call, 4 the delegation to pricing, 7 price_quote, 9 apply_discount, 12 the delegation to proposal_writer,
    15 send_proposal."""
    from engine.hierarchy.loader import load_hierarchy

    fixed_store(store_dir, engine=False)  # no engine: a retry may start
    writer = _open_writer(store_dir)
    try:
        w = _Writer(writer, RETRY_RUN)
        t = FIXED_NOW - 120.0
        source_hash = load_hierarchy("deal-desk").source_hash  # the bundled file has not changed since the run
        writer.run_started(RETRY_RUN, "deal-desk", source_hash, ENGINE_ID, "test", {"account": "ACME-001"}, 7,
                           "acme", t, {"entry": "supervisor", "durable": True, "paths": 2,  # today's engine: path format 2
                                       **({} if budget is None else {"budget": budget})})

        def model(parent: str, agent: str, path: str, at: float, cost: float) -> str:
            return w.span(parent, "llm", agent, "gpt-4o", at, at + 0.5, tokens=(900, 120), cost=cost,
                          model="gpt-4o", attrs={"path": path}, end_attrs={"content": "ok", "tool_calls": []})

        def tool(parent: str, agent: str, name: str, path: str, at: float, effects: bool, args: dict[str, Any],
                 status: str = "ok") -> str:
            return w.span(parent, "tool", agent, name, at, at + 0.2, status=status,
                          attrs={"path": path, "args": args, "side_effects": effects},
                          end_attrs={"error": "smtp 451: try again later"} if status == "error" else {"result": "ok"})

        root = w.span(None, "run", None, "deal-desk", t, t + 9.0, status="error")
        sup = w.span(root, "agent", "supervisor", "supervisor", t + 0.1, t + 8.9, status="error",
                     attrs={"path": "supervisor"})
        model(sup, "supervisor", "supervisor.0", t + 0.2, 0.004)
        deleg = w.span(sup, "delegation", "supervisor", "supervisor -> pricing", t + 0.8, t + 4.0,
                       attrs={"path": "supervisor.0.0", "to": "pricing"})
        pricing = w.span(deleg, "agent", "pricing", "pricing", t + 0.9, t + 3.9, attrs={"path": "supervisor.0.0>pricing"})
        model(pricing, "pricing", "supervisor.0.0>pricing.0", t + 1.0, 0.002)
        tool(pricing, "pricing", "price_quote", "supervisor.0.0>pricing.0.0", t + 1.6, False,
             {"product": "platform", "seats": 100})
        model(pricing, "pricing", "supervisor.0.0>pricing.1", t + 1.9, 0.002)
        tool(pricing, "pricing", "apply_discount", "supervisor.0.0>pricing.1.0", t + 2.5, True,
             {"account": "ACME-001", "pct": 5})
        model(pricing, "pricing", "supervisor.0.0>pricing.2", t + 2.8, 0.002)
        model(sup, "supervisor", "supervisor.1", t + 4.1, 0.004)
        deleg = w.span(sup, "delegation", "supervisor", "supervisor -> proposal_writer", t + 4.7, t + 8.8,
                       status="error", attrs={"path": "supervisor.1.0", "to": "proposal_writer"})
        writer_agent = w.span(deleg, "agent", "proposal_writer", "proposal_writer", t + 4.8, t + 8.7, status="error",
                              attrs={"path": "supervisor.1.0>proposal_writer"})
        model(writer_agent, "proposal_writer", "supervisor.1.0>proposal_writer.0", t + 4.9, 0.002)
        tool(writer_agent, "proposal_writer", "send_proposal", "supervisor.1.0>proposal_writer.0.0", t + 5.5, True,
             {"account": "ACME-001", "to": "buyer@acme.example"}, status="error")
        writer.run_progress(RETRY_RUN, 5400, 720, 0.016, 6, 3, 0)
        writer.run_ended(RETRY_RUN, "failed", t + 9.0, None, "proposal_writer: send_proposal failed: smtp 451")
    finally:
        writer.close()
    return store_dir
