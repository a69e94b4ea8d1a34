"""`flightdeck drill --provider-url`: the drills run on an OpenAI-compatible server (the fake one on loopback), with
the model name and the API key (from the variable --api-key-env names, never printed) it is given; drills that need
the scripted model are SKIPPED with the reason shown; bad options exit 2 naming the option. And user drills:
`--extra-scenarios DIR` merges a user's drills with the bundled catalogue; a bad user drill names file:line:field."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from console.cli import main
from tests.fakes.openai_server import Behaviour, FakeOpenAIServer, RecordedRequest, call, text, tool_calls

HIERARCHY = """name: drilled
entry: w
models:
  m: {model: m-small, price_in: 1, price_out: 2, latency: 0, latency_per_token: 0}
tools:
  lookup: {function: "tests.runtime_tools:lookup"}
agents:
  w: {contract: Looks things up and says what it found., model: m, tools: [lookup]}
"""

DRILLS = {
    "empty.yaml": """name: empty-lookup
guardrail: missing_when_empty marks an empty lookup
patch:
  tools: {lookup: {missing_when_empty: [rows]}}
expect:
  run_status: completed
  events: [{kind: tool.missing_data, name: lookup}]
""",
    "budget.yaml": """name: tiny-budget
guardrail: budget reservation stops the run before any model call
patch:
  budgets: {run: {cost_usd: 0.0000001}}
expect:
  run_status: budget_exceeded
  absent: [{kind: llm, status: ok}]
""",
    "outage.yaml": """name: outage
guardrail: a scripted outage (needs the scripted model)
scripts:
  w: [{fault: error}]
expect: {run_status: failed}
""",
}


def _setup(tmp_path: Path) -> Path:
    (tmp_path / "drills").mkdir()
    for name, body in DRILLS.items():
        (tmp_path / "drills" / name).write_text(body)
    path = tmp_path / "h.yaml"
    path.write_text(HIERARCHY)
    return path


def _model(request: RecordedRequest) -> Behaviour:
    if not request.has_tool_result:
        return tool_calls(call("lookup", {"key": "none"}))
    return text("No rows are on file for that key; the data is missing.")


def test_drills_run_on_an_openai_compatible_server(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    hierarchy = _setup(tmp_path)
    monkeypatch.setenv("DRILL_TEST_KEY", "sk-drill-secret-123")
    junit = tmp_path / "drills.xml"
    with FakeOpenAIServer(responder=_model) as server:
        url = server.base_url
        code = main(["drill", str(hierarchy), "--provider-url", url, "--model", "gpt-drill",
                     "--api-key-env", "DRILL_TEST_KEY", "--junit", str(junit)])
        requests = server.requests
    out, err = capsys.readouterr()
    assert code == 0, out + err
    assert requests and all(r.json["model"] == "gpt-drill" for r in requests)
    assert all(r.authorization == "Bearer sk-drill-secret-123" for r in requests)
    assert "sk-drill-secret-123" not in out + err + junit.read_text()
    rows = {line.split()[0]: line for line in out.splitlines() if line.split() and line.split()[0] in
            ("empty-lookup", "tiny-budget", "outage")}
    assert "HELD" in rows["empty-lookup"] and "HELD" in rows["tiny-budget"] and "SKIPPED" in rows["outage"]
    assert "  outage SKIPPED: scripted only (scripts for w)" in out
    assert "2/2 drills held, 1 skipped" in out
    assert f"on {url} (model gpt-drill)" in err
    suite = ET.parse(junit).getroot()
    assert suite.get("skipped") == "1" and suite.get("failures") == "0"


def test_a_drill_fails_on_a_model_that_never_calls_the_tool(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    hierarchy = _setup(tmp_path)
    with FakeOpenAIServer(default=text("I made up some rows: 1, 2, 3.")) as server:
        url = server.base_url
        code = main(["drill", str(hierarchy), "--provider-url", url, "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 1 and report["held"] is False and report["provider_url"] == url
    results = {d["scenario"]: d for d in report["drills"]}
    assert results["empty-lookup"]["result"] == "FAILED"
    assert results["outage"]["result"] == "SKIPPED" and results["outage"]["skipped"].startswith("scripted only")


@pytest.mark.parametrize(("argv", "message"), [
    (["--provider-url", "ftp://127.0.0.1/v1"], "--provider-url: not an http(s) URL"),
    (["--provider-url", "http://user:sk-x@127.0.0.1/v1"], "--provider-url: credentials in the URL"),
    (["--model", "gpt"], "--model: --model needs --provider-url"),
    (["--provider-url", "http://127.0.0.1:9/v1", "--api-key-env", "DRILL_UNSET_VAR"],
     "--api-key-env: environment variable DRILL_UNSET_VAR is not set"),
    (["--provider-url", "http://127.0.0.1:9/v1", "--api-key-env", "NOT-A-NAME"],
     "--api-key-env: not an environment variable name"),
])
def test_bad_provider_options_exit_2_naming_the_option(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                       argv: list[str], message: str) -> None:
    hierarchy = _setup(tmp_path)
    assert main(["drill", str(hierarchy), *argv]) == 2
    out, err = capsys.readouterr()
    assert message in err and "sk-x" not in out + err and "Traceback" not in err


USER_DRILL = """name: user-loop
guardrail: my own - loop detection on the pricing worker
input: {account: INITECH-003, product: platform, seats: 80, requested_discount_pct: 10}
scripts:
  pricing:
    - tool: {name: price_quote, args: {product: platform, seats: 80, term_months: 12}}
      repeat: forever
expect:
  run_status: completed
  events: [{kind: loop.detected, agent: pricing}]
"""


def test_user_drills_merge_with_the_bundled_catalogue(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "user-loop.yaml").write_text(USER_DRILL)
    assert main(["drill", "deal-desk", "--extra-scenarios", str(mine), "--json"]) == 0
    names = [d["scenario"] for d in json.loads(capsys.readouterr().out)["drills"]]
    assert names[-1] == "user-loop" and {"tool-hang", "conflicting-workers", "prompt-injection"} <= set(names)


def test_a_bad_user_drill_names_file_line_and_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "bad.yaml").write_text(USER_DRILL.replace("name: user-loop", "name: user-bad")
                                   .replace("  run_status: completed", "  run_status: completed\n  spanz: []"))
    (mine / "dup.yaml").write_text(USER_DRILL.replace("name: user-loop", "name: tool-hang"))
    assert main(["drill", "deal-desk", "--extra-scenarios", str(mine)]) == 2
    err = capsys.readouterr().err
    assert f"{mine / 'bad.yaml'}:10: expect.spanz: unknown key 'spanz'" in err
    assert f"{mine / 'dup.yaml'}:1: name: drill name 'tool-hang' also used by" in err
    assert "tool-hang.yaml" in err and "Traceback" not in err
