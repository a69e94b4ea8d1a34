"""`flightdeck runbooks` and `flightdeck postmortem` on a Postgres store print what they print on a store directory:
the same incident (a tool failure storm detected by an engine's runbook engine) handled on both backends, every
command's output compared once ids, run ids and times are masked. Real engines, a real PostgreSQL and a real HTTP
receiver on 127.0.0.1."""

from __future__ import annotations

import json
import re
from pathlib import Path

import anyio
import pytest

from console.cli import main
from engine.runtime.engine import Engine
from engine.store import open_engine_store
from engine.store.engine_store import EngineStore
from tests.engine.test_runbooks_shipped import SHIPPED, STORMY, write_config
from tests.engine_helpers import write_hierarchy
from tests.fakes.receiver import Receiver, receiver  # noqa: F401 (receiver is a fixture)
from tests.store_pg.test_pg_runbooks_engine import ROUTING_KEY, config_file, pg, storm

_MASKS = [
    (re.compile(r"inc-[0-9a-f]{8}"), "INC"),
    (re.compile(r"\b[0-9a-f]{32}\b"), "ID"),
    (re.compile(r"\b[0-9a-f]{12}\b"), "ID"),
    (re.compile(r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(:\d{2})?(\.\d+)?( UTC|Z)?"), "TIME"),
    (re.compile(r"\b\d{2}:\d{2}(:\d{2})?\b"), "TIME"),
    (re.compile(r"\b\d+(\.\d+)?\s?(ms|s|min|h) (ago|after)"), "DURATION"),
    (re.compile(r"\d+\.\d+"), "N"),
]


def masked(text: str, store: str) -> str:
    text = text.replace(store, "STORE")
    for pattern, replacement in _MASKS:
        text = pattern.sub(replacement, text)
    return text


def cli(capsys: pytest.CaptureFixture[str], store: str, *args: str) -> tuple[int, str]:
    code = main([*args, "--store", store])
    out, err = capsys.readouterr()
    return code, masked(out + err, store)


def incident_id(capsys: pytest.CaptureFixture[str], store: str) -> str:
    assert main(["incidents", "--json", "--store", store]) == 0
    (incident,) = json.loads(capsys.readouterr().out)
    return str(incident["id"])


def handle(capsys: pytest.CaptureFixture[str], store: str) -> list[tuple[int, str]]:
    """The runbooks and postmortem commands an operator uses on the incident, in order."""
    inc = incident_id(capsys, store)
    return [
        cli(capsys, store, "runbooks", "list"),
        cli(capsys, store, "runbooks", "show", "tool-failure-storm", "--incident", inc),
        cli(capsys, store, "runbooks", "apply", "tool-failure-storm", "--incident", inc, "--dry-run"),
        cli(capsys, store, "runbooks", "apply", "cost-spike", "--scope", "hierarchy:stormy", "--dry-run"),
        cli(capsys, store, "runbooks", "apply", "tool-failure-storm", "--incident", inc, "--reason", "again"),
        cli(capsys, store, "runbooks", "rollback", inc, "--reason", "service is back", "--operator", "alice"),
        cli(capsys, store, "runbooks", "rollback", inc, "--reason", "twice", "--operator", "alice"),
        cli(capsys, store, "runbooks", "apply", "cost-spike", "--scope", "hierarchy:stormy", "--reason", "cap it",
            "--operator", "bob"),
        cli(capsys, store, "runbooks", "rollback", "cost-spike", "--scope", "hierarchy:stormy", "--reason", "done",
            "--operator", "bob"),
        cli(capsys, store, "runbooks", "check", "--config", str(CONFIG)),
        cli(capsys, store, "postmortem", inc),
    ]


CONFIG = Path(__file__).parent / "runbooks_check.toml"


async def storm_on(store: EngineStore, tmp_path: Path) -> None:
    async with Engine(store, latency_scale=0.0, runbooks=[SHIPPED["tool-failure-storm"]]) as engine:
        await storm(engine, write_hierarchy(tmp_path, STORMY))


def test_runbooks_and_postmortem_print_the_same_on_postgres_as_on_a_directory(
        capsys: pytest.CaptureFixture[str], pg_url: str, tmp_path: Path, receiver: Receiver,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FD_TEST_ROUTING_KEY", ROUTING_KEY)
    monkeypatch.setenv("FLIGHTDECK_OPERATOR", "carol")
    monkeypatch.delenv("FLIGHTDECK_STORE", raising=False)
    store_dir = tmp_path / "store"
    write_config(store_dir, receiver)
    with open_engine_store(store_dir, flush_interval=0.01) as on_disk:
        anyio.run(storm_on, on_disk, tmp_path)
    on_pg = open_engine_store(pg(pg_url), flush_interval=0.01, config_file=config_file(tmp_path, receiver))
    try:
        anyio.run(storm_on, on_pg, tmp_path)
    finally:
        on_pg.close()

    directory = handle(capsys, str(store_dir))
    postgres = handle(capsys, pg_url)
    for (dir_code, dir_out), (pg_code, pg_out) in zip(directory, postgres, strict=True):
        assert (pg_code, pg_out) == (dir_code, dir_out)
    codes = [code for code, _ in postgres]
    assert codes == [0, 0, 0, 0, 2, 0, 2, 0, 0, 0, 0], postgres  # a second apply and a second rollback refused
    assert "already in force" in postgres[4][1] and "is not in force" in postgres[6][1]
    assert "# Postmortem draft: A tool is failing and its circuit breaker opened" in postgres[-1][1]
    assert "| Runbook | `tool-failure-storm`" in postgres[-1][1] and "1 run(s) in scope: 1 completed" in postgres[-1][1]
    assert "rolled back tool-failure-storm" in postgres[-1][1]  # the time line, from the Postgres control plane


def test_a_postmortem_on_a_database_with_no_traces_yet_lists_no_runs(capsys: pytest.CaptureFixture[str],
                                                                      pg_url: str) -> None:
    from engine.controls.api import ControlAPI
    from engine.controls.incidents import IncidentStore

    code, out = cli(capsys, pg_url, "postmortem", "inc-00000000")
    assert code == 3 and "no Flightdeck control plane" in out  # a reader creates nothing
    with ControlAPI(pg_url, "engine:e1") as api:  # only the control plane: nothing has written traces there
        incident, _ = IncidentStore(api.db).open_or_update(
            runbook="looping-agent", title="An agent is stuck in a loop", severity="sev2", apply_mode="suggest",
            scope="agent:planner", readings=[{"signal": "loop_detected", "value": 3}], context={},
            summary="loop_detected=3", actor="runbook:looping-agent", engine_id="e1")
    assert main(["postmortem", incident.id, "--store", pg_url]) == 0
    draft = capsys.readouterr().out
    assert "# Postmortem draft: An agent is stuck in a loop" in draft and "No runs in scope were recorded in the window." in draft
