"""The runbooks / incidents / postmortem commands: exit codes, file:line:field errors, JSON shapes, dry runs that
change nothing, and a whole incident handled from the command line while the engine runs (the page follows the
acknowledgement and the resolution), ending in a postmortem draft."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import anyio
import pytest

from console.cli import main
from tests.engine.test_runbooks_shipped import LOOPY, SHIPPED, Harness, pd_trigger, with_runbooks, write_config
from tests.engine_helpers import write_hierarchy
from tests.fakes.receiver import Receiver, receiver  # noqa: F401 (receiver is a fixture)

BODY = "\n## What it means\nx\n## How to confirm\nx\n## First steps\nx\n## How to roll back\nx\n## When to escalate\nx\n"


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def rows(store_dir: Path, sql: str) -> list[dict[str, Any]]:
    conn = sqlite3.connect(store_dir / "control.db")
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(sql).fetchall()]
    finally:
        conn.close()



def test_list_show_and_unknown_ids(capsys: pytest.CaptureFixture[str], store_dir: Path) -> None:
    code, out, _ = cli(capsys, "runbooks", "list", "--json", "--store", str(store_dir))
    assert code == 0
    listed = {r["id"]: r for r in json.loads(out)}
    assert set(listed) == {"looping-agent", "tool-failure-storm", "cost-spike", "latency-spike",
                           "injection-suspected", "approval-backlog", "control-tampered", "queue-backing-up",
                           "quality-dropping"}
    assert listed["tool-failure-storm"]["actions"][0] == {"breaker": {"key": "tool:{tool}", "action": "force_open",
                                                                      "for": 600.0}}
    assert listed["looping-agent"]["detect"] == [{"signal": "loop_detected", "op": ">=", "threshold": 3.0,
                                                  "for_s": 600.0, "scope": "agent", "target": None, "params": {}}]
    code, out, _ = cli(capsys, "runbooks", "show", "looping-agent", "--store", str(store_dir))
    assert code == 0
    assert "## How to roll back" in out and "pages oncall as sev2" in out
    code, _, err = cli(capsys, "runbooks", "show", "looping-agnet", "--store", str(store_dir))
    assert code == 2 and "did you mean 'looping-agent'?" in err


def test_check_reports_every_problem_with_file_line_and_field(capsys: pytest.CaptureFixture[str],
                                                              tmp_path: Path) -> None:
    good = tmp_path / "rb"
    good.mkdir()
    (good / "ok.md").write_text("---\nid: ok\ntitle: Ok\nseverity: sev4\ndetect: {signal: loop_detected, "
                                "threshold: 1}\n---\n" + BODY)
    (good / "README.md").write_text("# not a runbook\n")
    code, out, _ = cli(capsys, "runbooks", "check", str(good))
    assert code == 0 and f"{good / 'ok.md'}: ok: runbook ok" in out
    (good / "bad.md").write_text("---\nid: bad\ntitle: Bad\nseverity: sev2\ndetect:\n  - signal: latency_p99\n"
                                 "    threshold: 1\n    for: soon\nactions:\n  - flag: {name: approvals, value: "
                                 "some, scope: global}\n---\n" + BODY)
    code, out, err = cli(capsys, "runbooks", "check", str(good))
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert lines[0].startswith(f"flightdeck: {good / 'bad.md'}:6: detect[0].signal: unknown signal 'latency_p99'; "
                               f"did you mean 'latency_p95'?")
    assert lines[1] == f"{good / 'bad.md'}:8: detect[0].for: expected a duration like '30s', '2m' or '250ms', got " \
                       f"'soon'"
    (good / "bad.md").write_text("---\nid: bad\ntitle: Bad\nseverity: sev2\ndetect:\n  - signal: latency_p95\n"
                                 "    threshold: 1\nactions:\n  - flag: {name: approvals, value: some, scope: "
                                 "global}\n---\n" + BODY)
    code, _, err = cli(capsys, "runbooks", "check", str(good / "bad.md"))
    assert code == 2
    assert err.strip() == f"flightdeck: {good / 'bad.md'}:9: actions[0].flag.value: expected one of all, default, " \
                          f"got 'some'"


def test_check_against_the_store_config_names_unknown_targets(capsys: pytest.CaptureFixture[str],
                                                              store_dir: Path) -> None:
    store_dir.mkdir()
    (store_dir / "config.toml").write_text('[notifiers.oncall]\ntype = "webhook"\nurl = "http://127.0.0.1:9/x"\n')
    code, _, err = cli(capsys, "runbooks", "check", "--store", str(store_dir))
    assert code == 2
    shipped = Path(str(SHIPPED["approval-backlog"].path))
    assert err.strip() == f"flightdeck: {shipped}:5: owner[0]: unknown notifier target 'secondary' (configured: " \
                          f"oncall)"
    (store_dir / "config.toml").write_text('[notifiers.oncall]\ntype = "webhook"\nurl = "http://127.0.0.1:9/x"\n'
                                           '[notifiers.secondary]\ntype = "pagerduty"\nrouting_key_env = '
                                           '"FD_UNSET_KEY_FOR_TEST"\n')
    code, out, err = cli(capsys, "runbooks", "check", "--store", str(store_dir))
    assert code == 0 and out.count(": ok: runbook ") == 9
    assert "notifier secondary: $FD_UNSET_KEY_FOR_TEST is not set here" in err


def test_a_store_runbook_replaces_the_shipped_one(capsys: pytest.CaptureFixture[str], store_dir: Path) -> None:
    (store_dir / "runbooks").mkdir(parents=True)
    text = Path(str(SHIPPED["cost-spike"].path)).read_text().replace("threshold: 2.0", "threshold: 25")
    (store_dir / "runbooks" / "cost-spike.md").write_text(text)
    code, out, _ = cli(capsys, "runbooks", "list", "--json", "--store", str(store_dir))
    (cost,) = [r for r in json.loads(out) if r["id"] == "cost-spike"]
    assert (cost["origin"], cost["detect"][0]["threshold"]) == ("store", 25.0)


def test_the_configs_runbooks_dir_on_a_store_directory_sits_between_shipped_and_store_runbooks(
        capsys: pytest.CaptureFixture[str], store_dir: Path) -> None:
    shipped = Path(str(SHIPPED["cost-spike"].path)).read_text()
    (store_dir / "project").mkdir(parents=True)
    (store_dir / "project" / "cost-spike.md").write_text(shipped.replace("threshold: 2.0", "threshold: 25"))
    (store_dir / "project" / "local.md").write_text(shipped.replace("id: cost-spike", "id: local", 1))
    (store_dir / "config.toml").write_text('[runbooks]\ndir = "project"\n')  # relative to STORE/config.toml
    code, out, _ = cli(capsys, "runbooks", "list", "--json", "--store", str(store_dir))
    by_id = {r["id"]: r for r in json.loads(out)}
    assert code == 0 and by_id["local"]["origin"] == "config"
    assert (by_id["cost-spike"]["origin"], by_id["cost-spike"]["detect"][0]["threshold"]) == ("config", 25.0)
    (store_dir / "runbooks").mkdir()
    (store_dir / "runbooks" / "cost-spike.md").write_text(shipped.replace("threshold: 2.0", "threshold: 30"))
    code, out, _ = cli(capsys, "runbooks", "list", "--json", "--store", str(store_dir))
    (cost,) = [r for r in json.loads(out) if r["id"] == "cost-spike"]
    assert (cost["origin"], cost["detect"][0]["threshold"]) == ("store", 30.0)  # STORE/runbooks comes last

    (store_dir / "project" / "local.md").write_text(shipped.replace("id: cost-spike", "id: local", 1)
                                                     .replace("threshold: 2.0", "threshold: [2]"))
    hierarchy = write_hierarchy(store_dir.parent, LOOPY)
    code, _, err = cli(capsys, "run", str(hierarchy.path), "--store", str(store_dir))
    assert code == 2 and f"{store_dir / 'project' / 'local.md'}:" in err and "threshold" in err, err


def test_apply_dry_run_apply_and_rollback(capsys: pytest.CaptureFixture[str], store_dir: Path) -> None:
    code, _, err = cli(capsys, "runbooks", "apply", "injection-suspected", "--scope", "hierarchy:inbox",
                       "--dry-run", "--store", str(store_dir))
    assert code == 3 and "no store at" in err  # a dry run never creates a store
    code, _, err = cli(capsys, "runbooks", "apply", "injection-suspected", "--scope", "inbox", "--reason", "x",
                       "--store", str(store_dir))
    assert code == 2 and "--scope: expected global, hierarchy:NAME, agent:NAME or tool:NAME, got 'inbox'" in err
    code, out, _ = cli(capsys, "runbooks", "apply", "injection-suspected", "--scope", "hierarchy:inbox",
                       "--reason", "suspicious email campaign", "--operator", "alice", "--store", str(store_dir))
    assert code == 0
    assert "set tools.side_effects=off at hierarchy:inbox (now: unset)" in out
    code, out, _ = cli(capsys, "runbooks", "apply", "injection-suspected", "--scope", "hierarchy:other",
                       "--dry-run", "--store", str(store_dir))
    assert code == 0 and "set approvals=all at hierarchy:other (now: unset)" in out
    assert "page oncall (sev2) (not sent by `runbooks apply`" in out and "nothing was changed" in out
    assert len(rows(store_dir, "SELECT * FROM flags")) == 2  # the dry run wrote nothing
    code, _, err = cli(capsys, "runbooks", "apply", "injection-suspected", "--scope", "hierarchy:inbox",
                       "--reason", "again", "--store", str(store_dir))
    assert code == 2 and "already in force for hierarchy:inbox (application #1 by alice" in err
    code, out, _ = cli(capsys, "safe-mode", "set", "approvals=default", "--scope", "hierarchy:inbox", "--reason",
                       "approvals slow us down", "--operator", "bob", "--store", str(store_dir))
    assert code == 0
    code, out, _ = cli(capsys, "runbooks", "rollback", "injection-suspected", "--reason", "campaign blocked",
                       "--operator", "alice", "--store", str(store_dir))
    assert code == 0
    assert "[restored] cleared tools.side_effects at hierarchy:inbox (it was unset before)" in out
    assert "[LEFT] approvals at hierarchy:inbox was set to default by bob" in out
    active = {(r["name"], r["value"]) for r in rows(store_dir, "SELECT * FROM flags WHERE cleared IS NULL")}
    assert active == {("approvals", "default")}  # bob's decision survives the rollback
    code, _, err = cli(capsys, "runbooks", "rollback", "injection-suspected", "--reason", "again", "--store",
                       str(store_dir))
    assert code == 2 and "runbook injection-suspected is not in force" in err


def test_an_incident_from_detection_to_postmortem(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                  store_dir: Path, receiver: Receiver) -> None:
    write_config(store_dir, receiver)
    hierarchy = write_hierarchy(tmp_path, LOOPY)
    store = ["--store", str(store_dir)]
    state: dict[str, Any] = {}

    async def run_cli(*args: str) -> tuple[int, str, str]:
        return await anyio.to_thread.run_sync(lambda: cli(capsys, *args))

    async def body(h: Harness) -> None:
        results = await h.run(hierarchy, "a", "b", "c")
        state["runs"] = [r.run_id for r in results]
        await h.settle()
        code, out, _ = await run_cli("incidents", "--json", *store)
        (incident,) = json.loads(out)
        incident_id = state["incident"] = incident["id"]
        assert (incident["runbook"], incident["scope"], incident["paged_targets"]) == \
            ("looping-agent", "agent:looper", ["oncall"])
        code, out, _ = await run_cli("incident", "ack", incident_id, "--reason", "on it", "--operator", "alice",
                                     *store)
        assert code == 0 and "the page to oncall follows" in out
        await h.settle()
        acknowledge = [r.json for r in receiver.on("/pd") if r.json["event_action"] == "acknowledge"]
        assert acknowledge == [{"routing_key": pd_trigger(receiver, incident_id)["routing_key"],
                                "event_action": "acknowledge", "dedup_key": incident_id}]
        code, _, _ = await run_cli("incident", "note", incident_id, "--text", "lookup returns the same page",
                                   "--operator", "bob", *store)
        code, out, _ = await run_cli("runbooks", "rollback", incident_id, "--reason", "lookup fixed", "--operator",
                                     "alice", *store)
        assert code == 0 and "[restored] released pause switch #1 on agent:looper" in out
        code, out, _ = await run_cli("incident", "resolve", incident_id, "--reason", "pagination bug fixed",
                                     "--operator", "alice", *store)
        assert code == 0
        await h.settle()
        assert [r.json["event_action"] for r in receiver.on("/pd")] == ["trigger", "acknowledge", "resolve"]
        code, out, _ = await run_cli("incident", "show", incident_id, "--json", *store)
        shown = json.loads(out)
        assert [e["kind"] for e in shown["timeline"]] == ["detected", "applied", "paged", "acknowledged", "paged",
                                                          "annotated", "rolled_back", "resolved", "paged"]
        assert shown["applications"][0]["rolled_back_by"] == "alice"

    with_runbooks(store_dir, [SHIPPED["looping-agent"]], body)
    incident_id = state["incident"]
    code, _, err = cli(capsys, "incident", "ack", incident_id, *store)
    assert code == 2 and "already resolved" in err
    draft = tmp_path / "pm.md"
    code, out, _ = cli(capsys, "postmortem", incident_id, "--out", str(draft), *store)
    assert code == 0 and str(draft) in out
    text = draft.read_text()
    assert text.startswith("# Postmortem draft: An agent is stuck in a loop\n")
    for expected in ("| Severity | sev2 |", "| Scope | `agent:looper` |", "resolved by alice: pagination bug fixed",
                     "`loop_detected >= 3 over 10m per agent`: **3**",
                     "| acknowledged | alice | acknowledged by alice: on it |",
                     "| rolled_back | alice | rolled back looping-agent (#1): released pause switch #1 on "
                     "agent:looper |",
                     "| annotated | bob | lookup returns the same page |",
                     "pause kill switch on agent:looper (#1, new)",
                     "released pause switch #1 on agent:looper (restored)",
                     "## Operator actions (from the audit log)", "| alice | incident_ack |",
                     "3 run(s) in scope: 3 loop_detected.", "## Cost during the incident", "### Action items"):
        assert expected in text, expected
    assert "operator: runbook_rolled_back" not in text  # the rollback's audit rows are its time line entry
    for run_id in state["runs"]:
        assert f"`{run_id}`" in text
    code, out, _ = cli(capsys, "postmortem", incident_id[4:9], *store)  # a prefix, to stdout
    assert code == 0 and out.startswith("# Postmortem draft")
