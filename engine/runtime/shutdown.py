"""Stopping an engine on a signal, the way `timeout`, systemd, Docker and Kubernetes ask (SIGTERM, or SIGHUP when
the terminal goes away): admit no new run, let the runs in flight finish for a grace period, then cancel what is
left. Every run ends with a recorded status (`killed`, with the reason), so nothing stays `running` with no engine
alive. A second SIGTERM, SIGHUP or SIGINT cancels at once; a first SIGINT (Ctrl-C) too: a person at the keyboard
wants it to stop now. Cancelled runs still record their end."""

from __future__ import annotations

import asyncio
import signal
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any

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


class SignalReceiver:
    """`with SignalReceiver(*signals) as signals: async for signum in signals`, like anyio.open_signal_receiver, but
    no signal is ever lost. asyncio's own signal handling hands a signal to the event loop only as a byte written to
    the loop's self-pipe, and drops it silently when that pipe is full: a busy loop that other threads wake often
    (the trace writer's acknowledgements of write-ahead markers) lost SIGTERM about once in fifteen tries under
    load, and the engine went on running until a supervisor's SIGKILL. Here the Python-level handler (which CPython
    always runs, in the main thread) queues the signal itself, with call_soon_threadsafe: the callback is queued
    even when its wake-up byte is dropped, and a loop busy enough to fill the pipe runs it promptly. asyncio's
    handler registration is kept for its wake-up fd, which makes an idle loop notice at once.

    Enter it on the event loop, in the main thread."""

    def __init__(self, *signals: int) -> None:
        self._signals = tuple(dict.fromkeys(signals))
        self._pending: deque[int] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._arrived: anyio.Event | None = None

    def __enter__(self) -> SignalReceiver:
        self._loop = asyncio.get_running_loop()
        self._arrived = anyio.Event()
        for signum in self._signals:
            self._loop.add_signal_handler(signum, _nothing)  # the wake-up fd; its callback does nothing
            signal.signal(signum, self._handle)  # replaces asyncio's no-op Python-level handler
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        assert self._loop is not None
        for signum in self._signals:
            self._loop.remove_signal_handler(signum)  # back to the default disposition

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        assert self._loop is not None
        self._pending.append(signum)
        try:
            self._loop.call_soon_threadsafe(self._wake)
        except RuntimeError:  # the loop has closed
            pass

    def _wake(self) -> None:
        assert self._arrived is not None
        self._arrived.set()

    def __aiter__(self) -> SignalReceiver:
        return self

    async def __anext__(self) -> int:
        while not self._pending:
            assert self._arrived is not None
            await self._arrived.wait()
            self._arrived = anyio.Event()
        return self._pending.popleft()


def _nothing(*args: Any) -> None:
    return None


async def watch_signals(signals: AsyncIterator[int], engine: Engine, grace: float, state: Shutdown,
                        notice: Callable[[str], None], *,
                        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
    """Serve `signals` (a SignalReceiver(*SHUTDOWN_SIGNALS), entered before the engine started, so none is lost)
    until cancelled. `notice(line)` tells the person or supervisor what happens."""
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
