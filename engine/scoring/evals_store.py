"""Where eval results go, on either backend: STORE/evals.db (results_db.py, EvalsDB) on a store directory, the
`evals` component of a Postgres store (results_pg.py, PgEvalsDB) for an engine, an eval or an operator wholly on
Postgres. `EvalsStore` is the interface both implement; `open_evals_store` picks one from the store's location.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from engine.store.location import StoreLocation

    from .results import CaseResult, EvalRecord
    from .results_db import CaseRow, EvalSummary, WindowTotals

__all__ = ["EvalsStore", "open_evals_store", "open_evals_store_read_only"]


class EvalsStore(Protocol):
    """What the eval command, the drills, the sampler and the console use of an evals store."""

    def __enter__(self) -> EvalsStore: ...

    def __exit__(self, *exc: object) -> None: ...

    def close(self) -> None: ...

    def save(self, record: EvalRecord) -> None: ...

    def add_sample(self, record: EvalRecord, case: CaseResult) -> bool: ...

    def window_totals(self, eval_id: str) -> WindowTotals: ...

    def list(self, hierarchy: str | None = None, limit: int = 50,
             source: str | None = None) -> list[EvalSummary]: ...

    def cases(self, eval_id: str) -> tuple[CaseRow, ...]: ...

    def latest(self, hierarchy: str, dataset: str) -> EvalSummary | None: ...

    def find(self, eval_id: str) -> EvalSummary: ...

    def load(self, summary: EvalSummary) -> EvalRecord: ...


def open_evals_store(store: StoreLocation | Path) -> EvalsStore:
    """Created or migrated as needed: STORE/evals.db for a directory (a Path or a StoreDirectory), the database's
    `evals` tables for a Postgres store. StoreError (password masked) when it cannot be used."""
    from engine.store.location import PostgresLocation, StoreDirectory

    if isinstance(store, PostgresLocation):
        from .results_pg import PgEvalsDB

        return PgEvalsDB.open(store)
    from .results_db import EvalsDB

    return EvalsDB.open(store.path if isinstance(store, StoreDirectory) else store)


def open_evals_store_read_only(store: StoreLocation | Path) -> EvalsStore | None:
    """For readers that must not create anything: None when nothing was recorded there yet."""
    from engine.store.location import PostgresLocation, StoreDirectory

    if isinstance(store, PostgresLocation):
        from .results_pg import PgEvalsDB

        return PgEvalsDB.open_read_only(store)
    from .results_db import EvalsDB

    return EvalsDB.open_read_only(store.path if isinstance(store, StoreDirectory) else store)
