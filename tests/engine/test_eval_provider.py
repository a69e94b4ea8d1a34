"""`flightdeck eval --provider-url URL [--model NAME] [--api-key-env VAR]`: the dataset runs on an OpenAI-compatible
server (the fake one on loopback) with the model name and key it is given (the key never printed or stored); the
eval records the server and model; an answer that fails the checks fails its case; bad options exit 2 naming the
option, with nothing recorded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from console.cli import main
from engine.scoring.results_db import EvalsDB
from tests.fakes.openai_server import FakeOpenAIServer, text

HIERARCHY = """name: helpdesk
entry: clerk
models:
  m: {model: m-small, price_in: 1, price_out: 2, latency: 0, latency_per_token: 0}
agents:
  clerk: {contract: Answers refund questions., model: m}
"""
DATASET = "\n".join(json.dumps(case) for case in (
    {"id": "refund", "task": "Where is my refund?", "checks": [{"scorer": "contains", "value": "refund"}]},
    {"id": "thanks", "task": "Say thanks", "checks": [{"scorer": "regex", "pattern": "^Thanks"}]},
))
SECRET = "sk-eval-secret-456"


def setup(tmp_path: Path) -> tuple[Path, Path]:
    hierarchy = tmp_path / "h.yaml"
    hierarchy.write_text(HIERARCHY)
    dataset = tmp_path / "cases.jsonl"
    dataset.write_text(DATASET + "\n")
    return hierarchy, dataset


def test_an_eval_runs_on_an_openai_compatible_server(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    hierarchy, dataset = setup(tmp_path)
    store = tmp_path / "store"
    monkeypatch.setenv("EVAL_TEST_KEY", SECRET)
    with FakeOpenAIServer(default=text("Thanks: your refund is on its way.")) as server:
        url = server.base_url
        code = main(["eval", str(hierarchy), "--dataset", str(dataset), "--store", str(store), "--provider-url",
                     url, "--model", "gpt-eval", "--api-key-env", "EVAL_TEST_KEY"])
        requests = server.requests
    out, err = capsys.readouterr()
    assert code == 0, out + err
    assert len(requests) == 2 and all(r.json["model"] == "gpt-eval" for r in requests)
    assert all(r.authorization == f"Bearer {SECRET}" for r in requests)
    assert f"on {url} (model gpt-eval)" in err and "2/2 cases passed" in out
    assert SECRET not in out + err
    with EvalsDB.open(store) as db:
        [summary] = db.list("helpdesk")
        models = json.loads(summary.models)
        # the fake server answers as `fake-model`: the version that answered is recorded next to the one asked for
        assert models["m"] == {"provider": "openai", "model": "gpt-eval", "calls": 2, "base_url": url,
                               "versions": ["fake-model"]}
    assert SECRET.encode() not in (store / "evals.db").read_bytes()


def test_a_worse_answer_from_the_server_fails_its_case(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hierarchy, dataset = setup(tmp_path)
    with FakeOpenAIServer(default=text("No idea.")) as server:
        code = main(["eval", str(hierarchy), "--dataset", str(dataset), "--store", str(tmp_path / "store"),
                     "--provider-url", server.base_url, "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 1 and report["ok"] is False
    assert [c["passed"] for c in report["eval"]["cases"]] == [False, False]


@pytest.mark.parametrize(("argv", "message"), [
    (["--provider-url", "ftp://127.0.0.1/v1"], "--provider-url: not an http(s) URL"),
    (["--provider-url", "http://user:sk-x@127.0.0.1/v1"], "--provider-url: credentials in the URL"),
    (["--model", "gpt"], "--model: --model needs --provider-url"),
    (["--provider-url", "http://127.0.0.1:9/v1", "--api-key-env", "EVAL_UNSET_VAR"],
     "--api-key-env: environment variable EVAL_UNSET_VAR is not set"),
])
def test_bad_provider_options_exit_2_with_nothing_recorded(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                           argv: list[str], message: str) -> None:
    hierarchy, dataset = setup(tmp_path)
    store = tmp_path / "store"
    assert main(["eval", str(hierarchy), "--dataset", str(dataset), "--store", str(store), *argv]) == 2
    out, err = capsys.readouterr()
    assert message in err and "sk-x" not in out + err and "Traceback" not in err
    assert not (store / "evals.db").exists()
