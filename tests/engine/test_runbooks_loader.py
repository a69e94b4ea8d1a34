"""Runbook files: the shipped ones load and are packaged; every kind of mistake is an InputError naming the file,
the line and the field; the docs describe every signal, flag, action and placeholder there is."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.controls.flags import FLAGS
from engine.errors import InputError, InputErrors
from engine.runbooks import loader
from engine.runbooks.loader import check_targets, load_dir, load_runbook, load_runbooks, parse_runbook
from engine.runbooks.model import ACTION_KINDS, PLACEHOLDERS, PlaceholderError, render
from engine.runbooks.signals import SIGNALS

ROOT = Path(__file__).resolve().parents[2]
BODY = "\n## What it means\nx\n## How to confirm\nx\n## First steps\nx\n## How to roll back\nx\n## When to escalate\nx\n"
GOOD = """---
id: good
title: Good
severity: sev3
owner: [oncall]
detect:
  - {signal: loop_detected, threshold: 3, for: 5m, scope: agent}
actions:
  - flag: {name: "agent.{agent}", value: paused, scope: hierarchy}
  - page: {}
apply: auto
rollback: {after: 30m}
---
""" + BODY


def parse(text: str, name: str = "rb.md") -> object:
    return parse_runbook(text.encode(), Path(name))


def error_of(text: str) -> InputError:
    with pytest.raises(InputError) as caught:
        parse(text)
    return caught.value


def test_the_shipped_runbooks_load_and_the_packaged_copies_are_identical() -> None:
    runbooks = load_runbooks()
    assert {r.id for r in runbooks} == {"looping-agent", "tool-failure-storm", "cost-spike", "latency-spike",
                                        "injection-suspected", "approval-backlog", "control-tampered",
                                        "queue-backing-up", "quality-dropping"}
    assert {r.origin for r in runbooks} == {"project"}  # a checkout loads runbooks/, the source of truth
    shipped = {p.name: p.read_bytes() for p in (ROOT / "runbooks").glob("*.md")}
    packaged = {p.name: p.read_bytes() for p in (ROOT / "engine" / "runbooks").glob("*.md")}
    assert packaged == shipped, "engine/runbooks/*.md must be copies of runbooks/*.md (cp runbooks/*.md engine/runbooks/)"
    assert {r.id for r in load_dir(loader.PACKAGED_DIR, origin="packaged")} == {r.id for r in runbooks}
    for runbook in runbooks:
        assert len(runbook.body) > 1500, f"{runbook.id}: the body is what on-call reads; it must be substantial"
        assert runbook.spec.owner and runbook.spec.page_actions, runbook.id


def test_a_good_runbook_parses_with_defaults() -> None:
    runbook = parse(GOOD)
    (condition,) = runbook.spec.detect
    assert (condition.op, condition.window, condition.quiet_s, condition.hold_s) == (">=", 300.0, 300.0, 0.0)
    assert runbook.body_line == 14 and runbook.actor == "runbook:good"
    assert (runbook.spec.rollback.after, runbook.spec.rollback.require_quiet) == (1800.0, True)
    assert parse(GOOD.replace("rollback: {after: 30m}", "rollback: manual")).spec.rollback.manual
    single = parse(GOOD.replace("detect:\n  - {", "detect: {").replace("agent}\nactions", "agent}\nactions"))
    assert len(single.spec.detect) == 1  # one condition may be written without the list


@pytest.mark.parametrize(("change", "line", "field", "message"), [
    (("severity: sev3", "severity: sev9"), 4, "severity", "Input should be 'sev1', 'sev2', 'sev3' or 'sev4'"),
    (("loop_detected", "loops"), 7, "detect[0].signal", "unknown signal 'loops'"),
    (("for: 5m", "for: five minutes"), 7, "detect[0].for", "expected a duration"),
    (("scope: agent}", "scope: agent, params: {min_calls: 2}}"), 7, "detect[0].params.min_calls",
     "unknown parameter (loop_detected takes no params)"),
    (("scope: agent}", "scope: fleet}"), 7, "detect[0].scope", "Input should be 'global', 'hierarchy', 'agent' or"),
    (("threshold: 3,", "threshold: many,"), 7, "detect[0].threshold", "Input should be a valid number"),
    (("value: paused", "value: asleep"), 9, "actions[0].flag.value", "expected one of paused, disabled, enabled"),
    (('"agent.{agent}"', "agents.x"), 9, "actions[0].flag.name", "unknown flag"),
    (('"agent.{agent}"', '"agent.{agnet}"'), 9, "actions[0].flag.name", "unknown placeholder {agnet}; did you "
                                                                       "mean {agent}?"),
    (("scope: hierarchy}", "scope: everywhere}"), 9, "actions[0].flag.scope", "Input should be 'global', "),
    (("  - page: {}", "  - page: {}\n    kill: {scope: global, mode: kill}"), 10, "actions[1]",
     "an action needs exactly one of flag, kill, breaker, budget, page (found kill, page)"),
    (("  - page: {}", "  - budget: {run_budget: {dollars: 1}}"), 10, "actions[1].budget.run_budget.dollars",
     "unknown budget dimension"),
    (("  - page: {}", "  - breaker: {key: crm}"), 10, "actions[1].breaker.key", "expected KIND:NAME"),
    (("  - page: {}", "  - page: {to: [on call]}"), 10, "actions[1].page.to[0]", "String should match pattern"),
    (("apply: auto", "apply: always"), 11, "apply", "Input should be 'auto' or 'suggest'"),
    (("rollback: {after: 30m}", "rollback: {after: 30m, when: quiet}"), 12, "rollback.when",
     "unknown key 'when'"),
    (("title: Good\n", "title: Good\ntitle: Again\n"), 4, "title", "duplicate key 'title' (first at line 3)"),
    (("scope: agent}", "scope: global}"), 9, "actions[0].flag.name",
     "{agent} is not filled by a detection per global"),
    (("id: good", "id: Good!"), 2, "id", "String should match pattern"),
    (("rollback: {after: 30m}", "rollback: later"), 12, "rollback", "expected `manual` or a mapping like"),
])
def test_mistakes_name_the_line_and_field(change: tuple[str, str], line: int, field: str, message: str) -> None:
    old, new = change
    assert old in GOOD
    error = error_of(GOOD.replace(old, new, 1))
    errors = error.errors if isinstance(error, InputErrors) else [error]
    assert any(e.line == line and e.field == field and message in e.message for e in errors), \
        [str(e) for e in errors]
    assert all(e.file == "rb.md" for e in errors)


def test_yaml_booleans_are_caught_for_flag_values() -> None:
    error = error_of(GOOD.replace('{name: "agent.{agent}", value: paused', '{name: tools.side_effects, value: off'))
    assert (error.line, error.field) == (9, "actions[0].flag.value")
    assert 'quote the value: value: "off"' in error.message


def test_front_matter_and_body_problems() -> None:
    assert error_of("# no front matter\n").message.startswith("a runbook starts with YAML front matter")
    unclosed = error_of("---\nid: x\n")
    assert unclosed.message.startswith("the front matter is never closed") and unclosed.line == 3
    assert "empty" in error_of("---\n---\n" + BODY).message
    listed = error_of("---\n- id: x\n---\n" + BODY)
    assert (listed.line, listed.message) == (2, "the front matter must be a mapping (keys like `id:`, `title:` and "
                                                "`detect:`)")
    bad_yaml = error_of("---\nid: [x\n---\n" + BODY)
    assert bad_yaml.message.startswith("invalid YAML")
    missing = error_of(GOOD.replace("## First steps\nx\n", "").replace("## When to escalate", "## Escalation"))
    assert (missing.line, missing.field) == (14, "body")
    assert "'## First steps', '## When to escalate'" in missing.message


def test_missing_required_keys() -> None:
    error = error_of("---\nid: x\ntitle: T\n---\n" + BODY)
    assert [(e.field, e.message) for e in error.errors] == [("severity", "missing required key"),
                                                            ("detect", "missing required key")]


def test_a_directory_reports_every_file_and_duplicate_ids(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text(GOOD)
    (tmp_path / "b.md").write_text(GOOD)
    (tmp_path / "c.md").write_text(GOOD.replace("sev3", "sev7").replace("id: good", "id: other"))
    (tmp_path / "README.md").write_text("not a runbook")
    with pytest.raises(InputErrors) as caught:
        load_dir(tmp_path)
    assert [(Path(e.file or "").name, e.line, e.field) for e in caught.value.errors] == [
        ("b.md", 2, "id"), ("c.md", 4, "severity")]
    assert "duplicate runbook id 'good' (also in" in caught.value.errors[0].message
    with pytest.raises(InputError, match="runbook file not found"):
        load_runbook(tmp_path / "nope.md")


def test_targets_are_checked_against_the_configured_notifiers() -> None:
    runbook = parse(GOOD.replace("  - page: {}", "  - page: {to: [oncall, pagers]}"))
    errors = check_targets([runbook], ["oncall", "pager"])
    assert [(e.line, e.field, e.message) for e in errors] == [
        (10, "actions[1].page.to[1]", "unknown notifier target 'pagers'; did you mean 'pager'?")]
    errors = check_targets([runbook], [])
    assert [(e.line, e.field) for e in errors] == [(5, "owner[0]"), (10, "actions[1].page.to[0]"),
                                                   (10, "actions[1].page.to[1]")]
    assert "the store config defines no [notifiers.NAME] targets" in errors[0].message


def test_render_placeholders() -> None:
    assert render("tool:{tool}", {"tool": "crm"}) == "tool:crm"
    with pytest.raises(PlaceholderError, match=r"\{agent\} is not known here \(known: tool\)"):
        render("agent.{agent}", {"tool": "crm"})


def test_the_docs_describe_every_signal_flag_action_and_placeholder() -> None:
    docs = (ROOT / "docs" / "runbooks.md").read_text()
    for signal in SIGNALS:
        assert f"**`{signal.name}`**: {signal.doc}" in docs, signal.name
        for param in signal.params:
            assert f"`{param.name}`: {param.doc}" in docs, (signal.name, param.name)
    for flag in FLAGS:
        assert flag.doc in docs, flag.name
    for kind in ACTION_KINDS:
        assert f"| `{kind}` |" in docs, kind
    for name in PLACEHOLDERS:
        assert f"| `{{{name}}}` |" in docs, name
