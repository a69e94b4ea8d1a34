"""`flightdeck serve` refusals that come before any engine opens, and `flightdeck submit` against an API served
on 127.0.0.1 (the in-memory FleetService of tests/serve_support.py): real subprocesses, exit codes, messages."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.serve.http_api import build_app
from tests.serve_http_support import FakeFleet, served

ROOT = Path(__file__).resolve().parents[2]


def flightdeck(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items()
                if k not in ("FLIGHTDECK_STORE", "FLIGHTDECK_API_TOKEN", "FLIGHTDECK_URL")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "console.cli", *args], capture_output=True, text=True, timeout=60,
                          cwd=ROOT, env=full_env)


def test_serve_refuses_a_public_address_without_a_token(tmp_path: Path) -> None:
    proc = flightdeck("serve", "--hierarchy", "deal-desk", "--store", str(tmp_path / "s"), "--listen", "0.0.0.0:0")
    assert proc.returncode == 2
    assert "refusing to listen on 0.0.0.0 without an API token" in proc.stderr
    assert "FLIGHTDECK_API_TOKEN" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "s").exists()  # nothing was opened
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "config.toml").write_text('[serve]\ntoken_env = "MY_SERVE_TOKEN"\n')
    named = flightdeck("serve", "--hierarchy", "deal-desk", "--store", str(tmp_path / "s"), "--listen", "10.1.2.3:0")
    assert named.returncode == 2 and "MY_SERVE_TOKEN" in named.stderr


def test_serve_bad_arguments_exit_2(tmp_path: Path) -> None:
    store = str(tmp_path / "s")
    assert flightdeck("serve", "--store", store).returncode == 2  # neither --fleet nor --hierarchy
    bad_listen = flightdeck("serve", "--hierarchy", "deal-desk", "--store", store, "--listen", "nowhere")
    assert bad_listen.returncode == 2 and "--listen: expected HOST:PORT" in bad_listen.stderr
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text("hierarchies:\n  - file: deal-desk\n    queue: {max_depth: 0}\n")
    bad_fleet = flightdeck("serve", "--fleet", str(fleet), "--store", store, "--listen", "127.0.0.1:0")
    assert bad_fleet.returncode == 2 and "fleet.yaml:3" in bad_fleet.stderr and "Traceback" not in bad_fleet.stderr
    fleet.write_text("hierarchies:\n  - file: missing.yaml\n")
    missing = flightdeck("serve", "--fleet", str(fleet), "--store", store, "--listen", "127.0.0.1:0")
    assert missing.returncode == 2 and "hierarchy 'missing.yaml' does not load" in missing.stderr
    assert "Traceback" not in missing.stderr and "serving on" not in missing.stdout
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = flightdeck("serve", "--hierarchy", "deal-desk", "--store", store, "--listen",
                          f"127.0.0.1:{taken.getsockname()[1]}")
    assert busy.returncode == 2 and "cannot listen on 127.0.0.1" in busy.stderr


def test_help_texts_name_the_exit_codes() -> None:
    serve = flightdeck("serve", "--help")
    assert serve.returncode == 0 and "143" in serve.stdout and "--grace" in serve.stdout
    submit = flightdeck("submit", "--help")
    assert submit.returncode == 0 and "--wait" in submit.stdout and "9 the serve cannot be reached" in submit.stdout


def test_submit_without_a_serve_says_so() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = flightdeck("submit", "deal-desk", "--input", "{}", "--url", f"http://127.0.0.1:{port}")
    assert proc.returncode == 9
    assert f"cannot connect to a flightdeck serve at http://127.0.0.1:{port}" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.fixture
def fleet() -> FakeFleet:
    return FakeFleet()


@pytest.fixture
def url(fleet: FakeFleet) -> Iterator[str]:
    with served(build_app(fleet, token="tok-123", environ={})) as base:
        yield base


def test_submit_prints_the_run_and_a_repeat_prints_the_original(url: str, fleet: FakeFleet, tmp_path: Path) -> None:
    env = {"FLIGHTDECK_API_TOKEN": "tok-123", "FLIGHTDECK_URL": url}
    (tmp_path / "in.json").write_text('{"request": "10% off"}')
    first = flightdeck("submit", "deal-desk", "--input", f"@{tmp_path / 'in.json'}", "--tenant", "acme",
                       "--priority", "3", "--idempotency-key", "k-1", env=env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "run-0001 queued"
    again = flightdeck("submit", "deal-desk", "--input", "{}", "--idempotency-key", "k-1", "--json", env=env)
    assert again.returncode == 0
    assert json.loads(again.stdout)["run_id"] == "run-0001" and json.loads(again.stdout)["created"] is False
    assert len(fleet.submissions) == 1
    sub = fleet.submissions[0]
    assert (sub.input, sub.tenant, sub.priority, sub.idempotency_key) == ({"request": "10% off"}, "acme", 3, "k-1")
    text = flightdeck("submit", "deal-desk", "--input", "plain words", env=env)
    assert text.returncode == 0 and fleet.submissions[-1].input == "plain words"


def test_submit_refusals_and_bad_input(url: str, fleet: FakeFleet) -> None:
    env = {"FLIGHTDECK_API_TOKEN": "tok-123", "FLIGHTDECK_URL": url}
    no_token = flightdeck("submit", "deal-desk", "--input", "{}", env={"FLIGHTDECK_URL": url})
    assert no_token.returncode == 9 and "401" in no_token.stderr
    unknown = flightdeck("submit", "nope", "--input", "{}", env=env)
    assert unknown.returncode == 2 and "hierarchy: no hierarchy named 'nope'" in unknown.stderr
    fleet.max_depth = 0
    full = flightdeck("submit", "deal-desk", "--input", "{}", env=env)
    assert full.returncode == 7 and "refused (429)" in full.stderr and "retry after 3s" in full.stderr
    bad = flightdeck("submit", "deal-desk", "--input", "{}", "--priority", "2000", env=env)
    assert bad.returncode == 2 and "--priority" in bad.stderr
    assert "Traceback" not in full.stderr + unknown.stderr + bad.stderr + no_token.stderr


@pytest.mark.parametrize(("ends_as", "code"), [("completed", 0), ("failed", 1), ("cancelled", 6)])
def test_submit_wait_exits_with_the_runs_code(url: str, fleet: FakeFleet, ends_as: str, code: int) -> None:
    fleet.ends_as = ends_as
    proc = flightdeck("submit", "deal-desk", "--input", "{}", "--wait",
                      env={"FLIGHTDECK_API_TOKEN": "tok-123", "FLIGHTDECK_URL": url})
    assert proc.returncode == code, proc.stderr
    assert proc.stdout.splitlines()[-1].startswith(f"run-0001 {ends_as}")


def test_submit_reads_a_hierarchy_file_for_its_name(url: str, fleet: FakeFleet) -> None:
    path = ROOT / "engine" / "examples" / "deal_desk" / "hierarchy.yaml"
    proc = flightdeck("submit", str(path), "--input", "{}", env={"FLIGHTDECK_API_TOKEN": "tok-123",
                                                                 "FLIGHTDECK_URL": url})
    assert proc.returncode == 0, proc.stderr
    assert fleet.submissions[0].hierarchy == "deal-desk"
