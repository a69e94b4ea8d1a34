"""Scorers: each check of a case becomes a Scorer, built (and so checked) before anything runs.

A scorer turns a run's output into a `Score`: a value in 0..1, whether it passed, and why. A scorer that cannot
score (a Python function that raises, a judge whose answer is not a score) returns a Score with `error` set: that
case fails with the error as its reason, the eval goes on.
"""

from __future__ import annotations

import importlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import regex

from engine.errors import InputError, InputErrors
from engine.hierarchy.eval_checks import (
    ContainsCheck,
    ExactCheck,
    JsonSchemaCheck,
    JudgeCheck,
    PythonCheck,
    RegexCheck,
)

__all__ = ["MISSING", "JudgeDefaults", "Score", "ScoreCase", "Scorer", "build_one", "build_scorers", "pick"]

MISSING: Any = object()  # what pick() returns for a field the output lacks


@dataclass(frozen=True, slots=True)
class Score:
    scorer: str  # the check's name: its `name`, else scorer type and path
    score: float  # 0..1
    passed: bool
    reason: str
    error: bool = False  # the scorer could not score (the case fails; the eval goes on)

    def to_json(self) -> dict[str, Any]:
        return {"scorer": self.scorer, "score": round(self.score, 4), "passed": self.passed, "reason": self.reason,
                "error": self.error}


class ScoreCase(Protocol):
    """What a scorer may read of the case it scores: a dataset's EvalCase, or a sampled live run
    (engine/scoring/sampler.py SampledRun). A python check's function is handed this object."""

    @property
    def id(self) -> str: ...

    @property
    def task_type(self) -> str: ...

    @property
    def run_input(self) -> Any: ...


class Scorer(Protocol):
    @property
    def label(self) -> str: ...

    async def score(self, output: Any, case: ScoreCase) -> Score: ...


@dataclass(frozen=True, slots=True)
class JudgeDefaults:
    """`--judge-url`, `--judge-model`, `--judge-key-env`: for llm_judge checks that do not name their own."""

    base_url: str | None = None
    model: str | None = None
    api_key_env: str | None = None


def pick(output: Any, path: str | None) -> Any:
    """The field `path` (dots; list indexes as numbers) of an output, or MISSING. A text output that is JSON is
    parsed first, so `path` works on models that answer with a JSON string."""
    if path is None:
        return output
    value = output
    for part in path.split("."):
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                return MISSING
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return MISSING
    return value


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


def _label(check: Any) -> str:
    if check.name:
        return str(check.name)
    return f"{check.scorer}:{check.path}" if check.path else str(check.scorer)


def _missing(label: str, path: str | None) -> Score:
    return Score(label, 0.0, False, f"the output has no field {path!r}")


@dataclass(frozen=True, slots=True)
class ExactScorer:
    label: str
    path: str | None
    value: Any

    async def score(self, output: Any, case: ScoreCase) -> Score:
        got = pick(output, self.path)
        if got is MISSING:
            return _missing(self.label, self.path)
        if got == self.value:
            return Score(self.label, 1.0, True, "equal")
        return Score(self.label, 0.0, False, f"expected {_text(self.value)[:120]}, got {_text(got)[:120]}")


@dataclass(frozen=True, slots=True)
class ContainsScorer:
    """Every needle must be in the text; the score is the share found."""

    label: str
    path: str | None
    needles: tuple[str, ...]
    ignore_case: bool

    async def score(self, output: Any, case: ScoreCase) -> Score:
        got = pick(output, self.path)
        if got is MISSING:
            return _missing(self.label, self.path)
        hay = _text(got)
        if self.ignore_case:
            hay = hay.casefold()
        missing = [n for n in self.needles if (n.casefold() if self.ignore_case else n) not in hay]
        found = len(self.needles) - len(missing)
        value = found / len(self.needles) if self.needles else 1.0
        if not missing:
            return Score(self.label, value, True, f"contains all {len(self.needles)}")
        return Score(self.label, value, False, "missing " + ", ".join(repr(m) for m in missing[:5]))


@dataclass(frozen=True, slots=True)
class RegexScorer:
    label: str
    path: str | None
    pattern: Any  # a compiled `regex` pattern (searched, with a timeout: a dataset's pattern cannot hang the eval)

    async def score(self, output: Any, case: ScoreCase) -> Score:
        got = pick(output, self.path)
        if got is MISSING:
            return _missing(self.label, self.path)
        try:
            found = self.pattern.search(_text(got), timeout=1.0)
        except TimeoutError:
            return Score(self.label, 0.0, False, "the pattern took longer than 1s", error=True)
        if found:
            return Score(self.label, 1.0, True, f"matches {self.pattern.pattern!r}")
        return Score(self.label, 0.0, False, f"no match for {self.pattern.pattern!r}")


@dataclass(frozen=True, slots=True)
class JsonSchemaScorer:
    label: str
    path: str | None
    validator: Any  # a jsonschema validator for the check's schema (its own draft, or 2020-12)

    async def score(self, output: Any, case: ScoreCase) -> Score:
        got = pick(output, self.path)
        if got is MISSING:
            return _missing(self.label, self.path)
        if isinstance(got, str):
            try:
                got = json.loads(got)
            except ValueError:
                pass  # a schema of type string still validates the text
        problems = sorted(self.validator.iter_errors(got), key=lambda e: list(e.absolute_path))
        if not problems:
            return Score(self.label, 1.0, True, "valid")
        first = problems[0]
        where = "/".join(str(p) for p in first.absolute_path) or "(root)"
        return Score(self.label, 0.0, False, f"{len(problems)} schema error(s); {where}: {first.message[:160]}")


@dataclass(frozen=True, slots=True)
class PythonScorer:
    """`function(output, case)` returns a bool, a number in 0..1 (passes at 0.5 or more) or a Score."""

    label: str
    path: str | None
    function: Callable[[Any, ScoreCase], Any]
    spec: str

    async def score(self, output: Any, case: ScoreCase) -> Score:
        got = pick(output, self.path)
        if got is MISSING:
            return _missing(self.label, self.path)
        try:
            value = self.function(got, case)
        except Exception as exc:
            return Score(self.label, 0.0, False, f"{self.spec} raised {type(exc).__name__}: {exc}"[:300],
                         error=True)
        if isinstance(value, Score):
            return value
        if isinstance(value, bool):
            return Score(self.label, float(value), value, f"{self.spec} returned {value}")
        if isinstance(value, (int, float)) and math.isfinite(value) and 0 <= value <= 1:
            return Score(self.label, float(value), value >= 0.5, f"{self.spec} returned {value:g}")
        return Score(self.label, 0.0, False, f"{self.spec} returned {value!r:.80}, not a bool, a number in 0..1 "
                     "or a Score", error=True)


def _import_function(spec: str) -> Callable[..., Any]:
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or whatever the module raised while importing
        raise ValueError(f"cannot import {module_name!r}: {type(exc).__name__}: {exc}") from None
    function = getattr(module, attr, None)
    if not callable(function):
        raise ValueError(f"{module_name!r} has no function {attr!r}")
    return function


def _json_schema_validator(schema: dict[str, Any]) -> Any:
    import jsonschema
    from jsonschema.exceptions import SchemaError

    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path)
        raise ValueError(f"not a valid JSON schema: {(where + ': ') if where else ''}{exc.message[:200]}") from None
    return cls(schema)


def build_one(check: Any, judge: JudgeDefaults) -> Scorer:
    """A scorer, or (raises FieldError) why the check is unusable and which of its fields."""
    label = _label(check)
    if isinstance(check, ExactCheck):
        return ExactScorer(label, check.path, check.value)
    if isinstance(check, ContainsCheck):
        needles = (check.value,) if isinstance(check.value, str) else tuple(check.value)
        return ContainsScorer(label, check.path, needles, check.ignore_case)
    if isinstance(check, RegexCheck):
        try:
            return RegexScorer(label, check.path, regex.compile(check.pattern))
        except regex.error as exc:
            raise FieldError("pattern", f"not a regular expression: {exc}") from None
    if isinstance(check, JsonSchemaCheck):
        try:
            return JsonSchemaScorer(label, check.path, _json_schema_validator(check.json_schema))
        except ValueError as exc:
            raise FieldError("schema", str(exc)) from None
    if isinstance(check, PythonCheck):
        try:
            return PythonScorer(label, check.path, _import_function(check.function), check.function)
        except ValueError as exc:
            raise FieldError("function", str(exc)) from None
    if isinstance(check, JudgeCheck):
        from .judge import JudgeScorer

        base_url = check.base_url or judge.base_url
        model = check.model or judge.model
        if not base_url:
            raise FieldError("base_url", "an llm_judge check needs a server: set base_url or pass --judge-url")
        if not model:
            raise FieldError("model", "an llm_judge check needs a model: set model or pass --judge-model")
        return JudgeScorer(label, check.path, check.criteria, model=model, base_url=base_url,
                           api_key_env=check.api_key_env or judge.api_key_env, pass_score=check.pass_score,
                           timeout=check.timeout)
    raise TypeError(f"unknown check {type(check).__name__}")


class FieldError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def build_scorers(cases: list[Any], judge: JudgeDefaults | None = None) -> dict[str, list[Scorer]]:
    """Scorers per case id; InputErrors naming file:line and `checks[i].field` for every unusable check."""
    defaults = judge or JudgeDefaults()
    out: dict[str, list[Scorer]] = {}
    errors: list[InputError] = []
    for case in cases:
        scorers: list[Scorer] = []
        if case.expected is not None:
            scorers.append(build_one(case.expected, defaults))
        for index, check in enumerate(case.checks):
            try:
                scorers.append(build_one(check, defaults))
            except FieldError as exc:
                errors.append(InputError(str(exc), file=case.file, line=case.line,
                                         field=f"checks[{index}].{exc.field}"))
        out[case.id] = scorers
    if errors:
        raise errors[0] if len(errors) == 1 else InputErrors(errors)
    return out
