"""The eval dataset (JSONL) and its scorers: bad lines and bad checks are errors naming file:line and field, all
of them, before anything runs; each scorer scores, and a scorer that cannot score is an error for its case only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest

from engine.errors import InputError
from engine.evals.dataset import EvalCase, load_dataset
from engine.scoring.scorers import JudgeDefaults, Score, build_scorers


def write(tmp_path: Path, *lines: Any) -> Path:
    path = tmp_path / "cases.jsonl"
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


def messages(exc: InputError) -> list[str]:
    return str(exc).splitlines()


def test_cases_load_with_types_inputs_and_expected(tmp_path: Path) -> None:
    path = write(tmp_path, "# a comment", "",
                 {"id": "a", "type": "billing", "input": {"subject": "x"}, "expected": {"category": "billing"}},
                 {"id": "b", "task": "say hi", "checks": [{"scorer": "contains", "value": "hi"}]},
                 {"id": "c", "task": "do it", "input": {"k": 1}, "checks": [{"scorer": "regex", "pattern": "x"}]})
    dataset = load_dataset(path)
    assert [c.id for c in dataset.cases] == ["a", "b", "c"]
    a, b, c = dataset.cases
    assert (a.task_type, a.line, a.expected is not None, a.checks) == ("billing", 3, True, ())
    assert (b.task_type, b.run_input) == ("default", "say hi")
    assert c.run_input == {"k": 1, "task": "do it"}
    assert dataset.name == "cases.jsonl" and len(dataset.sha256) == 64


def test_every_bad_line_is_reported_with_line_and_field(tmp_path: Path) -> None:
    path = write(tmp_path,
                 {"id": "ok", "task": "t", "expected": 1},
                 "{not json",
                 "[1, 2]",
                 {"id": "no-checks", "task": "t"},
                 {"id": "bad id!", "task": "t", "expected": 1},
                 {"id": "x", "task": "t", "checks": [{"scorer": "nope"}]},
                 {"id": "y", "task": "t", "checks": [{"scorer": "regex"}]},
                 {"id": "ok", "task": "t", "expected": 2},
                 {"id": "z", "task": "t", "expected": 1, "surprise": True},
                 {"id": "w", "expected": 1},
                 {"id": "v", "task": "t", "status": "fine", "checks": [{"scorer": "contains", "value": "x",
                                                                        "exact": 1}]})
    with pytest.raises(InputError) as info:
        load_dataset(path)
    lines = messages(info.value)
    shown = str(path)
    assert f"{shown}:2: not JSON" in lines[0]
    assert lines[1] == f"{shown}:3: a case is a JSON object, not list"
    assert lines[2] == f"{shown}:4: (case): a case needs `expected` or `checks`"
    assert lines[3].startswith(f"{shown}:5: id: String should match pattern")
    assert lines[4].startswith(f"{shown}:6: checks[0]: Input tag 'nope' found using 'scorer'")
    assert lines[5] == f"{shown}:7: checks[0].pattern: Field required"
    assert lines[6] == f"{shown}:8: id: duplicate case id 'ok' (first on line 1)"
    assert lines[7] == f"{shown}:9: surprise: Extra inputs are not permitted"
    assert lines[8] == f"{shown}:10: (case): a case needs `input` or `task`"
    assert lines[9].startswith(f"{shown}:11: status: Input should be 'completed', 'failed'")
    assert lines[10] == f"{shown}:11: checks[0].exact: Extra inputs are not permitted"
    assert info.value.exit_code == 2


def test_missing_and_empty_datasets(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="dataset file not found"):
        load_dataset(tmp_path / "nope.jsonl")
    with pytest.raises(InputError, match="no cases"):
        load_dataset(write(tmp_path, "# nothing"))


def test_unusable_checks_name_their_field_before_anything_runs(tmp_path: Path) -> None:
    path = write(tmp_path,
                 {"id": "a", "task": "t", "checks": [{"scorer": "contains", "value": "x"},
                                                     {"scorer": "regex", "pattern": "(unclosed"}]},
                 {"id": "b", "task": "t", "checks": [{"scorer": "json_schema", "schema": {"type": "nonsense"}}]},
                 {"id": "c", "task": "t", "checks": [{"scorer": "python", "function": "no_such_module_x:f"}]},
                 {"id": "d", "task": "t", "checks": [{"scorer": "python",
                                                      "function": "tests.eval_functions:NOT_CALLABLE"}]},
                 {"id": "e", "task": "t", "checks": [{"scorer": "llm_judge", "criteria": "good"}]})
    with pytest.raises(InputError) as info:
        build_scorers(load_dataset(path).cases)
    lines = messages(info.value)
    assert lines[0].startswith(f"{path}:1: checks[1].pattern: not a regular expression")
    assert lines[1].startswith(f"{path}:2: checks[0].schema: not a valid JSON schema: type:")
    assert lines[2].startswith(f"{path}:3: checks[0].function: cannot import 'no_such_module_x': ModuleNotFound")
    assert lines[3] == f"{path}:4: checks[0].function: 'tests.eval_functions' has no function 'NOT_CALLABLE'"
    assert lines[4] == f"{path}:5: checks[0].base_url: an llm_judge check needs a server: set base_url or pass --judge-url"
    # With a server and a model from the command line, the judge check is usable.
    judged = load_dataset(write(tmp_path, {"id": "e", "task": "t",
                                           "checks": [{"scorer": "llm_judge", "criteria": "good"}]}))
    assert len(build_scorers(judged.cases, JudgeDefaults("http://127.0.0.1:9/v1", "judge-1"))["e"]) == 1


def score_all(tmp_path: Path, checks: list[dict[str, Any]], output: Any, **case: Any) -> list[Score]:
    dataset = load_dataset(write(tmp_path, {"id": "c", "task": "t", "checks": checks, **case}))
    cases: list[EvalCase] = dataset.cases
    scorers = build_scorers(cases)["c"]

    async def go() -> list[Score]:
        return [await s.score(output, cases[0]) for s in scorers]

    return anyio.run(go)


def test_exact_contains_regex_and_schema_score(tmp_path: Path) -> None:
    output = {"category": "billing", "reply": "Thanks! We refunded INV-7.", "sources": ["KB-1"]}
    scores = score_all(tmp_path, [
        {"scorer": "exact", "path": "category", "value": "billing"},
        {"scorer": "exact", "path": "category", "value": "technical"},
        {"scorer": "contains", "path": "reply", "value": ["refunded", "INV-7", "sorry", "apolog"]},
        {"scorer": "contains", "path": "reply", "value": "THANKS", "ignore_case": True},
        {"scorer": "regex", "path": "reply", "pattern": r"INV-\d+"},
        {"scorer": "regex", "path": "sources.0", "pattern": r"^TICKET"},
        {"scorer": "json_schema", "schema": {"type": "object", "required": ["reply", "needs_human"]}},
        {"scorer": "json_schema", "path": "sources", "schema": {"type": "array", "items": {"type": "string"}}},
        {"scorer": "exact", "path": "missing.field", "value": 1, "name": "nested"},
    ], output, expected=output)
    got = [(s.scorer, s.score, s.passed) for s in scores]
    assert got == [("expected", 1.0, True),
                   ("exact:category", 1.0, True), ("exact:category", 0.0, False),
                   ("contains:reply", 0.5, False), ("contains:reply", 1.0, True),
                   ("regex:reply", 1.0, True), ("regex:sources.0", 0.0, False),
                   ("json_schema", 0.0, False), ("json_schema:sources", 1.0, True), ("nested", 0.0, False)]
    assert scores[3].reason == "missing 'sorry', 'apolog'"
    assert "'needs_human' is a required property" in scores[7].reason
    assert scores[9].reason == "the output has no field 'missing.field'"
    assert not any(s.error for s in scores)


def test_a_json_text_output_is_parsed_for_paths(tmp_path: Path) -> None:
    [score] = score_all(tmp_path, [{"scorer": "exact", "path": "a.1", "value": 2}], json.dumps({"a": [1, 2]}))
    assert score.passed


def test_python_function_scorers_and_their_errors(tmp_path: Path) -> None:
    scores = score_all(tmp_path, [
        {"scorer": "python", "function": "tests.eval_functions:polite"},
        {"scorer": "python", "function": "tests.eval_functions:half"},
        {"scorer": "python", "function": "tests.eval_functions:detailed"},
        {"scorer": "python", "function": "tests.eval_functions:broken"},
        {"scorer": "python", "function": "tests.eval_functions:not_a_score"},
    ], "Thanks for asking")
    assert [(s.score, s.passed, s.error) for s in scores] == [
        (1.0, True, False), (0.5, True, False), (0.25, False, False), (0.0, False, True), (0.0, False, True)]
    assert scores[2].reason == "case c is only a quarter right"
    assert scores[3].reason == "tests.eval_functions:broken raised RuntimeError: scorer bug"
    assert "returned 'yes', not a bool" in scores[4].reason
