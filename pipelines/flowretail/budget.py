"""The API budget a client draws from: requests per second and requests in flight, per token.

The client only knows the ``ApiBudget`` protocol: ``async with budget.slot(): <one request>`` and
``await budget.pause(seconds)`` after a 429. ``LocalBudget`` is the in-memory implementation (an
aiolimiter and a semaphore), used when a process is alone with its token; the budget shared by
every process holding a token lives in the warehouse (``pipelines.warehouse.api_budget``).
"""

from __future__ import annotations

import asyncio
import time
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Protocol

from aiolimiter import AsyncLimiter


class ApiBudget(Protocol):
    """What a client needs from a budget; the client closes the budget it was given."""

    def slot(self) -> AbstractAsyncContextManager[None]:
        """Wait for a permit to send one request now; held while the request is in flight."""
        ...

    async def pause(self, seconds: float) -> None:
        """The server answered 429 with ``Retry-After``: send nothing for ``seconds``."""
        ...

    async def aclose(self) -> None: ...


class LocalBudget:
    """One process's budget: at most ``concurrency`` requests in flight, ``rate`` per second (None:
    unlimited), and a pause after a 429 that holds back every request of the process."""

    def __init__(self, rate: float | None, concurrency: int) -> None:
        self._semaphore = asyncio.Semaphore(concurrency)
        self._limiter = AsyncLimiter(rate, 1.0) if rate else None
        self._paused_until = 0.0

    def slot(self) -> LocalBudget:
        return self

    async def __aenter__(self) -> None:
        await self._semaphore.acquire()
        try:
            delay = self._paused_until - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if self._limiter is not None:
                await self._limiter.acquire()
        except BaseException:
            self._semaphore.release()
            raise

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._semaphore.release()

    async def pause(self, seconds: float) -> None:
        self._paused_until = max(self._paused_until, time.monotonic() + seconds)

    async def aclose(self) -> None:
        return None
