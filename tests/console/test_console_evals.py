"""View 9 (evals): per hierarchy the sampled-score trend with "dropping since", the latest dataset eval and the
latest drill run, read from STORE/evals.db (written here through EvalsDB, as `flightdeck eval`, `flightdeck drill
--store` and the engine's Sampler write it); sort and filter; an evals.db written while the view is open shows up;
no evals.db is said in words."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from console.app import create_app
from console.views_data.evals_feed import decline_start
from engine.scoring.results import CaseResult, EvalRecord
from engine.scoring.results_db import EvalsDB
from tests.console_helpers import FIXED_NOW, fixed_clock, fixed_store, wait_for

pytestmark = pytest.mark.anyio

HOUR = 3600.0
# Hourly sampled windows, oldest first, ending at the current hour.
TRIAGE = (0.95, 0.94, 0.96, 0.93, 0.95, 0.81, 0.62, 0.55)
DEAL_DESK = (0.90, 0.92, 0.91, 0.93)
MODELS = {"strong": {"provider": "openai", "model": "gpt-4o", "versions": ["gpt-4o-2024-08-06"]}}


BILLING = (("billing_specialist",), ("triage:billing-channel",))
GENERAL = (("general_specialist",), ("triage:default",))
STEADY_BILLING = 0.96  # support-triage's billing answers stay this good: the drop is all in the general specialist


def case(case_id: str, score: float, *, status: str = "completed", task_type: str = "sample",
         path: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())) -> CaseResult:
    return CaseResult(case_id=case_id, task_type=task_type, run_id=f"r{case_id}", status=status, score=score,
                      passed=score >= 0.5, cost_usd=0.001, latency_s=1.0, agents=path[0], routes=path[1])


def write_windows(db: EvalsDB, hierarchy: str, scores: tuple[float, ...], hash_of: Any, *,
                  paths: bool = False, hours_ago: int = 0) -> None:
    """Four sampled runs a window, all scoring the window's score; with `paths`, two went through the billing
    specialist (scoring STEADY_BILLING or better) and two through the general one (scoring what keeps the window's mean). The
    last window is the current hour's, or `hours_ago` before it."""
    first = FIXED_NOW - (len(scores) - 1 + hours_ago) * HOUR
    for n, score in enumerate(scores):
        started = first + n * HOUR - (FIXED_NOW % HOUR)
        record = EvalRecord(id=f"sm_{hierarchy}_{n}", hierarchy=hierarchy, hierarchy_hash=hash_of(n) * 8,
                            dataset="sample", dataset_sha256="c" * 64, started=started, ended=started + 1800,
                            models=MODELS, source="sample")
        for k in range(4):
            if not paths:
                db.add_sample(record, case(f"{hierarchy}{n}-{k}", score))
            else:
                billing = max(score, STEADY_BILLING)
                db.add_sample(record, case(f"{hierarchy}{n}-{k}", billing if k < 2 else round(2 * score - billing, 4),
                                           path=BILLING if k < 2 else GENERAL))


def evals_store(store: Path) -> Path:
    fixed_store(store)
    with EvalsDB.open(store) as db:
        write_windows(db, "support-triage", TRIAGE, lambda n: "a1b2c3d4" if n < 5 else "e5f6a7b8", paths=True)
        write_windows(db, "deal-desk", DEAL_DESK, lambda n: "0badcafe")
        db.save(EvalRecord(id="ev_0123456789abcdef", hierarchy="support-triage", hierarchy_hash="a1b2c3d4" * 8,
                           dataset="tickets.jsonl", dataset_sha256="d" * 64, started=FIXED_NOW - 5 * HOUR,
                           ended=FIXED_NOW - 5 * HOUR + 30, models=MODELS,
                           cases=[case("dup-charge", 1.0, task_type="billing"),
                                  case("outage", 0.0, task_type="technical")]))
        db.save(EvalRecord(id="dr_fedcba9876543210", hierarchy="deal-desk", hierarchy_hash="0badcafe" * 8,
                           dataset="drills", dataset_sha256="e" * 64, started=FIXED_NOW - 2 * HOUR,
                           ended=FIXED_NOW - 2 * HOUR + 40, models={}, source="drill",
                           cases=[case("looping-agent", 1.0, status="held", task_type="drill"),
                                  case("approval-unanswered", 0.0, status="failed", task_type="drill"),
                                  case("tool-timeout", 1.0, status="held", task_type="drill")]))
    return store


@pytest.fixture()
def store(tmp_path: Path) -> Path:
    return evals_store(tmp_path / "store")


def app_for(store: Path) -> Any:
    return create_app(store, operator="alice", read_only=False, clock=fixed_clock, poll_interval=0.05)


async def show_evals(pilot: Any) -> Any:
    await pilot.press("9")
    view = pilot.app.main.view("evals")
    await wait_for(pilot, lambda: view.loaded, what="evals loaded")
    return view


def shown(view: Any) -> list[str]:
    return [row.hierarchy for row in view.shown]


def text_of(widget: Any) -> str:
    return widget._text.plain if hasattr(widget, "_text") else str(widget.render())


def test_the_decline_starts_at_the_first_low_window_of_the_trailing_run() -> None:
    assert decline_start(list(TRIAGE)) == (5, 0.96)  # 0.81 is 0.15 under the best before it
    assert decline_start(list(DEAL_DESK)) is None
    assert decline_start([0.6]) == (0, None)  # under the bar on its own
    assert decline_start([0.9, 0.6, 0.95]) is None  # recovered: not dropping any more
    assert decline_start([]) is None


async def test_quality_dropping_since_when_per_hierarchy_with_eval_and_drills(store: Path) -> None:
    app = app_for(store)
    async with app.run_test(size=(160, 48)) as pilot:
        view = await show_evals(pilot)
        assert shown(view) == ["support-triage", "deal-desk"]  # dropping first
        triage, deal = view.shown
        since = FIXED_NOW - 2 * HOUR - (FIXED_NOW % HOUR)  # the 0.81 window
        assert triage.dropping_since == since and triage.peak == 0.96 and deal.dropping_since is None
        cells = [str(c) for c in view.table.get_row("support-triage")]
        assert cells[1] == "0.55 n=4" and cells[3] == "DROPPING since 06:00" and cells[4] == "0.50 1/2 4h"
        assert len(cells[2]) == len(TRIAGE)
        deal_cells = [str(c) for c in view.table.get_row("deal-desk")]
        assert deal_cells[3] == "steady" and deal_cells[5] == "2/3 held 1h approval-unanswered"
        detail = text_of(view.query_one("#evals-detail"))
        assert "quality DROPPING since 2027-01-15 06:00:00 (from 0.96 to 0.55)" in detail
        # Where: the newest window against the best before the drop (03:00), per agent and route; billing held.
        assert ("dropped in: agent general_specialist 0.96→0.14 n=2 · route triage:default 0.96→0.14 n=2 "
                "(vs window 03:00)") in detail
        assert "billing" not in detail
        assert "08:00 0.55 n=4 #e5f6a7b8" in detail and "#a1b2c3d4" in detail  # the deploy shows as a new hash
        assert "ev_0123456789abcdef on tickets.jsonl: 0.50, 1/2 passed" in detail
        assert "gpt-4o (gpt-4o-2024-08-06)" in detail
        assert "1 dropping" in text_of(view.query_one("#evals-title"))
        assert view.hint == ("support-triage: quality dropping since 06:00, in agent general_specialist · runbook "
                             "quality-dropping: view 6")
        await pilot.press("down")
        detail = text_of(view.query_one("#evals-detail"))
        assert "drills: 2/3 held" in detail and "FAILED: approval-unanswered" in detail


async def test_sort_and_filter(store: Path) -> None:
    app = app_for(store)
    async with app.run_test(size=(160, 48)) as pilot:
        view = await show_evals(pilot)
        assert shown(view) == ["support-triage", "deal-desk"]  # dropping first
        await pilot.press("s")  # most recent: both hierarchies' last windows end together, then by name
        assert shown(view) == ["deal-desk", "support-triage"]
        await pilot.press("s")  # worst sampled score
        assert shown(view) == ["support-triage", "deal-desk"]
        await pilot.press("S")
        assert shown(view) == ["deal-desk", "support-triage"]
        await pilot.press("s")  # hierarchy
        assert shown(view) == ["deal-desk", "support-triage"]
        assert "sorted by hierarchy" in text_of(view.query_one("#evals-title"))
        await pilot.press("slash", *"steady", "enter")
        assert shown(view) == ["deal-desk"]
        assert 'filter "steady" (1 of 2)' in text_of(view.query_one("#evals-title"))
        await pilot.press("escape")
        assert shown(view) == ["deal-desk", "support-triage"]


async def test_no_evals_db_is_said_and_new_results_show_up_while_open(tmp_path: Path) -> None:
    store = fixed_store(tmp_path / "store")
    app = app_for(store)
    async with app.run_test(size=(100, 30)) as pilot:
        view = await show_evals(pilot)
        assert view.snapshot.no_file and shown(view) == []
        assert "no evals.db yet" in text_of(view.query_one("#evals-title"))
        assert not (store / "evals.db").exists()  # the console never creates it
        with EvalsDB.open(store) as db:
            write_windows(db, "support-triage", TRIAGE, lambda n: "a1b2c3d4")
        await wait_for(pilot, lambda: shown(view) == ["support-triage"], what="the new rows")
        assert view.shown[0].dropping_since is not None


async def test_a_window_that_saw_two_files_is_one_window_scored_over_all_its_runs(tmp_path: Path) -> None:
    """A deploy in the middle of a window: the window has a row per file hash. Three runs of the old file at 1.00
    must not hide thirty of the new one at 0.33 (before the fix the newest row alone was "the window": 1.00 n=3,
    steady, while the quality-dropping runbook had fired)."""
    store = fixed_store(tmp_path / "store")
    started = FIXED_NOW - (FIXED_NOW % HOUR)
    with EvalsDB.open(store) as db:
        write_windows(db, "support-triage", (1.0, 1.0), lambda n: "a1b2c3d4", paths=True, hours_ago=1)
        for hash_, score, count, ended in (("e5f6a7b8", 0.33, 30, started + 600),
                                           ("a1b2c3d4", 1.0, 3, started + 900)):
            record = EvalRecord(id=f"sm_support-triage_{hash_}_now", hierarchy="support-triage",
                                hierarchy_hash=hash_ * 8, dataset="sample", dataset_sha256="c" * 64,
                                started=started, ended=ended, models=MODELS, source="sample")
            for k in range(count):
                db.add_sample(record, case(f"{hash_}-{k}", score, path=GENERAL if score < 1 else BILLING))
    app = app_for(store)
    async with app.run_test(size=(160, 48)) as pilot:
        view = await show_evals(pilot)
        [row] = view.shown
        cells = [str(c) for c in view.table.get_row("support-triage")]
        assert cells[1] == "0.39 n=33" and cells[3].startswith("DROPPING since")
        assert row.latest.hierarchy_hash == "a1b2c3d4" * 8  # the file the newest scored run ran
        detail = text_of(view.query_one("#evals-detail"))
        assert "0.39 n=33 (#a1b2c3d4 1.00 n=3, #e5f6a7b8 0.33 n=30)" in detail
        assert "dropped in: agent general_specialist 1.00→0.33 n=30 · route triage:default 1.00→0.33 n=30" in detail


async def test_a_drop_in_runs_sampled_without_paths_names_no_agent(tmp_path: Path) -> None:
    """Windows written before sampled runs recorded their agents and routes: the pane says nothing about where,
    rather than "no agent fell"."""
    store = fixed_store(tmp_path / "store")
    with EvalsDB.open(store) as db:
        write_windows(db, "support-triage", TRIAGE, lambda n: "a1b2c3d4")
    app = app_for(store)
    async with app.run_test(size=(160, 48)) as pilot:
        view = await show_evals(pilot)
        [row] = view.shown
        assert row.dropping_since is not None and row.where is None
        detail = text_of(view.query_one("#evals-detail"))
        assert "quality DROPPING" in detail and "dropped in" not in detail and "lowest" not in detail
        assert view.hint == "support-triage: quality dropping since 06:00 · runbook quality-dropping: view 6"


def test_window_cases_are_parsed_once_while_their_rows_do_not_change(tmp_path: Path) -> None:
    """evals.db changes with every sampled run; a closed window's cases are loaded once, the open one again when it
    gained a case."""
    from console.views_data.evals_where import WindowCases

    store = tmp_path / "store"
    with EvalsDB.open(store) as db:
        write_windows(db, "support-triage", (0.9, 0.5), lambda n: "a1b2c3d4", paths=True)
        old, new = sorted(db.list("support-triage"), key=lambda r: r.started)
        cache = WindowCases()
        closed, open_ = cache.window(db, (old,)), cache.window(db, (new,))
        assert len(open_.cases) == 4 and {c.agents for c in open_.cases} == {BILLING[0], GENERAL[0]}
        record = EvalRecord(id=new.id, hierarchy=new.hierarchy, hierarchy_hash=new.hierarchy_hash, dataset="sample",
                            dataset_sha256="c" * 64, started=new.started, ended=new.ended + 1, models=MODELS,
                            source="sample")
        db.add_sample(record, case("one-more", 0.2, path=GENERAL))
        old, new = sorted(db.list("support-triage"), key=lambda r: r.started)
        assert cache.window(db, (old,)) is closed
        grown = cache.window(db, (new,))
        assert grown is not open_ and len(grown.cases) == 5


@pytest.fixture()
def live_store(tmp_path: Path) -> Path:
    """Live runs of a routed hierarchy sampled by a real engine, in one window (a deploy inside it): first good,
    then its general specialist answers badly."""
    from tests.engine.test_eval_sampling_paths import ROUTED
    from tests.engine_helpers import run_sync, write_hierarchy

    store = fixed_store(tmp_path / "store")
    one_window = ROUTED.replace("  sample: 1.0\n", "  sample: 1.0\n  window: 300d\n")
    good = write_hierarchy(tmp_path, one_window.replace("GENERAL_ANSWER", "Thanks for asking"), name="good.yaml")
    bad = write_hierarchy(tmp_path, one_window.replace("GENERAL_ANSWER", "No idea"), name="bad.yaml")
    run_sync(store, good, "a refund please", "where is my parcel")
    run_sync(store, bad, *["a refund please", "where is my parcel"] * 3)
    return store


async def test_live_sampled_runs_show_where_quality_is_low(live_store: Path) -> None:
    """End to end: view 9 says the hierarchy is dropping and names the general agent and the default route from
    the paths the engine's sampler recorded (billing kept scoring 1.00: not named)."""
    app = app_for(live_store)
    async with app.run_test(size=(160, 48)) as pilot:
        view = await show_evals(pilot)
        [row] = view.shown
        assert (row.latest.cases, round(row.latest.score, 3)) == (8, 0.625) and row.dropping_since is not None
        detail = text_of(view.query_one("#evals-detail"))
        assert "lowest in the newest window: agent general 0.25 n=4 · route desk:default 0.25 n=4" in detail
        assert "billing" not in detail.split("lowest in the newest window:")[1].split("\n")[0]
