"""Which call-path format a recorded run used, and whether a run recorded in the old one can be carried on safely.

Call paths (engine/durable/keys.py) name a run's model and tool calls for replay and its side effects' durable keys
(`<run>:<call path>`). Format 1 (engines before pipeline stages had a frame of their own) gave every stage the
pipeline's own prefix: two stages (or stages of nested pipelines, or routers in stages) that can run the same agent
recorded the same paths, so one stage's side effect was taken as the other's (not done) and one stage's recorded
answers were replayed into the other. Format 2 adds `<pipeline>/<stage>>`.

A run keeps its format when it resumes (and a retry keeps its original's), so the keys it recorded are the keys it
looks up. A format-1 run whose hierarchy cannot run one agent twice under one prefix resumes exactly as before (its
paths are unambiguous); one whose hierarchy can is refused, with the reason: carrying it on could skip a side effect
or replay the wrong result, and nothing in its record says which stage a path belonged to.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.durable.keys import LEGACY_PATH_FORMAT

if TYPE_CHECKING:
    from engine.hierarchy.loader import Hierarchy
    from engine.hierarchy.schema import HierarchySpec
    from engine.store.trace_rows import RunRow


@dataclass(frozen=True, slots=True)
class SharedPrefix:
    """Two stages of `pipeline` that can both run `agent` under the pipeline's prefix (format 1)."""

    pipeline: str
    agent: str
    stages: tuple[str, str]


def path_format_of(attributes: Any) -> int:
    """The format a run's row says it was recorded with (`paths`); a row without one predates formats: 1."""
    value = attributes.get("paths") if isinstance(attributes, Mapping) else None
    return value if isinstance(value, int) and value > 0 else LEGACY_PATH_FORMAT


def _reach(spec: HierarchySpec, name: str, visiting: frozenset[str]) -> set[str]:
    """The model-calling agents an invocation of `name` can run under its own prefix in format 1 (delegates get a
    prefix of their own; a router runs one of its targets; a pipeline runs every stage)."""
    agent = spec.agents.get(name)
    if agent is None or name in visiting:  # unknown or cyclic: the loader refuses those; nothing to add here
        return set()
    visiting = visiting | {name}
    if agent.kind == "router":
        targets = [route.to for route in agent.routes] + ([agent.default_route] if agent.default_route else [])
        return set().union(*(_reach(spec, target, visiting) for target in targets))
    if agent.kind == "pipeline":
        return set().union(*(_reach(spec, stage.agent, visiting) for stage in agent.stages))
    return {name}


def shared_prefixes(spec: HierarchySpec) -> list[SharedPrefix]:
    """Every pipeline whose stages can run the same agent (first pair of stages per agent)."""
    found: list[SharedPrefix] = []
    for name, agent in spec.agents.items():
        if agent.kind != "pipeline":
            continue
        first_stage: dict[str, str] = {}
        for stage in agent.stages:
            for reached in sorted(_reach(spec, stage.agent, frozenset({name}))):
                if reached in first_stage:
                    if not any(s.pipeline == name and s.agent == reached for s in found):
                        found.append(SharedPrefix(name, reached, (first_stage[reached], stage.name)))
                else:
                    first_stage[reached] = stage.name
    return found


def legacy_paths_refusal(hierarchy: Hierarchy, path_format: int, run_id: str) -> str | None:
    """Why a run recorded with `path_format` cannot be carried on (resumed, or retried) on `hierarchy`, or None."""
    if path_format > LEGACY_PATH_FORMAT:
        return None
    shared = shared_prefixes(hierarchy.spec)
    if not shared:
        return None
    first = shared[0]
    return (f"cannot carry on run {run_id}: it was recorded by an engine before pipeline stages had call paths of "
            f"their own, and in {hierarchy.name} pipeline {first.pipeline!r} runs agent {first.agent!r} in stages "
            f"{first.stages[0]!r} and {first.stages[1]!r} under the same path: its record cannot tell them apart, "
            "so a side effect of one could be skipped as the other's, or one's recorded answer replayed into the "
            f"other. Check which side effects happened (flightdeck trace {run_id}), then run the hierarchy again")


def carry_on_refusal(run: RunRow) -> str | None:
    """Why a recorded run cannot be resumed because of its call paths (legacy_paths_refusal on the hierarchy file
    its row names), or None. Loads the file only for a run of the old format; a file that no longer loads is left
    to the resume itself, which says so."""
    attrs = run.attributes if isinstance(run.attributes, Mapping) else {}
    path_format = path_format_of(attrs)
    path = attrs.get("hierarchy_path")
    if path_format > LEGACY_PATH_FORMAT or not isinstance(path, str):
        return None
    from engine.errors import InputError
    from engine.hierarchy.loader import load_hierarchy

    scenario = attrs.get("scenario")
    try:
        hierarchy = load_hierarchy(path, scenario=scenario if isinstance(scenario, str) else None)
    except InputError:
        return None
    return legacy_paths_refusal(hierarchy, path_format, run.id)
