"""`flightdeck console`: lazy imports, clear errors before the UI starts, and a real terminal session."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from console.cli import main
from tests.console_helpers import fixed_store

NO_TEXTUAL = r"""
import sys
from console.cli import build_parser, main
build_parser()
main(["--version"])
loaded = sorted({m.split(".")[0] for m in sys.modules} & {"textual", "rich"})
print("LOADED:" + ",".join(loaded))
"""


def test_version_and_parser_do_not_import_textual() -> None:
    proc = subprocess.run([sys.executable, "-c", NO_TEXTUAL], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "LOADED:\n" in proc.stdout or proc.stdout.strip().endswith("LOADED:"), proc.stdout


def test_console_help_lists_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["console", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for option in ("--store", "--operator", "--read-only"):
        assert option in out


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.err


def test_missing_store_is_one_line_and_exit_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run(["console", "--store", str(tmp_path / "nope")], capsys)
    assert code == 3
    assert "no store at" in err and "Traceback" not in err


def test_damaged_store_exit_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "store"
    store.mkdir()
    (store / "traces.db").write_bytes(b"garbage, not sqlite " * 200)
    code, err = _run(["console", "--store", str(store)], capsys)
    assert code == 3
    assert "damaged" in err and "Traceback" not in err


def test_store_from_newer_flightdeck_exit_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = fixed_store(tmp_path / "store", runs=())
    conn = sqlite3.connect(store / "traces.db")
    conn.execute("PRAGMA user_version = 999")
    conn.close()
    code, err = _run(["console", "--store", str(store)], capsys)
    assert code == 3
    assert "upgrade Flightdeck" in err and "Traceback" not in err


def test_invalid_config_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = fixed_store(tmp_path / "store", runs=())
    (store / "config.toml").write_text("[console.keys]\nopen_run = \n")
    code, err = _run(["console", "--store", str(store)], capsys)
    assert code == 2
    assert "config.toml" in err and "Traceback" not in err


@pytest.mark.slow
def test_console_in_a_real_terminal(tmp_path: Path) -> None:
    """Start `flightdeck console` on a pseudo-terminal, see the runs, press q, exit 0."""
    import pty
    import select

    store = fixed_store(tmp_path / "store")
    pid, fd = pty.fork()
    if pid == 0:  # child: become the console
        os.environ["COLUMNS"], os.environ["LINES"] = "120", "40"
        os.environ["TERM"] = "xterm-256color"
        os.execv(sys.executable, [sys.executable, "-m", "console.cli", "console", "--store", str(store),
                                  "--operator", "tester", "--read-only"])
    output = b""
    deadline = time.monotonic() + 30
    sent_quit = False
    status = None
    try:
        import fcntl
        import struct
        import termios

        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                output += chunk
            if not sent_quit and b"b2c3d4e5f6a1" in output and b"tester" in output:
                os.write(fd, b"q")
                sent_quit = True
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
        else:
            os.kill(pid, 9)
            pytest.fail(f"console did not quit; output tail: {output[-2000:]!r}")
        if status is None or not os.WIFEXITED(status):
            _, status = os.waitpid(pid, 0)
    finally:
        os.close(fd)
    assert sent_quit, output[-2000:]
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert b"Traceback" not in output
