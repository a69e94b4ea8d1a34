"""A hierarchy prepared for running: per-agent tool definitions, contracts and prompts built once, not per step."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from engine.hierarchy.schema import AgentSpec, HierarchySpec, ModelSpec
from engine.providers.base import SystemMessage, ToolDefinition
from engine.providers.scripted import DELEGATION_PREFIX
from engine.runtime.contracts import Contract

if TYPE_CHECKING:
    from engine.hierarchy.loader import Hierarchy
    from engine.hierarchy.tools import LoadedTool

DELEGATION_PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "task": {"type": "string", "description": "What the agent should do, in one or two sentences."},
        "context": {"type": "object", "description": "The structured facts it needs (its input contract)."},
    },
    "required": ["task"],
    "additionalProperties": False,
}


@dataclass(slots=True)
class CompiledAgent:
    name: str
    spec: AgentSpec
    model: ModelSpec | None
    fallback: list[ModelSpec]
    tools: dict[str, LoadedTool]
    delegates: frozenset[str]
    tool_definitions: list[ToolDefinition]
    system_message: SystemMessage
    input_contract: Contract | None
    output_contract: Contract | None
    max_steps: int
    loop_threshold: int
    tool_definition_chars: int  # what the tool schemas add to every request, for input-token estimates
    delegation_names: dict[str, str] = field(default_factory=dict)  # tool name (ask_X) -> agent X


@dataclass(slots=True)
class CompiledHierarchy:
    hierarchy: Hierarchy
    spec: HierarchySpec
    agents: dict[str, CompiledAgent]

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def source_hash(self) -> str:
        return self.hierarchy.source_hash


def _system_prompt(name: str, spec: AgentSpec, output: Contract | None) -> str:
    parts = [f"You are {name}. Contract: {spec.contract}"]
    if spec.instructions:
        parts.append(spec.instructions.strip())
    if spec.delegates:
        parts.append("Delegate with the ask_<agent> tools; give each a task and the context it needs.")
    if output is not None:
        parts.append("Answer with a JSON object with the fields: " + json.dumps(
            {k: f.type for k, f in output.fields.items()}))
    return "\n\n".join(parts)


def compile_hierarchy(hierarchy: Hierarchy) -> CompiledHierarchy:
    spec = hierarchy.spec
    agents: dict[str, CompiledAgent] = {}
    for name, agent in spec.agents.items():
        output = Contract(f"{name}_output", agent.output) if agent.output else None
        definitions = [ToolDefinition(t, hierarchy.tools[t].description or hierarchy.tools[t].spec.description,
                                      hierarchy.tools[t].parameters_schema) for t in agent.tools]
        delegation_names: dict[str, str] = {}
        for child in agent.delegates:
            tool_name = DELEGATION_PREFIX + child
            delegation_names[tool_name] = child
            definitions.append(ToolDefinition(tool_name, f"Delegate to {child}: {spec.agents[child].contract}",
                                              DELEGATION_PARAMETERS))
        agents[name] = CompiledAgent(
            name=name,
            spec=agent,
            model=spec.models[agent.model] if agent.model else None,
            fallback=[spec.models[m] for m in agent.fallback],
            tools={t: hierarchy.tools[t] for t in agent.tools},
            delegates=frozenset(agent.delegates),
            tool_definitions=definitions,
            system_message=SystemMessage(_system_prompt(name, agent, output)),
            input_contract=Contract(f"{name}_input", agent.input) if agent.input else None,
            output_contract=output,
            max_steps=agent.max_steps or spec.defaults.max_steps,
            loop_threshold=spec.defaults.loop_threshold,
            tool_definition_chars=sum(len(d.name) + len(d.description) + len(json.dumps(d.parameters))
                                      for d in definitions),
            delegation_names=delegation_names,
        )
    return CompiledHierarchy(hierarchy=hierarchy, spec=spec, agents=agents)
