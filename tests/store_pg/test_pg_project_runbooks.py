"""Issue 16: project runbooks on an engine wholly on Postgres. There is no store directory to hold STORE/runbooks, so
the config's `[runbooks] dir` (relative to the config file) names them: an engine on Postgres loads them beside the
shipped ones and they fire there (the incident is a row of the Postgres control plane); `flightdeck runbooks list
--store postgresql://... --config F` lists them; a bad runbook file there is exit 2 naming the file and the field,
before the engine registers. Real `flightdeck` processes and a real PostgreSQL on 127.0.0.1."""

from __future__ import annotations

import json
from pathlib import Path

from engine.runbooks.loader import shipped_dir
from tests.engine.test_runbooks_shipped import STORMY
from tests.store_pg.test_pg_cli import flightdeck
from tests.store_pg.test_pg_runbooks_engine import rows


def project(tmp_path: Path, runbook_text: str) -> Path:
    """A config whose [runbooks] dir is `project-runbooks` next to it, holding one runbook file."""
    runbooks = tmp_path / "project-runbooks"
    runbooks.mkdir()
    (runbooks / "tool-storm-local.md").write_text(runbook_text)
    config = tmp_path / "engine.toml"
    config.write_text('[runbooks]\ndir = "project-runbooks"\n')
    return config


def storm_runbook() -> str:
    """The shipped tool-failure-storm as a project runbook of its own id, owned by nobody and paging nobody."""
    text = (shipped_dir() / "tool-failure-storm.md").read_text()
    return (text.replace("id: tool-failure-storm", "id: tool-storm-local", 1).replace("owner: [oncall]", "owner: []", 1)
            .replace("  - page: {}\n", "", 1))


def test_a_project_runbook_named_by_the_config_fires_in_an_engine_on_postgres(pg_url: str, tmp_path: Path) -> None:
    config = project(tmp_path, storm_runbook())
    hierarchy = tmp_path / "stormy.yaml"
    hierarchy.write_text(STORMY)

    # `flightdeck` runs in the checkout: the directory is relative to the config file, not to the working directory.
    listed = flightdeck("runbooks", "list", "--json", "--store", pg_url, "--config", str(config))
    assert listed.returncode == 0, listed.stderr
    by_id = {r["id"]: r for r in json.loads(listed.stdout)}
    assert by_id["tool-storm-local"]["origin"] == "config"
    assert by_id["tool-storm-local"]["path"] == str(tmp_path / "project-runbooks" / "tool-storm-local.md")
    assert "tool-failure-storm" in by_id  # beside the shipped ones
    without = flightdeck("runbooks", "list", "--json", "--store", pg_url)
    assert "tool-storm-local" not in {r["id"] for r in json.loads(without.stdout)}

    done = flightdeck("run", str(hierarchy), "--input", '{"task": "go"}', "--speed", "0", "--store", pg_url,
                      "--config", str(config))
    assert done.returncode == 0, done.stderr
    fired = {r["runbook"]: r for r in rows(pg_url, "SELECT runbook, scope, engine_id FROM incidents")}
    assert fired["tool-storm-local"]["scope"] == "tool:fail"
    (application,) = rows(pg_url, "SELECT actor FROM runbook_applications WHERE runbook = 'tool-storm-local'")
    assert application["actor"] == "runbook:tool-storm-local"

    shown = flightdeck("runbooks", "show", "tool-storm-local", "--store", pg_url,
                       env={"FLIGHTDECK_CONFIG": str(config)})  # the engines' variable works as well as --config
    assert shown.returncode == 0, shown.stderr
    assert f"from {tmp_path / 'project-runbooks' / 'tool-storm-local.md'}" in shown.stdout


def test_a_bad_project_runbook_is_exit_2_naming_file_and_field_before_the_engine_registers(pg_url: str,
                                                                                            tmp_path: Path) -> None:
    bad = storm_runbook().replace("threshold: 50", "threshold: lots", 1)
    config = project(tmp_path, bad)
    hierarchy = tmp_path / "stormy.yaml"
    hierarchy.write_text(STORMY)
    path = tmp_path / "project-runbooks" / "tool-storm-local.md"

    done = flightdeck("run", str(hierarchy), "--input", '{"task": "go"}', "--speed", "0", "--store", pg_url,
                      "--config", str(config))
    assert done.returncode == 2, done.stderr
    assert f"{path}:" in done.stderr and "detect[1].threshold" in done.stderr, done.stderr
    registered = rows(pg_url, "SELECT to_regclass('engines') AS t")[0]["t"]
    assert registered is None or rows(pg_url, "SELECT id FROM engines") == []  # nothing registered, nothing ran

    listed = flightdeck("runbooks", "list", "--store", pg_url, "--config", str(config))
    assert listed.returncode == 2 and f"{path}:" in listed.stderr and "detect[1].threshold" in listed.stderr
    checked = flightdeck("runbooks", "check", "--store", pg_url, "--config", str(config))
    assert checked.returncode == 2 and "detect[1].threshold" in checked.stderr, checked.stdout + checked.stderr


def test_a_runbooks_dir_that_is_not_there_is_exit_2_naming_the_setting(pg_url: str, tmp_path: Path) -> None:
    config = tmp_path / "engine.toml"
    config.write_text('[secrets]\nenv = []\n\n[runbooks]\ndir = "no-such-dir"\n')
    hierarchy = tmp_path / "stormy.yaml"
    hierarchy.write_text(STORMY)
    done = flightdeck("run", str(hierarchy), "--speed", "0", "--store", pg_url, "--config", str(config))
    assert done.returncode == 2
    assert f"{config}:5: runbooks.dir: not a directory: {tmp_path / 'no-such-dir'}" in done.stderr, done.stderr
