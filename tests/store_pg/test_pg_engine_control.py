"""Issue 16, an engine wholly on a Postgres store (engine/store/pg_engine_store.py): no store directory and no lock,
the control plane and the traces in the database. Its ControlWorker is woken by LISTEN/NOTIFY; a kill switch set
by an operator on the same database stops its run, acknowledged under its id, with the audit head anchored in the
store's events; a switch written with plain SQL (no audit row) is refused; a second engine starting on the same
database leaves the first one's runs alone. Real engines in this process, a real PostgreSQL on 127.0.0.1."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import anyio
import psycopg
import pytest

from engine.controls.api import ControlAPI
from engine.errors import InputError, StoreLocked
from engine.hierarchy.loader import load_hierarchy
from engine.runtime.engine import Engine, RunRequest
from engine.store import open_engine_store, open_trace_reads
from engine.store.location import PostgresLocation, parse_store_location
from engine.store.pg_engine_store import engine_config, engine_id_from
from tests.engine.test_controls_process import BUSY
from tests.store_support import wait_until

DEAL = {"account": "ACME-001", "product": "platform", "seats": 100, "requested_discount_pct": 5}


def pg(url: str) -> PostgresLocation:
    location = parse_store_location(url)
    assert isinstance(location, PostgresLocation)
    return location


def busy(tmp_path: Path) -> Any:
    path = tmp_path / "busy.yaml"
    path.write_text(BUSY)
    return load_hierarchy(str(path))


def entries(path: Path) -> list[Path]:
    return list(path.iterdir())


def event_kinds(url: str) -> list[str]:
    reader = open_trace_reads(pg(url))
    try:
        return [event.kind for event in reader.events_after(0, limit=100_000)]
    finally:
        reader.close()


@pytest.mark.anyio
async def test_an_engine_on_postgres_alone_runs_and_registers_there(pg_url: str, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # nothing may be created in the working directory
    store = open_engine_store(pg(pg_url), flush_interval=0.01)
    assert store.store_dir is None and store.control_location == pg(pg_url)
    with ControlAPI(pg_url, "alice") as api:
        [engine_row] = api.engines()
        assert engine_row.id == store.engine_id and engine_row.alive
    try:
        async with Engine(store, latency_scale=0.0) as engine:
            [result] = await engine.run_many(load_hierarchy("deal-desk"), [RunRequest(input=DEAL)], concurrency=1)
    finally:
        store.close()
    assert result.status == "completed"
    reader = open_trace_reads(pg(pg_url))
    try:
        run = reader.get_run(result.run_id)
        assert run is not None and run.status == "completed" and run.engine_id == store.engine_id
    finally:
        reader.close()
    with ControlAPI(pg_url, "alice") as api:
        [engine_row] = api.engines()
        assert engine_row.stopped is not None and not engine_row.alive
    assert entries(tmp_path) == []


@pytest.mark.anyio
async def test_a_kill_switch_from_another_connection_stops_the_run_woken_by_notify(pg_url: str,
                                                                                    tmp_path: Path) -> None:
    store = open_engine_store(pg(pg_url), flush_interval=0.01)
    operator = ControlAPI(pg_url, "oncall")
    try:
        async with Engine(store, latency_scale=1.0) as engine:
            async def kill_when_running() -> Any:
                await anyio.to_thread.run_sync(lambda: wait_until(lambda: engine.controls.runs, what="a run"))
                return await anyio.to_thread.run_sync(
                    lambda: operator.set_kill("global", None, "kill", "incident: runaway"))

            switches: list[Any] = []

            async def killer() -> None:
                switches.append(await kill_when_running())

            async with anyio.create_task_group() as group:
                group.start_soon(killer)
                [result] = await engine.run_many(busy(tmp_path), [RunRequest(input="go")], concurrency=1)
            worker = engine.controls.worker
            assert worker is not None and worker.wakes >= 1  # woken by NOTIFY, not a timer
            switch = switches[0]
            acked = await anyio.to_thread.run_sync(lambda: wait_until(
                lambda: operator.kill_switch(switch.id).acked_by, what="the acknowledgement"))
    finally:
        store.close()
        operator.close()
    assert result.status == "killed" and "incident: runaway" in (result.error or "")
    assert acked == store.engine_id
    assert "audit.head" in event_kinds(pg_url)  # the audit chain anchored in the store's events


@pytest.mark.anyio
async def test_a_kill_switch_is_read_ahead_of_the_control_jobs_queued(pg_url: str, tmp_path: Path) -> None:
    """Kills first (control_worker.py): the control thread is busy with one job and another is queued behind it
    (blocked until the test ends) when a kill switch commits. Once the running job ends, the worker reads the
    kill switches before the queued job and the run is killed; the full snapshot would wait for that job."""
    store = open_engine_store(pg(pg_url), flush_interval=0.01)
    operator = ControlAPI(pg_url, "oncall")
    running, queued = threading.Event(), threading.Event()
    try:
        async with Engine(store, latency_scale=1.0) as engine:
            worker = engine.controls.worker
            assert worker is not None

            async def kill_behind_jobs() -> None:
                await anyio.to_thread.run_sync(lambda: wait_until(lambda: engine.controls.runs, what="a run"))
                worker.submit(lambda api: running.wait(30), "a control job running")
                worker.submit(lambda api: queued.wait(30), "a control job queued behind it")
                await anyio.to_thread.run_sync(lambda: operator.set_kill("global", None, "kill", "incident: loop"))
                await anyio.to_thread.run_sync(lambda: wait_until(lambda: worker.kills_waiting, what="the NOTIFY"))
                running.set()  # the worker ends its job; the queued one still holds the queue

            try:
                async with anyio.create_task_group() as group:
                    group.start_soon(kill_behind_jobs)
                    with anyio.fail_after(60):
                        [result] = await engine.run_many(busy(tmp_path), [RunRequest(input="go")], concurrency=1)
                assert not queued.is_set() and worker.kills_first >= 1
            finally:
                running.set()
                queued.set()
    finally:
        store.close()
        operator.close()
    assert result.status == "killed" and "incident: loop" in (result.error or "")


@pytest.mark.anyio
async def test_a_release_after_a_kill_is_applied_ahead_of_the_control_jobs_queued(pg_url: str,
                                                                                tmp_path: Path) -> None:
    """A kill switch set and released while the control thread is busy: once its running job ends, the worker reads
    the kill switches and then the full snapshot (which alone applies a release) before the job queued behind it,
    so the engine does not go on refusing runs until its queue of acks and bookkeeping drains."""
    store = open_engine_store(pg(pg_url), flush_interval=0.01)
    operator = ControlAPI(pg_url, "oncall")
    running, queued = threading.Event(), threading.Event()
    try:
        async with Engine(store, latency_scale=0.0) as engine:
            worker = engine.controls.worker
            assert worker is not None
            try:
                worker.submit(lambda api: running.wait(30), "a control job running")
                worker.submit(lambda api: queued.wait(30), "a control job queued behind it")
                switch = await anyio.to_thread.run_sync(lambda: operator.set_kill("global", None, "kill", "oops"))
                await anyio.to_thread.run_sync(lambda: operator.release(switch.id, reason="wrong button"))
                await anyio.to_thread.run_sync(lambda: wait_until(lambda: worker.kills_waiting, what="the NOTIFY"))
                snapshots = worker.snapshots
                running.set()
                await anyio.to_thread.run_sync(lambda: wait_until(
                    lambda: worker.snapshots > snapshots and not engine.controls.switches, timeout=10,
                    what="the snapshot ahead of the queued job"))
                assert not queued.is_set()
                assert engine.controls.admission_refusal("deal-desk") is None
            finally:
                running.set()
                queued.set()
    finally:
        store.close()
        operator.close()


@pytest.mark.anyio
async def test_a_switch_written_with_plain_sql_is_refused(pg_url: str, tmp_path: Path) -> None:
    store = open_engine_store(pg(pg_url), flush_interval=0.01)
    try:
        async with Engine(store, latency_scale=0.0) as engine:
            with psycopg.connect(pg_url, autocommit=True) as raw:  # no audit row: not an operator's action
                raw.execute("INSERT INTO kill_switches (scope, target, run_id, mode, reason, operator, created) "
                            "VALUES ('global', NULL, NULL, 'kill', 'forged', 'mallory', 0)")
            await anyio.to_thread.run_sync(lambda: wait_until(
                lambda: engine.controls.worker is not None and engine.controls.worker.verifier is not None
                and engine.controls.worker.verifier.findings, what="the forged switch refused"))
            [result] = await engine.run_many(load_hierarchy("deal-desk"), [RunRequest(input=DEAL)], concurrency=1)
    finally:
        store.close()
    assert result.status == "completed"  # the forged global kill was not obeyed
    assert "control.tampered" in event_kinds(pg_url)


@pytest.mark.anyio
async def test_a_second_engine_leaves_the_first_ones_running_run_alone(pg_url: str, tmp_path: Path) -> None:
    first = open_engine_store(pg(pg_url), flush_interval=0.01, engine_id="host-a/serve-1")
    try:
        async with Engine(first, latency_scale=1.0) as engine:
            async def second_engine_starts() -> None:
                await anyio.to_thread.run_sync(lambda: wait_until(lambda: engine.controls.runs, what="a run"))
                with pytest.raises(StoreLocked, match="engine id 'host-a/serve-1' is in use"):
                    open_engine_store(pg(pg_url), engine_id="host-a/serve-1")
                second = open_engine_store(pg(pg_url), engine_id="host-b/serve-1")
                try:
                    assert second.abandoned_runs == []
                finally:
                    second.close()
                engine.stop_all("test over")

            async with anyio.create_task_group() as group:
                group.start_soon(second_engine_starts)
                [result] = await engine.run_many(busy(tmp_path), [RunRequest(input="go")], concurrency=1)
    finally:
        first.close()
    assert result.status == "killed" and result.error == "test over"  # stopped by its own engine, not abandoned


def test_engine_id_and_config_without_a_store_directory(tmp_path: Path) -> None:
    assert len(engine_id_from(None, {})) == 32  # a fresh uuid
    assert engine_id_from(None, {"FLIGHTDECK_ENGINE_ID": "host-a/serve-1"}) == "host-a/serve-1"
    with pytest.raises(InputError, match="FLIGHTDECK_ENGINE_ID: expected 1-100 letters"):
        engine_id_from(None, {"FLIGHTDECK_ENGINE_ID": "bad id;"})
    assert engine_config(None, {}).redaction.patterns == []  # no file anywhere: the defaults
    config = tmp_path / "fleet.toml"
    config.write_text('[redaction]\npatterns = ["ACME-[0-9]+"]\n')
    assert "ACME-[0-9]+" in engine_config(None, {"FLIGHTDECK_CONFIG": str(config)}).redaction.patterns
    config.write_text("[redaction\n")
    with pytest.raises(InputError) as info:
        engine_config(str(config), {})
    assert info.value.file == str(config)


def listeners(url: str) -> list[int]:
    """The backends LISTENing for control changes (their last statement was the LISTEN)."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                            "AND query = 'LISTEN flightdeck_control'").fetchall()
    return [row[0] for row in rows]


@pytest.mark.anyio
async def test_the_listener_reconnects_after_its_connection_is_terminated(pg_url: str, tmp_path: Path) -> None:
    store = open_engine_store(pg(pg_url), flush_interval=0.01)
    operator = ControlAPI(pg_url, "oncall")
    try:
        async with Engine(store, latency_scale=0.0) as engine:
            worker = engine.controls.worker
            assert worker is not None
            [old] = await anyio.to_thread.run_sync(lambda: wait_until(lambda: listeners(pg_url), what="the listener"))
            with psycopg.connect(pg_url, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (old,))
            [new] = await anyio.to_thread.run_sync(lambda: wait_until(
                lambda: [pid for pid in listeners(pg_url) if pid != old], what="a new listener"))
            assert new != old
            wakes = worker.wakes
            await anyio.to_thread.run_sync(lambda: operator.set_flag("approvals", "all", reason="drill"))
            await anyio.to_thread.run_sync(lambda: wait_until(lambda: worker.wakes > wakes, what="a wake"))
            await anyio.to_thread.run_sync(lambda: wait_until(
                lambda: engine.controls.flags.get("approvals") == {("global", None): "all"}, what="the flag applied"))
    finally:
        store.close()
        operator.close()


@pytest.mark.anyio
async def test_an_engine_acknowledges_a_switch_another_engine_acknowledged_first(pg_url: str) -> None:
    """A fleet: each engine records its own acknowledgement. The switch's acked/acked_by already hold another
    engine's when this one applies it (before, it then acknowledged nothing and `kill` could not tell it obeyed)."""
    operator = ControlAPI(pg_url, "oncall")
    store = open_engine_store(pg(pg_url), flush_interval=0.01)
    try:
        switch = operator.set_kill("tool", "nothing-uses-this", "pause", "drill: fleet acknowledgements")
        assert operator.ack_kill_switches([switch.id], "ci/elsewhere") == 1
        async with Engine(store, latency_scale=0.0):
            acks = await anyio.to_thread.run_sync(lambda: wait_until(
                lambda: len(operator.kill_switch_acks([switch.id])) == 2 and operator.kill_switch_acks([switch.id]),
                what="this engine's own acknowledgement"))
        first = operator.kill_switch(switch.id)
    finally:
        store.close()
        operator.close()
    assert [ack.engine_id for ack in acks] == ["ci/elsewhere", store.engine_id]
    assert first.acked_by == "ci/elsewhere"


@pytest.mark.anyio
async def test_an_acknowledgement_that_failed_is_recorded_with_the_next_snapshot(pg_url: str) -> None:
    """The engine remembers what it acknowledged (not `acked IS NULL`); a write that failed is given back, so the
    next snapshot it applies records it. The failure is real: a trigger on kill_switch_acks refuses the insert."""
    operator = ControlAPI(pg_url, "oncall")
    store = open_engine_store(pg(pg_url), flush_interval=0.01)
    admin = psycopg.connect(pg_url, autocommit=True)
    try:
        admin.execute("CREATE SEQUENCE ack_attempts")  # nextval survives the rollback: counts the attempts
        admin.execute("CREATE FUNCTION refuse_ack() RETURNS trigger LANGUAGE plpgsql AS "
                      "$$ BEGIN PERFORM nextval('ack_attempts'); RAISE EXCEPTION 'acknowledgements refused (test)'; "
                      "END $$")
        admin.execute("CREATE TRIGGER refuse_ack BEFORE INSERT ON kill_switch_acks "
                      "FOR EACH ROW EXECUTE FUNCTION refuse_ack()")
        async with Engine(store, latency_scale=0.0) as engine:
            switch = operator.set_kill("tool", "nothing-uses-this", "pause", "drill: a lost acknowledgement")

            def attempted() -> bool:
                return bool(admin.execute("SELECT is_called FROM ack_attempts").fetchone()[0])  # type: ignore[index]

            await anyio.to_thread.run_sync(lambda: wait_until(attempted, what="the refused acknowledgement"))
            assert operator.kill_switch_acks([switch.id]) == []
            admin.execute("DROP TRIGGER refuse_ack ON kill_switch_acks")
            operator.set_flag("tools.side_effects", "off", reason="drill: any change brings a new snapshot")
            acks = await anyio.to_thread.run_sync(lambda: wait_until(
                lambda: operator.kill_switch_acks([switch.id]), what="the acknowledgement, retried"))
    finally:
        admin.close()
        store.close()
        operator.close()
    assert [ack.engine_id for ack in acks] == [store.engine_id]
