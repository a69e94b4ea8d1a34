"""The drill file format: one known-bad scenario, the guardrail expected to act, and how to tell that it did.

```yaml
name: provider-outage                  # unique in a catalogue
guardrail: retries, then the fallback model; the desk carries on without the worker
description: Every model answers 500 for the competitor analyst.
input: {account: ACME-001, ...}        # the run input (default: the hierarchy's first sample input, else empty)
scripts:                               # scripted-model turns replacing agents' scripts (like a scenario file)
  competitor_analyst: [{fault: error}]
patch:                                 # merged over the hierarchy for this drill only (mappings merge, the rest
  tools: {apply_discount: {approval: {deadline: 50ms}}}   # is replaced), then validated like the file itself
tool_faults:                           # faults of tools that call engine.examples.faults.maybe_fail (every
                                       # deal-desk tool does; your own tools can too)
  competitor_research: {delay: 300ms, rate: 0}   # or {hang: true}: never returns
expect:                                # every item must hold for the drill to hold
  run_status: completed                # one status or a list
  spans: [{kind: agent, name: competitor_analyst, status: error}]
  events: [{kind: model.retry_skipped, agent: competitor_analyst}]
  absent: [{kind: tool, name: apply_discount, status: ok}]   # spans that must not exist
attack: ...                            # prompt-injection drills only: see engine/drills/injection.py
scripted_only: false                   # true: skipped under --provider-url (drills with scripts are anyway)
```

Problems are InputErrors naming file, line and field, all reported together, like hierarchy files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from engine.durations import Duration
from engine.errors import InputError, InputErrors
from engine.hierarchy.schema import ScriptTurn, Strict
from engine.safe_yaml import YamlDocument, read_input_file
from engine.schema_errors import validation_errors

__all__ = ["AttackSpec", "Drill", "DrillFile", "EventMatch", "Expectations", "SpanMatch", "ToolFault",
           "load_catalogue", "load_drill", "load_drills"]

NAME = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"


class SpanMatch(Strict):
    """A span that must (or, under `absent`, must not) be in the run's trace. `attrs`: a subset of its
    attributes (e.g. `{error_kind: approval_timed_out}`)."""

    kind: str
    name: str | None = None
    agent: str | None = None
    status: str | list[str] | None = None
    attrs: dict[str, Any] = Field(default_factory=dict)


class EventMatch(Strict):
    """An event that must be in the run's trace. `data`: a subset of its data (e.g. `{reason: not_allowed}`)."""

    kind: str
    agent: str | None = None
    name: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)


class Expectations(Strict):
    run_status: str | list[str] | None = None
    spans: list[SpanMatch] = Field(default_factory=list)
    events: list[EventMatch] = Field(default_factory=list)
    absent: list[SpanMatch] = Field(default_factory=list)

    @model_validator(mode="after")
    def _something(self) -> Expectations:
        if self.run_status is None and not (self.spans or self.events or self.absent):
            raise ValueError("say how to tell the guardrail acted: run_status, spans, events or absent")
        return self


class ToolFault(Strict):
    """`rate`: share of calls that fail; `delay`: added to every call; `hang`: every call never returns (until the
    drill ends, when it is let go and fails), so only the tool's deadline ends it."""

    rate: float = Field(0.0, ge=0.0, le=1.0)
    delay: Duration = 0.0
    hang: bool = False


class AttackSpec(Strict):
    """A prompt-injection drill: the attack strings go into `tool`'s results; the obedient scripted model
    (`obey_injections`) follows them. Measured twice in one drill: the hierarchy as it is, and with the policy
    forced off."""

    tool: str
    attacks: list[str] = Field(default_factory=list)  # ids in engine/drills/attacks.py; empty: every attack
    user_task_tool: str | None = None  # a call that shows the user's task got done (utility under attack)


class DrillFile(Strict):
    name: str = Field(pattern=NAME)
    guardrail: str = Field(min_length=1)
    description: str = ""
    input: Any = None
    scripts: dict[str, list[ScriptTurn]] = Field(default_factory=dict)
    patch: dict[str, Any] = Field(default_factory=dict)
    tool_faults: dict[str, ToolFault] = Field(default_factory=dict)
    expect: Expectations | None = None
    attack: AttackSpec | None = None
    kind: Literal["fault", "injection"] = "fault"
    # Skipped (with this reason shown) under `--provider-url`: set it when the drill's patch relies on the scripted
    # model; drills with `scripts` or `kind: injection` are scripted only anyway.
    scripted_only: bool = False

    @model_validator(mode="after")
    def _kind_fits(self) -> DrillFile:
        if self.kind == "fault" and self.expect is None:
            raise ValueError("a fault drill needs `expect` (how to tell the guardrail acted)")
        if self.kind == "injection" and self.attack is None:
            raise ValueError("an injection drill needs `attack`")
        return self


@dataclass(frozen=True, eq=False)
class Drill:
    """A validated drill file, with its document (for errors found later, e.g. in its scripts or patch)."""

    spec: DrillFile
    path: Path
    doc: YamlDocument

    @property
    def name(self) -> str:
        return self.spec.name


def _load_one(path: Path) -> tuple[Drill | None, list[InputError]]:
    try:
        doc = YamlDocument(path, read_input_file(path, "drill"), "drill")
    except InputErrors as exc:
        return None, list(exc.errors)
    except InputError as exc:
        return None, [exc]
    try:
        spec = DrillFile.model_validate(doc.data)
    except ValidationError as exc:
        return None, doc.duplicate_errors + validation_errors(doc, exc, DrillFile)
    if doc.duplicate_errors:
        return None, doc.duplicate_errors
    return Drill(spec=spec, path=path, doc=doc), []


def load_drill(path: str | Path) -> Drill:
    drill, errors = _load_one(Path(path))
    if errors:
        raise errors[0] if len(errors) == 1 else InputErrors(errors)
    assert drill is not None
    return drill


def _drill_files(root: Path) -> list[Path]:
    if not root.is_dir():
        raise InputError("drill directory not found" if not root.exists() else "not a directory", file=str(root))
    files = sorted([*root.glob("*.yaml"), *root.glob("*.yml")])
    if not files:
        raise InputError("no drill files (*.yaml) in this directory", file=str(root))
    return files


def load_drills(directory: str | Path) -> list[Drill]:
    """Every `*.yaml` / `*.yml` drill in a directory, by file name; every problem of every file at once."""
    return load_catalogue([directory])


def load_catalogue(directories: list[str | Path]) -> list[Drill]:
    """The drills of several directories merged (a user's own next to the bundled ones), in the order given, each
    directory by file name. Names must be unique across all of them: a second drill of the same name is an error
    naming both files (a user drill does not silently replace a bundled one). Every problem at once."""
    files: list[Path] = []
    for directory in directories:
        files += _drill_files(Path(directory))
    drills: list[Drill] = []
    errors: list[InputError] = []
    seen: dict[str, Path] = {}
    for file in files:
        drill, problems = _load_one(file)
        errors += problems
        if drill is None:
            continue
        if drill.name in seen:
            errors.append(drill.doc.error(("name",), f"drill name {drill.name!r} also used by {seen[drill.name]}"))
            continue
        seen[drill.name] = file
        drills.append(drill)
    if errors:
        raise errors[0] if len(errors) == 1 else InputErrors(errors)
    return drills
