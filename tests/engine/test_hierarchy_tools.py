"""Tool loading: importing functions, argument models from signatures, JSON schemas, fast argument validation."""

from __future__ import annotations

import functools
import sys
import textwrap
from pathlib import Path
from typing import Any, Literal

import pytest

from engine.hierarchy.schema import ToolSpec
from engine.hierarchy.tools import LoadedTool, ToolArgsError, ToolLoadError, build_tool, import_function
from tests import fixture_tools


def make(func: Any, name: str = "t") -> LoadedTool:
    return build_tool(name, ToolSpec(function="x.y:z"), func)


def quote(account: str, seats: int, discount_pct: float = 0.0, tags: list[str] | None = None,
          mode: Literal["draft", "final"] = "draft", note=None) -> dict:
    """Quote a deal.

    Args:
        account: The CRM id.
        seats: How many seats,
            counted per named user.
    """
    return {"account": account, "seats": seats}


def test_schema_is_function_calling_friendly() -> None:
    schema = make(quote).parameters_schema
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is False
    assert schema["required"] == ["account", "seats"]
    props = schema["properties"]
    assert list(props) == ["account", "seats", "discount_pct", "tags", "mode", "note"]
    assert props["account"] == {"type": "string", "description": "The CRM id."}
    assert props["seats"]["type"] == "integer"
    assert props["seats"]["description"] == "How many seats, counted per named user."
    assert props["discount_pct"] == {"type": "number", "default": 0.0}
    assert props["mode"]["enum"] == ["draft", "final"]
    assert props["note"] == {"default": None}  # unannotated: any JSON value
    assert "title" not in schema and all("title" not in p for p in props.values())


def test_description_falls_back_to_the_docstring_summary() -> None:
    assert make(quote).description == "Quote a deal."
    tool = build_tool("t", ToolSpec(function="x.y:z", description="From the file."), quote)
    assert tool.description == "From the file."


def test_validate_args_coerces_and_fills_defaults() -> None:
    tool = make(quote)
    assert tool.validate_args({"account": "A-1", "seats": "250"}) == {
        "account": "A-1", "seats": 250, "discount_pct": 0.0, "tags": None, "mode": "draft", "note": None}
    args = tool.validate_args({"account": "A-1", "seats": 3, "note": {"free": ["form"]}})
    assert args["note"] == {"free": ["form"]}
    assert tool.func(**args) == {"account": "A-1", "seats": 3}


def test_validate_args_lists_every_bad_field() -> None:
    tool = make(quote, "price_quote")
    with pytest.raises(ToolArgsError) as caught:
        tool.validate_args({"seats": "many", "tags": ["ok", 7], "mode": "sent", "bogus": 1})
    error = caught.value
    where = [w for w, _ in error.problems]
    assert where == ["account", "seats", "tags[1]", "mode", "bogus"]
    reasons = dict(error.problems)
    assert reasons["account"] == "missing required argument"
    assert reasons["bogus"] == "unexpected argument"
    assert "'many'" in reasons["seats"]
    message = str(error)
    assert message.startswith("bad arguments for tool 'price_quote': ")
    for field in ("account", "seats", "tags[1]", "mode", "bogus"):
        assert f"{field}:" in message


def test_validate_args_rejects_a_non_object() -> None:
    with pytest.raises(ToolArgsError, match="must be a JSON object"):
        make(quote).validate_args(["A-1", 3])  # type: ignore[arg-type]


def test_parameters_that_shadow_model_attributes_still_work() -> None:
    def odd(json: str, copy: int = 1, model_name: str = "m", _private: bool = False) -> tuple:
        return (json, copy, model_name, _private)

    tool = make(odd)
    assert set(tool.parameters_schema["properties"]) == {"json", "copy", "model_name", "_private"}
    assert tool.parameters_schema["required"] == ["json"]
    args = tool.validate_args({"json": "{}", "copy": "2", "model_name": "x", "_private": True})
    assert args == {"json": "{}", "copy": 2, "model_name": "x", "_private": True}
    assert tool.func(**args) == ("{}", 2, "x", True)
    with pytest.raises(ToolArgsError) as caught:
        tool.validate_args({"copy": "x"})
    assert [w for w, _ in caught.value.problems] == ["json", "copy"]


def test_async_functions_are_detected() -> None:
    assert make(fixture_tools.fetch_status).is_async is True
    assert make(fixture_tools.add).is_async is False

    class Callable:
        async def __call__(self, x: int) -> int:
            return x

    assert make(Callable()).is_async is True
    assert make(Callable()).validate_args({"x": "4"}) == {"x": 4}


def test_partials_and_classes_take_their_signature_from_what_is_called() -> None:
    tool = make(functools.partial(fixture_tools.echo, times=3))
    assert tool.parameters_schema["required"] == ["text"]
    assert tool.func(**tool.validate_args({"text": "ab"})) == "ababab"

    class Greeter:
        def __init__(self, name: str, loud: bool = False) -> None:
            self.text = name.upper() if loud else name

    tool = make(Greeter)
    assert tool.validate_args({"name": "x", "loud": "true"}) == {"name": "x", "loud": True}


@pytest.mark.parametrize("func, fragment", [
    (lambda *items: None, "named parameters only"),
    (lambda **options: None, "named parameters only"),
    (eval("lambda x, /: x"), "positional-only"),
])
def test_signatures_without_a_fixed_schema_are_refused(func: Any, fragment: str) -> None:
    with pytest.raises(ToolLoadError, match=fragment):
        make(func)


def test_unresolvable_annotation_is_a_load_error() -> None:
    def broken(x: NoSuchType) -> None:  # noqa: F821
        return None

    with pytest.raises(ToolLoadError, match="NoSuchType"):
        make(broken)


class Opaque:
    pass


def test_unschemable_type_is_a_load_error() -> None:
    def takes(x: Opaque) -> None:
        return None

    with pytest.raises(ToolLoadError, match="argument schema"):
        make(takes)


def test_import_function_resolves_and_explains_failures() -> None:
    assert import_function("tests.fixture_tools:add") is fixture_tools.add
    with pytest.raises(ToolLoadError, match="cannot import module 'tests.nope': ModuleNotFoundError"):
        import_function("tests.nope:add")
    with pytest.raises(ToolLoadError, match="has no attribute 'nope'"):
        import_function("tests.fixture_tools:nope")
    with pytest.raises(ToolLoadError, match="'NOT_CALLABLE' is a dict, not a callable"):
        import_function("tests.fixture_tools:NOT_CALLABLE")
    with pytest.raises(ToolLoadError, match="package.module:function"):
        import_function("no_colon")


def test_import_function_reports_errors_raised_while_importing(tmp_path: Path) -> None:
    (tmp_path / "fd_explodes_on_import.py").write_text("raise RuntimeError('boom at import')\n")
    (tmp_path / "fd_bad_syntax.py").write_text("def broken(:\n")
    (tmp_path / "fd_exits.py").write_text("import sys\nsys.exit(3)\n")
    paths = (tmp_path,)
    with pytest.raises(ToolLoadError, match="RuntimeError: boom at import"):
        import_function("fd_explodes_on_import:f", paths)
    with pytest.raises(ToolLoadError, match="SyntaxError"):
        import_function("fd_bad_syntax:f", paths)
    with pytest.raises(ToolLoadError, match=r"exit\(3\)"):
        import_function("fd_exits:f", paths)


def test_search_paths_are_used_for_the_import_only(tmp_path: Path) -> None:
    (tmp_path / "fd_local_tools.py").write_text(textwrap.dedent("""
        def shout(text: str) -> str:
            return text.upper()
    """))
    before = list(sys.path)
    try:
        func = import_function("fd_local_tools:shout", (tmp_path,))
        assert func("hi") == "HI"
        assert sys.path == before
    finally:
        sys.modules.pop("fd_local_tools", None)

