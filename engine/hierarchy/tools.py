"""Turning a hierarchy's `tools:` entries into callables with validated arguments.

Each tool's function is imported once at load time; a pydantic model is built from its signature (annotations and
defaults; an unannotated parameter accepts anything) and gives both the JSON schema shown to the model and the
validator run on every call the model makes. The validator is compiled once here because it sits on the hot path.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import sys
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from engine.guardrails.conditions import Condition
from engine.hierarchy.schema import ToolSpec
from engine.safe_yaml import format_loc

__all__ = ["LoadedTool", "ToolArgsError", "ToolLoadError", "build_args_model", "build_tool", "describe_errors",
           "format_loc", "import_function", "parameters_schema"]


class ToolArgsError(ValueError):
    """Arguments for a tool call do not fit its signature. ``problems`` holds (field path, reason) pairs."""

    def __init__(self, tool: str, problems: list[tuple[str, str]]) -> None:
        self.tool = tool
        self.problems = problems
        listed = "; ".join(f"{where}: {reason}" if where else reason for where, reason in problems)
        super().__init__(f"bad arguments for tool {tool!r}: {listed}")


class ToolLoadError(ValueError):
    """A tool's function cannot be imported or its signature cannot be turned into an argument schema."""


@dataclass(frozen=True, slots=True, eq=False)
class LoadedTool:
    name: str
    spec: ToolSpec
    func: Callable[..., Any]
    is_async: bool
    args_model: type[BaseModel]
    parameters_schema: dict[str, Any]
    description: str = ""
    # Parsed `approval.when`, so the runtime never re-parses a rule per call. None unless required is `when`.
    approval_condition: Condition | None = None
    # Model field name -> the function's parameter name; differ only where a parameter would shadow a
    # BaseModel attribute (`json`, `copy`, `model_*`, `_private`).
    _param_names: dict[str, str] = field(default_factory=dict, repr=False)

    def validate_args(self, args: dict[str, Any]) -> dict[str, Any]:
        """Validated keyword arguments for ``func`` (defaults filled in), or ToolArgsError listing each bad field."""
        if not isinstance(args, dict):
            raise ToolArgsError(self.name, [("", f"arguments must be a JSON object, not {type(args).__name__}")])
        try:
            validated = self.args_model.__pydantic_validator__.validate_python(args)
        except ValidationError as exc:
            raise ToolArgsError(self.name, describe_errors(exc)) from None
        values = validated.__dict__
        names = self._param_names
        return {names.get(key, key): value for key, value in values.items()}


def describe_errors(exc: ValidationError) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    for error in exc.errors(include_url=False):
        where = format_loc(error["loc"])
        kind = error["type"]
        if kind == "missing":
            reason = "missing required argument"
        elif kind == "extra_forbidden":
            reason = "unexpected argument"
        else:
            reason = f"{error['msg']} (got {_short(error.get('input'))})"
        problems.append((where, reason))
    return problems


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# --------------------------------------------------------------------------------------------------- import

def import_function(reference: str, search_paths: tuple[Path, ...] = ()) -> Callable[..., Any]:
    """Import ``package.module:function``. ``search_paths`` are tried after the normal import path, so a tool
    module next to a hierarchy file imports without installing it; they never shadow installed modules."""
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise ToolLoadError(f"function must look like 'package.module:function', got {reference!r}")
    added = [str(p) for p in search_paths if str(p) not in sys.path]
    sys.path.extend(added)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # SyntaxError, ImportError, or whatever the module raises while importing
        raise ToolLoadError(f"cannot import module {module_name!r}: {type(exc).__name__}: {exc}") from exc
    except SystemExit as exc:
        raise ToolLoadError(f"cannot import module {module_name!r}: it called exit({exc.code})") from exc
    finally:
        for entry in added:
            try:
                sys.path.remove(entry)
            except ValueError:
                pass
    try:
        func = getattr(module, attribute)
    except AttributeError:
        raise ToolLoadError(f"module {module_name!r} has no attribute {attribute!r}") from None
    if not callable(func):
        raise ToolLoadError(f"{attribute!r} is a {type(func).__name__}, not a callable")
    return func


# --------------------------------------------------------------------------------------------------- schema

_ARGS_CONFIG = ConfigDict(extra="forbid", protected_namespaces=(), arbitrary_types_allowed=False)


def _needs_alias(name: str) -> bool:
    return name.startswith("_") or name.startswith("model_") or hasattr(BaseModel, name)


def _param_docs(doc: str | None) -> dict[str, str]:
    """Parameter descriptions from a Google-style ``Args:`` section, so tool authors document once."""
    if not doc:
        return {}
    docs: dict[str, str] = {}
    lines = inspect.cleandoc(doc).splitlines()
    in_args = False
    current: str | None = None
    base_indent = 0
    for line in lines:
        stripped = line.strip()
        if stripped in ("Args:", "Arguments:", "Parameters:"):
            in_args, current = True, None
            base_indent = -1
            continue
        if not in_args:
            continue
        if not stripped:
            current = None
            continue
        indent = len(line) - len(line.lstrip())
        if indent == 0:
            break  # the next section ("Returns:", prose) ends the argument list
        if base_indent < 0:
            base_indent = indent
        if indent == base_indent and ":" in stripped:
            name, _, text = stripped.partition(":")
            name = name.split("(")[0].strip()
            docs[name] = text.strip()
            current = name
        elif current is not None:
            docs[current] = (docs[current] + " " + stripped).strip()
    return docs


def _summary(doc: str | None) -> str:
    if not doc:
        return ""
    return inspect.cleandoc(doc).split("\n\n")[0].replace("\n", " ").strip()


def _strip_titles(schema: Any) -> Any:
    """Pydantic adds a `title` to every property; the model only needs names, types and descriptions."""
    if isinstance(schema, dict):
        out: dict[str, Any] = {}
        for key, value in schema.items():
            if key == "title" and isinstance(value, str):
                continue
            if key in ("properties", "$defs") and isinstance(value, dict):
                out[key] = {name: _strip_titles(sub) for name, sub in value.items()}
            else:
                out[key] = _strip_titles(value)
        return out
    if isinstance(schema, list):
        return [_strip_titles(item) for item in schema]
    return schema


def _annotated_callable(func: Callable[..., Any]) -> Any:
    """The object whose annotations describe ``func``'s parameters: get_type_hints on a class reads its
    attributes and on a callable instance or a partial it fails, so look at what actually gets called."""
    if inspect.isclass(func):
        return func.__init__
    if inspect.isfunction(func) or inspect.ismethod(func) or inspect.isbuiltin(func):
        return func
    if isinstance(func, functools.partial):
        return _annotated_callable(func.func)
    return type(func).__call__


def build_args_model(name: str, func: Callable[..., Any]) -> tuple[type[BaseModel], dict[str, str]]:
    """A model with one field per parameter of ``func``; returns it and the field -> parameter name map."""
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError) as exc:
        raise ToolLoadError(f"cannot read the signature of the function: {exc}") from None
    try:
        hints = typing.get_type_hints(_annotated_callable(func), include_extras=True)
    except Exception as exc:  # an annotation naming something that is not importable
        raise ToolLoadError(f"cannot resolve the type annotations of the function: {type(exc).__name__}: {exc}") \
            from None
    docs = _param_docs(inspect.getdoc(func))
    fields: dict[str, Any] = {}
    param_names: dict[str, str] = {}
    for index, param in enumerate(signature.parameters.values()):
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise ToolLoadError(f"parameter {param.name!r}: tools take named parameters only, "
                                f"not *args or **kwargs (the model needs a fixed argument schema)")
        if param.kind is param.POSITIONAL_ONLY:
            raise ToolLoadError(f"parameter {param.name!r} is positional-only; tools are called with keywords")
        annotation = hints.get(param.name, Any)
        default = ... if param.default is inspect.Parameter.empty else param.default
        field_name = param.name
        kwargs: dict[str, Any] = {"default": default}
        if param.name in docs:
            kwargs["description"] = docs[param.name]
        if _needs_alias(param.name):
            field_name = f"p{index}_{param.name.lstrip('_') or 'arg'}".replace("model_", "m_")
            kwargs["alias"] = param.name
        fields[field_name] = (annotation, Field(**kwargs))
        param_names[field_name] = param.name
    model_name = "".join(part.capitalize() for part in name.replace("-", "_").split("_")) + "Args"
    try:
        model = create_model(model_name, __config__=_ARGS_CONFIG, **fields)
        model.model_json_schema()  # fail at load time, not on first use, for types with no JSON schema
    except Exception as exc:  # pydantic raises several error types for types it cannot handle
        raise ToolLoadError(f"cannot build an argument schema from the signature: {exc}") from None
    return model, {k: v for k, v in param_names.items() if k != v}


def parameters_schema(model: type[BaseModel]) -> dict[str, Any]:
    """JSON schema for function calling: an object with `properties`, `required` and no other keys allowed."""
    schema = _strip_titles(model.model_json_schema())
    schema["type"] = "object"
    schema.setdefault("properties", {})
    schema["required"] = list(schema.get("required", []))
    schema["additionalProperties"] = False
    return schema


def build_tool(name: str, spec: ToolSpec, func: Callable[..., Any],
               approval_condition: Condition | None = None) -> LoadedTool:
    model, param_names = build_args_model(name, func)
    call = getattr(func, "__call__", None)  # noqa: B004 (the method itself is wanted, to ask whether it is async)
    is_async = inspect.iscoroutinefunction(func) or (call is not None and inspect.iscoroutinefunction(call))
    return LoadedTool(
        name=name,
        spec=spec,
        func=func,
        is_async=is_async,
        args_model=model,
        parameters_schema=parameters_schema(model),
        description=spec.description or _summary(inspect.getdoc(func)),
        approval_condition=approval_condition,
        _param_names=param_names,
    )
