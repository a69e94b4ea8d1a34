"""The command line as scripts and people use it: real subprocesses, real stores, exit codes and JSON shapes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import engine
from tests.engine_helpers import Approver

FIXTURES = Path(__file__).parent.parent / "fixtures" / "hierarchies"
ROOT = Path(__file__).resolve().parents[2]


def flightdeck(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    full_env.pop("FLIGHTDECK_STORE", None)
    return subprocess.run([sys.executable, "-m", "console.cli", *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd, env=full_env)


def test_version() -> None:
    proc = flightdeck("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"flightdeck {engine.__version__}"


def test_every_command_has_help() -> None:
    for command in ("run", "check", "runs", "trace", "console"):
        proc = flightdeck(command, "--help")
        assert proc.returncode == 0, (command, proc.stderr)
        assert "usage: flightdeck " + command in proc.stdout


def test_check_accepts_good_files_and_bundled_names() -> None:
    for ref in (str(FIXTURES / "pipeline.yaml"), "deal-desk", "support-triage"):
        proc = flightdeck("check", ref)
        assert proc.returncode == 0, proc.stderr
        assert ": ok: hierarchy" in proc.stdout


@pytest.mark.parametrize("name, fragment", [
    ("unknown_agent", "delegates"),
    ("unknown_tool", "tools"),
    ("unknown_model", "model"),
    ("delegation_cycle", "->"),
    ("bad_import", "import"),
    ("bad_schema", ""),
    ("bad_yaml", ""),
    ("tool_not_allowed_in_script", "scripts"),
])
def test_check_names_file_line_and_field_and_exits_2(name: str, fragment: str) -> None:
    path = FIXTURES / f"{name}.yaml"
    proc = flightdeck("check", str(path))
    assert proc.returncode == 2
    first = proc.stderr.strip().splitlines()[0]
    assert first.startswith(f"flightdeck: {path}:"), first
    line_number = first.split(":")[2]
    assert line_number.isdigit(), first
    assert fragment in proc.stderr
    assert "Traceback" not in proc.stderr


def test_run_json_runs_json_and_trace_json(tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    with Approver(tmp_path / "store"):  # the sample deals ask for discounts that need approval
        proc = flightdeck("run", "deal-desk", "--store", store, "--speed", "0", "--repeat", "3", "--concurrency",
                          "3", "--json")
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    assert [r["status"] for r in results] == ["completed"] * 3

    runs = json.loads(flightdeck("runs", "--store", store, "--json").stdout)
    assert {r["id"] for r in runs} == {r["id"] for r in results}
    for run in runs:
        assert {"id", "hierarchy", "status", "started", "ended", "tokens_in", "tokens_out", "cost_usd"} <= set(run)
        assert run["hierarchy"] == "deal-desk" and run["tokens_in"] > 0 and run["cost_usd"] > 0

    run_id = runs[0]["id"]
    tree = json.loads(flightdeck("trace", run_id[:6], "--store", store, "--json").stdout)
    assert tree["kind"] == "run"

    def walk(span: dict, depth: int = 0) -> list[tuple[int, dict]]:
        assert {"kind", "name", "agent", "status", "started", "ended", "tokens_in", "tokens_out",
                "cost_usd", "children"} <= set(span)
        return [(depth, span)] + [x for c in span["children"] for x in walk(c, depth + 1)]

    flat = walk(tree)
    kinds = {s["kind"] for _, s in flat}
    assert {"run", "agent", "llm", "tool", "delegation"} <= kinds
    agent_levels = {s["name"]: d for d, s in flat if s["kind"] == "agent"}
    assert agent_levels["supervisor"] < agent_levels["sales"] < agent_levels["account_researcher"]

    human = flightdeck("trace", run_id, "--store", store)
    assert human.returncode == 0
    assert "agent account_researcher" in human.stdout and "tok" in human.stdout and "$" in human.stdout


def test_run_progress_and_summary_for_people(tmp_path: Path) -> None:
    with Approver(tmp_path / "s"):
        proc = flightdeck("run", "support-triage", "--store", str(tmp_path / "s"), "--speed", "0", "--repeat", "4")
    assert proc.returncode == 0, proc.stderr
    assert "[4/4] run " in proc.stderr  # one progress line per run when not on a terminal
    assert "4 run(s): 4 completed" in proc.stdout


def test_run_exit_code_reflects_the_worst_run(tmp_path: Path) -> None:
    hierarchy = tmp_path / "loop.yaml"
    hierarchy.write_text("""
name: loops
entry: w
models:
  m: {model: m, latency: 0, latency_per_token: 0}
tools:
  add: {function: "tests.fixture_tools:add"}
agents:
  w: {contract: Loops., model: m, tools: [add]}
scripts:
  w:
    - tool: {name: add, args: {a: 1, b: 1}}
      repeat: forever
""")
    proc = flightdeck("run", str(hierarchy), "--store", str(tmp_path / "s"), "--speed", "0")
    assert proc.returncode == 5, proc.stderr
    assert "loop_detected" in proc.stdout


def test_bad_arguments_are_clear_errors(tmp_path: Path) -> None:
    proc = flightdeck("run", "deal-desk", "--repeat", "0")
    assert proc.returncode == 2 and "--repeat" in proc.stderr and "at least 1" in proc.stderr
    proc = flightdeck("run", "deal-desk", "--input-file", str(tmp_path / "missing.json"), "--store",
                      str(tmp_path / "s"))
    assert proc.returncode == 2 and "missing.json" in proc.stderr and "Traceback" not in proc.stderr
    proc = flightdeck("run", "no-such-hierarchy", "--store", str(tmp_path / "s"))
    assert proc.returncode == 2 and "no-such-hierarchy" in proc.stderr


def test_reading_a_missing_store_says_what_to_do(tmp_path: Path) -> None:
    proc = flightdeck("runs", "--store", str(tmp_path / "nothing-here"))
    assert proc.returncode == 3
    assert "no store" in proc.stderr and "Traceback" not in proc.stderr


def test_store_from_environment_variable(tmp_path: Path) -> None:
    store = tmp_path / "env-store"
    env = {**os.environ, "FLIGHTDECK_STORE": str(store)}
    proc = subprocess.run([sys.executable, "-m", "console.cli", "run", "support-triage", "--speed", "0",
                           "--input", '{"ticket_id": "T-9", "customer_id": "CUS-003", "channel": "web", '
                                      '"subject": "hello", "body": "a question"}'],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    assert (store / "traces.db").exists()
    assert not (tmp_path / ".flightdeck").exists()


def test_run_says_when_a_run_waits_for_approval_and_how_to_decide(tmp_path: Path) -> None:
    store = tmp_path / "s"
    deal = '{"account": "ACME-001", "product": "platform", "seats": 250, "requested_discount_pct": 18}'
    with Approver(store, policy=lambda row: "deny"):
        proc = flightdeck("run", "deal-desk", "--store", str(store), "--speed", "0", "--input", deal)
    assert proc.returncode == 0, proc.stderr
    assert "waits for approval ap-" in proc.stderr and "apply_discount" in proc.stderr
    assert f"flightdeck approve ap-" in proc.stderr and f"--store {store}" in proc.stderr


def test_the_approval_prompt_shows_arguments_through_the_store_redactor(tmp_path: Path) -> None:
    # The prompt prints the tool's arguments on stderr (a CI log keeps them): never more than the store holds.
    store = tmp_path / "s"
    store.mkdir(mode=0o700)
    (store / "config.toml").write_text('[redaction]\npatterns = ["ACME-[0-9]+"]\n')
    deal = '{"account": "ACME-001", "product": "platform", "seats": 250, "requested_discount_pct": 18}'
    with Approver(store, policy=lambda row: "deny"):
        proc = flightdeck("run", "deal-desk", "--store", str(store), "--speed", "0", "--input", deal)
    assert proc.returncode == 0, proc.stderr
    prompt = next(line for line in proc.stderr.splitlines() if "waits for approval" in line)
    assert "apply_discount" in prompt and "ACME-001" not in prompt and "[REDACTED]" in prompt


def test_usage_per_scope_with_each_filter(tmp_path: Path) -> None:
    store = str(tmp_path / "s")
    ticket = ('{"ticket_id": "T-9", "customer_id": "CUS-003", "channel": "web", "subject": "hello", '
              '"body": "a question"}')
    for tenant in ("acme", "globex"):
        assert flightdeck("run", "support-triage", "--store", store, "--speed", "0", "--tenant", tenant,
                          "--input", ticket).returncode == 0
    everything = json.loads(flightdeck("usage", "--store", store, "--json").stdout)
    acme = json.loads(flightdeck("usage", "--store", store, "--tenant", "acme", "--json").stdout)
    assert {t["tenant"] for t in everything["tenants"]} == {"acme", "globex"}
    assert [t["tenant"] for t in acme["tenants"]] == ["acme"]
    assert 0 < acme["total"]["cost_usd"] < everything["total"]["cost_usd"]
    run_id = acme["runs"][0]["id"]
    one = json.loads(flightdeck("usage", "--store", store, "--run", run_id[:8], "--json").stdout)
    assert one["total"] == acme["total"] and [r["id"] for r in one["runs"]] == [run_id]
    recent = json.loads(flightdeck("usage", "--store", store, "--since", "1h", "--json").stdout)
    assert recent["total"] == everything["total"]
    assert flightdeck("usage", "--store", store, "--since", "soon").returncode == 2


def test_trace_of_a_run_with_several_root_spans(tmp_path: Path) -> None:
    """Several root spans hang off a synthetic root with no status: the text tree shows it (it used to crash on
    None.upper()) and the JSON keeps the synthetic root's shape (nulls where it has no figures)."""
    from tests.store_support import T0, new_writer

    store = tmp_path / "store"
    store.mkdir()
    writer = new_writer(store)
    writer.run_started("multi-root", "h", None, None, None, None, 1, None, T0, None)
    writer.span_started("one", "multi-root", None, "agent", "a", "a", T0 + 1, None)
    writer.span_started("two", "multi-root", None, "agent", "b", "b", T0 + 2, None)
    writer.span_ended("one", "multi-root", "ok", T0 + 3)
    writer.close()
    text = flightdeck("trace", "multi-root", "--store", str(store))
    assert text.returncode == 0, text.stderr
    assert "run multi-root  [-]   running" in text.stdout and "├─ agent a  [ok]" in text.stdout
    assert "└─ agent b  [RUNNING]" in text.stdout
    out = flightdeck("trace", "multi-root", "--json", "--store", str(store))
    root = json.loads(out.stdout)
    assert {k: root[k] for k in ("id", "kind", "name", "status", "tokens_in", "duration_s")} == \
        {"id": None, "kind": "run", "name": "multi-root", "status": None, "tokens_in": None, "duration_s": None}
    assert [c["id"] for c in root["children"]] == ["one", "two"]
