"""Pydantic models for hierarchy files. Field names here are the file format; docs/hierarchies.md documents each.

Everything forbids unknown keys: a typo in a hierarchy file is an error with its line, never silently ignored.
Cross-references (an agent naming an unknown tool, delegation cycles, tools that do not import) are checked in
loader.py, which knows the file and line of every node.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from engine.durations import Duration
from engine.guardrails.breaker import BreakerConfig
from engine.guardrails.budget import BudgetLimits
from engine.hierarchy.eval_checks import EvalsSpec

Tier = Literal["strong", "standard", "economy"]
TIER_RANK: dict[str, int] = {"economy": 0, "standard": 1, "strong": 2}
Risk = Literal["low", "medium", "high"]
NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_\-]*$"


# Upper bounds on numbers: a value above them is a typo or an attack that would fail every run (a price of 1e300
# overflows the budget's nano-dollar arithmetic, a count of 1e40 overflows the packed budget vectors), so `check`
# refuses it with its line instead. Each is orders of magnitude above any real model or workload.
MAX_PRICE_PER_MTOK = 1_000_000.0  # USD per million tokens: a dollar a token
MAX_TOKENS = 10_000_000  # output tokens of one call
MAX_CONTEXT_TOKENS = 1_000_000_000
MAX_COUNT = 10_000_000  # cache entries


class Strict(BaseModel):
    # defer_build: validators are built on first use, not at import (most commands never load a hierarchy).
    # allow_inf_nan=False: `.inf`, `.nan` and strings like "1e309" (which float() makes infinite) are refused.
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True, allow_inf_nan=False)


class ModelSpec(Strict):
    """A named model. Prices are USD per million tokens."""

    provider: Literal["scripted", "openai"] = "scripted"
    model: str
    tier: Tier = "standard"
    price_in: float = Field(0.0, ge=0, le=MAX_PRICE_PER_MTOK)
    price_out: float = Field(0.0, ge=0, le=MAX_PRICE_PER_MTOK)
    max_output_tokens: int = Field(1024, gt=0, le=MAX_TOKENS)
    context_window: int = Field(128_000, gt=0, le=MAX_CONTEXT_TOKENS)
    timeout: Duration = 60.0
    # The longest Retry-After this model's retries wait for; a server asking for longer counts as a failure of the
    # model and the fallback chain moves on (a 429 with Retry-After: 600 must not park a run for ten minutes).
    max_retry_after: Duration = 30.0
    # openai provider only: where to send requests and which environment variable holds the key.
    base_url: str | None = None
    api_key_env: str | None = None
    # scripted provider only: simulated latency (mean seconds before the first token, and per output token).
    latency: Duration = 0.4
    latency_per_token: Duration = 0.004
    # scripted only, for prompt-injection drills: a model that obeys `call TOOL with {...}` found in tool results
    # (engine/providers/obedient.py). Never set it on a hierarchy that serves real work.
    obey_injections: bool = False

    def cost_usd(self, tokens_in: int, tokens_out: int) -> float:
        return (tokens_in * self.price_in + tokens_out * self.price_out) / 1_000_000


class ApprovalSpec(Strict):
    """When a tool call needs an operator's approval. `when` is a small declarative condition over the
    arguments (see engine.guardrails.conditions), never Python code."""

    required: Literal["always", "never", "when"] = "never"
    when: str | None = None
    deadline: Duration = 120.0
    on_timeout: Literal["deny", "approve", "escalate"] = "deny"
    # With on_timeout: escalate, how many times the request is raised (each with a longer deadline and a page)
    # before an unanswered request is denied as a timeout.
    max_escalations: int = Field(1, ge=1, le=10)


class ToolSpec(Strict):
    function: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    description: str = ""
    risk: Risk = "low"
    side_effects: bool = False
    # Durable engines: safe to run again with the same ctx.idempotency_key when a crash left its outcome unknown.
    idempotent: bool = False
    timeout: Duration = 30.0
    approval: ApprovalSpec | None = None
    # Results of a tool not marked trusted are untrusted content (span attribute `untrusted`): text from outside
    # (CRM notes, documents, web pages) may carry instructions. See UntrustedPolicy.
    trusted: bool = False
    # An empty result means the data is missing (engine/runtime/missing_data.py): true for the whole result, or
    # result fields that, empty or absent, mean nothing was found.
    missing_when_empty: bool | list[str] = False
    # Arguments the scripted provider's generic policy uses when an agent has no script.
    example_args: dict[str, Any] | None = None


FIELD_TYPES = {"string", "number", "integer", "boolean", "list", "object", "any"}


class ContractField(Strict):
    type: str = "string"
    description: str = ""
    required: bool = True

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value not in FIELD_TYPES:
            raise ValueError(f"unknown field type {value!r}; use one of {', '.join(sorted(FIELD_TYPES))}")
        return value


def _coerce_contract(value: Any) -> Any:
    """Contracts are written compactly as `field: type` (a trailing '?' marks an optional field) or in full."""
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for name, spec in value.items():
        if isinstance(spec, str):
            optional = spec.endswith("?")
            out[name] = {"type": spec.rstrip("?"), "required": not optional}
        else:
            out[name] = spec
    return out


class RetryPolicy(Strict):
    max_attempts: int = Field(3, ge=1, le=20)
    initial_backoff: Duration = 0.5
    max_backoff: Duration = 20.0
    multiplier: float = Field(2.0, ge=1.0, le=100.0)


class RouteCondition(Strict):
    """One routing rule's test: a field of the structured input, or keywords in the input text."""

    field: str | None = None
    equals: Any = None
    one_of: list[Any] | None = Field(None, alias="in")
    keywords: list[str] | None = None

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, defer_build=True,
                              allow_inf_nan=False)

    @model_validator(mode="after")
    def _one_test(self) -> RouteCondition:
        if self.keywords is None and self.field is None:
            raise ValueError("a route needs `field` (with `equals` or `in`) or `keywords`")
        if self.field is not None and self.equals is None and self.one_of is None:
            raise ValueError("a `field` route needs `equals` or `in`")
        return self


class Route(Strict):
    name: str | None = None
    when: RouteCondition
    to: str


class Stage(Strict):
    """A pipeline stage. `after` lists the stages whose output it consumes; omitted means the previous stage,
    an empty list means it reads the pipeline's own input. Stages whose inputs are ready run in parallel."""

    name: str = Field(pattern=NAME_PATTERN)
    agent: str
    after: list[str] | None = None


def _valid_name(name: str) -> str:
    if not re.match(NAME_PATTERN, name):
        raise ValueError(f"{name!r} is not a valid name (letters, digits, '_' and '-', starting with a letter)")
    return name


# Validated as a key type (not by a validator on the whole dict) so the error's location is the bad key itself,
# which lets the loader point at its line, and it is reported alongside errors in the values.
Name = Annotated[str, AfterValidator(_valid_name)]
# `agree:` entries: a delegate and a field of its output (dots reach into nested objects): `pricing.discount_pct`.
AgreeRef = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_\-]*\.[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*$")]


class AgentSpec(Strict):
    kind: Literal["agent", "router", "pipeline"] = "agent"
    contract: str = Field(min_length=1, description="One sentence: what this agent does and does not do.")
    instructions: str = ""
    model: str | None = None
    tools: list[str] = Field(default_factory=list)
    delegates: list[str] = Field(default_factory=list)
    input: dict[str, ContractField] | None = None
    output: dict[str, ContractField] | None = None
    max_steps: int | None = Field(None, ge=1, le=1000)
    retry: RetryPolicy | None = None
    fallback: list[str] = Field(default_factory=list)
    budget: BudgetLimits | None = None
    cache: CacheSpec | None = None
    # Fields of its delegates' results that must agree: LABEL -> [DELEGATE.FIELD, ...] (engine/runtime/conflicts.py).
    # When two delegated results disagree, the agent is told, and its final answer must report the conflict.
    agree: dict[Name, list[AgreeRef]] = Field(default_factory=dict)
    # router
    routes: list[Route] = Field(default_factory=list)
    default_route: str | None = None
    # pipeline
    stages: list[Stage] = Field(default_factory=list)

    _contracts = field_validator("input", "output", mode="before")(lambda cls, v: _coerce_contract(v))

    @model_validator(mode="after")
    def _kind_fields(self) -> AgentSpec:
        if self.kind == "agent" and not self.model:
            raise ValueError("an agent of kind `agent` needs a `model`")
        if self.agree and not self.delegates:
            raise ValueError("`agree` compares delegated results: this agent has no `delegates`")
        for label, refs in self.agree.items():
            if len(refs) < 2:
                raise ValueError(f"agree.{label} needs at least two DELEGATE.FIELD references to compare")
        if self.kind == "router":
            if not self.routes and not self.default_route:
                raise ValueError("a router needs `routes` or a `default_route`")
            if self.tools or self.delegates:
                raise ValueError("a router routes; it has no `tools` or `delegates`")
        if self.kind == "pipeline":
            if not self.stages:
                raise ValueError("a pipeline needs `stages`")
            if self.tools or self.delegates:
                raise ValueError("a pipeline runs stages; it has no `tools` or `delegates`")
        return self


class Defaults(Strict):
    max_steps: int = Field(12, ge=1, le=1000)
    retry: RetryPolicy = RetryPolicy()
    loop_threshold: int = Field(3, ge=2, le=100)
    max_validation_retries: int = Field(2, ge=0, le=20)


class BudgetsSpec(Strict):
    """Budgets at every scope. `agent` applies to every agent invocation unless the agent sets its own `budget`;
    `daily` caps the hierarchy's spend over a rolling 24 hours (across runs and engine restarts)."""

    run: BudgetLimits | None = None
    agent: BudgetLimits | None = None
    daily: BudgetLimits | None = None


class BreakersSpec(Strict):
    """Circuit-breaker settings: `defaults` for every tool, model and delegation; `overrides` by key
    (`tool:NAME`, `model:PROVIDER/MODEL`, `delegation:AGENT`) or by bare name."""

    defaults: BreakerConfig | None = None
    overrides: dict[str, BreakerConfig] = Field(default_factory=dict)


class CacheSpec(Strict):
    """Per-agent opt-in response cache for model calls (identical model, messages and tools)."""

    ttl: Duration = 600.0
    max_entries: int = Field(10_000, ge=1, le=MAX_COUNT)


class ScriptToolCall(Strict):
    name: str
    args: dict[str, Any] = Field(default_factory=dict)


class ScriptDelegation(Strict):
    agent: str
    task: str
    context: dict[str, Any] = Field(default_factory=dict)


ScriptFault = Literal["error", "timeout", "rate_limit", "malformed", "bad_request"]


class ScriptTurn(Strict):
    """One model turn of an agent's script. Exactly one of tool, tools, delegate, final or fault.
    Strings may use `{input}` / `{input.FIELD}` / `{task}` placeholders, filled from the agent's handoff."""

    reason: str | None = None
    tool: ScriptToolCall | None = None
    tools: list[ScriptToolCall] | None = None
    delegate: list[ScriptDelegation] | None = None
    final: str | dict[str, Any] | None = None
    fault: ScriptFault | None = None
    # `forever` turns this turn into a loop: the model repeats it on every later call (a looping agent).
    repeat: int | Literal["forever"] = 1
    latency: Duration | None = None
    output_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    # The Retry-After a `rate_limit` or `error` fault sends, as a server would (not scaled by --speed): a long one
    # shows max_retry_after at work (no wait, straight to the fallback). Unset: a short one.
    retry_after: Duration | None = None

    @model_validator(mode="after")
    def _exactly_one_action(self) -> ScriptTurn:
        actions = [k for k in ("tool", "tools", "delegate", "final", "fault") if getattr(self, k) is not None]
        if len(actions) != 1:
            raise ValueError("a script turn needs exactly one of tool, tools, delegate, final or fault"
                             + (f" (found {', '.join(actions)})" if actions else ""))
        if isinstance(self.repeat, int) and self.repeat < 1:
            raise ValueError("repeat must be at least 1 or 'forever'")
        if self.retry_after is not None and self.fault not in ("rate_limit", "error"):
            raise ValueError("retry_after only applies to a `rate_limit` or `error` fault")
        return self


class UntrustedPolicy(Strict):
    """Prompt-injection containment, a policy over sequences of calls: once an agent invocation has read an
    untrusted tool result, its calls to high-risk or side-effecting tools are refused (`refuse`), wait for an
    operator (`approval`), or run as before (`off`, the default)."""

    policy: Literal["off", "approval", "refuse"] = "off"


class HierarchySpec(Strict):
    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    entry: str
    models: dict[Name, ModelSpec]
    tools: dict[Name, ToolSpec] = Field(default_factory=dict)
    agents: dict[Name, AgentSpec]
    defaults: Defaults = Defaults()
    budgets: BudgetsSpec = BudgetsSpec()
    breakers: BreakersSpec = BreakersSpec()
    scripts: dict[str, list[ScriptTurn]] = Field(default_factory=dict)
    untrusted: UntrustedPolicy = UntrustedPolicy()
    evals: EvalsSpec = EvalsSpec()  # online sampling (engine/hierarchy/eval_checks.py)


