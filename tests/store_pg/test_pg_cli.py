"""`flightdeck runs`, `trace` and `usage` on a Postgres store print exactly what they print for the same rows in a
store directory; commands not served on Postgres yet refuse a Postgres URL plainly (exit 2, which command, which
issue) and no message ever shows the URL's password. Real subprocesses, a real PostgreSQL on 127.0.0.1. The control
commands on Postgres: test_pg_cli_controls.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.pg_support import EmbeddedPostgres
from tests.store_support import T0, emit_model_call
from tests.trace_backends import TraceBackend

ROOT = Path(__file__).resolve().parents[2]
SECRET = "hunter2-not-printed"


def flightdeck(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, **(env or {})}
    if env is None or "FLIGHTDECK_STORE" not in env:
        environment.pop("FLIGHTDECK_STORE", None)
    proc = subprocess.run([sys.executable, "-m", "console.cli", *args], capture_output=True, text=True, timeout=60,
                          cwd=ROOT, env=environment, stdin=subprocess.DEVNULL)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def record_fleet(writer: Any) -> None:
    """Three runs: one completed with model and tool calls, one failed with a denied tool call, one running."""
    writer.run_started("run-a", "deal-desk", "h1", "eng-1", "0.1", {"deal": 1}, 7, "acme", T0, None)
    writer.span_started("root-a", "run-a", None, "run", None, "deal-desk", T0, None)
    for i in range(3):
        emit_model_call(writer, "run-a", "root-a", i, T0 + 1 + i)
    writer.span_ended("root-a", "run-a", "ok", T0 + 9)
    writer.run_ended("run-a", "completed", T0 + 9, {"ok": True}, None)
    writer.run_started("run-b", "deal-desk", "h1", "eng-1", "0.1", {"deal": 2}, 8, "globex", T0 + 20, None)
    writer.span_started("tool-b", "run-b", None, "tool", "pricer", "apply_discount", T0 + 21, {"args": {}})
    writer.span_ended("tool-b", "run-b", "denied", T0 + 22,
                      attrs={"error_kind": "approval_denied", "error": "denied by alice"})
    writer.run_progress("run-b", 10, 2, 0.5, 1, 1, 0)
    writer.run_ended("run-b", "failed", T0 + 23, None, "pricing failed")
    writer.run_started("run-c", "support-triage", "h2", "eng-1", "0.1", {"ticket": 3}, 9, None, T0 + 30, None)
    writer.close()


def cli_outputs(store: str) -> dict[str, Any]:
    outputs = {}
    for name, args in {"runs": ("runs", "--json"), "trace": ("trace", "run-a", "--json"),
                       "usage": ("usage", "--json"), "usage-tenant": ("usage", "--tenant", "acme", "--json"),
                       "runs-failed": ("runs", "--status", "failed", "--json")}.items():
        proc = flightdeck(*args, "--store", store)
        assert proc.returncode == 0, (name, proc.stderr)
        outputs[name] = json.loads(proc.stdout)
    return outputs


def test_runs_trace_and_usage_print_the_same_for_postgres_and_sqlite(tmp_path: Path, pg_url: str) -> None:
    sqlite = TraceBackend("sqlite", tmp_path / "dir")
    sqlite.tmp_path.mkdir()
    postgres = TraceBackend("postgres", tmp_path, pg_url)
    record_fleet(sqlite.writer())
    record_fleet(postgres.writer())
    on_sqlite, on_postgres = cli_outputs(sqlite.store_arg), cli_outputs(postgres.store_arg)
    assert [run["id"] for run in on_postgres["runs"]] == ["run-c", "run-b", "run-a"]
    assert on_postgres["runs"][1]["degraded"] == [{"tool": "apply_discount", "kind": "approval_denied",
                                                   "reason": "denied by alice"}]
    assert len(on_postgres["trace"]["children"]) == 3 and on_postgres["usage"]["total"]["model_calls"] == 3
    assert on_postgres == on_sqlite
    table = flightdeck("runs", "--store", pg_url)
    assert table.returncode == 0 and "run-b" in table.stdout and "completed (degraded)" not in table.stdout
    # The tool calls hang below their model call: the tree used to fail on them (KeyError) on both backends.
    tree = flightdeck("trace", "run-a", "--store", pg_url)
    assert tree.returncode == 0 and "llm chat" in tree.stdout and "tool search" in tree.stdout
    assert tree.stdout == flightdeck("trace", "run-a", "--store", sqlite.store_arg).stdout


def test_the_store_can_come_from_the_environment(postgres_server: EmbeddedPostgres, pg_url: str,
                                                 tmp_path: Path) -> None:
    record_fleet(TraceBackend("postgres", tmp_path, pg_url).writer())
    proc = flightdeck("runs", "--json", env={"FLIGHTDECK_STORE": pg_url})
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)) == 3


@pytest.mark.parametrize("command", [("breakers", "list")])
def test_commands_not_served_yet_say_so_without_the_password(command: tuple[str, ...],
                                                             postgres_server: EmbeddedPostgres) -> None:
    url = f"postgresql://postgres:{SECRET}@127.0.0.1:{postgres_server.port}/postgres"
    proc = flightdeck(*command, "--store", url)
    assert proc.returncode == 2, proc.stderr
    first = proc.stderr.strip().splitlines()[-1]
    assert first.startswith(f"flightdeck {command[0]}: --store: cannot use a Postgres store yet"), first
    assert "issue 16" in first and "postgres:***@127.0.0.1" in first
    assert SECRET not in proc.stderr + proc.stdout


def test_an_unreachable_or_empty_postgres_store_is_a_store_error(postgres_server: EmbeddedPostgres,
                                                                 pg_url: str) -> None:
    from tests.pg_support import free_port

    unreachable = f"postgresql://postgres:{SECRET}@127.0.0.1:{free_port()}/traces"
    proc = flightdeck("runs", "--store", unreachable)
    assert proc.returncode == 3 and "cannot connect to the Postgres store postgresql://postgres:***@" in proc.stderr
    assert SECRET not in proc.stderr
    empty = flightdeck("trace", "x", "--store", pg_url)  # a database nothing has written traces to
    assert empty.returncode == 3 and "no Flightdeck trace store in" in empty.stderr
    # The console on Postgres (issue 16) checks the store before its UI starts: one line, exit 3, no password.
    for store in (unreachable, pg_url):
        console = flightdeck("console", "--store", store)
        assert console.returncode == 3, console.stderr
        assert console.stderr.startswith("flightdeck: ") and "Traceback" not in console.stderr
        assert SECRET not in console.stderr + console.stdout


def test_a_store_url_of_another_scheme_is_bad_input() -> None:
    proc = flightdeck("runs", "--store", "mysql://fd:pw@db/traces")
    assert proc.returncode == 2
    assert "--store: unsupported store URL scheme 'mysql'" in proc.stderr
    env = flightdeck("usage", env={"FLIGHTDECK_STORE": "sqlite:///tmp/x"})
    assert env.returncode == 2 and "FLIGHTDECK_STORE: unsupported store URL scheme 'sqlite'" in env.stderr
