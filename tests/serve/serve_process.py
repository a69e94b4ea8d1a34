"""A real `flightdeck serve` subprocess on 127.0.0.1 port 0 for the end-to-end tests: a fleet of small test
hierarchies (tests/serve_tools.py: `charge` writes one ledger line per call, `wait_gate` holds a run until the
gate file exists), the URL read from its "serving on" line, httpx to drive it."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "e2e-token-0123456789"
HOOK_SECRET = "e2e-hook-secret"

QUICK = """
name: quick
entry: clerk
models:
  m: {model: m, tier: standard, price_in: 0.5, price_out: 1.5, latency: 0, latency_per_token: 0}
tools:
  charge: {function: "tests.serve_tools:charge", side_effects: true}
agents:
  clerk: {contract: Charges customers., model: m, tools: [charge], max_steps: 10}
scripts:
  clerk:
    - tool: {name: charge, args: {amount: 5}}
    - final: charged
"""

GATED = QUICK.replace("name: quick", "name: gated").replace(
    "  charge:", '  wait_gate: {function: "tests.serve_tools:wait_gate"}\n  charge:').replace(
    "tools: [charge]", "tools: [wait_gate, charge]").replace(
    "    - tool: {name: charge", "    - tool: {name: wait_gate, args: {}}\n    - tool: {name: charge")

TICKER = """
name: ticker
entry: clock
models:
  m: {model: m, tier: standard, price_in: 0.5, price_out: 1.5, latency: 0, latency_per_token: 0}
agents:
  clock: {contract: Says the time., model: m, max_steps: 3}
scripts:
  clock:
    - final: tick
"""

FLEET = """
hierarchies:
  - file: quick.yaml
    queue: {concurrency: 4}
  - file: gated.yaml
    queue: {concurrency: 1, max_depth: 2}
  - file: ticker.yaml
webhooks:
  - name: github
    hierarchy: quick
    secret_env: E2E_HOOK_SECRET
    event_id: {header: X-GitHub-Delivery}
    input: {request: "{{ $.issue.title }}", number: "{{ $.issue.number }}"}
  - name: unset
    hierarchy: quick
    secret_env: E2E_UNSET_SECRET
    event_id: {header: X-Id}
schedules:
  - name: tick
    hierarchy: ticker
    cron: "*/2 * * * * *"
"""

ENDED = {"completed", "failed", "budget_exceeded", "loop_detected", "killed", "cancelled", "refused",
         "needs_reconcile"}


class Serve:
    """One `flightdeck serve` on `workdir`/store, with its fleet files, gate and ledger in `workdir`."""

    def __init__(self, workdir: Path, *, fleet: str = FLEET, token: str | None = TOKEN,
                 extra_args: tuple[str, ...] = (), store: str | None = None,
                 environ: dict[str, str] | None = None) -> None:
        """`store`: a store to serve other than `workdir`/store (a postgresql:// URL); `environ`: added to the
        serve's environment (FLIGHTDECK_ENGINE_ID, ...)."""
        self.workdir = workdir
        self.store: Path | str = workdir / "store" if store is None else store
        self.environ = dict(environ or {})
        self.ledger = workdir / "ledger.jsonl"
        self.gate = workdir / "gate-open"
        for name, text in (("quick.yaml", QUICK), ("gated.yaml", GATED), ("ticker.yaml", TICKER),
                           ("fleet.yaml", fleet)):
            (workdir / name).write_text(text)
        self.token = token
        self.extra_args = extra_args
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.stderr_path = workdir / "serve-stderr.log"
        self.starts = 0

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if k not in ("FLIGHTDECK_STORE", "FLIGHTDECK_API_TOKEN", "E2E_UNSET_SECRET")}
        env.update({"FLIGHTDECK_TEST_LEDGER": str(self.ledger), "FLIGHTDECK_TEST_GATE": str(self.gate),
                    "E2E_HOOK_SECRET": HOOK_SECRET, "PYTHONUNBUFFERED": "1"})
        if self.token is not None:
            env["FLIGHTDECK_API_TOKEN"] = self.token
        env.update(self.environ)
        return env

    def start(self, timeout: float = 60.0) -> Serve:
        self.starts += 1
        stderr = open(self.stderr_path, "a", encoding="utf-8")  # noqa: SIM115 - the process owns it
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "console.cli", "serve", "--fleet", str(self.workdir / "fleet.yaml"), "--store",
             str(self.store), "--listen", "127.0.0.1:0", "--speed", "0", *self.extra_args],
            cwd=ROOT, env=self.env(), stdout=subprocess.PIPE, stderr=stderr, text=True)
        stderr.close()
        lines: queue.Queue[str] = queue.Queue()
        self.stdout_lines = lines
        stdout = self.proc.stdout
        assert stdout is not None
        threading.Thread(target=lambda: [lines.put(line) for line in stdout], daemon=True).start()
        try:
            line = lines.get(timeout=timeout)
        except queue.Empty:
            self.kill()
            raise AssertionError(f"serve did not print 'serving on': {self.stderr()}") from None
        assert line.startswith("serving on http://127.0.0.1:"), (line, self.stderr())
        self.url = line.split()[-1]
        return self

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8") if self.stderr_path.exists() else ""

    def client(self, token: str | None = None) -> httpx.Client:
        token = token or self.token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 60.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.kill()

    def open_gate(self) -> None:
        self.gate.write_text("open")

    def charges(self) -> list[dict[str, Any]]:
        if not self.ledger.exists():
            return []
        return [json.loads(line) for line in self.ledger.read_text().splitlines() if line.strip()]

    def charges_of(self, run_id: str) -> int:
        return sum(1 for line in self.charges() if str(line["idempotency_key"]).startswith(f"{run_id}:"))


def until(condition: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll condition() until truthy (checks every 50 ms; the work is in another process), failing after
    `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def run_state(client: httpx.Client, run_id: str) -> str | None:
    response = client.get(f"/runs/{run_id}")
    return response.json()["state"] if response.status_code == 200 else None


def ended(client: httpx.Client, run_id: str) -> str | None:
    state = run_state(client, run_id)
    return state if state in ENDED else None
