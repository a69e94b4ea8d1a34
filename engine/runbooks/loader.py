"""Loading runbook files: Markdown with YAML front matter -> RunbookSpec -> vocabulary cross-checks.

Every problem is an InputError naming the file, the line and the field path (`detect[0].params.min_calls`), and all
problems of all files in one pass are reported together, exactly like hierarchy files: the YAML-with-lines machinery
is engine.safe_yaml's (bounded size and alias expansion, duplicate keys refused). The front matter is handed to it
padded with one empty line for the opening `---`, so YAML line numbers ARE file line numbers.

Where runbooks come from, later ones replacing earlier ones with the same id (so a store can tune a shipped one):
1. the shipped runbooks: the checkout's runbooks/ directory when running from a source tree, else the copies
   packaged in engine/runbooks/ (tests keep the two identical);
2. the project's: the directory the config's `[runbooks] dir` names (origin `config`), the one place an engine
   wholly on Postgres, which has no store directory, can keep runbooks of its own;
3. STORE/runbooks/*.md.
README.md files are documentation, not runbooks, and are skipped.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from engine.errors import InputError, InputErrors
from engine.runbooks.model import PLACEHOLDERS, Action, Condition, Runbook, RunbookSpec, placeholders_in
from engine.runbooks.signals import signal_spec
from engine.store.config import StoreConfig

REQUIRED_SECTIONS: tuple[tuple[str, str], ...] = (
    ("what it means", "## What it means"),
    ("how to confirm", "## How to confirm"),
    ("first steps", "## First steps"),
    ("how to roll back", "## How to roll back"),
    ("when to escalate", "## When to escalate"),
)
PACKAGED_DIR = Path(__file__).resolve().parent
_CHECKOUT_DIR = PACKAGED_DIR.parent.parent / "runbooks"
STORE_SUBDIR = "runbooks"
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$")

# Which placeholders a detection of each scope can fill (the scope's own name, plus what its events carry).
_SCOPE_PLACEHOLDERS: dict[str, frozenset[str]] = {
    "global": frozenset({"scope", "run"}),
    "hierarchy": frozenset({"scope", "target", "hierarchy", "run"}),
    "agent": frozenset({"scope", "target", "agent", "hierarchy", "run"}),
    "tool": frozenset({"scope", "target", "tool", "agent", "hierarchy", "run"}),
}
# What a signal's detection fills beyond its scope's (a queue detection: the queue and its noisiest tenant).
_SIGNAL_PLACEHOLDERS: dict[str, frozenset[str]] = {"queue_backlog": frozenset({"queue", "tenant", "hierarchy"})}


# --------------------------------------------------------------------------------------------------- files

def shipped_dir() -> Path:
    """The checkout's runbooks/ when running from a source tree (the source of truth), else the packaged copies."""
    if _CHECKOUT_DIR.is_dir() and (_CHECKOUT_DIR.parent / "pyproject.toml").is_file() and any(
            _CHECKOUT_DIR.glob("*.md")):
        return _CHECKOUT_DIR
    return PACKAGED_DIR


def store_dir_runbooks(store_dir: Path) -> Path:
    return Path(store_dir) / STORE_SUBDIR


def check_store_runbooks(store_dir: Path | None, config: StoreConfig) -> None:
    """Every runbook in the config's [runbooks] dir and in STORE/runbooks is valid (InputErrors for all problems of
    all files); reads only. Passed to open_engine_store as an input check, so a typo fails before anything in the
    store is created (on Postgres: before the engine registers). The shipped runbooks are validated by the
    project's tests, so only the operator's own are read here."""
    load_runbooks(store_dir, project_dir=config.runbooks_dir, shipped=False)


def runbook_files(directory: Path) -> list[Path]:
    return sorted(p for p in Path(directory).glob("*.md") if p.is_file() and p.name.lower() != "readme.md")


def split_front_matter(text: str, file: str) -> tuple[str, str, int]:
    """(YAML padded so its line numbers are the file's, the Markdown body, the body's first line)."""
    lines = text.split("\n")
    if not lines or lines[0].strip() != "---":
        raise InputError("a runbook starts with YAML front matter: a first line `---`, the fields, then `---`",
                         file=file, line=1)
    for index in range(1, len(lines)):
        if lines[index].rstrip() in ("---", "..."):
            front = "\n" + "\n".join(lines[1:index])
            body = "\n".join(lines[index + 1:])
            return front, body, index + 2
    raise InputError("the front matter is never closed: add a line `---` after the last field", file=file,
                     line=len(lines))


def load_runbook(path: Path | str, *, origin: str = "project") -> Runbook:
    path = Path(path)
    shown = str(path)
    if not path.is_file():
        raise InputError("runbook file not found" if not path.exists() else "is not a runbook file", file=shown)
    from engine.safe_yaml import read_input_file

    return parse_runbook(read_input_file(path, "runbook"), path, origin=origin)


def parse_runbook(raw: bytes, path: Path, *, origin: str = "project") -> Runbook:
    # Imported here: pydantic's error machinery is not needed until a file is actually parsed.
    from engine.safe_yaml import YamlDocument
    from engine.schema_errors import validation_errors

    shown = str(path)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 text (byte {raw[exc.start]:#04x} at offset {exc.start})", file=shown,
                         line=raw[:exc.start].count(b"\n") + 1) from None
    text = text.replace("\r\n", "\n")
    front, body, body_line = split_front_matter(text, shown)
    if not front.strip():
        raise InputError("the front matter is empty (it needs id, title, severity, detect, ...)", file=shown, line=2)
    try:
        doc = YamlDocument(path, front.encode("utf-8"), "runbook")
    except InputError as exc:
        if exc.message.startswith("the top level"):
            raise InputError("the front matter must be a mapping (keys like `id:`, `title:` and `detect:`)",
                             file=shown, line=exc.line) from None
        raise
    errors: list[InputError] = list(doc.duplicate_errors)
    spec: RunbookSpec | None = None
    try:
        spec = RunbookSpec.model_validate(doc.data)
    except ValidationError as exc:
        errors += validation_errors(doc, exc, RunbookSpec)
    if spec is None:
        _raise(errors)
    assert spec is not None
    checker = _Checker(spec, doc)
    checker.run()
    errors += checker.errors
    sections, section_errors = _check_body(body, body_line, shown, len(text.split("\n")))
    errors += section_errors
    _raise(errors)
    return Runbook(spec=spec, path=path, body=body, body_line=body_line, origin=origin, sections=tuple(sections),
                   doc=doc)


def _raise(errors: list[InputError]) -> None:
    if not errors:
        return
    errors = sorted(errors, key=lambda e: (e.file or "", e.line or 0))
    raise errors[0] if len(errors) == 1 else InputErrors(errors)


def _check_body(body: str, body_line: int, file: str, last_line: int) -> tuple[list[str], list[InputError]]:
    """The body is what an on-call engineer reads at 3 a.m.: the five sections must be there."""
    headings = []
    for line in body.split("\n"):
        match = _HEADING.match(line)
        if match:
            headings.append(match.group(1).strip().lower())
    missing = [shown for key, shown in REQUIRED_SECTIONS if not any(h.startswith(key) for h in headings)]
    if not missing:
        return headings, []
    return headings, [InputError(f"the body lacks the section(s) {', '.join(repr(m) for m in missing)}; every "
                                 f"runbook explains what it means, how to confirm, first steps, how to roll back "
                                 f"and when to escalate", file=file, line=min(body_line, last_line), field="body")]


# --------------------------------------------------------------------------------------------------- checks

class _Checker:
    """Vocabulary checks over a schema-valid spec; collects every problem."""

    def __init__(self, spec: RunbookSpec, doc: Any) -> None:
        self.spec = spec
        self.doc = doc
        self.errors: list[InputError] = []

    def fail(self, loc: tuple[Any, ...], message: str) -> None:
        self.errors.append(self.doc.error(loc, message))

    def run(self) -> None:
        for index, condition in enumerate(self.spec.detect):
            self.check_condition(index, condition)
        available = frozenset(PLACEHOLDERS)
        for condition in self.spec.detect:
            available &= _SCOPE_PLACEHOLDERS[condition.scope] | _SIGNAL_PLACEHOLDERS.get(condition.signal, frozenset())
        for index, action in enumerate(self.spec.actions):
            self.check_action(index, action, available)
        if not self.spec.rollback.manual and not self.spec.control_actions:
            self.fail(("rollback",), "a timed rollback needs actions to roll back (this runbook only pages)")

    def check_condition(self, index: int, condition: Condition) -> None:
        base = ("detect", index)
        spec = signal_spec(condition.signal)
        assert spec is not None  # the model validated the name
        if condition.scope not in spec.scopes:
            self.fail(base + ("scope",), f"{condition.signal} cannot be measured per {condition.scope} "
                                         f"(scopes: {', '.join(spec.scopes)})")
        if spec.kind == "window" and condition.window <= 0:
            self.fail(base + ("for",), f"{condition.signal} is measured over a window: `for` must be longer than 0")
        if condition.target is not None and condition.scope == "global":
            self.fail(base + ("target",), "a global condition has no target; use scope hierarchy, agent or tool")
        if not math.isfinite(condition.threshold):
            self.fail(base + ("threshold",), "must be a finite number")
        for name, value in condition.params.items():
            param = spec.param(name)
            if param is None:
                known = [p.name for p in spec.params]
                close = difflib.get_close_matches(name, known, n=1)
                hint = (f"; did you mean {close[0]!r}?" if close else
                        f" ({condition.signal} takes {', '.join(known)})" if known else
                        f" ({condition.signal} takes no params)")
                self.fail(base + ("params", name), f"unknown parameter{hint}")
                continue
            try:
                param.validate(value)
            except ValueError as exc:
                self.fail(base + ("params", name), str(exc))
        kind = condition.params.get("kind")
        if condition.scope == "tool" and condition.signal == "breaker_opened" and kind not in (None, "any", "tool"):
            self.fail(base + ("params", "kind"), "scope tool measures tool breakers; use kind: tool (or no kind)")
        if condition.scope == "tool" and condition.signal == "latency_p95" and kind == "model":
            self.fail(base + ("params", "kind"), "scope tool measures tool calls; use kind: tool")

    def check_template(self, loc: tuple[Any, ...], template: str | None, available: frozenset[str]) -> str | None:
        """The template with every placeholder replaced by a sample name, or None if it cannot be filled."""
        if template is None:
            return None
        ok = True
        for name in placeholders_in(template):
            if name not in PLACEHOLDERS:
                close = difflib.get_close_matches(name, PLACEHOLDERS, n=1)
                hint = f"; did you mean {{{close[0]}}}?" if close else f" (placeholders: {', '.join(PLACEHOLDERS)})"
                self.fail(loc, f"unknown placeholder {{{name}}}{hint}")
                ok = False
            elif name not in available:
                scopes = sorted({c.scope for c in self.spec.detect})
                self.fail(loc, f"{{{name}}} is not filled by a detection per {' / '.join(scopes)} (those fill: "
                               f"{', '.join(sorted(available)) or 'nothing'}); name a target instead")
                ok = False
        if not ok:
            return None
        return re.sub(r"\{[^{}]*\}", "x", template)

    def check_action(self, index: int, action: Action, available: frozenset[str]) -> None:
        base = ("actions", index, action.kind)
        if action.flag is not None:
            flag = action.flag
            name = self.check_template(base + ("name",), flag.name, available)
            self.check_template(base + ("target",), flag.target_template, available)
            if flag.scope == "global" and flag.target is not None:
                self.fail(base + ("target",), "a global flag has no target")
            if name is not None:
                from engine.controls.flags import validate_flag

                try:
                    validate_flag(name, flag.value, flag.scope)
                except InputError as exc:
                    loc = base + (("value",) if "expected" in exc.message else ("name",))
                    self.fail(loc, exc.message if exc.field in (None, name) else f"{exc.field}: {exc.message}")
        elif action.kill is not None:
            kill = action.kill
            if kill.scope == "global" and kill.target is not None:
                self.fail(base + ("target",), "a global kill switch has no target")
            self.check_template(base + ("target",), kill.target_template, available)
        elif action.breaker is not None:
            key = self.check_template(base + ("key",), action.breaker.key, available)
            if key is not None:
                from engine.controls.api import BREAKER_KINDS

                kind, sep, name = key.partition(":")
                if not sep or not name or kind not in BREAKER_KINDS:
                    self.fail(base + ("key",), f"expected KIND:NAME with KIND one of {', '.join(BREAKER_KINDS)} "
                                               f"(e.g. tool:{{tool}}), got {action.breaker.key!r}")
        elif action.budget is not None:
            self.check_budget(base + ("run_budget",), action.budget.run_budget)
        elif action.page is not None and action.page.to is None and not self.spec.owner:
            self.fail(base, "a page without `to` goes to the owners, and this runbook has none")

    def check_budget(self, loc: tuple[Any, ...], limits: Mapping[str, Any]) -> None:
        from engine.controls.api import BUDGET_DIMENSIONS

        whole = set(BUDGET_DIMENSIONS) - {"cost_usd", "wall_time_s"}
        for name, value in limits.items():
            if name not in BUDGET_DIMENSIONS:
                close = difflib.get_close_matches(name, BUDGET_DIMENSIONS, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else f" (known: {', '.join(BUDGET_DIMENSIONS)})"
                self.fail(loc + (name,), f"unknown budget dimension{hint}")
            elif value is None or not math.isfinite(value) or value < 0:
                self.fail(loc + (name,), f"a runbook lowers budgets: expected a number >= 0, got {value!r}")
            elif value > _budget_bound(name):  # the bounds of a hierarchy's budgets: beyond them no run can start
                self.fail(loc + (name,), f"expected at most {_budget_bound(name):g}, got {value!r}")
            elif name in whole and float(value) != int(value):
                self.fail(loc + (name,), f"expected a whole number, got {value!r}")


def _budget_bound(name: str) -> float:
    from engine.durations import MAX_DURATION_S
    from engine.guardrails.budget import MAX_LIMIT_AMOUNT, MAX_LIMIT_USD

    return {"cost_usd": MAX_LIMIT_USD, "wall_time_s": MAX_DURATION_S}.get(name, float(MAX_LIMIT_AMOUNT))


# --------------------------------------------------------------------------------------------------- sets

def load_dir(directory: Path | str, *, origin: str = "project") -> list[Runbook]:
    """Every runbook in a directory (sorted by file name); all problems of all files reported together."""
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError("not a directory of runbooks", file=str(directory))
    runbooks: list[Runbook] = []
    errors: list[InputError] = []
    for path in runbook_files(directory):
        try:
            runbooks.append(load_runbook(path, origin=origin))
        except InputErrors as exc:
            errors += exc.errors
        except InputError as exc:
            errors.append(exc)
    seen: dict[str, Runbook] = {}
    for runbook in runbooks:
        first = seen.get(runbook.id)
        if first is not None:
            errors.append(runbook.error(("id",), f"duplicate runbook id {runbook.id!r} (also in {first.path})"))
        else:
            seen[runbook.id] = runbook
    _raise(errors)
    return runbooks


def load_runbooks(store_dir: Path | None = None, *, project_dir: Path | None = None, shipped: bool = True,
                  dirs: Iterable[tuple[Path, str]] | None = None) -> list[Runbook]:
    """The shipped runbooks, then the config's [runbooks] dir (`project_dir`, StoreConfig.runbooks_dir), then
    STORE/runbooks: a later runbook replaces an earlier one with the same id."""
    if dirs is None:
        dirs = [(shipped_dir(), "project" if shipped_dir() == _CHECKOUT_DIR else "packaged")] if shipped else []
        if project_dir is not None:
            dirs.append((Path(project_dir), "config"))
        if store_dir is not None and store_dir_runbooks(store_dir).is_dir():
            dirs.append((store_dir_runbooks(store_dir), "store"))
    by_id: dict[str, Runbook] = {}
    errors: list[InputError] = []
    for directory, origin in dirs:
        try:
            for runbook in load_dir(directory, origin=origin):
                by_id[runbook.id] = runbook
        except InputErrors as exc:
            errors += exc.errors
        except InputError as exc:
            errors.append(exc)
    _raise(errors)
    return sorted(by_id.values(), key=lambda r: r.id)


def check_targets(runbooks: Iterable[Runbook], notifier_names: Iterable[str]) -> list[InputError]:
    """Owners and page targets that are not notifiers of the store config: one error each, with its line."""
    known = sorted(set(notifier_names))
    errors: list[InputError] = []

    def check(runbook: Runbook, loc: tuple[Any, ...], name: str) -> None:
        if name in known:
            return
        close = difflib.get_close_matches(name, known, n=1)
        hint = (f"; did you mean {close[0]!r}?" if close else
                f" (configured: {', '.join(known)})" if known else
                " (the store config defines no [notifiers.NAME] targets)")
        errors.append(runbook.error(loc, f"unknown notifier target {name!r}{hint}"))

    for runbook in runbooks:
        for index, name in enumerate(runbook.spec.owner):
            check(runbook, ("owner", index), name)
        for index, action in enumerate(runbook.spec.actions):
            if action.page is not None:
                for position, name in enumerate(action.page.to or ()):
                    check(runbook, ("actions", index, "page", "to", position), name)
    return errors


def page_targets(runbook: Runbook) -> list[tuple[list[str], str]]:
    """(targets, severity) for each page action: `to` or the owners; the runbook's severity (the incident's), or
    the action's when it is more severe (an escalation to sev1). Never less severe than the incident: a sev2 incident
    is never paged as sev3."""
    out: list[tuple[list[str], str]] = []
    incident = runbook.spec.severity
    for page in runbook.spec.page_actions:
        severity = min(page.severity or incident, incident)  # "sev1" < "sev2": the more severe
        out.append((list(page.to if page.to is not None else runbook.spec.owner), severity))
    return out
