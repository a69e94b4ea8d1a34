"""An LLM judge: an OpenAI-compatible model scores an output against the check's criteria.

The judge must answer a JSON object `{"score": <0..1>, "reason": "..."}` (a fenced code block around it is
accepted). Anything else (no JSON, no number, a number outside 0..1) and any provider error is an error *for that
case*: it fails with the judge's answer quoted, and the eval goes on.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from engine.providers.base import ModelRequest, ProviderError, SystemMessage, UserMessage
from engine.providers.openai import OpenAIProvider

from .scorers import MISSING, Score, ScoreCase, pick

__all__ = ["JUDGE_SYSTEM", "JudgeScorer", "parse_judgement"]

JUDGE_SYSTEM = (
    "You are an evaluator. Read the task, the criteria and the answer. Reply with only a JSON object "
    '{"score": S, "reason": "..."} where S is a number from 0 (fails the criteria) to 1 (fully meets them).'
)


def parse_judgement(content: str | None) -> tuple[float, str]:
    """(score, reason) from the judge's answer; ValueError saying what is wrong with it otherwise."""
    text = (content or "").strip()
    if text.startswith("```"):
        text = text.strip("`").removeprefix("json").strip()
    try:
        data: Any = json.loads(text)
    except ValueError:
        raise ValueError(f"the judge's answer is not JSON: {text[:120]!r}") from None
    if not isinstance(data, dict) or "score" not in data:
        raise ValueError(f"the judge's answer has no score: {text[:120]!r}")
    value = data["score"]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0 <= value <= 1:
        raise ValueError(f"the judge's score is not a number in 0..1: {value!r:.40}")
    reason = data.get("reason")
    return float(value), reason if isinstance(reason, str) else ""


@dataclass(frozen=True, slots=True)
class JudgeScorer:
    label: str
    path: str | None
    criteria: str
    model: str
    base_url: str
    api_key_env: str | None
    pass_score: float
    timeout: float

    def request(self, output: Any, case: ScoreCase) -> ModelRequest:
        answer = output if isinstance(output, str) else json.dumps(output, indent=1, default=str)
        task = case.run_input if isinstance(case.run_input, str) else json.dumps(case.run_input, default=str)
        prompt = f"Task:\n{task}\n\nCriteria:\n{self.criteria}\n\nAnswer:\n{answer}"
        return ModelRequest(model=self.model, messages=[SystemMessage(JUDGE_SYSTEM), UserMessage(prompt)],
                            max_output_tokens=300, temperature=0.0, timeout_s=self.timeout)

    async def score(self, output: Any, case: ScoreCase) -> Score:
        got = pick(output, self.path)
        if got is MISSING:
            return Score(self.label, 0.0, False, f"the output has no field {self.path!r}")
        # One client per judgement: evals score tens of cases, and a scorer holds no open connection between them.
        async with OpenAIProvider(base_url=self.base_url, api_key_env=self.api_key_env,
                                  default_timeout=self.timeout) as provider:
            try:
                response = await provider.complete(self.request(got, case))
            except ProviderError as exc:
                return Score(self.label, 0.0, False, f"judge call failed: {exc}"[:300], error=True)
        try:
            value, reason = parse_judgement(response.content)
        except ValueError as exc:
            return Score(self.label, 0.0, False, str(exc), error=True)
        return Score(self.label, value, value >= self.pass_score, reason or f"judge score {value:g}")
