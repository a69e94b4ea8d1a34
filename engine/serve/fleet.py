"""fleet.yaml: the hierarchies a `flightdeck serve` loads, each with its queue's bounds, and the webhooks and cron
schedules that submit runs to them. Validated like every other file: unknown keys, bad values and dangling names are
errors with file, line and field; nothing is served from a fleet file that does not load whole.

    hierarchies:
      - file: deal-desk              # a path or a bundled name; `name:` defaults to the hierarchy's own name
        queue: {concurrency: 4, per_tenant_concurrency: 2, rate_limit: 10/1m, max_depth: 1000}
    webhooks:
      - name: github                 # POST /hooks/github
        hierarchy: deal-desk
        secret_env: GITHUB_WEBHOOK_SECRET
        signature_header: X-Hub-Signature-256
        event_id: {header: X-GitHub-Delivery}      # or {json: $.delivery.id}
        input: {request: "{{ $.issue.title }}"}
    schedules:
      - name: nightly-review
        hierarchy: deal-desk
        cron: "0 3 * * *"            # five fields, or six with seconds first
        missed: run_once             # after downtime: skip (default) or run once
        input: {request: nightly review}
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from engine.durations import parse_duration
from engine.errors import InputError, InputErrors
from engine.safe_yaml import YamlDocument, read_input_file
from engine.schema_errors import validation_errors

NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_\-]*$"
ENV_PATTERN = r"^[A-Z_][A-Z0-9_]*$"
MAX_DEPTH_BOUND = 10_000_000
DEFAULT_MAX_DEPTH = 10_000
DEFAULT_PRIORITY = 500
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\S+)\s*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most `limit` runs of a queue start per `period_s` seconds (DBOS's queue limiter)."""

    limit: int
    period_s: float
    text: str


def parse_rate(value: str) -> RateLimit:
    """"10/1m", "5/s", "100/1h" -> RateLimit. ValueError with the expected form otherwise."""
    match = _RATE.match(value)
    if not match:
        raise ValueError(f"expected a rate like '10/1m' or '5/s', got {value!r}")
    limit = int(match.group(1))
    period_text = match.group(2)
    try:
        period = parse_duration(("1" + period_text) if period_text[:1].isalpha() else period_text)
    except ValueError:
        raise ValueError(f"expected a rate like '10/1m' or '5/s', got {value!r}") from None
    if limit < 1 or period <= 0:
        raise ValueError(f"a rate needs at least 1 run per a positive period, got {value!r}")
    return RateLimit(limit, period, value.strip())


class QueueSpec(_Strict):
    concurrency: int | None = Field(default=None, ge=1, le=100_000)  # runs of this queue at once on one engine
    per_tenant_concurrency: int | None = Field(default=None, ge=1, le=100_000)
    rate_limit: str | None = None  # runs started per period: "10/1m"
    max_depth: int = Field(default=DEFAULT_MAX_DEPTH, ge=1, le=MAX_DEPTH_BOUND)  # queued past this: 429
    per_tenant_max_depth: int | None = Field(default=None, ge=1, le=MAX_DEPTH_BOUND)

    @field_validator("rate_limit")
    @classmethod
    def _rate(cls, value: str | None) -> str | None:
        if value is not None:
            parse_rate(value)
        return value

    @property
    def rate(self) -> RateLimit | None:
        return None if self.rate_limit is None else parse_rate(self.rate_limit)


class HierarchyEntry(_Strict):
    file: str = Field(min_length=1)
    name: str | None = Field(default=None, pattern=NAME_PATTERN)
    scenario: str | None = None
    queue: QueueSpec = QueueSpec()


class EventId(_Strict):
    """Where a webhook's event id is: a request header, or a JSON path into the body ("$.a.b")."""

    header: str | None = Field(default=None, min_length=1)
    json_path: str | None = Field(default=None, alias="json", pattern=r"^\$(\.[A-Za-z0-9_\-]+)+$")

    @model_validator(mode="after")
    def _one(self) -> EventId:
        if (self.header is None) == (self.json_path is None):
            raise ValueError("give exactly one of `header` or `json`")
        return self


class WebhookSpec(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    hierarchy: str = Field(pattern=NAME_PATTERN)
    secret_env: str = Field(pattern=ENV_PATTERN)  # the HMAC secret's environment variable (never the secret)
    signature_header: str = "X-Hub-Signature-256"  # "sha256=<hex of HMAC-SHA256(secret, body)>"
    event_id: EventId
    input: Any = None  # a template: strings may hold {{ $.path }} placeholders filled from the JSON body
    tenant: str | None = None  # a constant, or a {{ $.path }} template
    priority: int = Field(default=DEFAULT_PRIORITY, ge=0, le=1000)


class ScheduleSpec(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    hierarchy: str = Field(pattern=NAME_PATTERN)
    cron: str
    missed: Literal["skip", "run_once"] = "skip"
    input: Any = None
    tenant: str | None = None
    priority: int = Field(default=DEFAULT_PRIORITY, ge=0, le=1000)

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        from croniter import croniter  # type: ignore[import-untyped]

        fields = value.split()
        if len(fields) not in (5, 6) or not croniter.is_valid(value, second_at_beginning=len(fields) == 6):
            raise ValueError(f"not a cron expression (five fields, or six with seconds first): {value!r}")
        return value


class FleetSpec(_Strict):
    hierarchies: list[HierarchyEntry] = Field(min_length=1)
    webhooks: list[WebhookSpec] = []
    schedules: list[ScheduleSpec] = []


@dataclass(frozen=True, slots=True)
class FleetFile:
    """A validated fleet: the spec and where it came from (None: built from --hierarchy options)."""

    spec: FleetSpec
    path: Path | None


def load_fleet(path: str | Path) -> FleetFile:
    """Read and validate fleet.yaml (schema, then names: webhooks and schedules must name a hierarchy of the file,
    names unique). Hierarchy files themselves are loaded by the caller, which knows bundled names."""
    path = Path(path)
    doc = YamlDocument(path, read_input_file(path, "fleet", dir_hint="fleet.yaml"), "fleet")
    errors = list(doc.duplicate_errors)
    try:
        spec = FleetSpec.model_validate(doc.data)
    except ValidationError as exc:
        errors += validation_errors(doc, exc, FleetSpec)
        raise (errors[0] if len(errors) == 1 else InputErrors(errors)) from None
    errors += _cross_check(spec, doc)
    if errors:
        raise errors[0] if len(errors) == 1 else InputErrors(errors)
    return FleetFile(spec, path)


def fleet_of(files: list[str]) -> FleetFile:
    """A fleet from `--hierarchy` options: each a queue with the default bounds, no webhooks or schedules."""
    if not files:
        raise InputError("give --fleet FILE or at least one --hierarchy FILE|NAME", field="--hierarchy")
    return FleetFile(FleetSpec(hierarchies=[HierarchyEntry(file=f) for f in files]), None)


def _cross_check(spec: FleetSpec, doc: YamlDocument) -> list[InputError]:
    errors: list[InputError] = []
    named = {entry.name for entry in spec.hierarchies if entry.name is not None}
    groups: list[tuple[str, list[tuple[str, str]]]] = [
        ("webhooks", [(w.name, w.hierarchy) for w in spec.webhooks]),
        ("schedules", [(s.name, s.hierarchy) for s in spec.schedules])]
    for kind, items in groups:
        seen: set[str] = set()
        for index, (name, hierarchy) in enumerate(items):
            if name in seen:
                errors.append(doc.error((kind, index, "name"), f"{name!r} is used twice in {kind}"))
            seen.add(name)
            # Hierarchy names without `name:` are only known once the files load; the service checks those.
            if named and hierarchy not in named and len(named) == len(spec.hierarchies):
                errors.append(doc.error((kind, index, "hierarchy"),
                                        f"no hierarchy named {hierarchy!r} in this fleet (have: "
                                        f"{', '.join(sorted(named))})"))
    return errors
