"""Issue 18: the `sampled_score` signal is the sampling window's mean as the evals store holds it, not the mean of the
scores one engine process saw. The sampler reads the window's totals back after each write and emits them in
`eval.scored`; the detector keeps the newest totals per window. So an engine that starts (a restart, a short
`flightdeck run`) counts the runs earlier processes scored in the same window: it neither starts the window over
nor fires on its own few runs while the window as a whole is fine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest

from engine.runbooks.detector_base import Facts
from engine.runbooks.eval_detectors import SampledScoreDetector
from engine.runbooks.model import Condition
from engine.runtime.engine import Engine
from engine.scoring.results_db import EvalsDB
from engine.store import open_engine_store
from tests.engine.test_runbooks_shipped import (
    ROUTING_KEY,
    SHIPPED,
    Harness,
    rows,
    the_incident,
    with_runbooks,
    write_config,
)
from tests.engine_helpers import events, run_sync, write_hierarchy
from tests.fakes.receiver import Receiver, receiver  # noqa: F401 (receiver is a fixture)

# One hierarchy file, a window far longer than the test (a test that straddles an hour would split its runs over
# two rows), and a check that scores a run by its input: "good ..." 1, anything else 0.
GRADED = """
name: helpdesk
entry: clerk
models:
  m: {model: m1, tier: economy, latency: 0, latency_per_token: 0}
agents:
  clerk: {contract: Answers refund questions., model: m}
scripts:
  clerk:
    - final: "Your refund is on its way"
evals:
  sample: 1.0
  window: 366d
  checks: [{scorer: python, function: "tests.store_pg.test_pg_eval_sampling:graded"}]
"""


def test_a_second_engine_process_counts_the_cases_the_first_one_scored(tmp_path: Path, store_dir: Path,
                                                                        receiver: Receiver) -> None:
    write_config(store_dir, receiver)
    hierarchy = write_hierarchy(tmp_path, GRADED)
    run_sync(store_dir, hierarchy, *[f"good {n}" for n in range(30)])  # an earlier process: 30 good answers

    async def body(h: Harness) -> None:
        await h.run(hierarchy, *[f"bad {n}" for n in range(10)])
        assert await h.engine.sampler.drain(10.0)
        await h.settle()
        # This process scored ten runs, all 0: its own mean would fire. The window holds 30 of 40: 0.75, fine.
        assert rows(store_dir, "SELECT * FROM incidents") == []
        await h.run(hierarchy, *[f"bad {n}" for n in range(10, 20)])
        assert await h.engine.sampler.drain(10.0)
        await h.settle()
        # It fired once the window's 30 good runs fell under 70% of its scored runs (30 of 43; the reading the
        # watchdog took depends on how the commits were batched): counts of the whole window, not of this process.
        incident = the_incident(store_dir, "quality-dropping")
        (signal, *_) = json.loads(incident["signals"])
        assert signal["signal"] == "sampled_score" and 43 <= signal["samples"] <= 50
        assert signal["value"] == pytest.approx(30 / signal["samples"], abs=1e-5)

    with_runbooks(store_dir, [SHIPPED["quality-dropping"]], body)
    with EvalsDB.open(store_dir) as db:
        [window] = db.list("helpdesk")
        assert (window.cases, window.passed) == (50, 30)
    last = max(events(store_dir, kinds=["eval.scored"]), key=lambda e: e.seq)
    assert last.data is not None
    assert (last.data["window_cases"], last.data["window_scored"], last.data["window_mean"]) == (50, 50, 0.6)
    assert last.data["eval"] == window.id and last.data["window_started"] == window.started


def test_an_engine_that_starts_knows_the_windows_scored_before_it_started(
        tmp_path: Path, store_dir: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FD_TEST_ROUTING_KEY", ROUTING_KEY)
    write_config(store_dir, receiver)
    hierarchy = write_hierarchy(tmp_path, GRADED)
    run_sync(store_dir, hierarchy, *[f"bad {n}" for n in range(3)], *[f"good {n}" for n in range(9)])

    async def start_and_settle() -> None:  # an engine with the shipped runbook that scores nothing of its own
        with open_engine_store(store_dir) as store:
            async with Engine(store, latency_scale=0.0, runbooks=[SHIPPED["quality-dropping"]]) as engine:
                assert await anyio.to_thread.run_sync(engine.runbooks.settle, 10.0)
                assert engine.runbooks.errors == []

    anyio.run(start_and_settle)
    assert rows(store_dir, "SELECT * FROM incidents") == []  # 9 of 12: 0.75

    run_sync(store_dir, hierarchy, *[f"bad {n}" for n in range(3, 6)])  # 9 of 15: 0.6
    anyio.run(start_and_settle)
    incident = the_incident(store_dir, "quality-dropping")
    (signal, *_) = json.loads(incident["signals"])
    assert (signal["value"], signal["samples"]) == (pytest.approx(0.6), 15)


def test_an_evals_store_that_cannot_be_read_at_start_is_logged_and_the_engine_starts(
        store_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    store_dir.mkdir(parents=True, exist_ok=True)
    (store_dir / "evals.db").write_bytes(b"this is not a database" * 100)

    async def start() -> None:
        with open_engine_store(store_dir) as store:
            async with Engine(store, latency_scale=0.0, runbooks=[SHIPPED["quality-dropping"]]) as engine:
                assert await anyio.to_thread.run_sync(engine.runbooks.settle, 10.0)
                assert engine.runbooks.errors == []

    with caplog.at_level("WARNING", logger="engine.scoring.window_seed"):
        anyio.run(start)
    assert "sampling windows not read at start" in caplog.text


def scored(eval_id: str, cases: int, scored: int, mean: float | None, started: float = 0.0,
           hierarchy: str = "h") -> tuple[int, str, str, None, None, str, dict[str, Any]]:
    return (1, "eval.scored", f"run-{eval_id}-{cases}", None, None, hierarchy,
            {"hierarchy": hierarchy, "eval": eval_id, "score": 0.0, "error": False, "window_started": started,
             "window_cases": cases, "window_scored": scored, "window_mean": mean})


def detector() -> SampledScoreDetector:
    condition = Condition.model_validate({"signal": "sampled_score", "op": "<", "threshold": 0.7, "for": "1h",
                                          "scope": "hierarchy", "params": {"min_samples": 10}})
    return SampledScoreDetector(condition)


def test_the_newest_window_with_enough_scored_runs_counts_and_errored_cases_do_not() -> None:
    facts = Facts()
    d = detector()
    d.feed(0, scored("sm_h_a_1", 20, 20, 0.5, started=0), facts, {})
    d.feed(1, scored("sm_h_a_1", 19, 19, 0.9, started=0), facts, {})  # older totals arriving late: ignored
    d.feed(2, scored("sm_h_a_2", 4, 3, 1.0, started=3600), facts, {})  # the next window, three scored so far
    reading = d.read("h", 2, facts)
    assert (reading.value, reading.holds, reading.samples) == (0.5, True, 20)  # the previous window still counts
    # The next window's rows of two file hashes (one start time) make ten scored runs together: that window now.
    d.feed(3, scored("sm_h_b_2", 8, 7, 0.8, started=3600), facts, {})
    reading = d.read("h", 3, facts)
    assert reading.value == pytest.approx((3 * 1.0 + 7 * 0.8) / 10) and reading.samples == 10 and not reading.holds
    # A row with no scored run reported for `for` (an hour) is dropped.
    d.expire(3601, facts)  # the first window's (last reported at 1)
    assert d.read("h", 3601, facts).samples == 10
    d.expire(3602, facts)  # one of the second window's rows: seven scored runs left, not enough for a value
    assert (d.read("h", 3602, facts).value, d.read("h", 3602, facts).samples) == (None, 7)
    d.expire(3603, facts)
    assert d.keys() == set() and d.read("h", 3603, facts).value is None


def test_an_event_without_window_totals_adds_nothing() -> None:
    facts = Facts()
    d = detector()
    event = scored("sm_h_a_1", 20, 20, 0.1)
    del event[6]["window_mean"]
    d.feed(0, event, facts, {})
    d.feed(0, (1, "eval.scored", "run-x", None, None, "h", {"hierarchy": "h", "eval": "e", "score": 0.0}), facts, {})
    assert d.keys() == set()
