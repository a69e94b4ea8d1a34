"""A retry starts with the limits its original started with (issue 13): `flightdeck run --budget` is recorded on the
run (attribute `budget`), `flightdeck retry` carries it over, and `--budget` on the retry replaces it; the preview
shows which, the audit row records it."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from engine.runtime.retry_preview import preview_retry
from tests.durable_support import Charging, flightdeck
from tests.engine_helpers import get_run, spans


def _audit_after(store: Path) -> list[dict[str, Any]]:
    conn = sqlite3.connect(f"file:{store / 'control.db'}?mode=ro", uri=True)
    try:
        return [json.loads(row[0]) for row in conn.execute("SELECT after FROM audit WHERE action = 'retry' "
                                                           "ORDER BY id")]
    finally:
        conn.close()


def _original(charging: Charging) -> str:
    """The charging hierarchy (charge 5, charge 7, answer) stopped by `--budget calls=1` at its second model call.
    A retry's replayed calls cost nothing, so the tests retry from the first model call: the retry's own calls are
    the original's, and meet the same limit at the same place."""
    done = flightdeck("run", str(charging.path), "--speed", "0", "--budget", "calls=1", "--json", "--store",
                      str(charging.store), env=charging.env)
    assert done.returncode == 4, done.stderr  # budget exceeded
    (run,) = json.loads(done.stdout)
    assert get_run(charging.store, run["id"]).attributes["budget"] == {"model_calls": 1}
    return str(run["id"])


def _retry(charging: Charging, run_id: str, *extra: str) -> Any:
    span = next(s.id for s in spans(charging.store, run_id) if s.kind == "llm" and s.attributes["path"] == "clerk.0")
    return flightdeck("retry", run_id, "--from", span, "--reason", "upstream fixed", "--yes", "--json", "--speed",
                      "0", "--store", str(charging.store), *extra, env=charging.env)


def test_a_retry_stops_at_the_limit_its_original_started_with(tmp_path: Path) -> None:
    charging = Charging(tmp_path)
    run_id = _original(charging)
    preview = preview_retry(charging.store, run_id, next(s.id for s in spans(charging.store, run_id)
                                                         if s.kind == "llm" and s.attributes["path"] == "clerk.0"))
    assert preview.budget is not None and preview.budget.model_calls == 1 and preview.budget_source == "original"

    retried = _retry(charging, run_id)
    assert retried.returncode == 4, retried.stderr  # the same limit stopped it again
    assert "budget: model_calls=1 (the original's --budget" in retried.stderr
    result = json.loads(retried.stdout)
    assert result["status"] == "budget_exceeded" and result["budget"] == {"model_calls": 1}
    assert get_run(charging.store, result["id"]).attributes["budget"] == {"model_calls": 1}
    (after,) = _audit_after(charging.store)
    assert (after["budget"], after["budget_source"]) == ({"model_calls": 1}, "original")


def test_budget_on_the_retry_replaces_the_originals_limits(tmp_path: Path) -> None:
    charging = Charging(tmp_path)
    run_id = _original(charging)
    retried = _retry(charging, run_id, "--budget", "calls=10")
    assert retried.returncode == 0, retried.stderr
    assert "budget: model_calls=10 (--budget: replaces the original's)" in retried.stderr
    result = json.loads(retried.stdout)
    assert result["status"] == "completed" and result["budget"] == {"model_calls": 10}
    (after,) = _audit_after(charging.store)
    assert (after["budget"], after["budget_source"]) == ({"model_calls": 10}, "operator")
    # The original charged 5 before its limit stopped it; the retry, with room, charged 5 and 7.
    assert [line["amount"] for line in charging.lines()] == [5, 5, 7]

    bad = _retry(charging, run_id, "--budget", "calls=many")
    assert bad.returncode == 2 and "calls" in bad.stderr and "Traceback" not in bad.stderr
    assert len(_audit_after(charging.store)) == 1  # nothing written


def test_a_row_from_an_older_engine_says_its_limits_are_unknown(tmp_path: Path) -> None:
    charging = Charging(tmp_path)
    run_id = _original(charging)
    conn = sqlite3.connect(charging.store / "traces.db")
    try:  # what an engine before `budget` and `paths` were recorded wrote
        attrs = json.loads(conn.execute("SELECT attributes FROM runs WHERE id = ?", (run_id,)).fetchone()[0])
        attrs.pop("budget"), attrs.pop("paths")
        conn.execute("UPDATE runs SET attributes = ? WHERE id = ?", (json.dumps(attrs), run_id))
        conn.commit()
    finally:
        conn.close()
    retried = _retry(charging, run_id)
    assert "the original's row is from an older engine, which did not record its --budget" in retried.stderr
    assert retried.returncode == 0, retried.stderr  # the hierarchy's limits: none
    (after,) = _audit_after(charging.store)
    assert (after["budget"], after["budget_source"]) == (None, "unknown")


def test_the_budget_attribute_keeps_a_lifted_limit_and_ignores_what_is_not_limits() -> None:
    from engine.guardrails.budget import limits_attribute, limits_from_attribute, parse_budget_overrides

    given = parse_budget_overrides("cost=2.5,wall=300s,tokens=none")
    recorded = limits_attribute(given)
    assert recorded == {"cost_usd": 2.5, "wall_time_s": 300.0, "total_tokens": None}  # None: lifts the file's limit
    back = limits_from_attribute(json.loads(json.dumps(recorded)))
    assert back == given and back is not None and back.model_fields_set == given.model_fields_set
    assert limits_from_attribute({"cost_usd": -1}) is None and limits_from_attribute("cost=1") is None
    assert limits_from_attribute({}) is None
