"""A per-call timeout that costs a few microseconds.

`anyio.fail_after` costs ~35 us and `asyncio.timeout` ~14 us per use on this machine; the engine wraps every model
and tool call in a timeout, and its whole budget is 250 us per model call. This does the same job with one
`loop.call_later` handle. It runs on the asyncio backend only (the engine's backend). A cancellation from anyone
else (a kill switch's cancel scope) still propagates as cancellation: only our own expiry becomes TimeoutError.
"""

from __future__ import annotations

import asyncio
from types import TracebackType


class Deadline:
    """Also the handle an operator's tool kill switch uses: `kill(reason)` cancels the call, which then raises
    OperatorStop instead of TimeoutError."""

    __slots__ = ("_seconds", "_task", "_handle", "expired", "killed", "_cancels")

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self.expired = False
        self.killed: str | None = None
        self._cancels = 0

    async def __aenter__(self) -> "Deadline":
        task = asyncio.current_task()
        assert task is not None, "Deadline needs to run inside an asyncio task"
        self._task = task
        self._handle = asyncio.get_running_loop().call_later(self._seconds, self._expire)
        return self

    def _expire(self) -> None:
        self.expired = True
        self._cancels += 1
        self._task.cancel()

    def kill(self, reason: str) -> None:
        if self.killed is None:
            self.killed = reason
            self._cancels += 1
            self._task.cancel()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> bool:
        self._handle.cancel()
        if exc_type is asyncio.CancelledError and self._cancels:
            remaining = 0
            for _ in range(self._cancels):
                remaining = self._task.uncancel()
            if remaining == 0:  # only our own cancellation: anyone else's keeps propagating
                if self.killed is not None:
                    from engine.runtime.controls import OperatorStop

                    raise OperatorStop(self.killed, tool_only=True) from exc
                raise TimeoutError from exc
        return False
