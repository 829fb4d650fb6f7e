"""A load or a push in its own process, for the tests that SIGKILL it (``python -m tests.reliability.worker``).

Reads FLOWRETAIL_BASE_URL, FLOWRETAIL_TOKEN and DATABASE_URL from the environment, like the product.
``--pause-in-copy N`` makes the N-th staging COPY stop half-way (rows sent, COPY not finished) and
print ``IN_COPY`` so the test can kill the process while PostgreSQL is inside that COPY.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys

import psycopg
from pydantic import SecretStr

from pipelines.flowretail.client import AsyncFlowRetailClient
from pipelines.flowretail.config import ClientConfig
from pipelines.segment_push.apply import execute_plan, plan_and_record
from pipelines.segment_push.audit import ensure_push_tables
from pipelines.segment_push.plan import PushTarget
from pipelines.warehouse import load as load_module
from tests.reliability.support import pause_in_copy


def _config(args: argparse.Namespace) -> ClientConfig:
    return ClientConfig(
        base_url=os.environ["FLOWRETAIL_BASE_URL"],
        token=SecretStr(os.environ["FLOWRETAIL_TOKEN"]),
        page_size=args.page_size,
        concurrency=args.concurrency,
        rate_limit_per_second=None,
    )


def _pause_in_copy(nth: int) -> None:
    async def announce_and_wait(_backend_pid: int) -> None:
        print("IN_COPY", flush=True)
        await asyncio.sleep(3600)

    load_module._Stager.copy = pause_in_copy(nth, announce_and_wait)  # type: ignore[method-assign]


async def _load(args: argparse.Namespace) -> None:
    async with AsyncFlowRetailClient(_config(args)) as client:
        result = await load_module.load_tenant(client, os.environ["DATABASE_URL"], args.tenant, args.run_id)
    print(json.dumps({"done": True, "groups": result.groups_rows}), flush=True)


async def _push(args: argparse.Namespace) -> None:
    segment = frozenset(json.loads(args.segment))
    target = PushTarget(args.segment_name, args.group, args.group_name)
    with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as conn:
        ensure_push_tables(conn)
        async with AsyncFlowRetailClient(_config(args)) as client:
            plan = await plan_and_record(client, conn, args.run_id, args.tenant, target, segment)
            print("PLANNED", flush=True)
            outcome = await execute_plan(client, conn, args.run_id, plan, segment, args.batch_size)
    print(json.dumps({"done": True, "verified": outcome.verified}), flush=True)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=("load", "push"))
    parser.add_argument("--tenant", required=True)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--page-size", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--pause-in-copy", type=int, default=0)
    parser.add_argument("--segment", default="[]")
    parser.add_argument("--segment-name", default="rel_segment")
    parser.add_argument("--group", default="seg-rel")
    parser.add_argument("--group-name", default="Reliability segment (warehouse)")
    parser.add_argument("--batch-size", type=int, default=500)
    args = parser.parse_args(argv)
    if args.pause_in_copy:
        _pause_in_copy(args.pause_in_copy)
    asyncio.run(_load(args) if args.command == "load" else _push(args))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
