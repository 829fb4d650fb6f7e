"""Batch size that learns: the server's unknown per-call limit is found once, used, and kept."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import httpx
import orjson
import psycopg
import pytest
from starlette.types import Receive, Scope, Send

from pipelines.flowretail.client import AsyncFlowRetailClient
from pipelines.flowretail.simulator import SimulatorConfig, SimulatorState, build_state, create_app
from pipelines.segment_push.apply import execute_plan, plan_and_record
from pipelines.segment_push.audit import ensure_push_tables
from pipelines.segment_push.batching import BatchSizer
from pipelines.segment_push.plan import PushTarget
from tests.segment_push.test_push import TOKEN, client_for

UPDATE = "put-customer-groups-customers"


def probes(sizer: BatchSizer, limit: int, uids: int) -> list[int]:
    """The call sizes a push of ``uids`` makes against a server taking at most ``limit`` per call."""
    sizes, left = [], uids
    while left:
        size = sizer.next_size(left)
        sizes.append(size)
        if size > limit:
            sizer.too_big(size)
        else:
            sizer.took(size)
            left -= size
    return sizes


def test_binary_search_finds_the_limit_then_sends_full_calls() -> None:
    sizer = BatchSizer(500)
    assert probes(sizer, 120, 798) == [500, 250, 125, 62, 93, 109, 117, 121, 119, 120, 120, 58]
    assert (sizer.limit, sizer.refusals) == (120, 4)


def test_a_known_limit_costs_no_refusal_and_the_fewest_calls() -> None:
    sizer = BatchSizer(500, accepted=120, refused=121)
    assert probes(sizer, 120, 735) == [120] * 6 + [15]
    assert sizer.refusals == 0


def test_without_a_server_limit_the_configured_size_is_used() -> None:
    assert probes(BatchSizer(500), 10_000, 1100) == [500, 500, 100]


def test_a_lowered_limit_is_searched_again_from_what_this_push_saw() -> None:
    sizer = BatchSizer(500, accepted=120, refused=121)
    assert probes(sizer, 100, 700) == [120, 60, 90, 105, 97, 101, 99, 100, 100, 100, 54]
    assert (sizer.limit, sizer.refusals) == (100, 3)


def test_a_refused_uid_does_not_leave_the_size_small() -> None:
    sizer = BatchSizer(50)
    sizer.too_big(50)
    sizer.too_big(25)
    assert not sizer.may_be_too_big(1)
    sizer.uid_refused()
    assert sizer.next_size(1000) == 50
    sizer.took(12)
    assert not sizer.may_be_too_big(12) and sizer.may_be_too_big(13)


# ------------------------------------------------------------------ against the simulator

SEGMENTS = [("seg_a", 798), ("seg_b", 323), ("seg_c", 735)]  # the three segments of issue 12


@pytest.fixture
def state() -> SimulatorState:
    state = build_state(SimulatorConfig(tenants=1, customers=2000, groups=3, max_uids_per_update=120))
    state.token = TOKEN
    return state


def push_all(state: SimulatorState, conn: psycopg.Connection[Any], run: str, offset: int = 0) -> list[Any]:
    tenant = state.tenant_uids()[0]
    everyone = state.customer_uids(tenant)

    async def main() -> list[Any]:
        outcomes = []
        async with client_for(state) as client:
            for n, (name, size) in enumerate(SEGMENTS):
                target = PushTarget(name, f"grp-{name}", name)
                segment = frozenset(everyone[n * 400 + offset : n * 400 + offset + size])
                plan = await plan_and_record(
                    client, conn, f"{run}-{name}", tenant, target, segment, allow_large_removal=True
                )
                outcomes.append(await execute_plan(client, conn, f"{run}-{name}", plan, segment, 500))
        return outcomes

    return asyncio.run(main())


def put_statuses(state: SimulatorState) -> list[int]:
    return [r.status for r in state.request_log if r.operation_id == UPDATE]


def test_unknown_limit_costs_four_refusals_once_then_the_fewest_calls(state: SimulatorState, database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        ensure_push_tables(conn)
        state.clear_log()
        outcomes = push_all(state, conn, "run-1")
        statuses = put_statuses(state)
        fewest = sum(math.ceil(size / 120) for _, size in SEGMENTS)
        assert fewest == 17
        # 798: 500, 250, 125 refused; 62, 93, 109, 117 taken; 121 refused; 119, 120, 120, 58 taken.
        assert (len(statuses), statuses.count(400)) == (12 + 3 + 7, 4)
        assert all(o.verified for o in outcomes)
        assert (
            outcomes[0].notes[-1]
            == "the API refused 4 calls for their size; it takes 120 uids per call and refuses 121"
        )
        assert [o.calls for o in outcomes] == [1 + 12, 1 + 3, 1 + 7]  # each also creates its group
        stored = conn.execute(
            "SELECT api_base_url, tenant_uid, accepted, refused FROM flowretail.segment_push_batch_limits"
        ).fetchall()
        assert stored == [("http://127.0.0.1/v2", "tenant-1", 120, 121)]
        logged = conn.execute(
            "SELECT uid_count, http_status FROM flowretail.segment_push_log WHERE run_id = 'run-1-seg_a' "
            "AND action = 'add_remove' ORDER BY id"
        ).fetchall()
        assert logged == [
            (500, 400),
            (250, 400),
            (125, 400),
            (62, 204),
            (93, 204),
            (109, 204),
            (117, 204),
            (121, 400),
            (119, 204),
            (120, 204),
            (120, 204),
            (58, 204),
        ]

        state.clear_log()
        push_all(state, conn, "run-2", offset=100)  # every segment shifts: 100 removes and 100 adds each
        statuses = put_statuses(state)
        assert (len(statuses), statuses.count(400)) == (3 * math.ceil(200 / 120), 0)


def unnamed_refusals(app: Any) -> Any:
    """The simulator, except that a 400 no longer names the uids it refused (as some servers answer)."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        async def strip(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [(k, v) for k, v in message["headers"] if k != b"content-length"]}
            elif message["type"] == "http.response.body" and b"invalidCustomerUids" in message.get("body", b""):
                body = orjson.loads(message["body"])
                body.pop("invalidCustomerUids")
                message = {**message, "body": orjson.dumps(body)}
            await send(message)

        # Uncompressed answers, so the body can be edited (the simulator compresses when asked).
        headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"accept-encoding"]
        await app({**scope, "headers": headers}, receive, strip)

    return wrapped


def test_a_uid_refused_unnamed_does_not_shrink_the_batches(database_url: str) -> None:
    """Isolating an unnamed refused uid costs a few calls, not a smaller size for the rest of the push."""
    state = build_state(SimulatorConfig(tenants=1, customers=400, groups=2))
    state.token = TOKEN
    tenant = state.tenant_uids()[0]
    segment = frozenset([*state.customer_uids(tenant)[:200], "cust-0000049x"])
    target = PushTarget("seg_ghost", "grp-ghost", "ghost")

    async def main() -> Any:
        config = client_for(state).config
        transport = httpx.ASGITransport(app=unnamed_refusals(create_app(state)))
        async with AsyncFlowRetailClient(config, transport=transport) as client:
            plan = await plan_and_record(client, conn, "run-1", tenant, target, segment)
            return await execute_plan(client, conn, "run-1", plan, segment, 50)

    with psycopg.connect(database_url, autocommit=True) as conn:
        ensure_push_tables(conn)
        outcome = asyncio.run(main())
        logged = conn.execute(
            "SELECT uid_count, http_status FROM flowretail.segment_push_log WHERE action = 'add_remove' ORDER BY id"
        ).fetchall()
        stored = conn.execute("SELECT count(*) FROM flowretail.segment_push_batch_limits").fetchone()
    assert outcome.verified and set(outcome.rejected) == {"cust-0000049x"}
    assert set(state.member_uids(tenant, "grp-ghost")) == segment - {"cust-0000049x"}
    # Batch 2 holds the unknown uid first: 50 refused is no size problem (50 went through), so it is
    # halved down to that uid, and every later batch goes at the full 50.
    assert logged == [
        (50, 204),
        (50, 400),
        (25, 400),
        (12, 400),
        (6, 400),
        (3, 400),
        (1, 400),
        (2, 204),
        (3, 204),
        (6, 204),
        (13, 204),
        (25, 204),
        (50, 204),
        (50, 204),
        (1, 204),
    ]
    assert stored == (0,)
