"""Loading a hierarchy file: YAML -> pydantic models -> cross-reference checks (checks.py) -> imported tools.

Every problem becomes an InputError naming the file, the line of the offending YAML node and the field path
(`agents.finance.tools[1]`), and all problems found in one pass are reported together (InputErrors), so an
operator fixes a file in one go instead of one error per run. Reading is engine.safe_yaml's (bounded size and alias
expansion, duplicate keys refused, lines kept); pydantic errors become located InputErrors in engine.schema_errors.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from engine.errors import InputError, InputErrors
from engine.hierarchy.bundled import bundled_names, bundled_path, is_bundled
from engine.hierarchy.checks import CrossChecker
from engine.hierarchy.schema import AgentSpec, HierarchySpec, ScriptTurn, Strict
from engine.hierarchy.tools import LoadedTool
from engine.safe_yaml import YamlDocument, read_input_file
from engine.schema_errors import validation_errors

__all__ = ["Hierarchy", "load_hierarchy", "resolve_hierarchy_path"]


@dataclass(frozen=True, eq=False)
class Hierarchy:
    """A validated hierarchy, ready to run: every cross-reference resolves and every tool is imported."""

    spec: HierarchySpec
    path: Path
    source_hash: str  # sha256 of the file bytes, then the scenario bytes if any: identifies what a run ran
    tools: dict[str, LoadedTool]
    scenario_path: Path | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    def agent(self, name: str) -> AgentSpec:
        return self.spec.agents[name]


class ScenarioFile(Strict):
    """A scenario: scripts that replace the hierarchy's own, per agent, for a demo or a test run."""

    name: str | None = None
    description: str = ""
    scripts: dict[str, list[ScriptTurn]]


# --------------------------------------------------------------------------------------------------- files

def resolve_hierarchy_path(ref: str | Path) -> Path:
    """A bundled name ("deal-desk") or a path. A bundled name wins over a same-named file; use ./name for that."""
    if isinstance(ref, str) and is_bundled(ref):
        return bundled_path(ref)
    path = Path(ref)
    if not path.exists() and isinstance(ref, str) and "/" not in ref and not path.suffix:
        raise InputError(f"no hierarchy file or bundled hierarchy named {ref!r} "
                         f"(bundled: {', '.join(bundled_names())})")
    return path


def _read_bytes(path: Path, what: str) -> bytes:
    return read_input_file(path, what, dir_hint="hierarchy.yaml")


# --------------------------------------------------------------------------------------------------- public

def _raise(errors: list[InputError]) -> None:
    if not errors:
        return
    errors = sorted(errors, key=lambda e: (e.file or "", e.line or 0))
    raise errors[0] if len(errors) == 1 else InputErrors(errors)


def _load_scenario(path: Path) -> tuple[YamlDocument, ScenarioFile | None, list[InputError]]:
    doc = YamlDocument(path, _read_bytes(path, "scenario"), "scenario")
    try:
        return doc, ScenarioFile.model_validate(doc.data), doc.duplicate_errors
    except ValidationError as exc:
        return doc, None, doc.duplicate_errors + validation_errors(doc, exc, ScenarioFile)


def load_hierarchy(ref: str | Path, *, scenario: str | Path | None = None) -> Hierarchy:
    """Load, validate and import a hierarchy (a path or a bundled name), optionally with a scenario file whose
    `scripts:` replace the hierarchy's scripts agent by agent. Raises InputError (InputErrors for several)."""
    path = resolve_hierarchy_path(ref)
    doc = YamlDocument(path, _read_bytes(path, "hierarchy"), "hierarchy")
    errors = list(doc.duplicate_errors)
    spec: HierarchySpec | None = None
    try:
        spec = HierarchySpec.model_validate(doc.data)
    except ValidationError as exc:
        errors += validation_errors(doc, exc, HierarchySpec)

    scenario_path = Path(scenario) if scenario is not None else None
    scenario_doc: YamlDocument | None = None
    scenario_spec: ScenarioFile | None = None
    if scenario_path is not None:
        scenario_doc, scenario_spec, scenario_errors = _load_scenario(scenario_path)
        errors += scenario_errors
    if spec is None or errors:
        _raise(errors)
    assert spec is not None

    script_docs: dict[str, YamlDocument] = {}
    if scenario_spec is not None and scenario_doc is not None:
        spec = spec.model_copy(update={"scripts": {**spec.scripts, **scenario_spec.scripts}})
        script_docs = {agent: scenario_doc for agent in scenario_spec.scripts}

    checker = CrossChecker(spec, doc, script_docs)
    checker.run()
    _raise(checker.errors)

    digest = hashlib.sha256(doc.raw)
    if scenario_doc is not None:
        digest.update(scenario_doc.raw)
    return Hierarchy(spec=spec, path=path, source_hash=digest.hexdigest(), tools=checker.tools,
                     scenario_path=scenario_path)
