"""Demo-speed copies of the shipped runbooks, written to STORE/runbooks/ (a runbook there replaces the shipped one
with the same id): the same signals and actions, with windows and rollback delays scaled to a three-minute scenario
and the demo's speed, and with the runbooks that would end the demo's story early (pausing the looping pricer
everywhere, forcing the flaky tool's breaker open) turned into suggestions an operator can apply from the console.

The spend threshold scales with speed too: at speed 2, a minute of scenario spend happens in 30 seconds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from engine.durations import parse_duration
from engine.safe_yaml import load_yaml
from engine.timefmt import exact_seconds

# What the three-minute story needs, per runbook id (durations in scenario seconds, scaled by speed on install).
DEMO_TUNING: dict[str, dict[str, Any]] = {
    "cost-spike": {"detect": {"threshold": 3.0, "for": 10, "quiet": 15}, "rollback_after": 25},
    "looping-agent": {"detect": {"threshold": 1, "for": 60, "quiet": 30}, "apply": "suggest"},
    "tool-failure-storm": {"detect": {"for": 60}, "apply": "suggest", "rollback_after": 60},
    "approval-backlog": {"detect": {"for": 30}, "rollback_after": 60},
    "injection-suspected": {"detect": {"for": 60, "quiet": 60}},
    "latency-spike": {"detect": {"for": 30}, "rollback_after": 60},
}


def _seconds(value: float) -> str:
    """A runbook duration setting, never under half a second (the demo's detectors poll about that often)."""
    return exact_seconds(round(max(value, 0.5), 1))


def _tuned(front: dict[str, Any], tuning: dict[str, Any], speed: float) -> dict[str, Any]:
    front = dict(front)
    detect = []
    for condition in front.get("detect", []):
        condition = dict(condition)
        for key, value in tuning.get("detect", {}).items():
            if key == "threshold":
                if condition.get("signal") == "spend_rate_per_min":
                    condition["threshold"] = value * speed
                elif condition.get("params", {}).get("measure") != "oldest_age_s":
                    condition["threshold"] = value
            else:
                condition[key] = _seconds(value / speed)
        if condition.get("params", {}).get("measure") == "oldest_age_s":
            condition["threshold"] = 60.0 / speed
        detect.append(condition)
    front["detect"] = detect
    if "apply" in tuning:
        front["apply"] = tuning["apply"]
    rollback = front.get("rollback")
    if isinstance(rollback, dict) and "rollback_after" in tuning:
        front["rollback"] = {**rollback, "after": _seconds(tuning["rollback_after"] / speed)}
    actions = []
    for action in front.get("actions", []):
        action = dict(action)
        breaker = action.get("breaker")
        if isinstance(breaker, dict) and "for" in breaker:
            action["breaker"] = {**breaker, "for": _seconds(parse_duration(breaker["for"]) / 10 / speed)}
        actions.append(action)
    front["actions"] = actions
    return front


def install_demo_runbooks(store_dir: Path, speed: float) -> list[Path]:
    from engine.runbooks.loader import shipped_dir

    target = store_dir / "runbooks"
    target.mkdir(parents=True, exist_ok=True, mode=0o700)
    written = []
    for path in sorted(shipped_dir().glob("*.md")):
        text = path.read_text(encoding="utf-8")
        _, front_text, body = text.split("---\n", 2)
        front = load_yaml(front_text, file=str(path), what="runbook")
        tuning = DEMO_TUNING.get(front.get("id"))
        if tuning is None:
            continue
        tuned = _tuned(front, tuning, speed)
        out = target / path.name
        out.write_text("---\n# Demo-speed copy written by `flightdeck demo` (speed %g).\n" % speed
                       + yaml.safe_dump(tuned, sort_keys=False, allow_unicode=True) + "---\n" + body,
                       encoding="utf-8")
        out.chmod(0o600)
        written.append(out)
    return written
