"""The check vocabulary shared by eval datasets (engine/evals/dataset.py) and a hierarchy's online sampling
(`evals:` in the hierarchy file): exact, contains, regex, json_schema, python and llm_judge checks as pydantic models.

They live in the hierarchy layer because a hierarchy file carries them (`evals.checks`) and `flightdeck check`
validates them with the rest of the file; the scorers that run them are engine/scoring/scorers.py.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from engine.durations import Duration

__all__ = ["CHECK_TYPES", "CheckSpec", "ContainsCheck", "EvalsSpec", "ExactCheck", "JsonSchemaCheck", "JudgeCheck",
           "PythonCheck", "RegexCheck"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Check(_Strict):
    path: str | None = Field(None, min_length=1, max_length=200)
    name: str | None = Field(None, min_length=1, max_length=80)


class ExactCheck(_Check):
    scorer: Literal["exact"]
    value: Any


class ContainsCheck(_Check):
    scorer: Literal["contains"]
    value: str | list[str]
    ignore_case: bool = False


class RegexCheck(_Check):
    scorer: Literal["regex"]
    pattern: str = Field(min_length=1, max_length=2000)


class JsonSchemaCheck(_Check):
    scorer: Literal["json_schema"]
    json_schema: dict[str, Any] = Field(alias="schema")


class PythonCheck(_Check):
    scorer: Literal["python"]
    function: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


class JudgeCheck(_Check):
    """`base_url`, `model` and `api_key_env` fall back to `--judge-url`, `--judge-model`, `--judge-key-env`."""

    scorer: Literal["llm_judge"]
    criteria: str = Field(min_length=1, max_length=4000)
    model: str | None = None
    base_url: str | None = None
    api_key_env: str | None = None
    pass_score: float = Field(0.5, ge=0, le=1)
    timeout: float = Field(60.0, gt=0, le=600)


CheckSpec = Annotated[ExactCheck | ContainsCheck | RegexCheck | JsonSchemaCheck | PythonCheck | JudgeCheck,
                      Field(discriminator="scorer")]
CHECK_TYPES = ("exact", "contains", "regex", "json_schema", "python", "llm_judge")




class EvalsSpec(_Strict):
    """A hierarchy's online sampling (`evals:`): score a share of its completed live runs with `checks`.

    `sample` is the share (0..1) chosen by run id (a hash, so the same run is always in or out: tests are exact and a
    resumed run is not scored twice); `window` is how long one evals.db row (`source = 'sample'`) collects sampled
    runs before the next starts; `checks` are a dataset case's checks. An llm_judge check must name its own
    `base_url` and `model` (there is no command line to supply them)."""

    sample: float = Field(0.0, ge=0, le=1, allow_inf_nan=False)
    window: Duration = Field(3600.0, gt=0)
    checks: list[CheckSpec] = Field(default_factory=list, max_length=20)

    @model_validator(mode="after")
    def _checks_when_sampling(self) -> EvalsSpec:
        if self.sample > 0 and not self.checks:
            raise ValueError("sampling (sample > 0) needs at least one check")
        return self
