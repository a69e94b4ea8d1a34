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
    __slots__ = ("_seconds", "_task", "_handle", "expired")

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self.expired = False

    async def __aenter__(self) -> "Deadline":
        task = asyncio.current_task()
        assert task is not None, "Deadline needs to run inside an asyncio task"
        self._task = task
        self._handle = asyncio.get_running_loop().call_later(self._seconds, self._expire)
        return self

    def _expire(self) -> None:
        self.expired = True
        self._task.cancel()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> bool:
        self._handle.cancel()
        if self.expired and exc_type is asyncio.CancelledError and self._task.uncancel() == 0:
            raise TimeoutError from exc
        return False
