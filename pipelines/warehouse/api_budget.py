"""One API budget per token, shared by every process holding the token, kept in the warehouse.

Runs, push steps and CLI commands may execute as separate processes or pods, so an in-memory
limiter divides nothing between them. Every process already reaches the warehouse PostgreSQL,
so the budget lives there, in two tables keyed by a hash of the token (never the token):

- ``api_budgets``: a GCRA token bucket. ``tat`` is the time the next request may be sent at the
  configured rate; a process leases a block of send times in one ``UPDATE`` (a quarter of a
  second's worth, 1 to 20 requests) and sends each at its time. ``paused_until`` is set by any
  process that got a 429, and every later block starts after it.
- ``api_budget_leases``: requests in flight. A process leases a few slots at a time, renews them
  every few seconds while it works and shrinks them to what it used; a process that dies stops
  renewing, so its slots expire after ``lease_seconds`` and return to the others.

Bounds: over any window of T seconds all processes together send at most ``rate * (T +
burst_seconds + late_seconds)`` requests (a send time missed by more than ``late_seconds`` is
dropped, not caught up), which a server bucket holding one second of requests accepts.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from pipelines.warehouse.postgres import ensure_warehouse_schema, mask_url
from pipelines.warehouse.schema import SCHEMA

logger = logging.getLogger(__name__)

_S = sql.Identifier(SCHEMA)

_LEASE_RATE = sql.SQL(
    """UPDATE {s}.api_budgets
SET tat = greatest(tat, clock_timestamp() - make_interval(secs => %(burst)s::float8), paused_until)
        + make_interval(secs => %(n)s::float8 / %(rate)s::float8),
    updated_at = clock_timestamp()
WHERE token_key = %(key)s
RETURNING extract(epoch FROM tat - clock_timestamp())::float8,
          extract(epoch FROM greatest(paused_until, clock_timestamp()) - clock_timestamp())::float8"""
).format(s=_S)

_PAUSE = sql.SQL(
    """UPDATE {s}.api_budgets
SET paused_until = greatest(paused_until, clock_timestamp() + make_interval(secs => %(seconds)s::float8)),
    updated_at = clock_timestamp()
WHERE token_key = %(key)s"""
).format(s=_S)

_LEASE_IN_FLIGHT = [
    sql.SQL("SELECT 1 FROM {s}.api_budgets WHERE token_key = %(key)s FOR UPDATE").format(s=_S),
    sql.SQL("DELETE FROM {s}.api_budget_leases WHERE token_key = %(key)s AND expires_at < clock_timestamp()").format(
        s=_S
    ),
    sql.SQL(
        """INSERT INTO {s}.api_budget_leases AS l (token_key, holder, slots, expires_at)
SELECT %(key)s, %(holder)s,
       greatest(0, least(%(want)s, %(cap)s - (SELECT coalesce(sum(slots), 0) FROM {s}.api_budget_leases
                                               WHERE token_key = %(key)s AND holder <> %(holder)s))),
       clock_timestamp() + make_interval(secs => %(ttl)s::float8)
ON CONFLICT (token_key, holder) DO UPDATE SET slots = excluded.slots, expires_at = excluded.expires_at
RETURNING slots"""
    ).format(s=_S),
]


def token_key(token: str) -> str:
    """The key of a token's budget: a SHA-256 of the token, so the warehouse never holds the token."""
    return hashlib.sha256(b"flowretail-api-budget\x1f" + token.encode("utf-8")).hexdigest()


def rate_block(rate: float) -> int:
    """Send times leased per round-trip: a quarter of a second's worth, 1 to 20."""
    return max(1, min(20, round(rate / 4)))


def in_flight_block(concurrency: int) -> int:
    """In-flight slots leased per round-trip: a quarter of the cap, at least one."""
    return max(1, concurrency // 4)


def send_times(start_in: float, count: int, rate: float, now: float) -> list[float]:
    """Monotonic times of a leased block of ``count`` sends starting ``start_in`` seconds from ``now``;
    times already past (the burst the bucket allows after a quiet spell) become ``now``."""
    return [now + max(0.0, start_in + i / rate) for i in range(count)]


@dataclass(frozen=True)
class BudgetLimits:
    """The budget of one token: ``rate`` per second (None: unlimited) and ``concurrency`` in flight."""

    rate: float | None
    concurrency: int
    lease_seconds: float = 10.0
    burst_seconds: float = 0.5
    late_seconds: float = 0.5


class SharedBudget:
    """An ``ApiBudget`` drawn from the warehouse; one per client, closed with it."""

    def __init__(self, database_url: str, token: str, limits: BudgetLimits) -> None:
        self.token_key = token_key(token)
        self.limits = limits
        self._url = database_url
        self._holder = uuid.uuid4()
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._db = asyncio.Lock()
        self._sends: deque[float] = deque()
        self._rate_waiters = 0
        self._paused_until = 0.0
        self._held = 0
        self._in_use = 0
        self._peak = 0
        self._local = asyncio.Semaphore(limits.concurrency)
        self._renewer: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"SharedBudget(token_key={self.token_key[:12]}..., {self.limits})"

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        await self._take_in_flight()
        try:
            await self._take_send_time()
            yield
        finally:
            self._in_use -= 1
            self._local.release()

    async def pause(self, seconds: float) -> None:
        self._paused_until = max(self._paused_until, time.monotonic() + seconds)
        async with self._db:
            conn = await self._connection()
            await conn.execute(_PAUSE, {"key": self.token_key, "seconds": seconds})

    async def aclose(self) -> None:
        """Give the in-flight slots back at once (a dead process's expire instead)."""
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                await self._conn.execute(
                    sql.SQL("DELETE FROM {s}.api_budget_leases WHERE token_key = %s AND holder = %s").format(s=_S),
                    (self.token_key, self._holder),
                )
            await self._conn.close()
            self._conn = None

    # ---------------------------------------------------------------- leasing

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        """The budget's own autocommit connection, opened on first use (the caller holds ``_db``)."""
        if self._conn is None:
            await ensure_warehouse_schema(self._url)
            self._conn = await psycopg.AsyncConnection.connect(self._url, autocommit=True)
            await self._conn.execute(
                sql.SQL("INSERT INTO {s}.api_budgets (token_key) VALUES (%s) ON CONFLICT DO NOTHING").format(s=_S),
                (self.token_key,),
            )
        return self._conn

    async def _take_in_flight(self) -> None:
        """A slot of the process's lease; past the local cap requests queue on a semaphore, below it
        one of them at a time asks the warehouse for more while the others retry shortly after."""
        await self._local.acquire()
        try:
            wait = 0.01
            while self._in_use >= self._held:
                if not self._db.locked():
                    async with self._db:
                        if self._in_use >= self._held:
                            want = min(self.limits.concurrency, self._in_use + in_flight_block(self.limits.concurrency))
                            self._held = await self._lease_in_flight(want)
                if self._in_use >= self._held:
                    await asyncio.sleep(wait)
                    wait = min(0.2, wait * 2)
        except BaseException:
            self._local.release()
            raise
        self._in_use += 1
        self._peak = max(self._peak, self._in_use)
        if self._renewer is None:
            self._renewer = asyncio.create_task(self._renew())

    async def _lease_in_flight(self, want: int) -> int:
        """Hold ``want`` slots in total if the cap leaves that many; returns how many are held."""
        conn = await self._connection()
        params = {
            "key": self.token_key,
            "holder": self._holder,
            "want": want,
            "cap": self.limits.concurrency,
            "ttl": self.limits.lease_seconds,
        }
        async with conn.transaction():
            for statement in _LEASE_IN_FLIGHT[:-1]:
                await conn.execute(statement, params)
            row = await (await conn.execute(_LEASE_IN_FLIGHT[-1], params)).fetchone()
        return int(row[0]) if row else 0

    async def _renew(self) -> None:
        """Every third of the lease: keep the slots used since the last renewal, give back the rest."""
        while True:
            await asyncio.sleep(self.limits.lease_seconds / 3)
            async with self._db:
                try:
                    self._held = await self._lease_in_flight(max(self._in_use, min(self._peak, self._held)))
                except psycopg.Error as exc:  # the next renewal or lease tries again; the lease may lapse
                    logger.warning("could not renew the API budget lease: %s", mask_url(str(exc)))
                self._peak = self._in_use

    async def _take_send_time(self) -> None:
        """Wait for this request's send time; one waiter leases a block for all waiting ones."""
        rate = self.limits.rate
        self._rate_waiters += 1
        try:
            while True:
                now = time.monotonic()
                if rate is None:
                    if self._paused_until <= now:
                        return
                    await asyncio.sleep(self._paused_until - now)
                    continue
                while self._sends and (
                    self._sends[0] < now - self.limits.late_seconds or self._sends[0] < self._paused_until
                ):
                    self._sends.popleft()  # missed by too much, or inside a pause: never caught up
                if not self._sends:
                    async with self._db:
                        if not self._sends:
                            await self._lease_sends(rate, min(self._rate_waiters, rate_block(rate)))
                    continue
                at = self._sends.popleft()
                if at > now:
                    await asyncio.sleep(at - now)
                if self._paused_until <= time.monotonic():
                    return
        finally:
            self._rate_waiters -= 1

    async def _lease_sends(self, rate: float, count: int) -> None:
        conn = await self._connection()
        params = {"key": self.token_key, "n": count, "rate": rate, "burst": self.limits.burst_seconds}
        row = await (await conn.execute(_LEASE_RATE, params)).fetchone()
        assert row is not None, "the budget row is created on connect"
        now = time.monotonic()
        tat_in, paused_in = float(row[0]), float(row[1])
        if paused_in > 0:
            self._paused_until = max(self._paused_until, now + paused_in)
        self._sends.extend(send_times(tat_in - count / rate, count, rate, now))
