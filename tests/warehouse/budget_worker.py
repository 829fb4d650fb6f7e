"""One process drawing from the shared API budget (``python -m tests.warehouse.budget_worker``).

``requests`` mode sends ``--requests`` group reads of one tenant at once through a client whose
budget lives in the warehouse, and prints a JSON summary; ``hold`` mode takes every in-flight slot
of the token, prints ``HELD`` and waits to be killed.
Reads FLOWRETAIL_BASE_URL, FLOWRETAIL_TOKEN and DATABASE_URL from the environment, like the product.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from contextlib import AsyncExitStack

from pydantic import SecretStr

from pipelines.flowretail.client import AsyncFlowRetailClient
from pipelines.flowretail.config import ClientConfig
from pipelines.warehouse.api_budget import BudgetLimits, SharedBudget
from tests.flowretail.lists import fetch_customer_groups


def _budget(args: argparse.Namespace) -> SharedBudget:
    limits = BudgetLimits(rate=args.rate, concurrency=args.concurrency, lease_seconds=args.lease_seconds)
    return SharedBudget(os.environ["DATABASE_URL"], os.environ["FLOWRETAIL_TOKEN"], limits)


async def _requests(args: argparse.Namespace) -> None:
    config = ClientConfig(
        base_url=os.environ["FLOWRETAIL_BASE_URL"],
        token=SecretStr(os.environ["FLOWRETAIL_TOKEN"]),
        rate_limit=args.rate,
        concurrency=args.concurrency,
    )
    async with AsyncFlowRetailClient(config, budget=_budget(args)) as client:
        groups = [g["customerGroupUid"] for g in await fetch_customer_groups(client, args.tenant)]
        reads = [client.get_customer_group(args.tenant, groups[i % len(groups)]) for i in range(args.requests)]
        await asyncio.gather(*reads)
        print(json.dumps({"tenant": args.tenant, "rate_limited": client.stats.rate_limited}), flush=True)


async def _hold(args: argparse.Namespace) -> None:
    budget = _budget(args)
    async with AsyncExitStack() as stack:
        for _ in range(args.concurrency):
            await stack.enter_async_context(budget.slot())
        print("HELD", flush=True)
        await asyncio.sleep(3600)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=("requests", "hold"))
    parser.add_argument("--tenant", default="tenant-1")
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--rate", type=float, default=None)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--lease-seconds", type=float, default=10.0)
    args = parser.parse_args()
    asyncio.run(_requests(args) if args.mode == "requests" else _hold(args))


if __name__ == "__main__":
    main()
