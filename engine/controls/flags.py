"""Safe-mode flags: the fixed vocabulary operators and runbooks may set, and its validation.

A flag is NAME = VALUE at a scope: `global`, `hierarchy` (target: a hierarchy name) or `run` (target: a run id).
For one flag name the most specific active scope wins: run over hierarchy over global. Clearing a flag returns that
scope to whatever the broader scopes (or the defaults) say. The vocabulary is closed on purpose: a typo such as
`tools.side_effect=off` must be an error, not a flag nobody reads.

    tools.side_effects = off | on
    approvals          = all | default
    models.max_tier    = economy | standard | strong
    runs.admission     = paused | open                  (global, hierarchy)
    runs.auto_resume   = true | false                   (global)
    concurrency.max    = N  (a positive whole number)   (global)
    agent.NAME         = paused | disabled | enabled
    tool.NAME          = disabled | enabled
    queue.NAME         = open | paused | draining       (global; serve mode)
    tenant.NAME        = open | paused                  (global; serve mode)

What the engine does with each is in FLAGS below (docs/runbooks.md copies those texts).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from engine.controls.schema import FLAG_SCOPES
from engine.errors import InputError

# Agent and tool names follow the hierarchy file's NAME_PATTERN (engine.hierarchy.schema); repeated here rather than
# imported so validating a flag does not load the hierarchy models.
_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_\-]*")
MAX_CONCURRENCY = 100_000


@dataclass(frozen=True, slots=True)
class FlagSpec:
    """One entry of the vocabulary. `name` ends in `.NAME` for the per-agent / per-tool families; `values` is None
    for a positive whole number."""

    name: str
    values: tuple[str, ...] | None
    scopes: tuple[str, ...]
    doc: str


FLAGS: tuple[FlagSpec, ...] = (
    FlagSpec("tools.side_effects", ("off", "on"), FLAG_SCOPES,
             "off: every call to a tool declared `side_effects: true` is refused before it runs; the model gets a "
             "tool error saying safe mode is on and the tool span is recorded as `denied`. Read-only tools keep "
             "working. on: the default, no restriction."),
    FlagSpec("approvals", ("all", "default"), FLAG_SCOPES,
             "all: every call of a side-effecting tool (side_effects: true) waits for an operator decision "
             "(`flightdeck approvals`), whatever the tool's approval rule says; the tool's own deadline and "
             "on_timeout policy still apply (120 s and deny when the tool has none). default: only the calls the "
             "hierarchy's approval rules select."),
    FlagSpec("models.max_tier", ("economy", "standard", "strong"), FLAG_SCOPES,
             "Tiers rank economy < standard < strong. Model calls never use a model above this tier: a call to a "
             "stronger model goes to the agent's first fallback at or below this tier, else to the strongest model "
             "of at most this tier that the hierarchy defines; a hierarchy with no such model uses its cheapest "
             "model (the span records the model used). strong: no limit."),
    FlagSpec("runs.admission", ("paused", "open"), ("global", "hierarchy"),
             "paused: new runs are not started; they end at once with status `refused`. Runs already in flight "
             "continue. open: the default."),
    FlagSpec("runs.auto_resume", ("true", "false"), ("global",),
             "false: an engine that starts does not resume the runs a dead engine left in flight; they stay "
             "`abandoned` until `flightdeck resume RUN` (safe mode after a crash loop). true: the default, "
             "interrupted runs resume on start (unless the engine runs with --no-resume)."),
    FlagSpec("concurrency.max", None, ("global",),
             "At most N runs in flight at once in the engine; further runs wait for a slot. Lowering it never "
             "stops a run that is already in flight."),
    FlagSpec("agent.NAME", ("paused", "disabled", "enabled"), FLAG_SCOPES,
             "paused: the agent's next step waits (calls already in flight finish) until the flag is cleared or "
             "set to enabled. disabled: delegations to the agent fail with an error the delegating agent sees, "
             "and a running invocation of it stops at its next step. enabled: normal; set it at a narrower scope "
             "to override a broader paused/disabled."),
    FlagSpec("tool.NAME", ("disabled", "enabled"), FLAG_SCOPES,
             "disabled: calls to the tool are refused before they run; the model gets a tool error and the span "
             "is recorded as `denied`. enabled: normal; set it at a narrower scope to override a broader "
             "disabled (it does not lift tools.side_effects=off)."),
    FlagSpec("queue.NAME", ("open", "paused", "draining"), ("global",),
             "Serve mode, the queue NAME (a hierarchy's queue is named after it). paused: submissions are refused "
             "(HTTP 503 with the reason) and queued runs wait; runs in flight continue. draining: submissions are "
             "refused, queued runs still start until the queue is empty. open: the default."),
    FlagSpec("tenant.NAME", ("open", "paused"), ("global",),
             "Serve mode, the tenant NAME on every queue. paused: that tenant's submissions are refused (HTTP 503 "
             "with the reason); its queued and running runs continue. open: the default."),
)

_BY_NAME: dict[str, FlagSpec] = {spec.name: spec for spec in FLAGS}


def flag_spec(name: str) -> FlagSpec:
    """The vocabulary entry for a concrete flag name (`agent.planner` -> the `agent.NAME` entry)."""
    if not isinstance(name, str) or not name.strip():
        raise InputError("a flag name is required (see `flightdeck safe-mode --help` for the list)", field="flag")
    name = name.strip()
    spec = _BY_NAME.get(name)
    if spec is not None:
        return spec
    family, dot, rest = name.partition(".")
    family_spec = _BY_NAME.get(f"{family}.NAME") if dot else None
    if family_spec is not None:
        if not _NAME_RE.fullmatch(rest):
            raise InputError(f"{rest!r} is not a valid {family} name (letters, digits, '_' and '-', starting "
                             f"with a letter)", field=name)
        return family_spec
    known = ", ".join(spec.name for spec in FLAGS)
    raise InputError(f"unknown flag (known flags: {known})", field=name)


def validate_flag_name(name: str, scope: str) -> str:
    """The flag name, stripped, if it exists and may be set at `scope`; InputError naming the flag otherwise."""
    spec = flag_spec(name)
    name = name.strip()
    if scope not in FLAG_SCOPES:
        raise InputError(f"unknown scope {scope!r} (expected one of: {', '.join(FLAG_SCOPES)})", field="scope")
    if scope not in spec.scopes:
        raise InputError(f"cannot be set at {scope} scope (allowed: {', '.join(spec.scopes)})", field=name)
    return name


def validate_flag(name: str, value: object, scope: str) -> tuple[str, str]:
    """(name, normalized value) for a valid flag setting; InputError naming the flag for anything else.

    Values are case-insensitive words (stored lower-case); concurrency.max takes a positive whole number (given as
    an int or as text, stored as its decimal text)."""
    name = validate_flag_name(name, scope)
    spec = flag_spec(name)
    if spec.values is None:
        return name, str(_positive_int(name, value))
    if not isinstance(value, str):
        raise InputError(f"expected one of {', '.join(spec.values)}, got {value!r}", field=name)
    word = value.strip().lower()
    if word not in spec.values:
        raise InputError(f"expected one of {', '.join(spec.values)}, got {value!r}", field=name)
    return name, word


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool):  # bool is an int subclass; `True` is not a concurrency
        raise InputError(f"expected a positive whole number, got {value!r}", field=name)
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and re.fullmatch(r"\s*\+?[0-9]+\s*", value):
        number = int(value)
    else:
        raise InputError(f"expected a positive whole number, got {value!r}", field=name)
    if not 1 <= number <= MAX_CONCURRENCY:
        raise InputError(f"expected a whole number from 1 to {MAX_CONCURRENCY}, got {number}", field=name)
    return number
