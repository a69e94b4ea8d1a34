"""Durable-run scenarios shared by the engine and CLI tests: a hierarchy whose side effect (tests/durable_tools.py)
can crash its engine mid-call, and the steps that leave a run in needs_reconcile (a real SIGKILLed subprocess, then a
durable engine that resumes it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio

from engine.hierarchy.loader import load_hierarchy
from engine.runtime.engine import Engine, RunRequest
from engine.store import open_engine_store
from engine.store.location import PostgresLocation, StoreDirectory, StoreLocation, parse_store_location
from tests.fakes.openai_server import Behaviour, RecordedRequest, call, text, tool_calls
from tests.store_support import REPO_ROOT, store_lock_free, wait_until

CHARGING = """
name: charging
entry: clerk
models:
  m: {model: m, tier: standard, price_in: 0.5, price_out: 1.5, latency: 0, latency_per_token: 0}
tools:
  charge: {function: "tests.durable_tools:charge", side_effects: true}
agents:
  clerk: {contract: Charges customers., model: m, tools: [charge], max_steps: 10}
scripts:
  clerk:
    - tool: {name: charge, args: {amount: 5}}
    - tool: {name: charge, args: {amount: 7}}
    - final: charged twice
"""


# One agent in two stages (call paths, tests/engine/test_call_paths.py): the first charges the run input's amount and hands on {amount: 7}; the second charges
# that. The charge is a side effect (tests/durable_tools.py: a ledger line with its idempotency key).
TWICE = """
name: twice
entry: flow
models:
  m: {model: m, tier: standard, price_in: 0.5, price_out: 1.5, latency: 0, latency_per_token: 0}
tools:
  charge: {function: "tests.durable_tools:charge", side_effects: true, idempotent: true}
agents:
  flow:
    kind: pipeline
    contract: Charges a customer in two stages.
    stages:
      - {name: first, agent: clerk}
      - {name: second, agent: clerk}
  clerk:
    contract: Charges customers.
    model: m
    tools: [charge]
    max_steps: 5
    output: {amount: integer}
scripts:
  clerk:
    - tool: {name: charge, args: {amount: "{input.amount}"}}
    - final: {amount: 7}
"""


# One side effect that needs an operator's approval (deadline and policy filled in per test), then a final answer.
APPROVING = """
name: approving
entry: clerk
models:
  m: {model: m, tier: standard, price_in: 0.5, price_out: 1.5, latency: 0, latency_per_token: 0}
tools:
  charge:
    function: "tests.durable_tools:charge"
    side_effects: true
    approval: {required: always, deadline: DEADLINE, on_timeout: ON_TIMEOUT}
agents:
  clerk: {contract: Charges customers., model: m, tools: [charge], max_steps: 10}
scripts:
  clerk:
    - tool: {name: charge, args: {amount: 5}}
    - final: charged
"""


def flightdeck(*args: str, env: dict[str, str] | None = None, timeout: float = 120
               ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "console.cli", *args], capture_output=True, text=True,
                          cwd=REPO_ROOT, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})})


class Charging:
    """One store, ledger and hierarchy file for a test (in tmp_path). `pg_url`: the traces and DBOS's tables go to
    that Postgres database (issue 16; the lock and control.db stay in the store directory), and the engine processes
    are tests/durable_child.py, since `flightdeck run` takes no Postgres store yet."""

    def __init__(self, tmp_path: Path, hierarchy: str = CHARGING, pg_url: str | None = None) -> None:
        self.store = tmp_path / "store"
        self.pg_url = pg_url
        self.ledger = tmp_path / "ledger.jsonl"
        self.marker = tmp_path / "crashed"
        self.path = tmp_path / "charging.yaml"
        self.path.write_text(hierarchy)
        self.env = {"FLIGHTDECK_TEST_LEDGER": str(self.ledger)}

    def lines(self) -> list[dict[str, Any]]:
        if not self.ledger.exists():
            return []
        return [json.loads(line) for line in self.ledger.read_text().splitlines() if line.strip()]

    @property
    def traces_to(self) -> PostgresLocation | None:
        if self.pg_url is None:
            return None
        location = parse_store_location(self.pg_url)
        assert isinstance(location, PostgresLocation)
        return location

    @property
    def trace_location(self) -> StoreLocation:
        """Where the runs' rows and spans are: the store directory, or the Postgres database."""
        return self.traces_to or StoreDirectory(self.store)

    @property
    def store_arg(self) -> str:
        """What `--store` takes to read the traces (`runs`, `trace`)."""
        return self.pg_url or str(self.store)

    def run(self, *extra: str, crash: bool = False) -> subprocess.CompletedProcess[str]:
        """`flightdeck run charging.yaml --durable` in a subprocess (with crash: it dies in its first charge); on
        Postgres, tests/durable_child.py with `--input TEXT` the only extra it takes."""
        env = {**self.env, **({"FLIGHTDECK_TEST_CRASH_MARKER": str(self.marker)} if crash else {})}
        if self.pg_url is not None:
            assert len(extra) in (0, 2) and extra[:1] in ((), ("--input",)), extra
            done = subprocess.run([sys.executable, "-m", "tests.durable_child", str(self.store), self.pg_url,
                                   str(self.path), extra[1] if extra else ""], capture_output=True, text=True,
                                  cwd=REPO_ROOT, timeout=120,
                                  env={**os.environ, "PYTHONPATH": str(REPO_ROOT), **env})
        else:
            done = flightdeck("run", str(self.path), "--durable", "--speed", "0", "--store", str(self.store), *extra,
                              env=env)
        wait_until(lambda: store_lock_free(self.store), timeout=30, what="the engine's writer to exit")
        return done

    def start(self) -> subprocess.Popen[str]:
        """`flightdeck run charging.yaml --durable` in a subprocess the test kills (kill_engine) when it likes."""
        with open(self.store.parent / "engine.log", "a", encoding="utf-8") as log:  # read when a test fails
            return subprocess.Popen([sys.executable, "-m", "console.cli", "run", str(self.path), "--durable",
                                     "--speed", "0", "--store", str(self.store)], cwd=REPO_ROOT, text=True,
                                    stdout=log, stderr=log, env={**os.environ, "PYTHONPATH": str(REPO_ROOT),
                                                                 **self.env})

    def kill_engine(self, child: subprocess.Popen[str]) -> None:
        """SIGKILL the engine, then wait until its trace writer committed what it had and let go of the store."""
        child.kill()
        child.wait(timeout=30)
        assert child.returncode == -9, child.returncode
        wait_until(lambda: store_lock_free(self.store), timeout=30, what="the engine's writer to exit")

    def restart(self, *, auto_resume: bool = True) -> list[str]:
        """A durable engine starting on the store (in this process), until the runs it resumed have ended."""
        os.environ["FLIGHTDECK_TEST_LEDGER"] = str(self.ledger)

        async def go() -> list[str]:
            with open_engine_store(self.store, traces_to=self.traces_to) as store:
                async with Engine(store, latency_scale=0.0, runbooks=False, durable=True,
                                  auto_resume=auto_resume) as engine:
                    assert engine.durable is not None
                    await engine.durable.wait_resumed()
                    return list(engine.durable.resumed)

        return anyio.run(go)

    def needs_reconcile(self) -> str:
        """A run whose first charge's outcome is unknown: its engine was SIGKILLed during it, and the next durable
        engine stopped it needs_reconcile. Returns the run id."""
        crashed = self.run(crash=True)
        assert crashed.returncode == -9, crashed.stderr[-2000:]
        resumed = self.restart()
        assert len(resumed) == 1, resumed
        return resumed[0]


# The `replaying` hierarchy (replay on resume and retry, issue 13): a model on a real OpenAI-compatible server on
# 127.0.0.1 (tests/fakes/openai_server.py, which counts requests), asking for
# lookup (pure) -> charge (side effect, idempotent: the crash lands in it) -> lookup -> final answer.
STEPS = [("lookup", {"id": 1}), ("charge", {"amount": 5}), ("lookup", {"id": 2})]


def replaying_text(base_url: str) -> str:
    return f"""
name: replaying
entry: clerk
models:
  gpt: {{provider: openai, model: gpt-test, base_url: "{base_url}", price_in: 2.0, price_out: 8.0, timeout: 10s}}
tools:
  lookup: {{function: "tests.durable_tools:lookup"}}
  charge: {{function: "tests.durable_tools:charge", side_effects: true, idempotent: true}}
agents:
  clerk: {{contract: Looks customers up and charges them., model: gpt, tools: [lookup, charge], max_steps: 10}}
"""


def script(request: RecordedRequest) -> Behaviour:
    """The answer for a step is chosen by how many tool results the conversation holds: stateless, so the same
    conversation gets the same answer from any process."""
    done = sum(1 for m in request.messages if isinstance(m, dict) and m.get("role") == "tool")
    if done < len(STEPS):
        name, args = STEPS[done]
        return tool_calls(call(name, args, id=f"call_{done}"), prompt_tokens=100 + 10 * done, completion_tokens=20)
    return text("charged and looked up", prompt_tokens=200, completion_tokens=30)


def steps_asked(requests: list[RecordedRequest]) -> list[int]:
    return [sum(1 for m in r.messages if isinstance(m, dict) and m.get("role") == "tool") for r in requests]


def run_once(store: Path, path: Path, ledger: Path, traces_to: PostgresLocation | None = None) -> Any:
    """A durable run of the hierarchy that never crashes, in this process."""
    os.environ["FLIGHTDECK_TEST_LEDGER"] = str(ledger)

    async def go() -> Any:
        with open_engine_store(store, traces_to=traces_to) as engine_store:
            async with Engine(engine_store, latency_scale=0.0, runbooks=False, durable=True) as engine:
                return await engine.run(load_hierarchy(str(path)), RunRequest(input="charge customer 1"))

    return anyio.run(go)


def hierarchy_of(charging: Charging) -> Any:
    return load_hierarchy(str(charging.path))
