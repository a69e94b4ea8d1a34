"""Online sampling records each scored run's agents and routes (read from its spans once the trace writer committed
them), as `flightdeck eval` does: a sampled window breaks down per agent and per route, and two windows compare
like two evals, so a drop says where it is. A path that cannot be read leaves the score recorded without it."""

from __future__ import annotations

import time
from pathlib import Path

import anyio

from engine.evals.compare import compare
from engine.scoring.results_db import EvalsDB
from engine.scoring.run_path import RunPathReader, run_path
from engine.scoring.sampler import Sampler
from engine.store.location import StoreDirectory
from tests.engine_helpers import run_sync, spans, write_hierarchy

ROUTED = """
name: routed
entry: desk
models:
  m: {model: m1, tier: economy, latency: 0, latency_per_token: 0}
agents:
  desk:
    kind: router
    contract: Sends refunds to billing, the rest to general.
    routes:
      - name: refunds
        when: {keywords: [refund]}
        to: billing
    default_route: general
  billing: {contract: Answers billing questions., model: m}
  general: {contract: Answers anything else., model: m}
scripts:
  billing:
    - final: "Thanks, your refund is on its way"
  general:
    - final: "GENERAL_ANSWER"
evals:
  sample: 1.0
  checks: [{scorer: contains, value: Thanks}]
"""


def test_a_sampled_case_records_the_agents_and_routes_its_run_went_through(tmp_path: Path) -> None:
    hierarchy = write_hierarchy(tmp_path, ROUTED.replace("GENERAL_ANSWER", "Thanks for asking"))
    store = tmp_path / "store"
    refund, other = run_sync(store, hierarchy, "a refund please", "where is my parcel")
    with EvalsDB.open(store) as db:
        [window] = db.list("routed")
        record = db.load(window)
    paths = {c.run_id: (c.agents, c.routes) for c in record.cases}
    assert paths[refund.run_id] == (("billing",), ("desk:refunds",))  # a router is a route span, not an agent
    assert paths[other.run_id] == (("general",), ("desk:default",))
    # The same attribution as `flightdeck eval` makes from the run's spans (engine/evals/runner.py).
    for run_id, (agents, routes) in paths.items():
        path = run_path(spans(store, run_id))
        assert (path.agents, path.routes) == (agents, routes)
    assert set(record.by_agent()) == {"billing", "general"}
    assert set(record.by_route()) == {"desk:refunds", "desk:default"}


def test_two_sampled_windows_compare_per_agent_and_route_and_name_the_one_that_dropped(tmp_path: Path) -> None:
    """The general specialist starts answering badly after a deploy: the compare of the two windows (what the
    console's evals view shows for a dropping hierarchy) names the general agent and the default route, not
    billing."""
    store = tmp_path / "store"
    good = write_hierarchy(tmp_path, ROUTED.replace("GENERAL_ANSWER", "Thanks for asking"), name="good.yaml")
    bad = write_hierarchy(tmp_path, ROUTED.replace("GENERAL_ANSWER", "No idea"), name="bad.yaml")
    inputs = ["a refund please", "where is my parcel", "refund twice", "opening hours?"]
    run_sync(store, good, *inputs)
    run_sync(store, bad, *inputs)
    with EvalsDB.open(store) as db:
        rows = {r.hierarchy_hash: r for r in db.list("routed")}  # one window per file hash
        before, after = db.load(rows[good.source_hash]), db.load(rows[bad.source_hash])
    regressed = {(d.dimension, d.key) for d in compare(after, before, 0.1).regressions}
    assert regressed == {("overall", "all"), ("type", "sample"), ("agent", "general"),
                         ("route", "desk:default")}


def test_a_path_that_cannot_be_read_leaves_the_score_recorded_without_it(tmp_path: Path) -> None:
    """The trace store cannot be read (here: there is none where the reader looks): the run is still scored and
    recorded, with no agents or routes, and counted in `path_failures`."""
    hierarchy = write_hierarchy(tmp_path, ROUTED.replace("GENERAL_ANSWER", "Thanks"))
    store = tmp_path / "store"
    emitted: list[tuple[str | None, str]] = []

    async def committed(timeout: float) -> None:  # the writer's commit_now: nothing is pending here
        return None

    async def go() -> Sampler:
        async with anyio.create_task_group() as group:
            sampler = Sampler(store, lambda run_id, kind, name, data: emitted.append((run_id, kind)),
                              lambda job: group.start_soon(job),
                              RunPathReader(committed, StoreDirectory(tmp_path / "no-store")))
            assert sampler.after_run("routed", hierarchy.source_hash, hierarchy.spec, "run-1", "completed",
                                     "hello", "Thanks", 0.01, 0.2, time.time())
            assert await sampler.drain(10.0)
            sampler.close()
        return sampler

    sampler = anyio.run(go)
    assert (sampler.scored, sampler.path_failures, sampler.write_failures) == (1, 1, 0)
    assert emitted == [("run-1", "eval.scored")]
    with EvalsDB.open(store) as db:
        [window] = db.list("routed")
        [case] = db.load(window).cases
    assert (case.run_id, case.passed, case.agents, case.routes) == ("run-1", True, (), ())
