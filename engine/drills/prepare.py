"""A drill's hierarchy: the hierarchy under test with the drill's patch merged over it and its scripts in place,
validated exactly like a hierarchy file (schema, then cross-references and tool imports).

The hierarchy itself is never edited: a drill is a what-if on a copy, and its hash records both files.
"""

from __future__ import annotations

import hashlib
from typing import Any

from pydantic import ValidationError

from engine.errors import InputError, InputErrors
from engine.hierarchy.checks import CrossChecker
from engine.hierarchy.loader import Hierarchy
from engine.hierarchy.schema import HierarchySpec
from engine.safe_yaml import YamlDocument, read_input_file
from engine.schema_errors import validation_errors

from .spec import Drill

__all__ = ["deep_merge", "drill_hierarchy"]


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
