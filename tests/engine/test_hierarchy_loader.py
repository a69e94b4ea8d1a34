"""Loading hierarchy files: the fixture hierarchies load, and every class of mistake is reported with the file,
the exact line of the offending node and its field path."""

from __future__ import annotations

import functools
import hashlib
import sys
import textwrap
from pathlib import Path

import anyio
import pytest

from engine.errors import InputError, InputErrors
from engine.hierarchy.bundled import bundled_names
from engine.hierarchy.loader import Hierarchy, load_hierarchy
from engine.hierarchy.schema import HierarchySpec
from engine.hierarchy.tools import LoadedTool

FIXTURES = Path(__file__).parent.parent / "fixtures" / "hierarchies"


def errors_of(path: Path | str, **kwargs: object) -> list[InputError]:
    with pytest.raises(InputError) as caught:
        load_hierarchy(path, **kwargs)  # type: ignore[arg-type]
    error = caught.value
    return list(error.errors) if isinstance(error, InputErrors) else [error]


def only_error(path: Path | str, **kwargs: object) -> InputError:
    errors = errors_of(path, **kwargs)
    assert len(errors) == 1, "\n".join(map(str, errors))
    return errors[0]


def call_tool(tool: LoadedTool, args: dict) -> object:
    validated = tool.validate_args(args)
    if tool.is_async:
        return anyio.run(functools.partial(tool.func, **validated))
    return tool.func(**validated)


def write(tmp_path: Path, text: str, name: str = "h.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def line_of(path: Path, marker: str) -> int:
    """1-based line of the only line containing ``marker``: lets inline YAML stay readable without counting."""
    hits = [n for n, text in enumerate(path.read_text().splitlines(), 1) if marker in text]
    assert len(hits) == 1, f"marker {marker!r} found on lines {hits}"
    return hits[0]


BASE = """
name: t
entry: lead
models:
  small: {model: m, latency: 0, latency_per_token: 0}
tools:
  add: {function: "tests.fixture_tools:add", example_args: {a: 1, b: 2}}
  record: {function: "tests.fixture_tools:record"}
agents:
  lead:
    contract: Leads.
    model: small
    delegates: [worker]
  worker:
    contract: Works.
    model: small
    tools: [add]
"""


# --------------------------------------------------------------------------------------------------- good files

@pytest.mark.parametrize("name, entry, agents", [
    ("worker", "worker", {"worker"}),
    ("orchestrator", "lead", {"lead", "stock_worker", "status_worker"}),
    ("three_levels", "root", {"root", "left", "right", "left_adder", "left_checker", "right_echo"}),
    ("pipeline", "flow", {"flow", "fetcher", "normalizer", "pricer", "stocker", "summarizer"}),
    ("router", "desk", {"desk", "mather", "statuser", "generalist"}),
])
def test_fixture_hierarchies_load(name: str, entry: str, agents: set[str]) -> None:
    path = FIXTURES / f"{name}.yaml"
    hierarchy = load_hierarchy(path)
    assert isinstance(hierarchy, Hierarchy)
    assert isinstance(hierarchy.spec, HierarchySpec)
    assert hierarchy.path == path
    assert hierarchy.spec.entry == entry
    assert set(hierarchy.spec.agents) == agents
    assert hierarchy.source_hash == hashlib.sha256(path.read_bytes()).hexdigest()
    assert set(hierarchy.tools) == set(hierarchy.spec.tools)
    for tool_name, tool in hierarchy.tools.items():
        assert isinstance(tool, LoadedTool)
        assert tool.spec is hierarchy.spec.tools[tool_name]
        result = call_tool(tool, tool.spec.example_args or {})
        assert result is not None


def test_fixture_patterns_have_the_shape_the_runtime_tests_rely_on() -> None:
    orchestrator = load_hierarchy(FIXTURES / "orchestrator.yaml").spec
    first_turn = orchestrator.scripts["lead"][0]
    assert [d.agent for d in first_turn.delegate or []] == ["stock_worker", "status_worker"]
    assert load_hierarchy(FIXTURES / "orchestrator.yaml").tools["fetch_status"].is_async

    three = load_hierarchy(FIXTURES / "three_levels.yaml").spec
    assert three.agents["root"].delegates == ["left", "right"]
    assert three.agents["left"].delegates == ["left_adder", "left_checker"]

    flow = load_hierarchy(FIXTURES / "pipeline.yaml").spec.agents["flow"]
    assert flow.kind == "pipeline"
    assert [(s.name, s.after) for s in flow.stages] == [
        ("fetch", None), ("normalize", None), ("price", ["normalize"]), ("stock", ["normalize"]),
        ("summarize", ["price", "stock"])]

    desk = load_hierarchy(FIXTURES / "router.yaml").spec.agents["desk"]
    assert desk.kind == "router"
    assert desk.routes[0].when.field == "kind" and desk.routes[0].when.equals == "math"
    assert desk.routes[1].when.keywords == ["status", "health"]
    assert desk.default_route == "generalist"


def test_bundled_names_resolve() -> None:
    for name in bundled_names():
        assert load_hierarchy(name).spec.name == name


def test_unknown_name_lists_the_bundled_ones() -> None:
    error = only_error("deal-dsk")
    assert "deal-dsk" in error.message
    for name in bundled_names():
        assert name in error.message


# --------------------------------------------------------------------------------------------------- broken fixtures

def test_unknown_agent() -> None:
    error = only_error(FIXTURES / "unknown_agent.yaml")
    assert (error.file, error.line, error.field) == (str(FIXTURES / "unknown_agent.yaml"), 14,
                                                      "agents.lead.delegates[1]")
    assert error.message == "unknown agent 'helpr'; did you mean 'helper'?"
    assert str(error) == f"{FIXTURES / 'unknown_agent.yaml'}:14: agents.lead.delegates[1]: {error.message}"


def test_unknown_tool() -> None:
    error = only_error(FIXTURES / "unknown_tool.yaml")
    assert (error.line, error.field) == (15, "agents.worker.tools[1]")
    assert error.message == "unknown tool 'multiply' (known: add, echo)"


def test_unknown_model_in_model_and_fallback() -> None:
    errors = errors_of(FIXTURES / "unknown_model.yaml")
    assert [(e.line, e.field) for e in errors] == [(10, "agents.worker.model"), (15, "agents.helper.fallback[1]")]
    assert errors[0].message == "unknown model 'large' (known: small, medium)"
    assert "'tiny'" in errors[1].message


def test_delegation_cycle_reports_the_path() -> None:
    error = only_error(FIXTURES / "delegation_cycle.yaml")
    assert (error.line, error.field) == (18, "agents.checker.delegates[0]")
    assert error.message == "delegation cycle: checker -> planner -> researcher -> checker"


def test_bad_import_names_module_and_error() -> None:
    errors = errors_of(FIXTURES / "bad_import.yaml")
    assert [(e.line, e.field) for e in errors] == [
        (10, "tools.missing_module.function"),
        (12, "tools.missing_function.function"),
        (14, "tools.not_callable.function"),
    ]
    assert "cannot import module 'tests.no_such_module': ModuleNotFoundError" in errors[0].message
    assert "module 'tests.fixture_tools' has no attribute 'multiply'" in errors[1].message
    assert "'NOT_CALLABLE' is a dict, not a callable" in errors[2].message


def test_bad_schema_wrong_type_and_unknown_key() -> None:
    errors = errors_of(FIXTURES / "bad_schema.yaml")
    assert [(e.line, e.field) for e in errors] == [(10, "agents.worker.max_steps"), (14, "agents.helper.delegate")]
    assert "valid integer" in errors[0].message and "'lots'" in errors[0].message
    assert errors[1].message == "unknown key 'delegate'; did you mean 'delegates'?"


def test_bad_yaml() -> None:
    error = only_error(FIXTURES / "bad_yaml.yaml")
    assert error.line == 11
    assert error.field is None
    assert error.message.startswith("invalid YAML: did not find expected ',' or ']'")
    assert "flow sequence at line 10" in error.message


def test_tool_not_allowed_in_script() -> None:
    errors = errors_of(FIXTURES / "tool_not_allowed_in_script.yaml")
    assert [(e.line, e.field) for e in errors] == [
        (26, "scripts.lead[0].delegate[1].agent"),
        (30, "scripts.worker[1].tool.name"),
    ]
    assert errors[0].message == "agent 'lead' cannot delegate to 'auditor': not in its delegates (worker)"
    assert errors[1].message == "agent 'worker' cannot call tool 'record': not in its tools (add)"


# --------------------------------------------------------------------------------------------------- files

def test_missing_file(tmp_path: Path) -> None:
    error = only_error(tmp_path / "nope.yaml")
    assert error.file == str(tmp_path / "nope.yaml")
    assert error.message == "hierarchy file not found"


def test_directory_suggests_the_hierarchy_inside(tmp_path: Path) -> None:
    assert only_error(tmp_path).message == "is a directory, not a hierarchy file"
    write(tmp_path, BASE, "hierarchy.yaml")
    assert "did you mean" in only_error(tmp_path).message


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n"])
def test_empty_file(tmp_path: Path, text: str) -> None:
    path = tmp_path / "h.yaml"
    path.write_text(text)
    assert only_error(path).message == "hierarchy file is empty"


@pytest.mark.parametrize("text, found", [("- a\n- b\n", "a list"), ("just text\n", "the value 'just text'")])
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str, found: str) -> None:
    path = tmp_path / "h.yaml"
    path.write_text(text)
    error = only_error(path)
    assert error.line == 1
    assert "must be a mapping" in error.message and found in error.message


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "h.yaml"
    path.write_bytes(b"name: t\nentry: \xff\xfe\n")
    error = only_error(path)
    assert error.line == 2 and "not UTF-8" in error.message


def test_control_characters_and_tabs(tmp_path: Path) -> None:
    path = tmp_path / "h.yaml"
    path.write_text("name: t\nentry: \x01x\n")
    error = only_error(path)
    assert error.line == 2 and "U+0001 is not allowed" in error.message
    path.write_text("name: t\nagents:\n\tlead: {}\n")
    error = only_error(path)
    assert error.line == 3 and error.message.endswith("YAML cannot indent with tabs, use spaces")


def test_several_documents(tmp_path: Path) -> None:
    path = write(tmp_path, "name: a\n---\nname: b\n")
    error = only_error(path)
    assert error.line == 2 and "single document" in error.message


def test_duplicate_keys_are_errors(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + """
  worker:
    contract: Shadow.
    model: small
""")
    error = only_error(path)
    assert error.field == "agents.worker"
    assert error.line == len(path.read_text().splitlines()) - 2
    assert "duplicate key 'worker' (first at line 13)" in error.message


# --------------------------------------------------------------------------------------------------- schema errors

def test_missing_required_keys_point_at_the_parent(tmp_path: Path) -> None:
    path = write(tmp_path, BASE.replace("entry: lead\n", "").replace("    contract: Works.\n", ""))
    errors = errors_of(path)
    assert [(e.line, e.field, e.message) for e in errors] == [
        (1, "entry", "missing required key"),
        (line_of(path, "  worker:"), "agents.worker.contract", "missing required key"),
    ]


def test_union_errors_are_merged_into_one(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + """
scripts:
  worker:
    - final: 3
      repeat: often
""")
    errors = errors_of(path)
    assert [(e.line, e.field) for e in errors] == [
        (line_of(path, "final: 3"), "scripts.worker[0].final"),
        (line_of(path, "repeat: often"), "scripts.worker[0].repeat"),
    ]
    assert errors[0].message == "Input should be a valid string, or Input should be a valid dictionary (got 3)"
    assert "'forever'" in errors[1].message


def test_model_validator_errors_name_the_agent(tmp_path: Path) -> None:
    path = write(tmp_path, BASE.replace("    contract: Works.\n    model: small\n", "    contract: Works.\n"))
    error = only_error(path)
    assert (error.line, error.field) == (line_of(path, "  worker:"), "agents.worker")
    assert error.message == "an agent of kind `agent` needs a `model`"


def test_unknown_key_deep_in_a_route_suggests_the_right_one(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + """
  desk:
    kind: router
    contract: Routes.
    routes:
      - when: {field: kind, equal: x}
        to: worker
""")
    errors = errors_of(path)
    unknown = [e for e in errors if "unknown key" in e.message]
    assert len(unknown) == 1
    assert unknown[0].field == "agents.desk.routes[0].when.equal"
    assert unknown[0].line == line_of(path, "equal: x")
    assert unknown[0].message == "unknown key 'equal'; did you mean 'equals'?"


def test_invalid_names_point_at_their_key(tmp_path: Path) -> None:
    path = write(tmp_path, BASE.replace("  record: {", "  record tool: {"))
    error = only_error(path)
    assert (error.line, error.field) == (line_of(path, "record tool"), "tools.record tool")
    assert error.message == "'record tool' is not a valid name (letters, digits, '_' and '-', starting with a letter)"


def test_unknown_top_level_key_lists_allowed_ones(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + "colour: blue\n")
    error = only_error(path)
    assert (error.line, error.field) == (line_of(path, "colour"), "colour")
    assert error.message.startswith("unknown key 'colour' (allowed: name, description, entry, models")


# --------------------------------------------------------------------------------------------------- cross references

def test_unknown_entry(tmp_path: Path) -> None:
    path = write(tmp_path, BASE.replace("entry: lead", "entry: leader"))
    error = only_error(path)
    assert (error.line, error.field) == (2, "entry")
    assert error.message == "entry agent 'leader' is not defined; did you mean 'lead'?"


def test_self_delegation(tmp_path: Path) -> None:
    path = write(tmp_path, BASE.replace("delegates: [worker]", "delegates: [worker, lead]"))
    error = only_error(path)
    assert (error.field, error.message) == ("agents.lead.delegates[1]", "an agent cannot delegate to itself")


def test_router_targets_must_exist(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + """
  desk:
    kind: router
    contract: Routes.
    routes:
      - when: {keywords: [x]}
        to: wroker
    default_route: nobody
""")
    errors = errors_of(path)
    assert [(e.line, e.field) for e in errors] == [
        (line_of(path, "to: wroker"), "agents.desk.routes[0].to"),
        (line_of(path, "default_route"), "agents.desk.default_route"),
    ]
    assert errors[0].message == "unknown agent 'wroker'; did you mean 'worker'?"


def test_cycle_through_a_router_and_a_pipeline(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + """
  desk:
    kind: router
    contract: Routes.
    default_route: flow
  flow:
    kind: pipeline
    contract: Runs stages.
    stages:
      - {name: one, agent: worker}
      - {name: two, agent: desk}
""")
    error = only_error(path)
    assert error.message == "delegation cycle: flow -> desk -> flow"
    assert (error.line, error.field) == (line_of(path, "name: two"), "agents.flow.stages[1].agent")


def test_each_cycle_is_reported_once(tmp_path: Path) -> None:
    path = write(tmp_path, BASE.replace("    tools: [add]\n", "    tools: [add]\n    delegates: [lead]\n"))
    errors = errors_of(path)
    assert [e.message for e in errors] == ["delegation cycle: worker -> lead -> worker"]


def test_stage_checks(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + """
  flow:
    kind: pipeline
    contract: Runs stages.
    stages:
      - {name: a, agent: worker, after: [c]}
      - {name: b, agent: ghost, after: [a, zz]}
      - {name: c, agent: worker, after: [b]}
      - {name: c, agent: worker, after: [c]}
""")
    errors = errors_of(path)
    found = {(e.field, e.message) for e in errors}
    assert ("agents.flow.stages[1].agent", "unknown agent 'ghost' (known: lead, worker, flow)") in found
    assert ("agents.flow.stages[1].after[1]", "unknown stage 'zz' (known: a, b, c)") in found
    assert ("agents.flow.stages[3].name", "duplicate stage name 'c'") in found
    assert ("agents.flow.stages[3].after[0]", "a stage cannot run after itself") in found
    cycles = [(e.field, e.message) for e in errors if "stage cycle" in e.message]
    # a runs after c, c after b, b after a: the search walks a -> c -> b and closes the loop at b's `after`
    assert cycles == [("agents.flow.stages[1].after[0]", "stage cycle (each runs after the next): b -> a -> c -> b")]


def test_script_for_unknown_agent_and_delegation_tool_hint(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + """
scripts:
  wroker:
    - final: x
  lead:
    - tool: {name: ask_worker, args: {task: go}}
""")
    errors = errors_of(path)
    assert [(e.line, e.field) for e in errors] == [
        (line_of(path, "wroker:"), "scripts.wroker"),
        (line_of(path, "ask_worker"), "scripts.lead[0].tool.name"),
    ]
    assert errors[0].message == "script for unknown agent 'wroker'; did you mean 'worker'?"
    assert errors[1].message.endswith("delegate with a `delegate:` turn instead")


def test_tool_named_like_a_delegation_tool_clashes(tmp_path: Path) -> None:
    path = write(tmp_path, BASE.replace("  record: {", "  ask_worker: {").replace(
        "    delegates: [worker]", "    delegates: [worker]\n    tools: [ask_worker]"))
    error = only_error(path)
    assert error.field == "agents.lead.tools[0]"
    assert "clashes with the delegation tool" in error.message


def test_example_args_must_fit_the_function(tmp_path: Path) -> None:
    path = write(tmp_path, BASE.replace("example_args: {a: 1, b: 2}", "example_args: {a: one, c: 2}"))
    errors = errors_of(path)
    line = line_of(path, "example_args")
    assert [(e.line, e.field) for e in errors] == [
        (line, "tools.add.example_args.a"), (line, "tools.add.example_args.b"), (line, "tools.add.example_args.c")]
    assert all(e.message.startswith("example_args do not fit tests.fixture_tools:add: ") for e in errors)
    assert errors[1].message.endswith("missing required key")
    assert errors[2].message.endswith("unknown key 'c' (allowed: a, b)")


# --------------------------------------------------------------------------------------------------- approval

def approval(tmp_path: Path, block: str) -> Path:
    return write(tmp_path, BASE.replace('  record: {function: "tests.fixture_tools:record"}\n',
                                        '  record:\n    function: "tests.fixture_tools:record"\n'
                                        + textwrap.indent(textwrap.dedent(block).strip("\n"), "    ") + "\n"))


def test_approval_condition_is_parsed_once_at_load(tmp_path: Path) -> None:
    path = approval(tmp_path, """
        approval:
          required: when
          when: "amount > 100 and note contains 'wire'"
    """)
    tool = load_hierarchy(path).tools["record"]
    assert tool.approval_condition is not None
    assert tool.approval_condition.evaluate({"amount": 150, "note": "wire transfer"})
    assert not tool.approval_condition.evaluate({"amount": 50, "note": "wire transfer"})
    assert load_hierarchy(path).tools["add"].approval_condition is None


def test_approval_when_needs_a_condition(tmp_path: Path) -> None:
    path = approval(tmp_path, """
        approval:
          required: when
    """)
    error = only_error(path)
    assert (error.line, error.field) == (line_of(path, "required: when"), "tools.record.approval.required")
    assert error.message == "`required: when` needs a `when` condition"


def test_approval_condition_without_required_when_is_an_error(tmp_path: Path) -> None:
    path = approval(tmp_path, """
        approval:
          required: never
          when: "amount > 100"
    """)
    error = only_error(path)
    assert (error.line, error.field) == (line_of(path, "when: "), "tools.record.approval.when")
    assert "only applies with `required: when`" in error.message


def test_bad_condition_names_the_column(tmp_path: Path) -> None:
    path = approval(tmp_path, """
        approval:
          required: when
          when: "__import__('os').system('id')"
    """)
    error = only_error(path)
    assert (error.line, error.field) == (line_of(path, "when: "), "tools.record.approval.when")
    assert "column 1: names starting with '__' are not allowed" in error.message


def test_condition_over_a_field_the_tool_does_not_take(tmp_path: Path) -> None:
    path = approval(tmp_path, """
        approval:
          required: when
          when: "amount > 100 or amout > 5"
    """)
    error = only_error(path)
    assert error.field == "tools.record.approval.when"
    assert "reads 'amout', which is not an argument" in error.message and "never match" in error.message


# --------------------------------------------------------------------------------------------------- all at once

def test_problems_of_different_kinds_are_reported_together_in_line_order(tmp_path: Path) -> None:
    path = write(tmp_path, """
        name: t
        entry: lead
        models:
          small: {model: m}
        tools:
          gone: {function: "tests.no_such_module:f"}
        agents:
          lead:
            contract: Leads.
            model: big
            delegates: [ghost]
            tools: [gone, nothing]
        scripts:
          lead:
            - tool: {name: add}
    """)
    errors = errors_of(path)
    assert [e.field for e in errors] == [
        "tools.gone.function", "agents.lead.model", "agents.lead.delegates[0]", "agents.lead.tools[1]",
        "scripts.lead[0].tool.name"]
    assert [e.line for e in errors] == sorted(e.line for e in errors)
    with pytest.raises(InputErrors) as caught:
        load_hierarchy(path)
    assert str(caught.value).count("\n") == 4


# --------------------------------------------------------------------------------------------------- scenarios

SCENARIO = """
description: The worker adds twice.
scripts:
  worker:
    - tool: {name: add, args: {a: 1, b: 1}}
    - tool: {name: add, args: {a: 2, b: 2}}
    - final: twice
"""


def test_scenario_replaces_scripts_per_agent_and_changes_the_hash(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + """
scripts:
  lead:
    - final: from the hierarchy
  worker:
    - final: from the hierarchy
""")
    scenario = write(tmp_path, SCENARIO, "scenario.yaml")
    plain = load_hierarchy(path)
    with_scenario = load_hierarchy(path, scenario=scenario)
    assert [t.final for t in with_scenario.spec.scripts["lead"]] == ["from the hierarchy"]
    assert [t.tool.args if t.tool else t.final for t in with_scenario.spec.scripts["worker"]] == [
        {"a": 1, "b": 1}, {"a": 2, "b": 2}, "twice"]
    assert plain.spec.scripts["worker"][0].final == "from the hierarchy"
    assert with_scenario.scenario_path == scenario
    expected = hashlib.sha256(path.read_bytes() + scenario.read_bytes()).hexdigest()
    assert with_scenario.source_hash == expected != plain.source_hash


def test_scenario_adds_scripts_for_agents_without_one(tmp_path: Path) -> None:
    scenario = write(tmp_path, SCENARIO, "scenario.yaml")
    hierarchy = load_hierarchy(write(tmp_path, BASE), scenario=scenario)
    assert set(hierarchy.spec.scripts) == {"worker"}


def test_scenario_errors_name_the_scenario_file(tmp_path: Path) -> None:
    path = write(tmp_path, BASE)
    scenario = write(tmp_path, """
        scripts:
          worker:
            - tool: {name: record, args: {note: x}}
          nobody:
            - final: x
    """, "scenario.yaml")
    errors = errors_of(path, scenario=scenario)
    assert [(e.file, e.line, e.field) for e in errors] == [
        (str(scenario), 3, "scripts.worker[0].tool.name"),
        (str(scenario), 4, "scripts.nobody"),
    ]


def test_scenario_schema_errors_name_the_scenario_file(tmp_path: Path) -> None:
    scenario = write(tmp_path, """
        scripts:
          worker:
            - fault: meltdown
        extra: 1
    """, "scenario.yaml")
    errors = errors_of(write(tmp_path, BASE), scenario=scenario)
    assert [(e.file, e.line, e.field) for e in errors] == [
        (str(scenario), 3, "scripts.worker[0].fault"), (str(scenario), 4, "extra")]


def test_missing_scenario_file(tmp_path: Path) -> None:
    error = only_error(write(tmp_path, BASE), scenario=tmp_path / "none.yaml")
    assert (error.file, error.message) == (str(tmp_path / "none.yaml"), "scenario file not found")


# --------------------------------------------------------------------------------------------------- imports

def test_tool_module_next_to_the_hierarchy_imports_without_installing(tmp_path: Path) -> None:
    module = "fd_neighbour_tools"
    (tmp_path / f"{module}.py").write_text("def double(x: int) -> int:\n    return 2 * x\n")
    path = write(tmp_path, f"""
        name: local
        entry: solo
        models:
          small: {{model: m}}
        tools:
          double: {{function: "{module}:double", example_args: {{x: 4}}}}
        agents:
          solo:
            contract: Doubles.
            model: small
            tools: [double]
    """)
    before = list(sys.path)
    try:
        tool = load_hierarchy(path).tools["double"]
        assert tool.func(**tool.validate_args({"x": "21"})) == 42
        assert sys.path == before
    finally:
        sys.modules.pop(module, None)
