"""Cross-reference checks of a schema-valid hierarchy: every name an agent, route, stage, script or tool refers to
exists, delegations and stages have no cycles, tools import and their examples validate, approval conditions parse.

Every problem is collected as an InputError located in the YAML (all of them in one pass); loader.load_hierarchy
raises them together.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from engine.errors import InputError
from engine.guardrails.conditions import Condition, ConditionError, parse_condition
from engine.hierarchy.schema import AgentSpec, HierarchySpec, ScriptToolCall
from engine.hierarchy.tools import LoadedTool, ToolLoadError, build_tool, import_function
from engine.safe_yaml import YamlDocument
from engine.schema_errors import validation_errors

__all__ = ["CrossChecker", "find_cycles"]


class CrossChecker:
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
        self.check_evals()

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
        for label, refs in agent.agree.items():
            for index, ref in enumerate(refs):
                self.check_agree_ref(base + ("agree", label, index), agent, ref)

    def check_agree_ref(self, loc: tuple[Any, ...], agent: AgentSpec, ref: str) -> None:
        """`DELEGATE.FIELD`: one of the agent's delegates, and a field its output contract declares (if any)."""
        child, field = ref.split(".", 1)
        if child not in agent.delegates:
            self.fail(loc, f"{child!r} is not one of this agent's delegates{self._suggest(child, agent.delegates)}")
            return
        output = self.spec.agents[child].output if child in self.spec.agents else None
        top = field.split(".", 1)[0]
        if output is not None and top not in output:
            self.fail(loc, f"{child}'s output contract has no field {top!r}{self._suggest(top, list(output))}")

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
        for cycle in find_cycles(depends):
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
        for cycle in find_cycles(edges):
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
                calls: list[tuple[tuple[str | int, ...], ScriptToolCall]] = (
                    [(("tool", "name"), turn.tool)] if turn.tool else [])
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

    def check_evals(self) -> None:
        """`evals.checks` of online sampling: what the scorers (engine/scoring/scorers.py) need to be built, checked
        here so `check` reports it with the file's line: a regex compiles, a JSON schema is valid, a python check's
        function imports, an llm_judge check names its server and model (no command line supplies them here)."""
        for index, check in enumerate(self.spec.evals.checks):
            base = ("evals", "checks", index)
            if check.scorer == "regex":
                import regex

                try:
                    regex.compile(check.pattern)
                except regex.error as exc:
                    self.fail(base + ("pattern",), f"not a regular expression: {exc}")
            elif check.scorer == "json_schema":
                import jsonschema
                from jsonschema.exceptions import SchemaError

                cls = jsonschema.validators.validator_for(check.json_schema, default=jsonschema.Draft202012Validator)
                try:
                    cls.check_schema(check.json_schema)
                except SchemaError as exc:
                    self.fail(base + ("schema",), f"not a valid JSON schema: {exc.message[:200]}")
            elif check.scorer == "python":
                try:
                    import_function(check.function, (self.doc.path.resolve().parent, Path.cwd()))
                except ToolLoadError as exc:
                    self.fail(base + ("function",), str(exc))
            elif check.scorer == "llm_judge":
                for field in ("base_url", "model"):
                    if not getattr(check, field):
                        self.fail(base + (field,), f"an llm_judge check of online sampling needs `{field}`")

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


def find_cycles(edges: dict[str, list[tuple[str, Any]]]) -> list[list[str]]:
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
