"""Python-function scorers the eval tests name in their datasets (`tests.eval_functions:NAME`)."""

from __future__ import annotations

from typing import Any

from engine.evals.dataset import EvalCase
from engine.scoring.scorers import Score


def polite(output: Any, case: EvalCase) -> bool:
    return isinstance(output, str) and output.startswith("Thanks")


def half(output: Any, case: EvalCase) -> float:
    return 0.5


def detailed(output: Any, case: EvalCase) -> Score:
    return Score("detailed", 0.25, False, f"case {case.id} is only a quarter right")


def broken(output: Any, case: EvalCase) -> bool:
    raise RuntimeError("scorer bug")


def not_a_score(output: Any, case: EvalCase) -> str:
    return "yes"


NOT_CALLABLE = 3
