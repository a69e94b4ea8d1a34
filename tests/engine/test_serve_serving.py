"""engine/serve/serving.py: the API keeps answering through a drain (503 for submissions, /health "stopping"), a
second signal ends the grace period, and the API stops when the drain returns. Signals come through a memory
stream, as the SignalReceiver would hand them over."""

from __future__ import annotations

import signal

import anyio
import httpx
import pytest

from engine.serve.listener import bind
from engine.serve.serving import serve_fleet
from tests.serve_http_support import FakeFleet

pytestmark = pytest.mark.anyio


async def _until(condition: object, timeout: float = 10.0) -> None:
    with anyio.fail_after(timeout):
        while not condition():  # type: ignore[operator]
            await anyio.sleep(0.005)


async def test_a_signal_drains_while_the_api_answers() -> None:
    fleet = FakeFleet()
    send, receive = anyio.create_memory_object_stream[int](4)
    urls: list[str] = []
    notices: list[str] = []
    result: list[int | None] = []
    sock = bind("127.0.0.1", 0)

    async def run() -> None:
        result.append(await serve_fleet(fleet, sock, token=None, signals=receive, grace=30.0,
                                        notice=notices.append, listening=urls.append))

    async with anyio.create_task_group() as group:
        group.start_soon(run)
        await _until(lambda: urls)
        async with httpx.AsyncClient(base_url=urls[0], timeout=10) as http:
            assert (await http.post("/runs", json={"hierarchy": "deal-desk"})).status_code == 201
            await send.send(signal.SIGTERM)
            await _until(lambda: fleet.stopping)
            health = await http.get("/health")
            assert health.status_code == 503 and health.json()["status"] == "stopping"
            refused = await http.post("/runs", json={"hierarchy": "deal-desk"})
            assert refused.status_code == 503 and refused.headers["retry-after"]
            assert (await http.get("/runs")).status_code == 200  # reads still answer
            fleet.release()
    assert result == [signal.SIGTERM]
    assert fleet.drains == [30.0]
    assert any("SIGTERM: taking no new runs" in line for line in notices)
    assert any("1 left queued or running" in line for line in notices)


async def test_a_second_signal_ends_the_grace_period() -> None:
    fleet = FakeFleet()
    send, receive = anyio.create_memory_object_stream[int](4)
    urls: list[str] = []
    result: list[int | None] = []
    sock = bind("127.0.0.1", 0)

    async def run() -> None:
        result.append(await serve_fleet(fleet, sock, token=None, signals=receive, grace=3600.0,
                                        notice=lambda line: None, listening=urls.append))

    with anyio.fail_after(20):
        async with anyio.create_task_group() as group:
            group.start_soon(run)
            await _until(lambda: urls)
            await send.send(signal.SIGINT)
            await _until(lambda: fleet.stopping)
            await send.send(signal.SIGINT)
    assert result == [signal.SIGINT]
    assert fleet.drains == [3600.0, 0.0]


async def test_a_fenced_engine_stops_serving_by_itself() -> None:
    """Another engine took this engine's runs while it stalled (runtime/durable_fence.py): the takeover thread fences
    the store gate; every call is refused from then on, the runs are stopped, and serve drains at once and stops."""
    import threading

    from engine.errors import EngineFenced
    from engine.runtime.store_gate import StoreGate, StoreUnavailable

    stopped: list[str] = []
    events: list[tuple[str, dict[str, object]]] = []
    gate = StoreGate(stop_all=lambda reason: stopped.append(reason) or 2,
                     event=lambda kind, data: events.append((kind, data)))
    gate.attach()
    fleet = FakeFleet()
    _send, receive = anyio.create_memory_object_stream[int](4)
    urls: list[str] = []
    notices: list[str] = []
    result: list[int | None] = []
    sock = bind("127.0.0.1", 0)
    reason = "engine a stalled 12.0s without a heartbeat; engine b took its runs; it stops so no step runs twice"

    async def run() -> None:
        result.append(await serve_fleet(fleet, sock, token=None, signals=receive, grace=3600.0,
                                        notice=notices.append, listening=urls.append, halt=gate.wait_fenced))

    with anyio.fail_after(20):
        async with anyio.create_task_group() as group:
            group.start_soon(run)
            await _until(lambda: urls)
            thread = threading.Thread(target=gate.fence, args=(reason,))  # as the takeover thread does
            thread.start()
            thread.join()
            assert gate.blocked and isinstance(gate.failure, EngineFenced)  # at once, before the loop hears of it
    assert result == [None] and fleet.drains == [0.0]
    assert f"stopping: {reason}" in notices
    assert stopped == [f"killed: {reason}"] and gate.stopped_runs == 2
    assert events == [("engine.fenced", {"reason": reason})]
    assert gate.health.state == "fenced" and gate.refusal() == reason
    with pytest.raises(StoreUnavailable, match="engine b took its runs"):
        await gate.wait_usable()
