"""Segment push: calls and wall time to fill an empty group with 100,000 customers, then to apply a 1% change.

    .venv/bin/python benchmarks/push.py [--customers 120000] [--segment 100000] [--change 0.01]

The simulator (``benchmarks/simserver.py``) runs in its own process with ``--max-uids-per-update``
>= the batch size; the push runs here with the project's own functions, as the reverse-ETL asset
does: ``plan_and_record`` (reads the live group, the push history, records the plan before any
write) then ``execute_plan`` (creates the group if needed, sends the member batches, reads the group
back to verify, records the outcome). The audit tables live in a fresh database.

Phase 1: the group does not exist; the segment is the first ``--segment`` customers, so the plan is
"create" + ``segment`` adds. Phase 2: ``--change`` of the segment changes, half leaving (removes)
and half joining (adds). The fewest member-update calls are ``ceil(changes / batch size)``; phase 1
also needs its one create call. Reads (the live group before planning, the read-back after) are
counted apart: they page through the whole group either way.

Phase 3 (``--unknown-limit``, 120): issue 12's three segments (798, 323 and 735 customers) pushed
into a simulator that refuses calls above that many uids, without saying so beforehand: the first
push learns the limit (binary search, kept in ``segment_push_batch_limits``), the second push of
the same segments, each shifted by 100 customers, starts from what was learned. Printed: member-update
calls against ``ceil(changes / limit)``, and how many of them the server refused.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psycopg
from pydantic import SecretStr

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib

from pipelines.flowretail.client import AsyncFlowRetailClient
from pipelines.flowretail.config import ClientConfig
from pipelines.flowretail.simulator.data import CustomerFactory
from pipelines.segment_push.apply import execute_plan, plan_and_record
from pipelines.segment_push.audit import ensure_push_tables
from pipelines.segment_push.plan import PushTarget

TENANT = "tenant-1"
TARGET = PushTarget("bench_segment", "seg-bench", "Bench segment (warehouse)")


async def run_phase(
    client: AsyncFlowRetailClient,
    conn: psycopg.Connection[Any],
    sim: benchlib.SimulatorProcess,
    run_id: str,
    segment: frozenset[str],
    batch_size: int,
) -> dict[str, Any]:
    """Plan, record, execute and verify one push; time each part and count the server's requests."""
    reads: list[float] = []
    original = client.fetch_group_member_uids

    async def timed_read(tenant_uid: str, group_uid: str) -> set[str]:
        started = time.perf_counter()
        try:
            return await original(tenant_uid, group_uid)
        finally:
            reads.append(time.perf_counter() - started)

    client.fetch_group_member_uids = timed_read  # type: ignore[method-assign,assignment]
    sim.reset()
    try:
        t0 = time.perf_counter()
        plan = await plan_and_record(client, conn, run_id, TENANT, TARGET, segment)
        t1 = time.perf_counter()
        outcome = await execute_plan(client, conn, run_id, plan, segment, batch_size)
        t2 = time.perf_counter()
    finally:
        client.fetch_group_member_uids = original  # type: ignore[method-assign]
    server = sim.stats()
    by_operation = server["by_operation"]
    plan_read = reads[0] if len(reads) > 1 else 0.0  # no member read when the group does not exist
    verify_read = reads[-1] if reads else 0.0
    changes = len(plan.adds) + len(plan.removes)
    return {
        "group_action": plan.group_action,
        "segment": len(segment),
        "adds": len(plan.adds),
        "removes": len(plan.removes),
        "changes": changes,
        "blocked": plan.blocked_reasons,
        "verified": outcome.verified,
        "write_calls": outcome.calls,
        "member_update_calls": by_operation.get("PUT put-customer-groups-customers", 0),
        "create_calls": by_operation.get("POST post-customer-groups", 0),
        "fewest_member_update_calls": math.ceil(changes / batch_size),
        "member_page_reads": by_operation.get("GET get-customer-groups-customers", 0),
        "server_requests": server["requests"],
        "server_by_status": server["by_status"],
        "plan_seconds": t1 - t0,
        "plan_live_read_seconds": plan_read,
        "execute_seconds": t2 - t1,
        "verify_read_seconds": verify_read,
        "writes_seconds": (t2 - t1) - verify_read,
        "total_seconds": t2 - t0,
    }


UNKNOWN_LIMIT_SEGMENTS = (("seg_a", 798), ("seg_b", 323), ("seg_c", 735))


async def push_segments(
    client: AsyncFlowRetailClient,
    conn: psycopg.Connection[Any],
    run: str,
    everyone: list[str],
    shift: int,
    batch_size: int,
) -> tuple[int, bool]:
    """Push the three segments one after another; (changes, all verified)."""
    changes, verified = 0, True
    for n, (name, size) in enumerate(UNKNOWN_LIMIT_SEGMENTS):
        target = PushTarget(name, f"grp-{name}", name)
        segment = frozenset(everyone[n * 1000 + shift : n * 1000 + shift + size])
        plan = await plan_and_record(client, conn, f"{run}-{name}", TENANT, target, segment, allow_large_removal=True)
        outcome = await execute_plan(client, conn, f"{run}-{name}", plan, segment, batch_size)
        changes += len(plan.adds) + len(plan.removes)
        verified = verified and outcome.verified
    return changes, verified


def run_unknown_limit(database_url: str, limit: int, batch_size: int) -> list[dict[str, Any]]:
    """Phase 3: the same three segments pushed twice into a server with an unannounced per-call limit."""
    factory = CustomerFactory(42, 0, 3000, hostile=True)
    everyone = [factory.uid(i) for i in range(3000)]
    results = []
    with benchlib.simulator_process(customers=3000, groups=3, max_uids_per_update=limit) as sim:
        config = ClientConfig(base_url=sim.base_url, token=SecretStr(sim.token), rate_limit_per_second=None)

        async def both() -> None:
            with psycopg.connect(database_url, autocommit=True) as conn:
                async with AsyncFlowRetailClient(config) as client:
                    for run, shift in (("limit-1", 0), ("limit-2", 100)):
                        sim.reset()
                        changes, verified = await push_segments(client, conn, run, everyone, shift, batch_size)
                        server = sim.stats()
                        results.append(
                            {
                                "run": run,
                                "changes": changes,
                                "member_update_calls": server["by_operation"].get(
                                    "PUT put-customer-groups-customers", 0
                                ),
                                "refused": server["by_status"].get("400", 0),
                                "fewest": sum(math.ceil(size / limit) for _, size in UNKNOWN_LIMIT_SEGMENTS)
                                if shift == 0
                                else 3 * math.ceil(2 * shift / limit),
                                "verified": verified,
                            }
                        )

        asyncio.run(both())
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=120_000, help="customers of the simulated tenant")
    parser.add_argument("--segment", type=int, default=100_000, help="customers in the pushed segment")
    parser.add_argument("--change", type=float, default=0.01, help="fraction of the segment changed in phase 2")
    parser.add_argument("--batch-size", type=int, default=500, help="uids per call (FLOWRETAIL_PUSH_BATCH_SIZE)")
    parser.add_argument("--max-uids-per-update", type=int, default=1000, help="simulator's per-call limit")
    parser.add_argument("--page-size", type=int, default=1000, help="pageSize of the reads = simulator cap")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--unknown-limit", type=int, default=120, help="phase 3: the simulator's unannounced limit")
    args = parser.parse_args()
    if args.segment + int(args.segment * args.change) > args.customers:
        parser.error("--customers must leave room for the customers that join in phase 2")

    pg = benchlib.start_postgres()
    database_url = pg.fresh_database("bench_push")
    facts = benchlib.machine_facts(database_url)
    benchlib.print_facts(facts)

    factory = CustomerFactory(42, 0, args.customers, hostile=True)
    first = [factory.uid(i) for i in range(args.segment)]
    changed = int(args.segment * args.change)
    leaving = changed // 2
    joining = changed - leaving
    second = first[leaving:] + [factory.uid(i) for i in range(args.segment, args.segment + joining)]

    with benchlib.simulator_process(
        customers=args.customers,
        groups=12,
        page_size_cap=args.page_size,
        max_uids_per_update=args.max_uids_per_update,
    ) as sim:
        config = ClientConfig(
            base_url=sim.base_url,
            token=SecretStr(sim.token),
            page_size=args.page_size,
            rate_limit_per_second=None,
            concurrency=args.concurrency,
        )

        async def both() -> list[dict[str, Any]]:
            with psycopg.connect(database_url, autocommit=True) as conn:
                ensure_push_tables(conn)
                async with AsyncFlowRetailClient(config) as client:
                    phases: list[Callable[[], Awaitable[dict[str, Any]]]] = [
                        lambda: run_phase(client, conn, sim, "bench-push-1", frozenset(first), args.batch_size),
                        lambda: run_phase(client, conn, sim, "bench-push-2", frozenset(second), args.batch_size),
                    ]
                    results = []
                    for phase in phases:
                        results.append(await phase())
                    return results

        print(f"pushing {args.segment:,} customers, then a {args.change:.0%} change ...", flush=True)
        first_push, change_push = asyncio.run(both())
    print(f"pushing 798, 323 and 735 customers twice into a server taking at most {args.unknown_limit} ...", flush=True)
    unknown = run_unknown_limit(database_url, args.unknown_limit, args.batch_size)
    pg.drop_database(database_url)
    facts["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)

    rows = []
    for name, r in (("fill empty group", first_push), (f"{args.change:.0%} change", change_push)):
        rows.append([
            name, r["group_action"], r["segment"], r["adds"], r["removes"], r["create_calls"],
            r["member_update_calls"], r["fewest_member_update_calls"],
            benchlib.ratio(r["member_update_calls"], r["fewest_member_update_calls"]), r["member_page_reads"],
            r["plan_seconds"], r["writes_seconds"], r["verify_read_seconds"], r["total_seconds"], r["verified"],
        ])  # fmt: skip
    benchlib.print_table(
        f"Segment push (batch size {args.batch_size}, page size {args.page_size}, simulator limit "
        f"{args.max_uids_per_update} uids per call)",
        rows,
        [
            "phase", "group action", "segment", "adds", "removes", "create calls", "member-update calls",
            "fewest", "calls / fewest", "member pages read", "plan s (incl. live read)", "writes s",
            "verify read s", "total s", "verified",
        ],
    )  # fmt: skip
    targets = [
        [
            f"{name}: member-update calls = ceil(changes / {args.batch_size})",
            f"{r['member_update_calls']} vs {r['fewest_member_update_calls']}",
            benchlib.verdict(r["member_update_calls"] == r["fewest_member_update_calls"] and r["verified"]),
        ]
        for name, r in (("fill", first_push), ("1% change", change_push))
    ]
    benchlib.print_table(
        f"Unknown limit: the simulator refuses calls above {args.unknown_limit} uids (batch size {args.batch_size})",
        [
            [r["run"], r["changes"], r["member_update_calls"], r["fewest"],
             benchlib.ratio(r["member_update_calls"], r["fewest"]), r["refused"], r["verified"]]
            for r in unknown
        ],
        ["push", "changes", "member-update calls", "fewest", "calls / fewest", "refused (400)", "verified"],
    )  # fmt: skip
    first_learning, second_learning = unknown
    targets.append(
        [
            "unknown limit, first push: calls <= fewest + refusals + 1",
            f"{first_learning['member_update_calls']} vs {first_learning['fewest']} + {first_learning['refused']}",
            benchlib.verdict(
                first_learning["member_update_calls"] <= first_learning["fewest"] + first_learning["refused"] + 1
                and first_learning["verified"]
            ),
        ]
    )
    targets.append(
        [
            "unknown limit, next push: calls = fewest, none refused",
            f"{second_learning['member_update_calls']} vs {second_learning['fewest']}, {second_learning['refused']} refused",
            benchlib.verdict(
                second_learning["member_update_calls"] == second_learning["fewest"] and second_learning["refused"] == 0
            ),
        ]
    )
    benchlib.print_table("Targets", targets, ["target", "measured", "verdict"])
    path = benchlib.save_results(
        "push",
        {
            "facts": facts,
            "args": vars(args),
            "first_push": first_push,
            "change_push": change_push,
            "unknown_limit": unknown,
        },
    )
    print(f"results saved to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
