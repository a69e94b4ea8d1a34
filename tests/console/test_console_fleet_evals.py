"""Issue 16: view 9 (evals) on a Postgres store: the fleet's sampled-score trends, evals and drills from the
database's evals tables (engine/scoring/results_pg.py), the same rows and verdicts as from STORE/evals.db; nothing is
created by the console; results recorded while the view is open show up. The real app under Pilot on a real
PostgreSQL on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from console.app import create_app
from engine.scoring.results_pg import COMPONENT, PgEvalsDB
from engine.store.location import PostgresLocation
from engine.store.pg.schema import schema_version
from tests.console.test_console_evals import DEAL_DESK, TRIAGE, show_evals, shown, text_of, write_windows
from tests.console_fleet_support import fleet_store
from tests.console_helpers import fixed_clock, utc, wait_for  # noqa: F401 - utc: an autouse fixture (TZ=UTC)
from tests.pg_support import EmbeddedPostgres

pytestmark = pytest.mark.anyio


@pytest.fixture
def fleet(postgres_server: EmbeddedPostgres) -> Iterator[PostgresLocation]:
    url = postgres_server.create_database()
    try:
        yield fleet_store(url)
    finally:
        postgres_server.drop_database(url)


def app_on(location: PostgresLocation) -> Any:
    return create_app(location, operator="alice", read_only=True, clock=fixed_clock, poll_interval=0.05)


def evals_version(location: PostgresLocation) -> int:
    with psycopg.connect(location.dsn, autocommit=True) as conn:
        return schema_version(conn, COMPONENT)


async def test_view_9_on_postgres_shows_the_fleets_evals_and_picks_up_new_ones(fleet: PostgresLocation) -> None:
    app = app_on(fleet)
    async with app.run_test(size=(160, 48)) as pilot:
        view = await show_evals(pilot)
        assert view.snapshot.no_file and shown(view) == []
        assert "no evals yet: no eval, drill or sampled run" in text_of(view.query_one("#evals-title"))
        assert evals_version(fleet) == 0  # the console created nothing
        assert app.notifier.count == 0, app.notifier.store_problem  # not "cannot use a Postgres store"

        with PgEvalsDB.open(fleet) as db:  # what the fleet's samplers write
            write_windows(db, "support-triage", TRIAGE, lambda n: "a1b2c3d4" if n < 5 else "e5f6a7b8")
        await wait_for(pilot, lambda: shown(view) == ["support-triage"], what="the database's sampled windows")
        (triage,) = view.shown
        assert [w.score for w in triage.windows] == pytest.approx(list(TRIAGE))
        assert triage.dropping_since is not None  # 0.62, 0.55: under the bar

        with PgEvalsDB.open(fleet) as db:  # one more hierarchy while the view is open
            write_windows(db, "deal-desk", DEAL_DESK, lambda n: "0badcafe")
        await wait_for(pilot, lambda: sorted(shown(view)) == ["deal-desk", "support-triage"], what="a new row")
        assert next(r for r in view.shown if r.hierarchy == "deal-desk").dropping_since is None
