"""The eval dataset: JSONL, one case per line.

```json
{"id": "dup-charge", "type": "billing", "input": {"channel": "billing", "subject": "..."},
 "checks": [{"scorer": "exact", "path": "category", "value": "billing"},
            {"scorer": "contains", "path": "reply", "value": ["invoices"]},
            {"scorer": "regex", "path": "reply", "pattern": "^Thanks"},
            {"scorer": "json_schema", "schema": {"type": "object", "required": ["reply"]}},
            {"scorer": "python", "function": "mypkg.evals:polite"},
            {"scorer": "llm_judge", "criteria": "The reply is polite and names the fix."}]}
```

`input` is the run input (an object or text), or `task` a text task (with an object `input`, it is added as its
`task`). `type` is the task type results are grouped by (default `default`). `expected` is shorthand for an exact
check of the whole output. `status` is the run status the case expects (default `completed`). A check's `path`
picks a field of the output (`reply`, `sources.0`). Every problem is an InputError naming file:line and field, all
of them reported together, before anything runs.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from engine.errors import InputError, InputErrors
from engine.hierarchy.eval_checks import CHECK_TYPES, CheckSpec, ExactCheck
from engine.runtime.results import RunStatus
from engine.safe_yaml import read_input_file

__all__ = ["CHECK_TYPES", "CaseSpec", "CheckSpec", "Dataset", "EvalCase", "load_dataset"]

ID = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"
MAX_CASES = 10_000


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CaseSpec(_Strict):
    id: str = Field(pattern=ID, max_length=120)
    type: str = Field("default", pattern=ID, max_length=80)
    input: Any = None
    task: str | None = Field(None, min_length=1)
    expected: Any = None
    status: RunStatus = "completed"
    checks: list[CheckSpec] = Field(default_factory=list, max_length=50)

    @model_validator(mode="after")
    def _needs_input_and_checks(self) -> CaseSpec:
        if self.input is None and self.task is None:
            raise ValueError("a case needs `input` or `task`")
        if self.task is not None and self.input is not None and not isinstance(self.input, dict):
            raise ValueError("`task` with an `input` needs the input to be an object (the task is added to it)")
        if "expected" not in self.model_fields_set and not self.checks:
            raise ValueError("a case needs `expected` or `checks`")
        return self


@dataclass(frozen=True, slots=True)
class EvalCase:
    """One case as run: where it came from (for errors and JUnit), its run input and its checks, `expected`
    already turned into an exact check."""

    id: str
    task_type: str
    run_input: Any
    expect_status: str
    checks: tuple[Any, ...]  # the case's `checks`, in order (`checks[i]` in errors)
    file: str
    line: int
    expected: ExactCheck | None = None  # `expected`: an exact check of the whole output, scored first


@dataclass(frozen=True, slots=True)
class Dataset:
    path: Path
    name: str  # the file name: `--baseline latest` finds the last eval of this hierarchy on a dataset of this name
    sha256: str
    cases: list[EvalCase] = field(default_factory=list)


def _field_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for i, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part}]"
        elif i >= 2 and loc[i - 2] == "checks" and isinstance(loc[i - 1], int) and part in CHECK_TYPES:
            continue  # pydantic's step into the check's scorer type (`checks.0.regex.pattern`), not a field
        else:
            out += ("." if out else "") + str(part)
    return out or "(case)"


def _case(spec: CaseSpec, file: str, line: int) -> EvalCase:
    run_input: Any = spec.input
    if spec.task is not None:
        run_input = spec.task if spec.input is None else {**spec.input, "task": spec.task}
    expected = (ExactCheck(scorer="exact", value=spec.expected, name="expected")
                if "expected" in spec.model_fields_set else None)
    return EvalCase(id=spec.id, task_type=spec.type, run_input=run_input, expect_status=spec.status,
                    checks=tuple(spec.checks), file=file, line=line, expected=expected)


def load_dataset(path: str | Path) -> Dataset:
    """Every case of a JSONL file; InputErrors (file:line, field) for every bad line, nothing returned then.
    Blank lines and lines starting with `#` are skipped."""
    where = Path(path)
    raw = read_input_file(where, "dataset")
    shown = str(where)
    errors: list[InputError] = []
    cases: list[EvalCase] = []
    seen: dict[str, int] = {}
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 text (byte {exc.start})", file=shown) from None
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            data = json.loads(stripped)
        except ValueError as exc:
            errors.append(InputError(f"not JSON: {exc}", file=shown, line=number))
            continue
        if not isinstance(data, dict):
            errors.append(InputError(f"a case is a JSON object, not {type(data).__name__}", file=shown,
                                     line=number))
            continue
        try:
            spec = CaseSpec.model_validate(data)
        except ValidationError as exc:
            for problem in exc.errors():
                errors.append(InputError(problem["msg"].removeprefix("Value error, "), file=shown, line=number,
                                         field=_field_path(tuple(problem["loc"]))))
            continue
        if spec.id in seen:
            errors.append(InputError(f"duplicate case id {spec.id!r} (first on line {seen[spec.id]})", file=shown,
                                     line=number, field="id"))
            continue
        seen[spec.id] = number
        cases.append(_case(spec, shown, number))
    if not errors and not cases:
        errors.append(InputError("no cases (one JSON object a line)", file=shown))
    if len(cases) > MAX_CASES:
        errors.append(InputError(f"more than {MAX_CASES} cases", file=shown))
    if errors:
        raise errors[0] if len(errors) == 1 else InputErrors(errors)
    return Dataset(path=where, name=where.name, sha256=hashlib.sha256(raw).hexdigest(), cases=cases)
