"""STORE/evals.db: every eval's results, owned by the evals package (its DDL, migrations and SQL live here).

Why a file of its own and not traces.db: traces.db has exactly one writer, the trace-writer process of the engine
holding the lock, and records what happened in runs; an eval's scores are a judgment made about runs afterwards,
by a command that may compare against a baseline without running anything, and later by a sampler scoring live
runs. Like control.db (and for the same reason: several processes may write it), evals.db uses a rollback journal
with synchronous=FULL; each eval is written in one transaction (its row and every case's), so a crash leaves it
whole or absent. Runs are referenced by id (`eval_cases.run_id`), never copied.

Designed for what reads it next: `source` tells a dataset eval from a `sample`d live run's score (online sampling
writes `source = 'sample'` rows), and `evals_by_hierarchy (hierarchy, started)` serves a console score trend per
hierarchy and `--baseline latest`.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import InputError, StoreError, StoreTooNew
from engine.store.files import connect, ensure_private_file, ensure_store_dir, translate_sqlite_error
from engine.store.rows import TypedRow, fetch_one_typed, fetch_typed

from .results import CaseResult, EvalRecord

__all__ = ["EVALS_DB", "WINDOW_TOTALS_SQL", "CaseRow", "EvalSummary", "EvalsDB", "WindowTotals"]

EVALS_DB = "evals.db"

MIGRATIONS = [
    """
    CREATE TABLE evals (
        id TEXT PRIMARY KEY,
        hierarchy TEXT NOT NULL,
        hierarchy_hash TEXT NOT NULL,
        dataset TEXT NOT NULL,
        dataset_sha256 TEXT NOT NULL,
        source TEXT NOT NULL CHECK (source IN ('dataset', 'sample')),
        started REAL NOT NULL,
        ended REAL NOT NULL,
        cases INTEGER NOT NULL,
        passed INTEGER NOT NULL,
        score REAL NOT NULL,
        cost_usd REAL NOT NULL,
        models TEXT NOT NULL
    );
    CREATE INDEX evals_by_hierarchy ON evals (hierarchy, started);
    CREATE TABLE eval_cases (
        eval_id TEXT NOT NULL REFERENCES evals (id) ON DELETE CASCADE,
        case_id TEXT NOT NULL,
        task_type TEXT NOT NULL,
        run_id TEXT NOT NULL,
        status TEXT NOT NULL,
        score REAL NOT NULL,
        passed INTEGER NOT NULL,
        cost_usd REAL NOT NULL,
        latency_s REAL NOT NULL,
        agents TEXT NOT NULL,
        routes TEXT NOT NULL,
        checks TEXT NOT NULL,
        error TEXT,
        PRIMARY KEY (eval_id, case_id)
    );
    """,
    # 2: `source` may also be 'drill' (a `flightdeck drill` run's summary: its drills as cases). SQLite cannot alter
    # a CHECK constraint, so the table is rebuilt (foreign keys are off while migrations run: see open()).
    """
    CREATE TABLE evals_v2 (
        id TEXT PRIMARY KEY,
        hierarchy TEXT NOT NULL,
        hierarchy_hash TEXT NOT NULL,
        dataset TEXT NOT NULL,
        dataset_sha256 TEXT NOT NULL,
        source TEXT NOT NULL CHECK (source IN ('dataset', 'sample', 'drill')),
        started REAL NOT NULL,
        ended REAL NOT NULL,
        cases INTEGER NOT NULL,
        passed INTEGER NOT NULL,
        score REAL NOT NULL,
        cost_usd REAL NOT NULL,
        models TEXT NOT NULL
    );
    INSERT INTO evals_v2 SELECT * FROM evals;
    DROP TABLE evals;
    ALTER TABLE evals_v2 RENAME TO evals;
    CREATE INDEX evals_by_hierarchy ON evals (hierarchy, started);
    """,
]


@dataclass(frozen=True, slots=True)
class EvalSummary(TypedRow):
    """An `evals` row: one eval without its cases (listing, trend, `--baseline latest`)."""

    id: str
    hierarchy: str
    hierarchy_hash: str
    dataset: str
    dataset_sha256: str
    source: str
    started: float
    ended: float
    cases: int
    passed: int
    score: float
    cost_usd: float
    models: str


@dataclass(frozen=True, slots=True)
class CaseRow(TypedRow):
    """An `eval_cases` row (agents, routes and checks as JSON text)."""

    case_id: str
    task_type: str
    run_id: str
    status: str
    score: float
    passed: int
    cost_usd: float
    latency_s: float
    agents: str
    routes: str
    checks: str
    error: str | None


@dataclass(frozen=True, slots=True)
class WindowTotals(TypedRow):
    """A sampled window's totals as the `sampled_score` signal counts them: `cases` every case of the row, `scored`
    those whose checks all gave a score (a case with an errored check is left out: a judge outage is not a quality
    drop), `total` the sum of their scores. Read from the cases, not the row's `score` (which averages all cases)."""

    cases: int
    scored: int
    total: float

    @property
    def mean(self) -> float | None:
        return self.total / self.scored if self.scored else None


# Both backends (qmark; on Postgres through PgSqlConnection). An index range of the window's cases: one per sampled
# run of the window, read once per sampled write on the sampler's worker thread (never on a run's path).
WINDOW_TOTALS_SQL = ("SELECT count(*) AS cases, coalesce(sum(CASE WHEN error IS NULL THEN 1 ELSE 0 END), 0) AS scored, "
                     "coalesce(sum(CASE WHEN error IS NULL THEN score ELSE 0 END), 0) AS total "
                     "FROM eval_cases WHERE eval_id = ?")

_SUMMARY = ("id, hierarchy, hierarchy_hash, dataset, dataset_sha256, source, started, ended, cases, passed, score, "
            "cost_usd, models")
_CASES = "case_id, task_type, run_id, status, score, passed, cost_usd, latency_s, agents, routes, checks, error"


class EvalsDB:
    """`EvalsDB.open(store_dir)` creates and migrates the file; use as a context manager."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self.conn = conn

    @classmethod
    def open(cls, store_dir: str | Path) -> EvalsDB:
        directory = Path(store_dir)
        ensure_store_dir(directory)
        path = directory / EVALS_DB
        ensure_private_file(path)
        conn = connect(path)
        try:
            conn.execute("PRAGMA journal_mode = DELETE").fetchone()
            conn.execute("PRAGMA synchronous = FULL")
            # The version is read inside the write lock: two writers opening a new file at once (a sampler's
            # threads, two `flightdeck eval`s) must not both migrate it. Statement by statement, not executescript,
            # which would commit the open transaction first.
            conn.execute("BEGIN IMMEDIATE")
            try:
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version > len(MIGRATIONS):
                    raise StoreTooNew(f"{path} was written by a newer Flightdeck (schema {version}, this one knows "
                                      f"{len(MIGRATIONS)})")
                for number in range(version, len(MIGRATIONS)):
                    for statement in MIGRATIONS[number].split(";"):
                        if statement.strip():
                            conn.execute(statement)
                    conn.execute(f"PRAGMA user_version = {number + 1}")
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            # After the migrations: with foreign keys on, migration 2's DROP TABLE would delete every case.
            conn.execute("PRAGMA foreign_keys = ON")
        except sqlite3.Error as exc:
            conn.close()
            raise translate_sqlite_error(exc, path, "migrate") from exc
        except StoreError:
            conn.close()
            raise
        return cls(path, conn)

    @classmethod
    def open_read_only(cls, store_dir: str | Path) -> EvalsDB | None:
        """For readers that must not create or migrate anything (the console): None when there is no evals.db.
        A file of schema 1 reads the same (migration 2 only widened a CHECK); a newer one is StoreTooNew."""
        path = Path(store_dir) / EVALS_DB
        if not path.is_file():
            return None
        conn = connect(path, read_only=True)
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.Error as exc:
            conn.close()
            raise translate_sqlite_error(exc, path, "read") from exc
        if version > len(MIGRATIONS):
            conn.close()
            raise StoreTooNew(f"{path} was written by a newer Flightdeck (schema {version}, this one knows "
                              f"{len(MIGRATIONS)})")
        if version == 0:  # created, not yet migrated by its writer: nothing to read
            conn.close()
            return None
        return cls(path, conn)

    def __enter__(self) -> EvalsDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.conn.close()

    def save(self, record: EvalRecord) -> None:
        """The eval and all its cases, in one transaction."""
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.execute(
                f"INSERT INTO evals ({_SUMMARY}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (record.id, record.hierarchy, record.hierarchy_hash, record.dataset, record.dataset_sha256,
                 record.source, record.started, record.ended, len(record.cases), record.passed, record.score,
                 record.cost_usd, json.dumps(record.models, sort_keys=True)))
            self.conn.executemany(
                f"INSERT INTO eval_cases (eval_id, {_CASES}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(record.id, c.case_id, c.task_type, c.run_id, c.status, c.score, int(c.passed), c.cost_usd,
                  c.latency_s, json.dumps(list(c.agents)), json.dumps(list(c.routes)),
                  json.dumps([s.to_json() for s in c.scores]), c.error) for c in record.cases])
            self.conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise translate_sqlite_error(exc, self.path, "write") from exc

    def add_sample(self, record: EvalRecord, case: CaseResult) -> bool:
        """One sampled run into its window's `evals` row (`source = 'sample'`), created on the first run of the
        window and its totals updated after: one transaction. False (nothing written) if the run was already
        scored (a resumed run ends again)."""
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            if self.conn.execute("SELECT 1 FROM eval_cases WHERE eval_id = ? AND case_id = ?",
                                 (record.id, case.case_id)).fetchone():
                self.conn.execute("ROLLBACK")
                return False
            # In an UPSERT's SET every column reads the row as it was: the mean is updated with the old count.
            self.conn.execute(
                f"INSERT INTO evals ({_SUMMARY}) VALUES (?, ?, ?, ?, ?, 'sample', ?, ?, 1, ?, ?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET ended = max(ended, excluded.ended), cases = cases + 1, "
                "passed = passed + excluded.passed, score = (score * cases + excluded.score) / (cases + 1), "
                "cost_usd = cost_usd + excluded.cost_usd",
                (record.id, record.hierarchy, record.hierarchy_hash, record.dataset, record.dataset_sha256,
                 record.started, record.ended, int(case.passed), case.score, case.cost_usd,
                 json.dumps(record.models, sort_keys=True)))
            self.conn.execute(
                f"INSERT INTO eval_cases (eval_id, {_CASES}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (record.id, case.case_id, case.task_type, case.run_id, case.status, case.score, int(case.passed),
                 case.cost_usd, case.latency_s, json.dumps(list(case.agents)), json.dumps(list(case.routes)),
                 json.dumps([s.to_json() for s in case.scores]), case.error))
            self.conn.execute("COMMIT")
            return True
        except sqlite3.Error as exc:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise translate_sqlite_error(exc, self.path, "write") from exc

    def window_totals(self, eval_id: str) -> WindowTotals:
        """A sampled window's totals as committed now (every engine's and every earlier process's cases)."""
        try:
            row = fetch_one_typed(self.conn, WindowTotals, WINDOW_TOTALS_SQL, (eval_id,))
        except sqlite3.Error as exc:
            raise translate_sqlite_error(exc, self.path, "read") from exc
        return row if row is not None else WindowTotals(0, 0, 0.0)

    def list(self, hierarchy: str | None = None, limit: int = 50, source: str | None = None) -> list[EvalSummary]:
        """Newest first (of one hierarchy and one source when given)."""
        clauses, params = [], []
        if hierarchy:
            clauses.append("hierarchy = ?")
            params.append(hierarchy)
        if source:
            clauses.append("source = ?")
            params.append(source)
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        return fetch_typed(self.conn, EvalSummary,
                           f"SELECT {_SUMMARY} FROM evals {where} ORDER BY started DESC LIMIT ?", [*params, limit])

    def cases(self, eval_id: str) -> tuple[CaseRow, ...]:
        """An eval's cases, in the order they were written (the console's detail of one trend point)."""
        return tuple(fetch_typed(self.conn, CaseRow, f"SELECT {_CASES} FROM eval_cases WHERE eval_id = ? "
                                 "ORDER BY rowid", (eval_id,)))

    def latest(self, hierarchy: str, dataset: str) -> EvalSummary | None:
        return fetch_one_typed(self.conn, EvalSummary,
                               f"SELECT {_SUMMARY} FROM evals WHERE hierarchy = ? AND dataset = ? AND source = "
                               "'dataset' ORDER BY started DESC LIMIT 1", (hierarchy, dataset))

    def find(self, eval_id: str) -> EvalSummary:
        """By id or a unique prefix of one; InputError (field --baseline) otherwise."""
        rows = fetch_typed(self.conn, EvalSummary, f"SELECT {_SUMMARY} FROM evals WHERE id = ? OR id LIKE ? "
                           "ESCAPE '\\' LIMIT 3",
                           (eval_id, eval_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"))
        exact = [r for r in rows if r.id == eval_id]
        if exact:
            return exact[0]
        if not rows:
            raise InputError(f"no eval {eval_id!r} in {self.path}", field="--baseline")
        if len(rows) > 1:
            raise InputError(f"{eval_id!r} names more than one eval; give more of its id", field="--baseline")
        return rows[0]

    def load(self, summary: EvalSummary) -> EvalRecord:
        rows = fetch_typed(self.conn, CaseRow, f"SELECT {_CASES} FROM eval_cases WHERE eval_id = ? "
                           "ORDER BY rowid", (summary.id,))
        cases = [CaseResult.from_json({
            "id": r.case_id, "type": r.task_type, "run_id": r.run_id, "status": r.status, "score": r.score,
            "passed": bool(r.passed), "cost_usd": r.cost_usd, "latency_s": r.latency_s,
            "agents": json.loads(r.agents), "routes": json.loads(r.routes), "checks": json.loads(r.checks),
            "error": r.error}) for r in rows]
        models: dict[str, Any] = json.loads(summary.models)
        return EvalRecord(id=summary.id, hierarchy=summary.hierarchy, hierarchy_hash=summary.hierarchy_hash,
                          dataset=summary.dataset, dataset_sha256=summary.dataset_sha256, started=summary.started,
                          ended=summary.ended, models=models, cases=cases, source=summary.source)
