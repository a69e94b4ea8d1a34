"""TraceReader: read-only access to traces.db for the CLI and the console (other processes than the engine).

Opened with mode=ro and in autocommit mode: every method is a few short statements, each fully stepped before it
returns, so no read transaction outlives a call and the engine's WAL can always checkpoint. Methods return plain
JSON-friendly dicts; JSON columns (input, output, attributes, data) come back parsed.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

from engine.errors import InputError, StoreError
from engine.store.files import connect, translate_sqlite_error
from engine.store.migrate import check_not_too_new, schema_version
from engine.store.traces_schema import RUN_STATUSES, TRACES_MIGRATIONS

_JSON_COLUMNS = frozenset({"input", "output", "attributes", "data"})
# list_runs leaves out the potentially large payload columns; get_run has everything.
_RUN_SUMMARY_COLUMNS = ("id, hierarchy, hierarchy_hash, engine_id, engine_version, status, tenant, seed, error, "
                        "started, ended, tokens_in, tokens_out, cost_usd, model_calls, tool_calls, agents_active, "
                        "attributes, last_seq, resumed, replayed_steps")
_AMBIGUOUS_SHOWN = 5


def _loads(value: Any) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value)
    except (TypeError, ValueError):
        return value


def run_filters(*, run_id: str | None = None, tenant: str | None = None, since: float | None = None,
                run_column: str = "r.id") -> tuple[str, list[Any]]:
    """The WHERE clause (and its parameters) for "one run / one tenant / runs started since", over a query that
    joins `runs r` (or, for run_id alone, names the run column). Shared by every usage query."""
    where: list[str] = []
    params: list[Any] = []
    if run_id is not None:
        where.append(f"{run_column} = ?")
        params.append(run_id)
    if tenant is not None:
        where.append("r.tenant = ?")
        params.append(tenant)
    if since is not None:
        where.append("r.started >= ?")
        params.append(since)
    return (" AND ".join(where) or "1"), params


class TraceReader:
    def __init__(self, db_path: Path) -> None:
        self.path = db_path
        self._lock = threading.Lock()
        self._conn = connect(db_path, read_only=True, check_same_thread=False)
        try:
            version = schema_version(self._conn)
        except sqlite3.Error as exc:
            self._conn.close()
            raise translate_sqlite_error(exc, db_path, "read") from exc
        known = len(TRACES_MIGRATIONS)
        try:
            check_not_too_new(version, known, db_path)
            if version < known:
                raise StoreError(f"{db_path} has schema version {version} (this Flightdeck uses {known}); start the "
                                 f"engine on this store once (flightdeck run) to upgrade it")
        except StoreError:
            self._conn.close()
            raise

    # -- plumbing ----------------------------------------------------------------------------------------------

    def _rows(self, sql: str, params: tuple[Any, ...] | list[Any] = ()) -> list[dict[str, Any]]:
        with self._lock:
            try:
                cursor = self._conn.execute(sql, params)
                names = [column[0] for column in cursor.description or ()]
                raw = cursor.fetchall()  # steps to the end: the implicit read transaction ends here
            except sqlite3.Error as exc:
                raise translate_sqlite_error(exc, self.path, "read") from exc
        json_at = [i for i, name in enumerate(names) if name in _JSON_COLUMNS]
        rows = []
        for values in raw:
            row = dict(zip(names, values))
            for i in json_at:
                row[names[i]] = _loads(values[i])
            rows.append(row)
        return rows

    def query(self, sql: str, params: tuple[Any, ...] | list[Any] = ()) -> list[dict[str, Any]]:
        """A short read-only SELECT of your own, rows as dicts with JSON columns parsed (for reports such as
        usage_queries). Keep it indexed: it runs against the live store."""
        return self._rows(sql, params)

    def _scalar(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        with self._lock:
            try:
                row = self._conn.execute(sql, params).fetchone()
            except sqlite3.Error as exc:
                raise translate_sqlite_error(exc, self.path, "read") from exc
        return None if row is None else row[0]

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> TraceReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- change detection --------------------------------------------------------------------------------------

    def data_version(self) -> int:
        """Changes whenever another connection commits: a cheap "is there anything new" check for polling."""
        return int(self._scalar("PRAGMA data_version"))

    def last_seq(self) -> int:
        return int(self._scalar("SELECT max(seq) FROM events") or 0)

    # -- runs --------------------------------------------------------------------------------------------------

    def list_runs(self, limit: int = 100, before_started: float | None = None, status: str | None = None,
                  hierarchy: str | None = None, tenant: str | None = None,
                  before_id: str | None = None) -> list[dict[str, Any]]:
        """Newest first. Page with before_started (and before_id, the last row's id, so runs that started in
        the same instant are not skipped). Payload columns (input, output) are left out: see get_run."""
        where: list[str] = []
        params: list[Any] = []
        for column, value in (("status", status), ("hierarchy", hierarchy), ("tenant", tenant)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if before_started is not None:
            if before_id is not None:
                where.append("(started, id) < (?, ?)")
                params += [before_started, before_id]
            else:
                where.append("started < ?")
                params.append(before_started)
        sql = f"SELECT {_RUN_SUMMARY_COLUMNS} FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY started DESC, id DESC LIMIT ?"
        params.append(int(limit))
        return self._rows(sql, params)

    def count_runs(self, since: float) -> dict[str, int]:
        """For the header: `active` = running now; `started` = started since `since`; and for every final
        status, how many runs ended with it since `since`."""
        counts = {status: 0 for status in RUN_STATUSES if status != "running"}
        counts["active"] = int(self._scalar("SELECT count(*) FROM runs WHERE status = 'running'"))
        counts["started"] = int(self._scalar("SELECT count(*) FROM runs WHERE started >= ?", (since,)))
        # INDEXED BY: without statistics the planner would rather walk the whole status index to skip a sort.
        for row in self._rows("SELECT status, count(*) AS n FROM runs INDEXED BY runs_ended WHERE ended >= ? "
                              "GROUP BY status", (since,)):
            if row["status"] != "running":
                counts[row["status"]] = row["n"]
        return counts

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        """The run with this id, or the one run whose id starts with it. An ambiguous prefix is an InputError
        listing some of the candidates."""
        if not run_id:
            raise InputError("a run id (or a unique prefix of one) is required", field="run_id")
        rows = self._rows("SELECT * FROM runs WHERE id = ?", (run_id,))
        if rows:
            return rows[0]
        upper = run_id[:-1] + chr(ord(run_id[-1]) + 1)
        ids = [row["id"] for row in self._rows("SELECT id FROM runs WHERE id >= ? AND id < ? ORDER BY id LIMIT ?",
                                               (run_id, upper, _AMBIGUOUS_SHOWN + 1))]
        if not ids:
            return None
        if len(ids) > 1:
            shown = ", ".join(ids[:_AMBIGUOUS_SHOWN]) + (", ..." if len(ids) > _AMBIGUOUS_SHOWN else "")
            raise InputError(f"run id prefix {run_id!r} is ambiguous: it matches {shown}", field="run_id")
        return self._rows("SELECT * FROM runs WHERE id = ?", (ids[0],))[0]

    def engines(self) -> list[dict[str, Any]]:
        """Engines that have written to this store, newest first (liveness is in control.db, see ControlDB)."""
        return self._rows("SELECT * FROM engines ORDER BY started DESC LIMIT 100")

    # -- spans -------------------------------------------------------------------------------------------------

    def spans(self, run_id: str) -> list[dict[str, Any]]:
        return self._rows("SELECT * FROM spans WHERE run_id = ? ORDER BY started, id", (run_id,))

    def span_tree(self, run_id: str) -> dict[str, Any] | None:
        """The run's root span with nested "children" (each list ordered by start). Spans whose parent is
        missing hang off the root; several roots get a synthetic root (id None, kind "run"). None: no spans."""
        spans = self.spans(run_id)
        if not spans:
            return None
        by_id = {span["id"]: span for span in spans}
        for span in spans:
            span["children"] = []
        roots: list[dict[str, Any]] = []
        orphans: list[dict[str, Any]] = []
        for span in spans:
            parent_id = span["parent_id"]
            if parent_id is None:
                roots.append(span)
            elif parent_id in by_id and parent_id != span["id"]:
                by_id[parent_id]["children"].append(span)
            else:
                orphans.append(span)
        if len(roots) == 1:
            root = roots[0]
            root["children"] = sorted(root["children"] + orphans, key=lambda s: (s["started"], s["id"]))
            return root
        return {"id": None, "run_id": run_id, "parent_id": None, "kind": "run", "name": run_id, "status": None,
                "started": spans[0]["started"], "children": roots + orphans}

    def breakers(self, hierarchy: str | None = None) -> list[dict[str, Any]]:
        """Current breaker states as the engine last published them (one row per hierarchy and breaker key)."""
        if not self._has_table("breakers"):
            return []
        if hierarchy is None:
            return self._rows("SELECT * FROM breakers ORDER BY state != 'closed' DESC, hierarchy, key", ())
        return self._rows("SELECT * FROM breakers WHERE hierarchy = ? ORDER BY key", (hierarchy,))

    def budgets(self, run_id: str) -> list[dict[str, Any]]:
        """A run's budget gauges: one row per scope (`run`, `agent:SPAN`), `data` = dimension -> used, reserved,
        limit, fraction, burn_rate_per_min, time_to_exhaustion_s."""
        if not self._has_table("budgets"):
            return []
        return self._rows("SELECT * FROM budgets WHERE run_id = ? ORDER BY scope != 'run', scope", (run_id,))

    def _has_table(self, name: str) -> bool:
        return bool(self._rows("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)))

    def running_spans(self, run_id: str | None = None) -> list[dict[str, Any]]:
        if run_id is None:
            return self._rows("SELECT * FROM spans WHERE status = 'running' ORDER BY started")
        return self._rows("SELECT * FROM spans WHERE status = 'running' AND run_id = ? ORDER BY started", (run_id,))

    # -- events ------------------------------------------------------------------------------------------------

    def events_after(self, seq: int, limit: int = 1000, run_id: str | None = None,
                     kinds: list[str] | tuple[str, ...] | None = None) -> list[dict[str, Any]]:
        """Events with seq > `seq`, oldest first: tail the feed by passing the last seq you saw."""
        where = ["seq > ?"]
        params: list[Any] = [int(seq)]
        if run_id is not None:
            where.append("run_id = ?")
            params.append(run_id)
        if kinds:
            where.append(f"kind IN ({', '.join('?' * len(kinds))})")
            params.extend(kinds)
        params.append(int(limit))
        return self._rows(f"SELECT * FROM events WHERE {' AND '.join(where)} ORDER BY seq LIMIT ?", params)

    # -- usage -------------------------------------------------------------------------------------------------

    def usage(self, run_id: str | None = None, tenant: str | None = None,
              since: float | None = None) -> dict[str, Any]:
        """Tokens, cost and call counts per agent and per model, summed over llm and tool spans (the leaves:
        agent/delegation spans may carry roll-ups that would double count). Filters: one run, a tenant, runs
        started since a time. With no filter at all this reads every span."""
        run_where, params = run_filters(run_id=run_id, tenant=tenant, since=since, run_column="s.run_id")
        where = ["s.kind IN ('llm', 'tool')", run_where]
        join = " JOIN runs r ON r.id = s.run_id" if tenant is not None or since is not None else ""
        rows = self._rows(
            "SELECT s.kind AS kind, s.agent AS agent, s.model AS model, count(*) AS n, "
            "coalesce(sum(s.tokens_in), 0) AS tokens_in, coalesce(sum(s.tokens_out), 0) AS tokens_out, "
            f"coalesce(sum(s.cost_usd), 0.0) AS cost_usd FROM spans s{join} WHERE {' AND '.join(where)} "
            "GROUP BY s.kind, s.agent, s.model", params)
        agents: dict[Any, dict[str, Any]] = {}
        models: dict[Any, dict[str, Any]] = {}
        total = _usage_row()
        for row in rows:
            is_llm = row["kind"] == "llm"
            targets = [agents.setdefault(row["agent"], _usage_row(agent=row["agent"])), total]
            if is_llm:
                targets.append(models.setdefault(row["model"], _usage_row(model=row["model"])))
            for target in targets:
                target["tokens_in"] += row["tokens_in"]
                target["tokens_out"] += row["tokens_out"]
                target["cost_usd"] += row["cost_usd"]
                target["model_calls" if is_llm else "tool_calls"] += row["n"]
        for model in models.values():
            del model["tool_calls"]
        by_cost = lambda entry: (-entry["cost_usd"], str(entry.get("agent") or entry.get("model") or ""))
        return {"agents": sorted(agents.values(), key=by_cost), "models": sorted(models.values(), key=by_cost),
                "total": total}


def _usage_row(**key: Any) -> dict[str, Any]:
    return {**key, "tokens_in": 0, "tokens_out": 0, "cost_usd": 0.0, "model_calls": 0, "tool_calls": 0}
