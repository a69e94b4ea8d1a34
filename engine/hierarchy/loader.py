"""Loading a hierarchy file: YAML -> pydantic models -> cross-reference checks -> imported tools.

Every problem becomes an InputError naming the file, the line of the offending YAML node and the field path
(`agents.finance.tools[1]`), and all problems found in one pass are reported together (InputErrors), so an
operator fixes a file in one go instead of one error per run. Reading is engine.safe_yaml's (bounded size and alias
expansion, duplicate keys refused, lines kept); pydantic errors become located InputErrors in engine.schema_errors.
"""

from __future__ import annotations

import difflib
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from pydantic import ValidationError

from engine.errors import InputError, InputErrors
from engine.guardrails.conditions import Condition, ConditionError, parse_condition
from engine.hierarchy.bundled import bundled_names, bundled_path, is_bundled
from engine.hierarchy.schema import AgentSpec, HierarchySpec, ScriptTurn, Strict
from engine.hierarchy.tools import LoadedTool, ToolLoadError, build_tool, import_function
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


# --------------------------------------------------------------------------------------------------- checks

class _Checker:
    """Cross-reference checks over a schema-valid spec. Collects every problem instead of stopping at the first."""

    def __init__(self, spec: HierarchySpec, doc: YamlDocument, script_docs: dict[str, YamlDocument]) -> None:
        self.spec = spec
        self.doc = doc
        self.script_docs = script_docs
        self.errors: list[InputError] = []
        self.tools: dict[str, LoadedTool] = {}

    def fail(self, loc: tuple[Any, ...], message: str, doc: YamlDocument | None = None) -> None:
        self.errors.append((doc or self.doc).error(loc, message))

    def run(self) -> None:
        self.check_entry()
        for name, agent in self.spec.agents.items():
            self.check_agent(name, agent)
        self.check_cycles()
        self.check_scripts()
        self.check_tools()

    def check_entry(self) -> None:
        entry = self.spec.entry
        if entry not in self.spec.agents:
            self.fail(("entry",), f"entry agent {entry!r} is not defined{self._suggest(entry, self.spec.agents)}")

    def _suggest(self, name: str, known: Iterable[str]) -> str:
        known = list(known)
        close = difflib.get_close_matches(name, known, n=1)
        if close:
            return f"; did you mean {close[0]!r}?"
        return f" (known: {', '.join(known)})" if known else " (none are defined)"

    def check_agent(self, name: str, agent: AgentSpec) -> None:
        base = ("agents", name)
        models = self.spec.models
        if agent.model is not None and agent.model not in models:
            self.fail(base + ("model",), f"unknown model {agent.model!r}{self._suggest(agent.model, models)}")
        for index, fallback in enumerate(agent.fallback):
            if fallback not in models:
                self.fail(base + ("fallback", index), f"unknown model {fallback!r}{self._suggest(fallback, models)}")
        for index, tool in enumerate(agent.tools):
            if tool not in self.spec.tools:
                self.fail(base + ("tools", index), f"unknown tool {tool!r}{self._suggest(tool, self.spec.tools)}")
            elif tool.startswith("ask_") and tool[4:] in agent.delegates:
                self.fail(base + ("tools", index), f"tool {tool!r} clashes with the delegation tool offered for "
                                                   f"delegate {tool[4:]!r}; rename the tool")
        for index, delegate in enumerate(agent.delegates):
            if delegate == name:
                self.fail(base + ("delegates", index), "an agent cannot delegate to itself")
            elif delegate not in self.spec.agents:
                self.fail(base + ("delegates", index),
                          f"unknown agent {delegate!r}{self._suggest(delegate, self.spec.agents)}")
        for index, route in enumerate(agent.routes):
            if route.to not in self.spec.agents:
                self.fail(base + ("routes", index, "to"),
                          f"unknown agent {route.to!r}{self._suggest(route.to, self.spec.agents)}")
        if agent.default_route is not None and agent.default_route not in self.spec.agents:
            self.fail(base + ("default_route",), f"unknown agent {agent.default_route!r}"
                                                 f"{self._suggest(agent.default_route, self.spec.agents)}")
        if agent.stages:
            self.check_stages(name, agent)

    def check_stages(self, name: str, agent: AgentSpec) -> None:
        base = ("agents", name, "stages")
        stage_names: dict[str, int] = {}
        for index, stage in enumerate(agent.stages):
            if stage.name in stage_names:
                self.fail(base + (index, "name"), f"duplicate stage name {stage.name!r}")
            stage_names.setdefault(stage.name, index)
            if stage.agent not in self.spec.agents:
                self.fail(base + (index, "agent"),
                          f"unknown agent {stage.agent!r}{self._suggest(stage.agent, self.spec.agents)}")
        # Edges point from a stage to the stages it runs after; the loc is where that edge is written.
        # A duplicated stage name is already an error; only its first definition joins the graph.
        depends: dict[str, list[tuple[str, tuple[Any, ...]]]] = {}
        for index, stage in enumerate(agent.stages):
            edges: list[tuple[str, tuple[Any, ...]]] = []
            if stage.after is None:
                if index:
                    edges.append((agent.stages[index - 1].name, base + (index,)))
            else:
                for position, before in enumerate(stage.after):
                    if before == stage.name:
                        self.fail(base + (index, "after", position), "a stage cannot run after itself")
                    elif before not in stage_names:
                        self.fail(base + (index, "after", position),
                                  f"unknown stage {before!r}{self._suggest(before, stage_names)}")
                    else:
                        edges.append((before, base + (index, "after", position)))
            depends.setdefault(stage.name, edges)
        for cycle in _find_cycles(depends):
            loc = next(loc for before, loc in depends[cycle[0]] if before == cycle[1])
            self.fail(loc, f"stage cycle (each runs after the next): {' -> '.join(cycle)}")

    def check_cycles(self) -> None:
        edges: dict[str, list[tuple[str, tuple[Any, ...]]]] = {}
        for name, agent in self.spec.agents.items():
            out: list[tuple[str, tuple[Any, ...]]] = []
            base = ("agents", name)
            out += [(d, base + ("delegates", i)) for i, d in enumerate(agent.delegates) if d != name]
            out += [(r.to, base + ("routes", i, "to")) for i, r in enumerate(agent.routes)]
            if agent.default_route is not None:
                out.append((agent.default_route, base + ("default_route",)))
            out += [(s.agent, base + ("stages", i, "agent")) for i, s in enumerate(agent.stages)]
            edges[name] = [(target, loc) for target, loc in out if target in self.spec.agents]
        for cycle in _find_cycles(edges):
            loc = next(loc for target, loc in edges[cycle[0]] if target == cycle[1])
            self.fail(loc, f"delegation cycle: {' -> '.join(cycle)}")

    def check_scripts(self) -> None:
        for agent_name, turns in self.spec.scripts.items():
            doc = self.script_docs.get(agent_name, self.doc)
            base = ("scripts", agent_name)
            agent = self.spec.agents.get(agent_name)
            if agent is None:
                self.fail(base, f"script for unknown agent {agent_name!r}"
                                f"{self._suggest(agent_name, self.spec.agents)}", doc)
                continue
            for index, turn in enumerate(turns):
                calls = [(("tool", "name"), turn.tool)] if turn.tool else []
                calls += [(("tools", j, "name"), call) for j, call in enumerate(turn.tools or [])]
                for where, call in calls:
                    if call.name not in agent.tools:
                        hint = ""
                        if call.name.startswith("ask_") and call.name[4:] in agent.delegates:
                            hint = "; delegate with a `delegate:` turn instead"
                        self.fail(base + (index,) + where,
                                  f"agent {agent_name!r} cannot call tool {call.name!r}: not in its tools "
                                  f"({', '.join(agent.tools) or 'none'}){hint}", doc)
                for j, delegation in enumerate(turn.delegate or []):
                    if delegation.agent not in agent.delegates:
                        self.fail(base + (index, "delegate", j, "agent"),
                                  f"agent {agent_name!r} cannot delegate to {delegation.agent!r}: not in its "
                                  f"delegates ({', '.join(agent.delegates) or 'none'})", doc)

    def check_tools(self) -> None:
        search_paths = (self.doc.path.resolve().parent, Path.cwd())
        for name, spec in self.spec.tools.items():
            base = ("tools", name)
            condition = self.check_approval(name)
            try:
                func = import_function(spec.function, search_paths)
                tool = build_tool(name, spec, func, condition)
            except ToolLoadError as exc:
                self.fail(base + ("function",), f"{spec.function}: {exc}")
                continue
            self.tools[name] = tool
            if condition is not None:
                params = set(tool.parameters_schema["properties"])
                for field in condition.fields:
                    if field.split(".")[0] not in params:
                        self.fail(base + ("approval", "when"),
                                  f"condition reads {field!r}, which is not an argument of {spec.function} "
                                  f"(arguments: {', '.join(sorted(params)) or 'none'}); it would never match")
            if spec.example_args is not None:
                try:
                    tool.args_model.model_validate(spec.example_args)
                except ValidationError as exc:
                    for error in validation_errors(self.doc, exc, tool.args_model, base + ("example_args",)):
                        error.message = f"example_args do not fit {spec.function}: {error.message}"
                        self.errors.append(error)

    def check_approval(self, name: str) -> Condition | None:
        approval = self.spec.tools[name].approval
        base = ("tools", name, "approval")
        if approval is None:
            return None
        if approval.required == "when" and not approval.when:
            self.fail(base + ("required",), "`required: when` needs a `when` condition")
            return None
        if approval.required != "when":
            if approval.when:
                # A rule that silently does nothing is worse than an error on a guardrail.
                self.fail(base + ("when",), f"`when` only applies with `required: when` "
                                            f"(required is {approval.required!r})")
            return None
        try:
            return parse_condition(approval.when or "")
        except ConditionError as exc:
            self.fail(base + ("when",), f"bad condition {approval.when!r}: {exc}")
            return None


def _find_cycles(edges: dict[str, list[tuple[str, Any]]]) -> list[list[str]]:
    """Cycles found by depth-first search, one per back edge, each listed from the node whose edge closes it
    (`a -> b -> a`) and reported once whatever node the search happened to start from."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    cycles: list[list[str]] = []
    seen: set[tuple[str, ...]] = set()

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        path.append(node)
        for target, _ in edges.get(node, []):
            if state.get(target) == 1:
                loop = path[path.index(target):]
                start = loop.index(node)
                rotated = loop[start:] + loop[:start]
                lowest = rotated.index(min(rotated))
                canonical = tuple(rotated[lowest:] + rotated[:lowest])
                if canonical not in seen:
                    seen.add(canonical)
                    cycles.append(rotated + [rotated[0]])
            elif target not in state:
                visit(target, path)
        path.pop()
        state[node] = 2

    for start in edges:
        if start not in state:
            visit(start, [])
    return cycles


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

    checker = _Checker(spec, doc, script_docs)
    checker.run()
    _raise(checker.errors)

    digest = hashlib.sha256(doc.raw)
    if scenario_doc is not None:
        digest.update(scenario_doc.raw)
    return Hierarchy(spec=spec, path=path, source_hash=digest.hexdigest(), tools=checker.tools,
                     scenario_path=scenario_path)
