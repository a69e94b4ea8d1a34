"""`audit verify` against the audit head the engine recorded in traces.db: a log cut short, wiped, deleted or
rewritten with recomputed hashes passes the hash chain alone but not the anchor. Real subprocesses, real files."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from engine.controls.audit import GENESIS, row_hash

WORKER = Path(__file__).parent.parent / "fixtures" / "hierarchies" / "worker.yaml"


def cli(store_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "FLIGHTDECK_OPERATOR": "alice"}
    environment.pop("FLIGHTDECK_STORE", None)
    proc = subprocess.run([sys.executable, "-m", "console.cli", *args, "--store", str(store_dir)],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120, env=environment)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


@pytest.fixture
def anchored(store_dir: Path) -> Path:
    """Four operator actions, then an engine run, which records the audit head (row 4) in traces.db."""
    for args in (("safe-mode", "set", "models.max_tier=standard"), ("safe-mode", "set", "approvals=all"),
                 ("safe-mode", "clear", "approvals"), ("safe-mode", "set", "models.max_tier=strong")):
        assert cli(store_dir, *args, "--reason", "setting up").returncode == 0
    run = cli(store_dir, "run", str(WORKER), "--input", json.dumps({"a": 2, "b": 3, "text": "hi"}))
    assert run.returncode == 0, run.stdout + run.stderr
    verify = cli(store_dir, "audit", "verify")
    assert verify.returncode == 0 and "matches the engine's record of row 4 in traces.db" in verify.stdout
    return store_dir


def _sql(store_dir: Path, *statements: str) -> None:
    conn = sqlite3.connect(store_dir / "control.db", isolation_level=None)
    try:
        for statement in statements:
            conn.execute(statement)
    finally:
        conn.close()


def _verify_fails(store_dir: Path, expected: str) -> str:
    proc = cli(store_dir, "audit", "verify")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    (line,) = proc.stderr.splitlines()
    assert line.startswith("audit log TAMPERED at row") and expected in line, line
    return line


def test_cutting_rows_off_the_end_is_reported(anchored: Path) -> None:
    # The careful forger also lowers sqlite_sequence, so the chain itself still verifies.
    _sql(anchored, "DELETE FROM audit WHERE id > 2", "UPDATE sqlite_sequence SET seq = 2 WHERE name = 'audit'")
    _verify_fails(anchored, "the audit log ends at row 2, but the engine recorded audit row 4")
    proc = cli(anchored, "audit", "verify", "--json")
    assert json.loads(proc.stdout)["ok"] is False and json.loads(proc.stdout)["anchored_seq"] == 4


def test_a_wiped_log_is_reported(anchored: Path) -> None:
    _sql(anchored, "DELETE FROM audit", "DELETE FROM sqlite_sequence WHERE name = 'audit'")
    _verify_fails(anchored, "the audit log is empty, but the engine recorded audit row 4")


def test_a_deleted_control_db_is_reported(anchored: Path) -> None:
    (anchored / "control.db").unlink()
    _verify_fails(anchored, "control.db is missing, but the engine recorded audit row 4")


def test_a_rewritten_chain_is_reported(anchored: Path) -> None:
    # Rewrite history: row 1 said models.max_tier=standard; make it say strong and recompute every hash after it.
    conn = sqlite3.connect(anchored / "control.db", isolation_level=None)
    conn.execute("UPDATE audit SET after = replace(after, '\"standard\"', '\"strong\"') WHERE id = 1")
    cursor = conn.execute("SELECT id, ts, actor, action, target, before, after, reason FROM audit ORDER BY id")
    names = [d[0] for d in cursor.description]
    prev = GENESIS
    for values in cursor.fetchall():
        row = dict(zip(names, values))
        digest = row_hash(prev, row)
        conn.execute("UPDATE audit SET prev_hash = ?, hash = ? WHERE id = ?", (prev, digest, row["id"]))
        prev = digest
    conn.close()
    _verify_fails(anchored, "row 4 has hash")
    assert "the log was rewritten" in _verify_fails(anchored, "but the engine recorded audit row 4")
