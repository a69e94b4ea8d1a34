"""Stopping an engine on a signal, the way `timeout`, systemd, Docker and Kubernetes ask (SIGTERM, or SIGHUP when
the terminal goes away): admit no new run, let the runs in flight finish for a grace period, then cancel what is
left. Every run ends with a recorded status (`killed`, with the reason), so nothing stays `running` with no engine
alive. A second SIGTERM, SIGHUP or SIGINT cancels at once; a first SIGINT (Ctrl-C) too: a person at the keyboard
wants it to stop now. Cancelled runs still record their end."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio
from anyio.abc import TaskStatus

if TYPE_CHECKING:
    from engine.runtime.engine import Engine

SHUTDOWN_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
DEFAULT_GRACE_S = 30.0
EXIT_TERMINATED = 143  # 128 + SIGTERM, what supervisors expect of a process that stopped because they asked
EXIT_INTERRUPTED = 130  # 128 + SIGINT


@dataclass(slots=True)
class Shutdown:
    """What the signal watcher did: the first signal's name, whether runs were cancelled, the exit code to use."""

    signal: str | None = None
    forced: bool = False
    exit_code: int | None = None


async def watch_signals(signals: AsyncIterator[int], engine: Engine, grace: float, state: Shutdown,
                        notice: Callable[[str], None], *,
                        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
    """Serve `signals` (from anyio.open_signal_receiver(*SHUTDOWN_SIGNALS), opened before the engine started, so
    none is lost) until cancelled. `notice(line)` tells the person or supervisor what happens."""
    task_status.started()
    async with anyio.create_task_group() as group:
        async for signum in signals:
            name = signal.Signals(signum).name
            first = state.signal is None
            if first:
                state.signal = name
                state.exit_code = EXIT_INTERRUPTED if signum == signal.SIGINT else EXIT_TERMINATED
                engine.shut_down(f"the engine is shutting down ({name})")
            if first and signum != signal.SIGINT and grace > 0:
                active = len(engine.controls.runs)
                notice(f"{name}: admitting no new runs; {active} in flight get {grace:g}s to finish "
                       f"(send {name} again to stop them now)")
                group.start_soon(_after_grace, engine, grace, name, state)
            elif not state.forced:
                _force(engine, state, f"killed: the engine is shutting down ({name})")
                notice(f"{name}: stopping every run now")


async def _after_grace(engine: Engine, grace: float, name: str, state: Shutdown) -> None:
    await anyio.sleep(grace)
    if not state.forced:
        _force(engine, state, f"killed: the engine is shutting down ({name}; the {grace:g}s grace period ended)")


def _force(engine: Engine, state: Shutdown, reason: str) -> None:
    state.forced = True
    engine.stop_all(reason)
