"""The LLM judge scores through the openai provider against a real server on 127.0.0.1; an answer that is not a
score, and a server that fails, are errors for that case, never a crash."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest

from engine.evals.dataset import load_dataset
from engine.scoring.judge import JUDGE_SYSTEM, parse_judgement
from engine.scoring.scorers import JudgeDefaults, Score, build_scorers
from tests.fakes.openai_server import FakeOpenAIServer, http_error, openai_server, text  # noqa: F401


def judge(tmp_path: Path, server: FakeOpenAIServer, output: object, **check: object) -> Score:
    path = tmp_path / "cases.jsonl"
    path.write_text(json.dumps({"id": "c", "input": {"subject": "Locked out"},
                                "checks": [{"scorer": "llm_judge", "criteria": "Polite, names the fix.",
                                            "path": "reply", **check}]}) + "\n")
    cases = load_dataset(path).cases
    [scorer] = build_scorers(cases, JudgeDefaults(server.base_url, "judge-model"))["c"]
    return anyio.run(scorer.score, output, cases[0])


def test_a_judge_score_passes_or_fails_by_pass_score(tmp_path: Path, openai_server: FakeOpenAIServer) -> None:
    openai_server.enqueue(text('{"score": 0.8, "reason": "polite and specific"}'),
                          text('```json\n{"score": 0.3}\n```'))
    good = judge(tmp_path, openai_server, {"reply": "Thanks! Reset it here."})
    assert (good.score, good.passed, good.reason, good.error) == (0.8, True, "polite and specific", False)
    low = judge(tmp_path, openai_server, {"reply": "no"}, pass_score=0.5)
    assert (low.score, low.passed, low.error) == (0.3, False, False)
    sent = openai_server.requests[0].json
    assert sent["model"] == "judge-model" and sent["temperature"] == 0.0
    assert sent["messages"][0] == {"role": "system", "content": JUDGE_SYSTEM}
    assert "Polite, names the fix." in sent["messages"][1]["content"]
    assert "Thanks! Reset it here." in sent["messages"][1]["content"]
    assert "Locked out" in sent["messages"][1]["content"]


@pytest.mark.parametrize("answer, why", [
    ("Looks great to me!", "the judge's answer is not JSON"),
    ('{"verdict": "good"}', "the judge's answer has no score"),
    ('{"score": 7}', "the judge's score is not a number in 0..1"),
    ('{"score": "high"}', "the judge's score is not a number in 0..1"),
    ('{"score": true}', "the judge's score is not a number in 0..1"),
])
def test_an_answer_that_is_not_a_score_is_an_error_for_the_case(tmp_path: Path, openai_server: FakeOpenAIServer,
                                                                 answer: str, why: str) -> None:
    openai_server.enqueue(text(answer))
    score = judge(tmp_path, openai_server, {"reply": "x"})
    assert (score.score, score.passed, score.error) == (0.0, False, True)
    assert score.reason.startswith(why)


def test_a_failing_judge_server_is_an_error_for_the_case(tmp_path: Path, openai_server: FakeOpenAIServer) -> None:
    openai_server.enqueue(http_error(401, "bad key"))
    score = judge(tmp_path, openai_server, {"reply": "x"})
    assert score.error and not score.passed
    assert score.reason.startswith("judge call failed:") and "bad key" in score.reason


def test_the_judge_does_not_call_the_server_for_a_missing_field(tmp_path: Path,
                                                               openai_server: FakeOpenAIServer) -> None:
    score = judge(tmp_path, openai_server, {"other": 1})
    assert (score.passed, score.error, score.reason) == (False, False, "the output has no field 'reply'")
    assert openai_server.requests == []


def test_parse_judgement() -> None:
    assert parse_judgement('{"score": 1, "reason": 5}') == (1.0, "")
    with pytest.raises(ValueError, match="not JSON"):
        parse_judgement(None)
