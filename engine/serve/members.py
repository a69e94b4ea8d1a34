"""The hierarchies of a fleet, loaded: each with its queue's name (the hierarchy's name, or the entry's `name:`),
its bounds, and the DBOS queue configuration they make."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.durable.queues import QueueConfig, check_config
from engine.errors import InputError
from engine.hierarchy.bundled import is_bundled
from engine.hierarchy.loader import Hierarchy, load_hierarchy
from engine.serve.contracts import Refused
from engine.serve.fleet import FleetFile, QueueSpec

if TYPE_CHECKING:
    from engine.runtime.compiled import CompiledHierarchy


@dataclass(frozen=True, slots=True)
class Member:
    name: str  # the queue's name and the name submissions use
    hierarchy: Hierarchy
    queue: QueueSpec
    config: QueueConfig


def _error(fleet: FleetFile, field: str, message: str) -> InputError:
    return InputError(message, file=None if fleet.path is None else str(fleet.path),
                      field=field if fleet.path is not None else "--hierarchy")


def load_members(fleet: FleetFile) -> dict[str, Member]:
    """Load every hierarchy of the fleet (a bundled name, or a path relative to the fleet file). InputError naming
    the entry: a file that does not load, two hierarchies with one name, a queue DBOS would refuse, a webhook or
    schedule naming no hierarchy of the fleet."""
    members: dict[str, Member] = {}
    for index, entry in enumerate(fleet.spec.hierarchies):
        ref: str | Path = entry.file
        if fleet.path is not None and not is_bundled(entry.file) and not Path(entry.file).is_absolute():
            ref = fleet.path.parent / entry.file
        scenario = entry.scenario
        if scenario is not None and fleet.path is not None and not Path(scenario).is_absolute():
            scenario = str(fleet.path.parent / scenario)
        try:
            hierarchy = load_hierarchy(ref, scenario=scenario)
        except InputError as exc:
            raise _error(fleet, f"hierarchies[{index}].file", f"hierarchy {entry.file!r} does not load: {exc}"
                         ) from None
        name = entry.name or hierarchy.name
        if name in members:
            raise _error(fleet, f"hierarchies[{index}].name",
                         f"two hierarchies are named {name!r} (give one of them a `name:`)")
        rate = entry.queue.rate
        config = QueueConfig(name, entry.queue.concurrency, entry.queue.per_tenant_concurrency,
                             None if rate is None else rate.limit, None if rate is None else rate.period_s)
        problem = check_config(config)
        if problem is not None:
            raise _error(fleet, f"hierarchies[{index}].queue", f"queue {name}: {problem}")
        members[name] = Member(name, hierarchy, entry.queue, config)
    named = [("webhooks", index, hook.name, hook.hierarchy) for index, hook in enumerate(fleet.spec.webhooks)]
    named += [("schedules", index, s.name, s.hierarchy) for index, s in enumerate(fleet.spec.schedules)]
    for kind, index, name, target in named:
        if target not in members:
            raise _error(fleet, f"{kind}[{index}].hierarchy", f"{name}: no hierarchy named {target!r} in this "
                         f"fleet (have: {', '.join(sorted(members))})")
    return members


def check_input(compiled: CompiledHierarchy, value: Any) -> None:
    """Refused(422, naming `input`) when a submission's input does not match the entry agent's input contract."""
    from engine.runtime.contracts import ContractViolation
    from engine.runtime.results import split_input

    entry = compiled.agents[compiled.spec.entry]
    if entry.input_contract is None:
        return
    try:
        entry.input_contract.validate(split_input(value)[1])
    except ContractViolation as exc:
        raise Refused(422, f"input does not match {entry.name}'s input contract: {exc}", field="input") from None
