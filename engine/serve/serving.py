"""The life of a serve once its engine is open: the API on uvicorn, on this event loop and a socket the caller bound,
until a signal asks for a drain. The first signal starts `drain(grace)` (new submissions get 503, /health says
"stopping") while the API keeps answering; a second ends the grace period at once (`drain(0)`); when the drain
returns, the API stops. `flightdeck serve` (console/commands/serve.py) wraps it in open_fleet and a SignalReceiver."""

from __future__ import annotations

import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Protocol

import anyio

from engine.serve.contracts import FleetService
from engine.serve.http_api import build_app
from engine.serve.listener import api_server, url_of


class DrainReportLike(Protocol):
    finished: Any  # run ids (or a count) that finished within the grace period
    handed_back: Any  # run ids left queued or running for the next engine on the store


class Drainable(FleetService, Protocol):
    async def drain(self, grace_s: float) -> DrainReportLike: ...


def count(value: int | Sequence[Any]) -> int:
    return value if isinstance(value, int) else len(value)


async def serve_fleet(service: Drainable, sock: socket.socket, *, token: str | None, signals: AsyncIterator[int],
                      grace: float, notice: Callable[[str], None], listening: Callable[[str], None],
                      halt: Callable[[], Awaitable[str]] | None = None) -> int | None:
    """Serve `service` on `sock` until a signal's drain ends. `listening(url)` is called once the API accepts
    connections. `halt()` returns (why) when the engine must stop by itself (it was fenced: runtime/durable_fence.py):
    then it drains at once and stops. Returns the first signal's number, or None when the server stopped otherwise."""
    server = api_server(build_app(service, token=token))
    caught: list[int] = []

    async def drain(grace_s: float) -> None:
        report = await service.drain(grace_s)
        notice(f"drained: {count(report.finished)} run(s) finished, {count(report.handed_back)} left queued or "
               "running for the next serve on this store")
        server.should_exit = True

    async def watch() -> None:
        async for signum in signals:
            name = signal.Signals(signum).name
            caught.append(signum)
            if len(caught) == 1:
                notice(f"{name}: taking no new runs (503); queued and running runs get {grace:g}s to finish "
                       f"(send {name} again to stop waiting)")
                group.start_soon(drain, grace)
            elif len(caught) == 2:
                notice(f"{name}: ending the grace period now")
                group.start_soon(drain, 0.0)

    async def halted(halt: Callable[[], Awaitable[str]]) -> None:
        reason = await halt()
        notice(f"stopping: {reason}")
        await drain(0.0)

    async def run_server() -> None:
        await server.serve(sockets=[sock])
        group.cancel_scope.cancel()

    async with anyio.create_task_group() as group:
        group.start_soon(run_server)
        group.start_soon(watch)
        if halt is not None:
            group.start_soon(halted, halt)
        while not server.started:  # uvicorn's own start flag: set once it accepts on the socket
            await anyio.sleep(0.005)
        listening(url_of(sock))
    return caught[0] if caught else None
