"""The one module that imports DBOS Transact: its system database is STORE/durable.db (SQLite, WAL, mode 0600), or,
when the engine's traces go to a Postgres store, the schema `flightdeck_dbos` of that same database (DBOS's
`dbos_system_schema`: one database holds the traces, the control plane and DBOS's tables; one backup, one
connection string).

What DBOS owns here: which runs are in flight (a run is the workflow `flightdeck.run` whose id is the run id, with
the inputs needed to run it again), and which side-effecting tool calls started and which finished with what result
(each is the workflow `flightdeck.side_effect` whose id is its idempotency key, `<run>:<call path>`). A side
effect's workflow row is written (PENDING) before the tool runs and its result (SUCCESS) after: a key found SUCCESS
is never run again, a key found PENDING after a crash has an unknown outcome.

Why side effects are top-level workflows keyed by their path and not steps of the run's workflow: DBOS numbers a
workflow's steps in the order they happen, and parallel calls and delegations happen in any order, so a replay
could hand one call's recorded result to another. A workflow id is an explicit key; each side-effect workflow is
started from a fresh context so DBOS does not attach it to the run as its next (ordinal) child.

Recovery: every engine is its own DBOS executor (executor id = engine id; on a shared store one per engine life,
`<engine id>~<random>`), so DBOS's own start-up recovery finds nothing; the engine decides which runs of a dead
engine resume (not killed, not with `--no-resume`) and hands each to DBOS (`resume_workflow`), whose queue runs it
again on this engine's event loop (DBOS was launched from it).

Takeover (a shared Postgres store, issue 16): several engines are executors of one DBOS system database. A run of
an engine whose heartbeat stopped is handed to the live engine that claimed that engine (runtime/durable_takeover.py)
with `take_over`: the dead executor's PENDING run workflows (`DBOS.list_workflows_async(executor_id=...)`) are resumed
(`DBOS.resume_workflows_async`) onto the taker's own queue `TAKEOVER_QUEUE_PREFIX<engine id>`, which only the taker
dequeues, so the runs carry on on the engine that counts them. DBOS has no public call that recovers another
executor's workflows (`DBOS._recover_pending_workflows(executor_ids)` is private); the claim in Postgres is what makes
a takeover happen once.

Running a run again after it ended (an operator's reconcile or `flightdeck resume`): a new workflow of the same body,
id `<run>~<n>` (`start_again`), whose first argument is still the run id; DBOS never re-runs a finished workflow."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dbos import DBOS, DBOSConfig, SetWorkflowID

DURABLE_DB = "durable.db"
APP_NAME = "flightdeck"
# Fixed, not derived from the code: a run interrupted by one Flightdeck release resumes under the next one.
APP_VERSION = "flightdeck-durable-1"
RUN_WORKFLOW = "flightdeck.run"
SIDE_EFFECT_WORKFLOW = "flightdeck.side_effect"
DBOS_QUEUES = "_dbos_"  # the prefix of DBOS's own queues (the one resumed runs go to); ours never start with it
SYSTEM_SCHEMA = "flightdeck_dbos"  # DBOS's tables in a Postgres store's database (beside the trace tables)
TAKEOVER_QUEUE_PREFIX = "fd-takeover-"  # + engine id: the queue a taker resumes a dead engine's runs onto
TAKEOVER_POLL_S = 0.2  # how often DBOS looks for runs on it (a SELECT on Postgres)

LISTENER_POLL_S = 0.02
RunBody = Callable[[str, dict[str, Any]], Awaitable[Any]]


@dataclass(slots=True)
class _Effect:
    started: asyncio.Event
    outcome: asyncio.Future[Any]


@dataclass(slots=True)
class _HostState:
    body: RunBody | None = None
    effects: dict[str, _Effect] = field(default_factory=dict)


_STATE = _HostState()


@DBOS.workflow(name=RUN_WORKFLOW)
async def run_workflow(run_id: str, spec: dict[str, Any]) -> Any:
    body = _STATE.body
    if body is None:
        raise RuntimeError(f"run {run_id} was started with no durable engine open")
    return await body(run_id, spec)


@DBOS.workflow(name=SIDE_EFFECT_WORKFLOW)
async def side_effect_workflow(key: str) -> Any:
    effect = _STATE.effects.get(key)
    if effect is None:
        # Only reachable if DBOS itself ran a side effect again (it must not: these are never resumed).
        raise RuntimeError(f"side effect {key} has no caller in this engine; it is not run again")
    effect.started.set()
    return await effect.outcome


@dataclass(frozen=True, slots=True)
class RecordedEffect:
    """What durable.db knows about one side-effect key: `new` (never started), `done` (with the value the caller's
    perform() returned), `unknown` (started, never finished: the process died during it), `failed`."""

    state: str
    value: Any = None


def generation_of(workflow_id: str, run_id: str) -> int | None:
    """0 for the run's first execution (workflow id = run id), n for `<run>~<n>`, None for another run's id."""
    if workflow_id == run_id:
        return 0
    head, sep, tail = workflow_id.rpartition("~")
    return int(tail) if sep and head == run_id and tail.isdigit() else None


def _run_of(row: Any) -> tuple[str, str, dict[str, Any]]:
    inputs: Any = row.input or {}
    args: Any = inputs.get("args") or ()
    run_id = str(args[0]) if args else str(row.workflow_id)
    return str(row.workflow_id), run_id, (args[1] if len(args) > 1 else {})


async def detached(coro: Any) -> Any:
    """Await a DBOS call outside any workflow's context: inside a run's workflow DBOS would record it as the run's
    next ordinal step, which a resumed run (whose calls happen in another order) would then fail to match."""
    return await asyncio.get_running_loop().create_task(coro, context=contextvars.Context())


def _prepare_file(path: Path) -> None:
    """durable.db exists with mode 0600 and in WAL mode before DBOS opens it (DBOS leaves the journal mode alone)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    os.chmod(path, 0o600)
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
    finally:
        conn.close()


class DurableHost:
    """DBOS for one engine: launch() on the engine's event loop, destroy() when it stops. One per process."""

    def __init__(self, store_dir: Path | None, engine_id: str, body: RunBody, queues: list[str] | None = None,
                 database_url: str | None = None, executor_id: str | None = None) -> None:
        """`queues`: the serve-mode queues this engine dequeues from (engine/durable/queues.py); an engine that
        serves none (`flightdeck run --durable`) leaves runs queued by a serve engine on the same store alone.
        `database_url`: a Postgres store's URL (with its password: for the driver only): DBOS's system tables go in
        its schema SYSTEM_SCHEMA instead of durable.db, and this engine also takes over dead engines' runs.
        `executor_id`: DBOS's executor id (default: the engine id); on a shared store a fresh one per life
        (pg/liveness.py says why)."""
        if store_dir is None and database_url is None:
            raise ValueError("a durable engine needs a store directory (durable.db) or a Postgres store")
        self.path = None if store_dir is None else store_dir / DURABLE_DB
        self.engine_id = engine_id
        self.executor_id = executor_id or engine_id
        self.body = body
        self.database_url = database_url
        self.queues = list(queues or [])
        self.takeover_queue = TAKEOVER_QUEUE_PREFIX + engine_id
        if database_url is not None:
            self.queues.append(self.takeover_queue)
        self._takeover_registered = False
        self.launched = False

    def launch(self) -> None:
        """Open (and migrate) durable.db, or DBOS's schema in the Postgres store. Called on the running event loop:
        DBOS then runs resumed runs on it."""
        asyncio.get_running_loop()  # raises outside a loop: DBOS would silently pick a loop of its own
        for name in ("dbos", "dbos._logger"):
            logging.getLogger(name).setLevel(logging.WARNING)
        config: DBOSConfig = {
            "name": APP_NAME,
            "system_database_url": f"sqlite:///{self.path}",
            "application_version": APP_VERSION,
            "executor_id": self.executor_id,
            "log_level": "WARNING",
            # DBOS's SQLite notification listener sleeps this long between polls, and destroy() joins it: at the
            # default 1 s, closing any durable engine took up to 1 s (measured 0.66-1.2 s). We use no DBOS
            # notifications or events, so its poll has nothing to read; waking it every 20 ms costs nothing.
            "notification_listener_polling_interval_sec": LISTENER_POLL_S,
        }
        if self.database_url is None:
            assert self.path is not None
            _prepare_file(self.path)
        else:
            config["system_database_url"] = self.database_url
            config["dbos_system_schema"] = SYSTEM_SCHEMA
            # DBOS's connections get the store's TCP keepalive too (engine/store/pg/connection.py: a hung
            # connection noticed in a minute), unless the URL sets its own; application_name is DBOS's default,
            # which these connect_args replace.
            from engine.store.pg.connection import keepalive_params

            config["db_engine_kwargs"] = {"connect_args": {"application_name": "dbos_transact",
                                                           **keepalive_params(self.database_url)}}
        DBOS(config=config)
        DBOS.listen_queues(self.queues)  # DBOS's internal queue (resumed runs) is always served too
        _STATE.body = self.body
        DBOS.launch()
        self.launched = True
        for name in ("dbos", "dbos._logger"):
            logging.getLogger(name).setLevel(logging.WARNING)

    def destroy(self) -> None:
        if self.launched:
            DBOS.destroy(destroy_registry=False)
            self.launched = False
        _STATE.body = None
        _STATE.effects.clear()

    async def run(self, run_id: str, spec: dict[str, Any]) -> Any:
        """Run `body(run_id, spec)` as the workflow `run_id`. If that workflow exists already (the same
        idempotency key), nothing starts: this waits for, and returns, the original run's result."""
        with SetWorkflowID(run_id):
            return await run_workflow(run_id, spec)

    async def status(self, workflow_id: str) -> str | None:
        found = await detached(DBOS.get_workflow_status_async(workflow_id))
        return None if found is None else str(found.status)

    async def result(self, workflow_id: str) -> Any:
        async def get() -> Any:
            handle: Any = await DBOS.retrieve_workflow_async(workflow_id)
            return await handle.get_result()

        return await detached(get())

    async def pending_runs(self) -> list[tuple[str, str, dict[str, Any]]]:
        """Runs DBOS holds as in flight (PENDING) as (workflow id, run id, spec): a dead engine's, when called at
        start. The workflow id is the run id, or `<run>~<n>` for the n-th execution an operator started. Runs still
        waiting on a serve-mode queue (ENQUEUED there) are left out: their queue starts them, in its order."""
        rows = await DBOS.list_workflows_async(status=["PENDING", "ENQUEUED"], name=RUN_WORKFLOW, load_output=False)
        return [_run_of(row) for row in rows
                if not (str(row.status) == "ENQUEUED" and not (row.queue_name or DBOS_QUEUES).startswith(DBOS_QUEUES))]

    async def latest(self, run_id: str) -> tuple[str, str, dict[str, Any]] | None:
        """The run's newest execution as (workflow id, DBOS status, spec), or None: not a durable run."""
        rows = await detached(DBOS.list_workflows_async(workflow_id_prefix=run_id, name=RUN_WORKFLOW,
                                                         load_output=False))
        mine = [row for row in rows if generation_of(row.workflow_id, run_id) is not None]
        if not mine:
            return None
        row = max(mine, key=lambda r: generation_of(r.workflow_id, run_id) or 0)
        workflow_id, _run, spec = _run_of(row)
        return workflow_id, str(row.status), spec

    async def start_again(self, run_id: str, spec: dict[str, Any]) -> Any:
        """Start a new execution of a run whose workflow ended (or is abandoned): the workflow `<run>~<n>` with
        `spec` (new limits are a new spec). An execution still PENDING is cancelled first, so no later engine
        resumes it as well. Returns the DBOS handle (`await handle.get_result()`)."""
        rows = await detached(DBOS.list_workflows_async(workflow_id_prefix=run_id, name=RUN_WORKFLOW,
                                                         load_input=False, load_output=False))
        mine = [(generation_of(row.workflow_id, run_id), row) for row in rows]
        generations = [(n, row) for n, row in mine if n is not None]
        for _n, row in generations:
            if str(row.status) in ("PENDING", "ENQUEUED"):
                await detached(DBOS.cancel_workflow_async(row.workflow_id))
        workflow_id = f"{run_id}~{max((n for n, _row in generations), default=0) + 1}"

        async def start() -> Any:
            with SetWorkflowID(workflow_id):
                return await DBOS.start_workflow_async(run_workflow, run_id, spec)

        return await detached(start())

    async def outcome_recorded(self, workflow_id: str, timeout: float) -> bool:
        """Until DBOS has recorded the outcome of `workflow_id` (it is no longer PENDING), at most `timeout` s.
        Why: DBOS writes a workflow's outcome after its body returned; destroy() in between cancels that write,
        and the workflow stays PENDING, so the next engine would resume a run that had ended. False: it did not
        end in time."""
        async def wait() -> None:
            handle: Any = await DBOS.retrieve_workflow_async(workflow_id)
            try:
                await handle.get_result(polling_interval_sec=0.02)
            except Exception:  # an ERROR outcome is an outcome; it is recorded
                pass

        try:
            await detached(asyncio.wait_for(wait(), timeout))
        except TimeoutError:
            return False
        return True

    async def resume(self, workflow_id: str) -> None:
        """Hand a pending run back to DBOS: its queue runs it again (on this engine's loop) soon after."""
        await detached(DBOS.resume_workflow_async(workflow_id))

    async def resume_many(self, workflow_ids: list[str]) -> None:
        """resume() for many runs in one durable.db transaction (an engine's start after a crash: one at a time,
        1,000 runs took ~12 s, each a thread hop and a commit while the runs resumed first competed for the loop)."""
        if workflow_ids:
            await detached(DBOS.resume_workflows_async(workflow_ids))

    async def pending_of(self, executor_ids: list[str], queues_of: list[str]) -> list[tuple[str, str]]:
        """The run workflows these (dead) executors left to carry on, as (workflow id, run id): those PENDING under
        them, and those ENQUEUED on the takeover queues of the engines `queues_of` (a taker that died before it
        dequeued what it took)."""
        pending = [] if not executor_ids else await detached(DBOS.list_workflows_async(
            status="PENDING", name=RUN_WORKFLOW, executor_id=list(executor_ids), load_output=False))
        queued = [] if not queues_of else await detached(DBOS.list_workflows_async(
            status="ENQUEUED", name=RUN_WORKFLOW, queue_name=[TAKEOVER_QUEUE_PREFIX + e for e in queues_of],
            load_output=False))
        return [_run_of(row)[:2] for row in [*pending, *queued]]

    async def take_over(self, workflow_ids: list[str]) -> None:
        """Resume these workflows onto this engine's takeover queue (only this engine dequeues it), one
        transaction."""
        if not workflow_ids:
            return
        if not self._takeover_registered:
            await DBOS.register_queue_async(self.takeover_queue, polling_interval_sec=TAKEOVER_POLL_S,
                                            on_conflict="always_update")
            self._takeover_registered = True
        await detached(DBOS.resume_workflows_async(workflow_ids, queue_name=self.takeover_queue))

    async def recorded_effects(self, run_id: str) -> int:
        """How many side effects of `run_id` completed (they replay on resume instead of running)."""
        rows = await detached(DBOS.list_workflows_async(
            workflow_id_prefix=f"{run_id}:", status="SUCCESS", name=SIDE_EFFECT_WORKFLOW, load_input=False,
            load_output=False))
        return len(rows)

    async def recorded(self, key: str) -> RecordedEffect:
        status = await self.status(key)
        if status is None:
            return RecordedEffect("new")
        if status == "SUCCESS":
            return RecordedEffect("done", await self.result(key))
        if status == "ERROR":
            return RecordedEffect("failed")
        return RecordedEffect("unknown")

    async def perform(self, key: str, call: Callable[[], Awaitable[Any]]) -> tuple[bool, Any]:
        """Run `call` once under the durable key `key`: its start is committed before it runs and its value after.
        Returns (ran, value): ran=False when the key had already completed (the recorded value is returned and
        `call` is not run). `call` must return a picklable value and report its own failures in it; an exception
        escaping it (cancellation) is recorded as the outcome `("raised", text)` and re-raised."""
        loop = asyncio.get_running_loop()
        effect = _Effect(asyncio.Event(), loop.create_future())
        _STATE.effects[key] = effect

        async def start() -> Any:
            with SetWorkflowID(key):
                return await side_effect_workflow(key)

        # A fresh context: DBOS must not see the run's workflow as this one's parent (see the module docstring).
        task = loop.create_task(start(), context=contextvars.Context())
        waiter = loop.create_task(effect.started.wait())
        try:
            await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
            if not effect.started.is_set():
                waiter.cancel()
                return False, await task  # recorded before: replayed, not run
            try:
                value = await call()
            except BaseException as exc:
                effect.outcome.set_result(("raised", f"{type(exc).__name__}: {exc}"))
                await asyncio.shield(task)
                raise
            effect.outcome.set_result(value)
            await asyncio.shield(task)
            return True, value
        finally:
            waiter.cancel()
            _STATE.effects.pop(key, None)
