"""A runbook's front matter as pydantic models (field names here ARE the file format; docs/runbooks.md documents
each), and the {placeholder} rendering actions use to name what a detection found.

Only the shape is checked here. Cross-checks that need a vocabulary (signal parameters, flag names and values,
budget dimensions, notifier targets, which placeholders a scope can fill) are in loader.py, which knows the line of
every node.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from engine.durations import Duration
from engine.errors import InputError
from engine.runbooks.signals import SIGNAL_NAMES, signal_spec

ID_PATTERN = r"^[a-z0-9][a-z0-9_.\-]*$"  # also valid inside the audit actor `runbook:ID`
TARGET_NAME = r"^[A-Za-z0-9_\-]+$"  # notifier names, as in engine.store.config
PLACEHOLDERS: tuple[str, ...] = ("hierarchy", "agent", "tool", "run", "target", "scope", "queue", "tenant")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")

Severity = Literal["sev1", "sev2", "sev3", "sev4"]
DEFAULT_MIN_QUIET_S = 60.0


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Condition(Strict):
    """One detect condition: `signal op threshold`, measured over (or held for) `for`, per `scope`."""

    signal: str
    threshold: float
    op: Literal[">=", ">", "<=", "<", "=="] = ">="
    window: Duration = Field(300.0, alias="for", ge=0)
    scope: Literal["global", "hierarchy", "agent", "tool"] = "global"
    target: str | None = Field(None, min_length=1)
    hold: Duration = 0.0
    quiet: Duration | None = None
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("signal")
    @classmethod
    def _known_signal(cls, name: str) -> str:
        if signal_spec(name) is None:
            close = difflib.get_close_matches(name, SIGNAL_NAMES, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"unknown signal {name!r}{hint} (signals: {', '.join(SIGNAL_NAMES)})")
        return name

    @property
    def gauge(self) -> bool:
        spec = signal_spec(self.signal)
        return spec is not None and spec.kind == "gauge"

    @property
    def hold_s(self) -> float:
        """How long the condition must hold before it fires: a gauge holds for `for`; a window signal is already
        measured over `for`, so only an explicit `hold` delays it."""
        return self.window + self.hold if self.gauge else self.hold

    @property
    def quiet_s(self) -> float:
        """How long the condition must be false before the detection clears (default: `for`, at least a minute,
        so a condition that flickers around its threshold does not open and close incidents)."""
        return max(self.window, DEFAULT_MIN_QUIET_S) if self.quiet is None else self.quiet

    def describe(self) -> str:
        where = self.scope if self.target is None else f"{self.scope} {self.target}"
        over = f"for {_short_duration(self.window)}" if self.gauge else f"over {_short_duration(self.window)}"
        return f"{self.signal} {self.op} {self.threshold:g} {over} per {where}"


class FlagAction(Strict):
    name: str = Field(min_length=1)
    value: str | int
    scope: Literal["global", "hierarchy", "run"] = "hierarchy"
    target: str | None = None

    @field_validator("value", mode="before")
    @classmethod
    def _not_a_yaml_boolean(cls, value: Any) -> Any:
        if isinstance(value, bool):
            word = "on" if value else "off"
            raise ValueError(f"YAML reads unquoted on/off/yes/no as true/false; quote the value: value: \"{word}\"")
        return value

    @property
    def target_template(self) -> str | None:
        if self.scope == "global":
            return None
        return self.target or ("{hierarchy}" if self.scope == "hierarchy" else "{run}")


_KILL_DEFAULT_TARGET = {"hierarchy": "{hierarchy}", "agent": "{agent}", "tool": "{tool}", "run": "{run}"}


class KillAction(Strict):
    scope: Literal["global", "hierarchy", "agent", "tool", "run"]
    target: str | None = None
    mode: Literal["kill", "drain", "pause"]

    @property
    def target_template(self) -> str | None:
        if self.scope == "global":
            return None
        return self.target or _KILL_DEFAULT_TARGET[self.scope]


class BreakerAction(Strict):
    key: str = Field("tool:{tool}", min_length=3)
    action: Literal["force_open"] = "force_open"
    duration: Duration | None = Field(None, alias="for", gt=0)


class BudgetAction(Strict):
    run_budget: dict[str, float | int | None] = Field(min_length=1)


class PageAction(Strict):
    to: list[Annotated[str, Field(pattern=TARGET_NAME)]] | None = None
    severity: Severity | None = None
    message: str | None = None


ACTION_KINDS: tuple[str, ...] = ("flag", "kill", "breaker", "budget", "page")


class Action(Strict):
    """Exactly one of flag, kill, breaker, budget or page."""

    flag: FlagAction | None = None
    kill: KillAction | None = None
    breaker: BreakerAction | None = None
    budget: BudgetAction | None = None
    page: PageAction | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Action:
        present = [k for k in ACTION_KINDS if getattr(self, k) is not None]
        if len(present) != 1:
            raise ValueError(f"an action needs exactly one of {', '.join(ACTION_KINDS)}"
                             + (f" (found {', '.join(present)})" if present else ""))
        return self

    @property
    def kind(self) -> str:
        return next(k for k in ACTION_KINDS if getattr(self, k) is not None)

    @property
    def body(self) -> Any:
        return getattr(self, self.kind)


class Rollback(Strict):
    """`rollback: manual` (only a person rolls back) or `rollback: {after: 30m, require_quiet: true}`."""

    after: Duration | None = Field(None, gt=0)
    require_quiet: bool = True

    @model_validator(mode="after")
    def _quiet_needs_after(self) -> Rollback:
        if self.after is None and "require_quiet" in self.model_fields_set:
            raise ValueError("a timed rollback needs `after` (e.g. {after: 30m, require_quiet: true}); "
                             "otherwise write `rollback: manual`")
        return self

    @property
    def manual(self) -> bool:
        return self.after is None

    def as_dict(self) -> dict[str, Any]:
        return {"mode": "manual"} if self.after is None else {"mode": "after", "after_s": self.after,
                                                               "require_quiet": self.require_quiet}


def _rollback_words(value: Any) -> Any:
    if value == "manual":
        return {}
    if isinstance(value, str) or value is None:
        raise ValueError(f"expected `manual` or a mapping like {{after: 30m, require_quiet: true}}, got {value!r}")
    return value


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, dict) else value


class RunbookSpec(Strict):
    id: str = Field(pattern=ID_PATTERN, max_length=80)
    title: str = Field(min_length=1)
    severity: Severity
    owner: list[Annotated[str, Field(pattern=TARGET_NAME)]] = Field(default_factory=list)
    detect: list[Condition] = Field(min_length=1)
    actions: list[Action] = Field(default_factory=list)
    apply: Literal["auto", "suggest"] = "suggest"
    rollback: Rollback = Field(default_factory=Rollback)

    _detect_list = field_validator("detect", mode="before")(lambda cls, v: _as_list(v))
    _rollback_words = field_validator("rollback", mode="before")(lambda cls, v: _rollback_words(v))

    @property
    def page_actions(self) -> list[PageAction]:
        return [a.page for a in self.actions if a.page is not None]

    @property
    def control_actions(self) -> list[Action]:
        """The actions that change control.db (everything but pages)."""
        return [a for a in self.actions if a.page is None]


@dataclass(frozen=True)
class Runbook:
    """A validated runbook file."""

    spec: RunbookSpec
    path: Path
    body: str
    body_line: int  # the file line the Markdown body starts on
    origin: str = "project"  # "project" (the checkout's runbooks/), "packaged" (engine/runbooks/) or "store"
    sections: tuple[str, ...] = field(default=())
    # The parsed YAML document (engine.safe_yaml.YamlDocument): knows the line of every field, for errors
    # found after loading (a target the store config does not define).
    doc: Any = field(default=None, compare=False, repr=False)

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def actor(self) -> str:
        return f"runbook:{self.spec.id}"

    def error(self, loc: tuple[Any, ...], message: str) -> InputError:
        if self.doc is not None:
            return self.doc.error(loc, message)
        return InputError(message, file=str(self.path), field=".".join(str(p) for p in loc) or None)


class PlaceholderError(ValueError):
    """An action names a placeholder the detection (or the operator's --scope) did not provide."""


def placeholders_in(template: str) -> list[str]:
    return _PLACEHOLDER.findall(template)


def render(template: str, context: Mapping[str, Any]) -> str:
    """`tool:{tool}` -> `tool:crm_lookup`. Every placeholder must be known and present in `context`."""
    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        value = context.get(name)
        if value is None or value == "":
            raise PlaceholderError(f"{{{name}}} is not known here (known: "
                                   f"{', '.join(k for k in PLACEHOLDERS if context.get(k)) or 'nothing'})")
        return str(value)
    return _PLACEHOLDER.sub(fill, template)


def _short_duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


short_duration = _short_duration
