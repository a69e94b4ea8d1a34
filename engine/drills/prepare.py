"""A drill's hierarchy: the hierarchy under test with the drill's patch merged over it and its scripts in place,
validated exactly like a hierarchy file (schema, then cross-references and tool imports).

The hierarchy itself is never edited: a drill is a what-if on a copy, and its hash records both files.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import Any

from pydantic import ValidationError

from engine.errors import InputError, InputErrors
from engine.hierarchy.checks import CrossChecker
from engine.hierarchy.loader import Hierarchy
from engine.hierarchy.schema import HierarchySpec
from engine.safe_yaml import YamlDocument, read_input_file
from engine.schema_errors import validation_errors

from .spec import Drill

__all__ = ["ProviderTarget", "deep_merge", "drill_hierarchy", "on_provider", "scripted_only"]


def deep_merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """Mappings merge key by key; anything else in the patch (a list, a number, null) replaces the base value."""
    out = dict(base)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _raise(errors: list[InputError]) -> None:
    if errors:
        raise errors[0] if len(errors) == 1 else InputErrors(errors)


def drill_hierarchy(hierarchy: Hierarchy, drill: Drill, *, patch: dict[str, Any] | None = None) -> Hierarchy:
    """`hierarchy` as `drill` changes it. `patch`: an extra patch applied after the drill's own (the injection
    drill's "policy off" pass)."""
    spec = hierarchy.spec
    errors: list[InputError] = []
    if drill.spec.patch or patch:
        data = deep_merge(spec.model_dump(by_alias=True, exclude_unset=True), drill.spec.patch)
        if patch:
            data = deep_merge(data, patch)
        try:
            spec = HierarchySpec.model_validate(data)
        except ValidationError as exc:
            _raise(validation_errors(drill.doc, exc, HierarchySpec, prefix=("patch",)))
    if drill.spec.scripts:
        spec = spec.model_copy(update={"scripts": {**spec.scripts, **drill.spec.scripts}})
    for name in drill.spec.tool_faults:
        if name not in spec.tools:
            errors.append(drill.doc.error(("tool_faults", name), f"unknown tool {name!r} "
                                          f"(known: {', '.join(sorted(spec.tools))})"))
    attack = drill.spec.attack
    if attack is not None:
        for field, tool in (("tool", attack.tool), ("user_task_tool", attack.user_task_tool)):
            if tool is not None and tool not in spec.tools:
                errors.append(drill.doc.error(("attack", field), f"unknown tool {tool!r} "
                                              f"(known: {', '.join(sorted(spec.tools))})"))
    _raise(errors)

    doc = YamlDocument(hierarchy.path, read_input_file(hierarchy.path, "hierarchy"), "hierarchy")
    checker = CrossChecker(spec, doc, {agent: drill.doc for agent in drill.spec.scripts})
    checker.run()
    if checker.errors:
        # Problems the patch made can only be located in the hierarchy file; say which drill made them.
        _, line = drill.doc.locate(("patch",) if drill.spec.patch else ("name",))
        _raise([error if error.file == drill.doc.file else
                InputError(f"with this drill's patch and scripts, {error}", file=drill.doc.file, line=line)
                for error in checker.errors])
    digest = hashlib.sha256(hierarchy.source_hash.encode())
    digest.update(drill.doc.raw)
    return Hierarchy(spec=spec, path=hierarchy.path, source_hash=digest.hexdigest(), tools=checker.tools,
                     scenario_path=drill.path)


@dataclass(frozen=True, slots=True)
class ProviderTarget:
    """`flightdeck drill --provider-url`: every model of the hierarchy served by one OpenAI-compatible server.
    `model`: the model name sent (None: each model's own name); `api_key_env`: the variable holding the key (its
    value is read by the provider at call time, never stored or printed)."""

    base_url: str
    model: str | None = None
    api_key_env: str | None = None

    def describe(self) -> str:
        return self.base_url + (f" (model {self.model})" if self.model else "")


def scripted_only(drill: Drill) -> str | None:
    """Why a drill cannot run on a real model, or None: scripted turns (faults, a looping script, ...) and the
    obedient injection model exist only in the scripted provider."""
    if drill.spec.scripted_only:
        return "scripted only (the drill says so)"
    if drill.spec.kind == "injection":
        return "scripted only (needs the obedient scripted model)"
    if drill.spec.scripts:
        return f"scripted only (scripts for {', '.join(sorted(drill.spec.scripts))})"
    return None


def on_provider(hierarchy: Hierarchy, target: ProviderTarget) -> Hierarchy:
    """`hierarchy` with every model sent to `target` (prices, limits and timeouts kept, so budgets still apply)."""
    models = {name: model.model_copy(update={"provider": "openai", "base_url": target.base_url,
                                             "model": target.model or model.model,
                                             "api_key_env": target.api_key_env})
              for name, model in hierarchy.spec.models.items()}
    digest = hashlib.sha256(hierarchy.source_hash.encode())
    digest.update(f"\0{target.base_url}\0{target.model}".encode())  # a different model: a different hash
    return replace(hierarchy, spec=hierarchy.spec.model_copy(update={"models": models}),
                   source_hash=digest.hexdigest())
