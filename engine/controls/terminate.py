"""Stopping an engine process whose event loop no longer answers (it did not acknowledge a kill switch).

Signals are dangerous with a wrong pid, so before anything is sent the process must be:
- the one engine.lock names (the lock file's JSON holder, on this host), AND actually have engine.lock open
  (/proc/PID/fd): a holder that died by SIGKILL leaves its pid in the file, and that pid may since belong to an
  unrelated process;
- owned by the same user as the caller (/proc/PID's owner == os.getuid()).

Where the kernel has pidfds (Linux 5.3+) the process is pinned by a pidfd and checked again once pinned, signals go
through that pidfd, and exit is awaited by polling it: a pid reused midway can never receive a signal meant for the
engine, and waiting needs no sleep loop. Elsewhere it falls back to os.kill and polling /proc with a bounded deadline.

The outcome is one audit row (`engine_terminate`), written in the same transaction that marks the engine stopped in
control.db's engines table when the process is confirmed gone.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.controls import audit
from engine.controls.api import ControlAPI, ControlError
from engine.errors import InputError
from engine.store.files import LOCK_FILE

KILL_WAIT_S = 5.0   # after SIGKILL: only a process stuck in the kernel (D state) takes longer than this
_POLL_S = 0.02      # fallback only, when pidfds are unavailable


@dataclass(frozen=True, slots=True)
class TerminateResult:
    pid: int
    engine_id: str | None
    signals: tuple[str, ...]  # ("SIGTERM",) or ("SIGTERM", "SIGKILL"); () if it was already gone
    exited: bool
    waited_s: float
    audit_id: int


TORN_READ_ATTEMPTS = 20


def read_lock_holder(store_dir: Path) -> dict[str, Any] | None:
    """The JSON the lock holder wrote into engine.lock (pid, host, user, started), or None if there is none.
    Emptied on a clean release; left in place by an engine that was killed."""
    path = Path(store_dir) / LOCK_FILE
    holder: Any = None
    # The holder rewrites its record in place (StoreLock.publish: one pwrite over the same bytes) and a read racing
    # that write can see half of each: not JSON. Read again rather than report "no engine" for a live one; a record
    # that stays unreadable is not a holder.
    for _ in range(TORN_READ_ATTEMPTS):
        try:
            raw = path.read_bytes()
        except OSError:
            return None
        try:
            holder = json.loads(raw) if raw.strip() else None
        except ValueError:
            continue
        break
    return holder if isinstance(holder, dict) else None


def process_alive(pid: int) -> bool:
    """True while the process exists and has not exited (a zombie waiting for its parent counts as exited)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    # Format: "pid (comm) S ...": comm may contain spaces and parentheses, so split after the last ')'.
    state = stat[stat.rfind(b")") + 2:][:1]
    return state not in (b"Z", b"X", b"x")


def has_lock_open(pid: int, store_dir: Path) -> bool:
    """Whether the process has STORE/engine.lock open: the flock lives on an open file, so the holder must."""
    lock = os.path.realpath(Path(store_dir) / LOCK_FILE)
    fd_dir = f"/proc/{pid}/fd"
    try:
        names = os.listdir(fd_dir)
    except OSError as exc:
        raise ControlError(f"cannot inspect the open files of pid {pid} ({exc.strerror or exc}); refusing to "
                           f"signal a process that cannot be shown to hold {lock}") from None
    for name in names:
        try:
            if os.readlink(f"{fd_dir}/{name}") == lock:
                return True
        except OSError:  # the fd closed while we looked
            continue
    return False


def _owner(pid: int) -> int:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except FileNotFoundError:
        raise ControlError(f"no process with pid {pid}") from None
    except OSError as exc:
        raise ControlError(f"cannot check who owns pid {pid}: {exc.strerror or exc}") from None


def check_terminable(store_dir: Path, pid: int) -> dict[str, Any]:
    """Raise ControlError unless `pid` is this store's lock holder on this host, owned by us; return the holder."""
    holder = read_lock_holder(store_dir)
    lock = Path(store_dir) / LOCK_FILE
    if holder is None or holder.get("pid") != pid:
        named = f"names pid {holder.get('pid')}" if holder else "names no engine"
        raise ControlError(f"pid {pid} is not the engine of store {store_dir}: {lock} {named}")
    if holder.get("host") not in (None, socket.gethostname()):
        raise ControlError(f"the engine of store {store_dir} runs on host {holder.get('host')}, not this one; "
                           f"stop it there")
    if _owner(pid) != os.getuid():
        raise ControlError(f"pid {pid} belongs to another user; only its owner (or an administrator) may stop it")
    if not has_lock_open(pid, store_dir):
        raise ControlError(f"pid {pid} does not hold {lock}: the engine that wrote it has exited and the pid now "
                           f"belongs to another process")
    return holder


class _Target:
    """A process to signal and wait for: through a pidfd when the kernel offers one, else by pid."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.fd: int | None = None
        if hasattr(os, "pidfd_open"):
            try:
                self.fd = os.pidfd_open(pid)
            except ProcessLookupError:
                raise ControlError(f"no process with pid {pid}") from None
            except OSError:  # kernel without pidfd support
                self.fd = None

    def send(self, sig: signal.Signals) -> bool:
        """False if the process was already gone."""
        try:
            if self.fd is not None:
                signal.pidfd_send_signal(self.fd, sig)
            else:
                os.kill(self.pid, sig)
        except ProcessLookupError:
            return False
        return True

    def wait(self, timeout: float) -> bool:
        """True once the process has exited, False if it is still running after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        if self.fd is not None:
            poller = select.poll()
            poller.register(self.fd, select.POLLIN)
            while True:
                remaining = deadline - time.monotonic()
                if poller.poll(max(0, int(remaining * 1000))):
                    return True
                if remaining <= 0:
                    return not process_alive(self.pid)
        while process_alive(self.pid):
            if time.monotonic() >= deadline:
                return False
            time.sleep(_POLL_S)
        return True

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def terminate_engine(store_dir: Path | str, pid: int, operator: str, reason: str, grace_s: float = 5.0,
                     *, api: ControlAPI | None = None) -> TerminateResult:
    """SIGTERM the store's engine, wait up to grace_s for it to exit, then SIGKILL it. Refuses (ControlError)
    unless the pid is the store's lock holder and ours (see the module docstring). Audited."""
    store_dir = Path(store_dir)
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 1:
        raise InputError(f"expected a process id, got {pid!r}", field="pid")
    if pid == os.getpid():
        raise ControlError("refusing to terminate this process itself")
    if not reason or not str(reason).strip():
        raise InputError("is required and must not be empty", field="reason")
    if grace_s < 0:
        raise InputError(f"must not be negative, got {grace_s}", field="grace_s")
    own_api = api is None
    api = api or ControlAPI(store_dir, operator, create=False)
    try:
        check_terminable(store_dir, pid)  # first for its clear refusals, e.g. when the pid does not exist at all
        target = _Target(pid)
        try:
            # Again once pinned: if the pid was reused between the first check and the pin, this checks the
            # process the pidfd (and so every signal) actually refers to.
            holder = check_terminable(store_dir, pid)
            engine_id = next((row.id for row in api.engines()
                              if row.pid == pid and row.stopped is None
                              and row.host in (holder.get("host"), socket.gethostname())), None)
            started = time.monotonic()
            signals: list[str] = []
            exited = False
            if target.send(signal.SIGTERM):
                signals.append("SIGTERM")
                exited = target.wait(grace_s)
                if not exited and target.send(signal.SIGKILL):
                    signals.append("SIGKILL")
                    exited = target.wait(KILL_WAIT_S)
                elif not exited:
                    exited = True  # gone between the wait and SIGKILL
            else:
                exited = True
            waited = time.monotonic() - started
        finally:
            target.close()
        now = api.now()
        with api.transaction() as conn:
            if exited and engine_id is not None:
                # A SIGKILLed engine cannot mark itself stopped; its last heartbeat is the last sign of life.
                conn.execute("UPDATE engines SET stopped = ? WHERE id = ? AND stopped IS NULL", (now, engine_id))
            row = audit.append(conn, ts=now, actor=api.operator, action="engine_terminate",
                               target=f"engine:{engine_id}" if engine_id else f"pid:{pid}",
                               before={"pid": pid, "engine_id": engine_id, "host": holder.get("host"),
                                       "user": holder.get("user"), "started": holder.get("started")},
                               after={"signals": signals, "exited": exited, "waited_s": round(waited, 3)},
                               reason=str(reason).strip())
    finally:
        if own_api:
            api.close()
    return TerminateResult(pid=pid, engine_id=engine_id, signals=tuple(signals), exited=exited,
                           waited_s=waited, audit_id=row.id)
