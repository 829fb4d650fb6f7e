"""The shared API budget against the in-memory limiter on the local single-process path.

    .venv/bin/python benchmarks/api_budget.py [--customers 20000] [--groups 40] [--repeats 3]

The same ``load_tenant`` of one simulated tenant runs with the in-memory budget (``LocalBudget``,
aiolimiter + semaphore: the baseline) and with the budget shared through the warehouse
(``SharedBudget``), alternating, each on a fresh database, in this one process. The simulator runs
in its own process (``benchmarks/simserver.py``) so it does not share the loader's GIL.

Two settings: no client rate limit (only in-flight slots are leased: the overhead of the
leasing itself) and a client rate limit well above what the loader reaches unpaced minus a margin
(``--rate``), where the shared budget's paced send times replace aiolimiter's window. Printed:
median wall time of each, the ratio shared / in-memory (met when <= 1.05), and the warehouse
round-trips the shared budget needed.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib
from pydantic import SecretStr

from pipelines.flowretail.budget import ApiBudget
from pipelines.flowretail.client import AsyncFlowRetailClient
from pipelines.flowretail.config import ClientConfig
from pipelines.warehouse.api_budget import BudgetLimits, SharedBudget
from pipelines.warehouse.load import load_tenant


class CountingBudget(SharedBudget):
    """A SharedBudget that counts its warehouse round-trips (leases of send times and of slots)."""

    round_trips = 0

    async def _lease_sends(self, rate: float, count: int) -> None:
        CountingBudget.round_trips += 1
        await super()._lease_sends(rate, count)

    async def _lease_in_flight(self, want: int) -> int:
        CountingBudget.round_trips += 1
        return await super()._lease_in_flight(want)


async def one_load(sim: benchlib.SimulatorProcess, database_url: str, rate: float | None, shared: bool) -> float:
    config = ClientConfig(
        base_url=sim.base_url, token=SecretStr(sim.token), page_size=100, rate_limit=rate, concurrency=8
    )
    budget: ApiBudget | None = None
    if shared:
        budget = CountingBudget(database_url, sim.token, BudgetLimits(rate, config.concurrency))
    started = time.perf_counter()
    async with AsyncFlowRetailClient(config, budget=budget) as client:
        await load_tenant(client, database_url, "tenant-1", f"bench-{time.time_ns()}")
    return time.perf_counter() - started


def measure(pg: benchlib.Postgres, sim: benchlib.SimulatorProcess, rate: float | None, repeats: int) -> list[Any]:
    times: dict[bool, list[float]] = {False: [], True: []}
    trips_before = CountingBudget.round_trips
    requests = 0
    for i in range(repeats):
        for shared in (False, True) if i % 2 == 0 else (True, False):
            url = pg.fresh_database("bench_budget")
            try:
                sim.reset()
                times[shared].append(asyncio.run(one_load(sim, url, rate, shared)))
                requests = int(sim.stats().get("requests", requests))
            finally:
                pg.drop_database(url)
    local, shared_median = statistics.median(times[False]), statistics.median(times[True])
    trips = (CountingBudget.round_trips - trips_before) / repeats
    ratio = benchlib.ratio(shared_median, local)
    label = "no client limit" if rate is None else f"client limit {rate:g}/s"
    return [label, requests, local, shared_median, ratio, trips, benchlib.verdict(ratio <= 1.05)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--groups", type=int, default=40)
    parser.add_argument("--rate", type=float, default=200.0, help="client rate limit of the paced setting")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    pg = benchlib.start_postgres()
    benchlib.print_facts(benchlib.machine_facts(pg.server_url))
    rows = []
    with benchlib.simulator_process(customers=args.customers, groups=args.groups, page_size_cap=100) as sim:
        for rate in (None, args.rate):
            rows.append(measure(pg, sim, rate, args.repeats))
    benchlib.print_table(
        f"load_tenant of {args.customers:,} customers / {args.groups} groups, page size 100, concurrency 8 "
        f"(median of {args.repeats})",
        rows,
        ["setting", "requests", "in-memory s", "shared s", "shared / in-memory", "warehouse round-trips", "<= 1.05"],
    )
    path = benchlib.save_results("api_budget", {"args": vars(args), "rows": rows})
    print(f"results saved to {path}")
    return 0 if all(row[-1] == "met" for row in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
