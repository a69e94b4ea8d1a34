"""The safe-mode vocabulary: every flag and value it allows, normalised; everything else an InputError naming it."""

from __future__ import annotations

from typing import Any

import pytest

from engine.controls.flags import FLAGS, validate_flag, validate_flag_name
from engine.errors import InputError


@pytest.mark.parametrize(("name", "value", "scope", "expected"), [
    ("tools.side_effects", "off", "global", ("tools.side_effects", "off")),
    ("tools.side_effects", " ON ", "run", ("tools.side_effects", "on")),
    ("approvals", "All", "hierarchy", ("approvals", "all")),
    ("approvals", "default", "global", ("approvals", "default")),
    ("models.max_tier", "economy", "global", ("models.max_tier", "economy")),
    ("models.max_tier", "STRONG", "run", ("models.max_tier", "strong")),
    ("runs.admission", "paused", "global", ("runs.admission", "paused")),
    ("runs.admission", "open", "hierarchy", ("runs.admission", "open")),
    ("concurrency.max", "4", "global", ("concurrency.max", "4")),
    ("concurrency.max", "007", "global", ("concurrency.max", "7")),
    ("concurrency.max", 12, "global", ("concurrency.max", "12")),
    ("agent.planner", "paused", "run", ("agent.planner", "paused")),
    ("agent.deal-desk_2", "disabled", "global", ("agent.deal-desk_2", "disabled")),
    ("agent.planner", "enabled", "hierarchy", ("agent.planner", "enabled")),
    ("tool.crm_lookup", "disabled", "global", ("tool.crm_lookup", "disabled")),
    (" tool.crm_lookup ", "Enabled", "run", ("tool.crm_lookup", "enabled")),
])
def test_valid_flags_normalise(name: str, value: Any, scope: str, expected: tuple[str, str]) -> None:
    assert validate_flag(name, value, scope) == expected


@pytest.mark.parametrize(("name", "value", "scope", "field", "words"), [
    ("tools.side_effect", "off", "global", "tools.side_effect", "unknown flag"),
    ("safe", "on", "global", "safe", "unknown flag"),
    ("", "on", "global", "flag", "required"),
    ("tools.side_effects", "false", "global", "tools.side_effects", "expected one of off, on"),
    ("tools.side_effects", 0, "global", "tools.side_effects", "expected one of"),
    ("approvals", "some", "global", "approvals", "expected one of all, default"),
    ("models.max_tier", "premium", "global", "models.max_tier", "economy, standard, strong"),
    ("runs.admission", "closed", "global", "runs.admission", "paused, open"),
    ("runs.admission", "paused", "run", "runs.admission", "cannot be set at run scope"),
    ("concurrency.max", "0", "global", "concurrency.max", "from 1 to"),
    ("concurrency.max", "-3", "global", "concurrency.max", "positive whole number"),
    ("concurrency.max", "1.5", "global", "concurrency.max", "positive whole number"),
    ("concurrency.max", "many", "global", "concurrency.max", "positive whole number"),
    ("concurrency.max", True, "global", "concurrency.max", "positive whole number"),
    ("concurrency.max", "4", "run", "concurrency.max", "cannot be set at run scope"),
    ("agent.planner", "stopped", "global", "agent.planner", "paused, disabled, enabled"),
    ("agent.", "paused", "global", "agent.", "not a valid agent name"),
    ("agent.9lives", "paused", "global", "agent.9lives", "not a valid agent name"),
    ("agent.a b", "paused", "global", "agent.a b", "not a valid agent name"),
    ("tool.crm", "paused", "global", "tool.crm", "disabled, enabled"),
    ("tool.crm", "disabled", "tenant", "scope", "unknown scope"),
])
def test_invalid_flags_name_the_flag(name: str, value: Any, scope: str, field: str, words: str) -> None:
    with pytest.raises(InputError) as caught:
        validate_flag(name, value, scope)
    assert caught.value.field == field
    assert words in caught.value.message


def test_validate_flag_name_for_clearing() -> None:
    assert validate_flag_name(" agent.planner", "run") == "agent.planner"
    with pytest.raises(InputError) as caught:
        validate_flag_name("concurrency.max", "run")
    assert caught.value.field == "concurrency.max"


def test_every_flag_is_documented() -> None:
    names = [spec.name for spec in FLAGS]
    assert names == ["tools.side_effects", "approvals", "models.max_tier", "runs.admission", "runs.auto_resume",
                     "concurrency.max",
                     "agent.NAME", "tool.NAME", "queue.NAME", "tenant.NAME"]
    for spec in FLAGS:
        assert len(spec.doc) > 40, spec.name
        assert set(spec.scopes) <= {"global", "hierarchy", "run"}
        for value in spec.values or ():
            assert value in spec.doc, (spec.name, value)
