"""One API budget per token, shared through the warehouse by separate processes.

The processes are real (``tests/warehouse/budget_worker.py``), the server is the simulator
enforcing the same rate as the budget with a one-second bucket, the budget is real PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from pipelines.flowretail.simulator import FaultConfig, SimulatorConfig, SimulatorState, build_state, running_simulator
from pipelines.flowretail.simulator.state import RequestRecord
from pipelines.warehouse.api_budget import BudgetLimits, SharedBudget, rate_block, send_times, token_key

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "tok_shared_BUDGET_5e1d"
RATE = 12.0


def test_token_key_is_a_hash_and_blocks_follow_the_rate() -> None:
    assert token_key(TOKEN) == token_key(TOKEN) != token_key(TOKEN + "x")
    assert TOKEN not in token_key(TOKEN) and len(token_key(TOKEN)) == 64
    assert [rate_block(r) for r in (1, 20, 25, 80, 1000)] == [1, 5, 6, 20, 20]
    assert send_times(-0.3, 4, 10.0, 100.0) == [100.0, 100.0, 100.0, pytest.approx(100.0)]
    assert send_times(0.5, 3, 10.0, 100.0) == [100.5, pytest.approx(100.6), pytest.approx(100.7)]


def _worker(base_url: str, database_url: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "FLOWRETAIL_BASE_URL": base_url, "FLOWRETAIL_TOKEN": TOKEN, "DATABASE_URL": database_url}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.warehouse.budget_worker", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@contextmanager
def _rate_limited_simulator() -> Iterator[tuple[SimulatorState, str]]:
    state = build_state(SimulatorConfig(tenants=2, customers=40, groups=4), FaultConfig(rate_limit_rps=RATE))
    state.token = TOKEN
    with running_simulator(state) as base_url:
        yield state, base_url


def _finish(workers: list[subprocess.Popen[str]]) -> list[dict[str, object]]:
    summaries = []
    for worker in workers:
        out, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err
        summaries.append(json.loads(out.strip().splitlines()[-1]))
    return summaries


def _reads(state: SimulatorState) -> list[RequestRecord]:
    return [r for r in state.request_log if r.operation_id == "get-customer-groups-by-uid"]


def test_two_processes_on_one_token_share_its_rate_without_429s(database_url: str) -> None:
    with _rate_limited_simulator() as (state, base_url):
        rate = ["--rate", str(RATE), "--requests", "60"]
        workers = [_worker(base_url, database_url, "requests", "--tenant", t, *rate) for t in state.tenant_uids()]
        summaries = _finish(workers)
        log = list(state.request_log)
    assert [s["rate_limited"] for s in summaries] == [0, 0]
    assert [r.status for r in log if r.status != 200] == []
    reads = _reads(state)
    assert len(reads) == 120
    # The first second may hold the bucket's burst; after it the two processes together pace at the budget.
    start, end = reads[0].at + timedelta(seconds=1), reads[-1].at
    steady = [r for r in reads if r.at >= start]
    combined = len(steady) / (end - start).total_seconds()
    assert 0.85 * RATE <= combined <= 1.05 * RATE, combined
    with psycopg.connect(database_url) as conn:
        keys = conn.execute("SELECT token_key FROM flowretail.api_budgets").fetchall()
    assert keys == [(token_key(TOKEN),)]


def test_a_429_in_one_process_pauses_the_other(database_url: str) -> None:
    with _rate_limited_simulator() as (state, base_url):
        rate = ["--rate", str(RATE), "--requests", "80"]
        workers = [_worker(base_url, database_url, "requests", "--tenant", t, *rate) for t in state.tenant_uids()]
        deadline = time.monotonic() + 60
        while {r.path.split("/")[3] for r in _reads(state)} != set(state.tenant_uids()):
            assert time.monotonic() < deadline, "the workers never both sent requests"
            time.sleep(0.05)
        state.script(["429:3"], "get-customer-groups-by-uid")
        summaries = _finish(workers)
    reads = _reads(state)
    (refused,) = [r for r in reads if r.status == 429]
    other = next(t for t in state.tenant_uids() if t not in refused.path)
    during = [r for r in reads if refused.at + timedelta(seconds=0.6) < r.at < refused.at + timedelta(seconds=2.9)]
    after = {r.path.split("/")[3] for r in reads if r.at >= refused.at + timedelta(seconds=2.9)}
    assert during == []
    assert other in after and len(after) == 2
    assert sorted(s["rate_limited"] for s in summaries) == [0, 1]


def test_in_flight_slots_are_shared_returned_on_close_and_expire_when_a_process_dies(database_url: str) -> None:
    async def take(budget: SharedBudget, within: float) -> bool:
        slot = budget.slot()
        try:
            await asyncio.wait_for(slot.__aenter__(), within)
        except TimeoutError:
            return False
        await slot.__aexit__(None, None, None)
        return True

    async def in_process() -> None:
        first = SharedBudget(database_url, TOKEN, BudgetLimits(rate=None, concurrency=3))
        second = SharedBudget(database_url, TOKEN, BudgetLimits(rate=None, concurrency=3))
        held = [first.slot() for _ in range(3)]
        for slot in held:
            await slot.__aenter__()
        assert not await take(second, 0.5)
        for slot in held:
            await slot.__aexit__(None, None, None)
        await first.aclose()
        assert await take(second, 0.5)
        await second.aclose()

    asyncio.run(in_process())
    holder = _worker("http://127.0.0.1:9/v2", database_url, "hold", "--concurrency", "3", "--lease-seconds", "3")
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "HELD"
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
        killed_at = time.monotonic()
        survivor = SharedBudget(database_url, TOKEN, BudgetLimits(rate=None, concurrency=3))
        assert not asyncio.run(take(survivor, 1.0))
        survivor = SharedBudget(database_url, TOKEN, BudgetLimits(rate=None, concurrency=3))
        assert asyncio.run(take(survivor, 6.0))
        assert time.monotonic() - killed_at < 7
        asyncio.run(survivor.aclose())
    finally:
        if holder.poll() is None:
            holder.kill()
