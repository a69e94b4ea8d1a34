"""IncidentStore: one incident per runbook and scope until it is resolved, a time line, and operator actions that
change the incident and write its audit row in the same transaction. The tests that take `store` run on control.db
and on a Postgres store (`control_backend`); `sqlite_store` is control.db's only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from engine.clock import FakeClock
from engine.errors import InputError
from engine.runbooks.incidents import IncidentError, IncidentStore
from engine.store.control import ControlDB
from tests.control_backends import ControlBackend

READINGS = [{"signal": "loop_detected", "condition": "loop_detected >= 3 over 10m per agent", "value": 3,
             "fired": True, "window_s": 600}]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(control_backend: ControlBackend, clock: FakeClock) -> Any:
    with control_backend.api("engine:e1", clock=clock) as api:
        yield IncidentStore(api.db, clock=clock)


@pytest.fixture
def sqlite_store(store_dir: Path, clock: FakeClock) -> Any:
    store_dir.mkdir(parents=True)
    db = ControlDB.open(store_dir, clock=clock)
    yield IncidentStore(db, clock=clock)
    db.close()


def fire(store: IncidentStore, scope: str = "agent:planner", value: int = 3) -> tuple[dict[str, Any], bool]:
    readings = [{**READINGS[0], "value": value}]
    return store.open_or_update(runbook="looping-agent", title="An agent is stuck in a loop", severity="sev2",
                                apply_mode="auto", scope=scope, readings=readings,
                                context={"agent": "planner", "runs": ["r1"]}, summary=f"loop_detected={value}",
                                actor="runbook:looping-agent", engine_id="e1")


def test_firing_again_updates_the_open_incident(store: IncidentStore, clock: FakeClock) -> None:
    first, opened = fire(store)
    assert opened and first.id.startswith("inc-") and len(first.id) == 12
    assert (first.status, first.fired, first.firing, first.signals) == ("open", 1, 1,
                                                                                    [{**READINGS[0], "value": 3}])
    store.cleared(first.id, [{**READINGS[0], "peak": 5}], "runbook:looping-agent")
    clock.advance(60)
    again, opened = fire(store, value=4)
    assert not opened and again.id == first.id
    assert (again.fired, again.firing, again.last_signals[0]["value"], again.signals[0]["value"]) == \
        (2, 1, 4, 3)
    other, opened = fire(store, scope="agent:billing")
    assert opened and other.id != first.id
    assert [e.kind for e in store.timeline(first.id)] == ["detected", "cleared", "detected"]
    assert store.timeline(first.id)[1].text == "signal back to normal (loop_detected peaked at 5)"
    assert [i.id for i in store.list()] == [other.id, first.id]


def test_operators_ack_note_and_resolve_with_audit_rows(store: IncidentStore, control_backend: ControlBackend,
                                                        clock: FakeClock) -> None:
    incident, _ = fire(store)
    clock.advance(30)
    acked = store.acknowledge(incident.id[4:8], "alice", "looking at it")  # a prefix of the id is enough
    assert (acked.status, acked.acknowledged_by, acked.acknowledged) == ("acknowledged", "alice",
                                                                                  clock.time())
    with pytest.raises(IncidentError, match="already acknowledged \\(by alice\\)"):
        store.acknowledge(incident.id, "bob")
    store.annotate(incident.id, "bob", "the crm tool returns the same page every time")
    with pytest.raises(InputError) as caught:
        store.resolve(incident.id, "alice", "  ")
    assert caught.value.field == "reason"
    resolved = store.resolve(incident.id, "alice", "crm pagination fixed")
    assert (resolved.status, resolved.resolved_by, resolved.resolution) == ("resolved", "alice",
                                                                                     "crm pagination fixed")
    with pytest.raises(IncidentError, match="already resolved"):
        store.resolve(incident.id, "bob", "again")
    kinds = [(e.kind, e.actor) for e in store.timeline(incident.id)]
    assert kinds == [("detected", "runbook:looping-agent"), ("acknowledged", "alice"), ("annotated", "bob"),
                     ("resolved", "alice")]
    with control_backend.api("auditor") as api:
        audit = [(r.actor, r.action, r.target, r.reason) for r in reversed(api.audit_log())]
        assert api.verify_audit().ok
    assert audit == [("runbook:looping-agent", "incident_opened", incident.id, "loop_detected=3"),
                     ("alice", "incident_ack", incident.id, "looking at it"),
                     ("bob", "incident_note", incident.id, "the crm tool returns the same page every time"),
                     ("alice", "incident_resolve", incident.id, "crm pagination fixed")]
    new, opened = fire(store)  # the problem comes back after the resolution: a new incident
    assert opened and new.id != incident.id


def test_unknown_and_ambiguous_ids(store: IncidentStore) -> None:
    with pytest.raises(IncidentError, match="no incident inc-nope"):
        store.get("inc-nope")
    ids = [fire(store, scope=f"agent:a{n}")[0].id for n in range(40)]
    # 40 ids, 16 possible first hex digits: two of them share one (pigeonhole), so that prefix is ambiguous.
    shared = next(a[:5] for a in ids for b in ids if a != b and a[:5] == b[:5])
    with pytest.raises(IncidentError, match="ambiguous"):
        store.get(shared)
    assert store.get(ids[0]).id == ids[0]


def test_pages_follow_the_incident(store: IncidentStore) -> None:
    incident, _ = fire(store)
    assert store.unsynced_pages() == []
    store.record_page(incident.id, target="oncall", action="trigger", ok=False, text="HTTP 500", data={},
                      actor="engine")
    assert store.get(incident.id).paged_targets is None  # a failed page does not make a target follow
    store.record_page(incident.id, target="oncall", action="trigger", ok=True, text="paged oncall", data={},
                      actor="engine")
    assert store.get(incident.id).paged_targets == ["oncall"]
    assert store.unsynced_pages() == []
    store.acknowledge(incident.id, "alice")
    (unsynced,) = store.unsynced_pages()
    assert (unsynced.id, unsynced.status, unsynced.page_synced) == (incident.id, "acknowledged", "open")
    store.mark_synced(incident.id, "acknowledged")
    assert store.unsynced_pages() == []
    assert [e.kind for e in store.timeline(incident.id)] == ["detected", "page_failed", "paged",
                                                                   "acknowledged"]


def test_a_store_from_before_runbooks_is_upgraded_in_place(store_dir: Path) -> None:
    from engine.runbooks.schema import RUNBOOKS_V3
    from engine.store.control_schema import CONTROL_MIGRATIONS

    store_dir.mkdir(parents=True)
    assert RUNBOOKS_V3 in CONTROL_MIGRATIONS
    version = CONTROL_MIGRATIONS.index(RUNBOOKS_V3)
    old = ControlDB(store_dir / "control.db", migrations=CONTROL_MIGRATIONS[:version])
    # Written as the Flightdeck of that schema wrote it: today's ControlAPI also fills columns later versions added.
    with old.transaction() as conn:
        conn.execute("INSERT INTO flags (name, value, scope, source, reason, operator, created) "
                     "VALUES ('approvals', 'all', 'global', 'operator', 'before the upgrade', 'alice', 1)")
    old.close()
    db = ControlDB.open(store_dir)
    try:
        assert db.query("PRAGMA user_version")[0]["user_version"] == len(CONTROL_MIGRATIONS)
        tables = {r["name"] for r in db.query("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"incidents", "incident_events", "runbook_applications"} <= tables
        assert db.query("SELECT value FROM flags")[0]["value"] == "all"  # earlier data untouched
        incident, opened = fire(IncidentStore(db))
        assert opened
    finally:
        db.close()


def test_the_runbook_package_never_imports_the_ui() -> None:
    root = Path(__file__).resolve().parents[2] / "engine" / "runbooks"
    offenders = []
    for path in root.glob("*.py"):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            words = line.split()
            if len(words) >= 2 and words[0] in ("import", "from") and words[1].split(".")[0] in (
                    "console", "textual", "rich"):
                offenders.append(f"{path.name}:{number}: {line.strip()}")
    assert offenders == []


def test_list_incidents_reads_without_creating_anything(tmp_path: Path, sqlite_store: IncidentStore,
                                                         store_dir: Path) -> None:
    from engine.runbooks.incidents import list_incidents

    store = sqlite_store
    assert list_incidents(tmp_path / "nowhere") == [] and not (tmp_path / "nowhere").exists()
    incident, _ = fire(store)
    (listed,) = list_incidents(store_dir)
    assert (listed.id, listed.runbook, listed.signals[0]["value"]) == (incident.id, "looping-agent", 3)
    store.resolve(incident.id, "alice", "fixed")
    assert list_incidents(store_dir, active_only=True) == []
