"""Segment push against the simulator and a real PostgreSQL: minimal calls, guards, repair, audit."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import psycopg
import pytest
from pydantic import SecretStr

from pipelines.flowretail.client import AsyncFlowRetailClient
from pipelines.flowretail.config import ClientConfig
from pipelines.flowretail.errors import RetriesExhaustedError
from pipelines.flowretail.simulator import SimulatorConfig, SimulatorState, build_state, create_app
from pipelines.segment_push.apply import PushOutcome, execute_plan, plan_and_record
from pipelines.segment_push.audit import PushRefusedError, ensure_push_tables
from pipelines.segment_push.plan import PushTarget, SegmentPushPlan
from pipelines.warehouse.locks import advisory_lock_key

TOKEN = "push-test-token"
TARGET = PushTarget("newsletter_subscribers", "seg-news", "Newsletter (warehouse)")


@pytest.fixture
def state() -> SimulatorState:
    state = build_state(SimulatorConfig(tenants=2, customers=1200, groups=5, max_uids_per_update=1000))
    state.token = TOKEN
    return state


@pytest.fixture
def conn(database_url: str) -> Any:
    with psycopg.connect(database_url, autocommit=True) as connection:
        ensure_push_tables(connection)
        yield connection


def client_for(state: SimulatorState) -> AsyncFlowRetailClient:
    """A client of the in-process simulator with millisecond backoff."""
    config = ClientConfig(
        base_url="http://127.0.0.1/v2",
        token=SecretStr(TOKEN),
        rate_limit_per_second=None,
        backoff_initial=0.001,
        backoff_max=0.01,
    )
    return AsyncFlowRetailClient(config, transport=httpx.ASGITransport(app=create_app(state)))


def push(
    state: SimulatorState,
    conn: psycopg.Connection[Any],
    segment: set[str],
    *,
    target: PushTarget = TARGET,
    run_id: str = "run",
    tenant: str | None = None,
    batch_size: int = 500,
    allow: bool = False,
    dry_run: bool = False,
) -> tuple[SegmentPushPlan, PushOutcome | None]:
    tenant = tenant or state.tenant_uids()[0]

    async def main() -> tuple[SegmentPushPlan, PushOutcome | None]:
        async with client_for(state) as client:
            plan = await plan_and_record(
                client,
                conn,
                run_id,
                tenant,
                target,
                frozenset(segment),
                allow_large_removal=allow,
                allow_large_addition=allow,
                dry_run=dry_run,
            )
            if plan.blocked or dry_run:
                return plan, None
            return plan, await execute_plan(client, conn, run_id, plan, frozenset(segment), batch_size)

    return asyncio.run(main())


def writes(state: SimulatorState) -> list[tuple[str, str | None, int]]:
    return [(r.method, r.operation_id, r.status) for r in state.request_log if r.method != "GET"]


def customers(state: SimulatorState, n: int, tenant: str | None = None) -> list[str]:
    return state.customer_uids(tenant or state.tenant_uids()[0])[:n]


def test_first_push_creates_the_group_and_sends_the_fewest_batches(state: SimulatorState, conn: Any) -> None:
    tenant = state.tenant_uids()[0]
    segment = set(customers(state, 1100))
    state.clear_log()
    plan, outcome = push(state, conn, segment)
    assert outcome is not None and outcome.verified
    assert plan.group_action == "create"
    assert set(state.member_uids(tenant, "seg-news")) == segment
    assert state.group(tenant, "seg-news")["name"] == "Newsletter (warehouse)"
    assert (
        writes(state) == [("POST", "post-customer-groups", 201)] + [("PUT", "put-customer-groups-customers", 204)] * 3
    )
    assert (outcome.applied_adds, outcome.applied_removes, outcome.calls) == (1100, 0, 4)
    owner = conn.execute("SELECT segment, ownership FROM flowretail.segment_push_groups").fetchall()
    assert owner == [("newsletter_subscribers", "created")]


def test_a_one_percent_change_sends_exactly_the_minimal_calls(state: SimulatorState, conn: Any) -> None:
    tenant = state.tenant_uids()[0]
    everyone = customers(state, 1200)
    push(state, conn, set(everyone[:1000]))
    changed = set(everyone[5:1000]) | set(everyone[1000:1005])
    state.clear_log()
    plan, outcome = push(state, conn, changed, run_id="run-2")
    assert (plan.adds, plan.removes) == (tuple(sorted(everyone[1000:1005])), tuple(sorted(everyone[:5])))
    assert writes(state) == [("PUT", "put-customer-groups-customers", 204)]
    body = next(r.json for r in state.request_log if r.method == "PUT")
    assert sorted(body["addCustomerUids"]) == sorted(everyone[1000:1005])
    assert sorted(body["removeCustomerUids"]) == sorted(everyone[:5])
    assert outcome is not None and outcome.verified
    assert set(state.member_uids(tenant, "seg-news")) == changed


def test_an_idempotent_rerun_sends_zero_write_calls(state: SimulatorState, conn: Any) -> None:
    segment = set(customers(state, 300))
    push(state, conn, segment)
    state.clear_log()
    plan, outcome = push(state, conn, segment, run_id="run-2")
    assert plan.in_sync
    assert writes(state) == []
    assert outcome is not None and outcome.verified and outcome.calls == 0


def test_add_only_never_removes(state: SimulatorState, conn: Any) -> None:
    tenant = state.tenant_uids()[0]
    target = PushTarget("credit_at_risk", "seg-credit", "Credit at risk", mode="add_only")
    everyone = customers(state, 50)
    push(state, conn, set(everyone[:40]), target=target)
    plan, outcome = push(state, conn, set(everyone[20:50]), target=target, run_id="run-2")
    assert plan.removes == () and len(plan.withheld_removes) == 20
    assert set(state.member_uids(tenant, "seg-credit")) == set(everyone)
    assert outcome is not None and outcome.verified


def test_guards_block_before_any_write_and_the_allow_flag_unblocks(state: SimulatorState, conn: Any) -> None:
    tenant = state.tenant_uids()[0]
    everyone = customers(state, 100)
    push(state, conn, set(everyone))
    state.clear_log()
    plan, outcome = push(state, conn, set(everyone[:70]), run_id="run-2")
    assert plan.blocked and outcome is None
    assert plan.blocked_reasons == [
        "max_remove_fraction: 30 removals of 100 live members exceed max_remove_fraction 0.2 (20 allowed)"
    ]
    assert writes(state) == []
    row = conn.execute("SELECT status, blocked FROM flowretail.segment_push_runs WHERE run_id = 'run-2'").fetchone()
    assert row == ("blocked", plan.blocked_reasons)
    plan, outcome = push(state, conn, set(everyone[:70]), run_id="run-3", allow=True)
    assert outcome is not None and outcome.verified
    assert set(state.member_uids(tenant, "seg-news")) == set(everyone[:70])


def test_an_empty_segment_is_not_pushed(state: SimulatorState, conn: Any) -> None:
    push(state, conn, set(customers(state, 10)))
    plan, outcome = push(state, conn, set(), run_id="run-2")
    assert outcome is None
    assert plan.blocked_reasons[0] == "empty_segment: segment is empty while the group has 10 members"


def test_a_segment_that_halved_is_not_pushed(state: SimulatorState, conn: Any) -> None:
    everyone = customers(state, 100)
    push(state, conn, set(everyone))
    plan, _ = push(
        state,
        conn,
        set(everyone[:40]),
        run_id="run-2",
        target=PushTarget(TARGET.segment, TARGET.group_uid, TARGET.group_name, max_remove_fraction=1.0),
    )
    assert plan.blocked_reasons == [
        "segment_shrank: segment shrank from 100 to 40 since its last successful push (more than 50%)"
    ]


def test_refused_uids_are_isolated_and_the_rest_is_pushed(state: SimulatorState, conn: Any) -> None:
    tenant = state.tenant_uids()[0]
    good = set(customers(state, 30))
    _plan, outcome = push(state, conn, good | {"ghost-1", "ghost-2"}, batch_size=8)
    assert outcome is not None and outcome.verified
    assert set(outcome.rejected) == {"ghost-1", "ghost-2"}
    assert set(state.member_uids(tenant, "seg-news")) == good
    rejected = conn.execute("SELECT rejected_uids FROM flowretail.segment_push_runs").fetchone()[0]
    assert sorted(r["customer_uid"] for r in rejected) == ["ghost-1", "ghost-2"]
    statuses = [
        r[0]
        for r in conn.execute(
            "SELECT http_status FROM flowretail.segment_push_log WHERE action = 'add_remove' ORDER BY id"
        ).fetchall()
    ]
    assert 400 in statuses and statuses.count(204) >= 4


def test_429s_and_5xx_are_handled(state: SimulatorState, conn: Any) -> None:
    tenant = state.tenant_uids()[0]
    segment = set(customers(state, 600))
    state.script(["429", "503", "502"], operation_id="put-customer-groups-customers")
    _, outcome = push(state, conn, segment)
    assert outcome is not None and outcome.verified
    assert set(state.member_uids(tenant, "seg-news")) == segment


def test_an_interrupted_push_converges_on_rerun(state: SimulatorState, conn: Any) -> None:
    tenant = state.tenant_uids()[0]
    segment = set(customers(state, 1100))
    state.script(["slow:0"] + ["503"] * 6, operation_id="put-customer-groups-customers")
    with pytest.raises(RetriesExhaustedError):
        push(state, conn, segment, batch_size=300)
    state.clear_script()
    half_done = set(state.member_uids(tenant, "seg-news"))
    assert len(half_done) == 300
    failed = conn.execute("SELECT status, verified FROM flowretail.segment_push_runs WHERE run_id = 'run'").fetchone()
    assert failed == ("failed", False)
    state.clear_log()
    plan, outcome = push(state, conn, segment, run_id="run-2", batch_size=300)
    assert plan.adds == tuple(sorted(segment - half_done))
    assert outcome is not None and outcome.verified
    assert set(state.member_uids(tenant, "seg-news")) == segment
    assert len(writes(state)) == 3


def test_out_of_band_rename_and_delete_are_repaired(state: SimulatorState, conn: Any) -> None:
    tenant = state.tenant_uids()[0]
    segment = set(customers(state, 20))
    push(state, conn, segment)
    state.rename_group(tenant, "seg-news", "Renamed by a store")
    _, outcome = push(state, conn, segment, run_id="run-2")
    assert outcome is not None and state.group(tenant, "seg-news")["name"] == TARGET.group_name
    assert any("renamed back" in note for note in outcome.notes)
    state.delete_group(tenant, "seg-news")
    plan, outcome = push(state, conn, segment, run_id="run-3")
    assert plan.group_action == "recreate"
    assert outcome is not None and outcome.verified
    assert any("deleted out of band; recreated" in note for note in outcome.notes)
    assert set(state.member_uids(tenant, "seg-news")) == segment


def test_drift_is_reported(state: SimulatorState, conn: Any) -> None:
    tenant = state.tenant_uids()[0]
    everyone = customers(state, 40)
    push(state, conn, set(everyone[:30]))
    state.add_members(tenant, "seg-news", [everyone[35]])
    state.remove_members(tenant, "seg-news", [everyone[0]])
    plan, _ = push(state, conn, set(everyone[:30]), run_id="run-2")
    assert (plan.drift_added, plan.drift_removed) == ((everyone[35],), (everyone[0],))
    row = conn.execute(
        "SELECT drift_added, drift_removed FROM flowretail.segment_push_runs WHERE run_id = 'run-2'"
    ).fetchone()
    assert row == (1, 1)


def test_dry_run_writes_nothing_but_records_the_plan(state: SimulatorState, conn: Any) -> None:
    state.clear_log()
    plan, outcome = push(state, conn, set(customers(state, 10)), dry_run=True)
    assert outcome is None and writes(state) == []
    row = conn.execute("SELECT status, planned_adds, plan->'adds' FROM flowretail.segment_push_runs").fetchone()
    assert row == ("dry_run", 10, list(plan.adds))


def test_nothing_outside_the_declared_group_is_touched(state: SimulatorState, conn: Any) -> None:
    tenant, other = state.tenant_uids()
    before = {
        t: {g["customerGroupUid"]: (g["name"], state.member_uids(t, g["customerGroupUid"])) for g in state.groups(t)}
        for t in (tenant, other)
    }
    push(state, conn, set(customers(state, 50)))
    after = {
        t: {
            g["customerGroupUid"]: (g["name"], state.member_uids(t, g["customerGroupUid"]))
            for g in state.groups(t)
            if g["customerGroupUid"] != "seg-news"
        }
        for t in (tenant, other)
    }
    assert after == before
    touched = {
        r.path.split("/customer-groups")[1].split("/")[1]
        for r in state.request_log
        if r.method != "GET" and "/customer-groups/" in r.path
    }
    assert touched <= {"seg-news"}


def test_every_call_is_logged_with_its_uids(state: SimulatorState, conn: Any) -> None:
    segment = customers(state, 700)
    push(state, conn, set(segment))
    rows = conn.execute(
        "SELECT action, batch_number, http_status, uid_count, add_uids FROM flowretail.segment_push_log ORDER BY id"
    ).fetchall()
    assert [(a, b, s, n) for a, b, s, n, _ in rows] == [
        ("create", None, 201, 0),
        ("add_remove", 1, 204, 500),
        ("add_remove", 2, 204, 200),
        ("verify", None, 200, 0),
    ]
    assert sorted(rows[1][4] + rows[2][4]) == sorted(segment)


def _apply(
    state: SimulatorState, conn: psycopg.Connection[Any], run_id: str, plan: SegmentPushPlan, segment: set[str]
) -> PushOutcome:
    async def main() -> PushOutcome:
        async with client_for(state) as client:
            return await execute_plan(client, conn, run_id, plan, frozenset(segment), 500)

    return asyncio.run(main())


def _plan_only(state: SimulatorState, conn: psycopg.Connection[Any], run_id: str, segment: set[str]) -> SegmentPushPlan:
    async def main() -> SegmentPushPlan:
        async with client_for(state) as client:
            return await plan_and_record(client, conn, run_id, state.tenant_uids()[0], TARGET, frozenset(segment))

    return asyncio.run(main())


def test_an_older_plan_is_never_applied_after_a_newer_one(state: SimulatorState, conn: Any) -> None:
    tenant = state.tenant_uids()[0]
    old_segment, new_segment = set(customers(state, 300)), set(customers(state, 400)[50:])
    old_plan = _plan_only(state, conn, "run-old", old_segment)
    _, outcome = push(state, conn, new_segment, run_id="run-new")
    assert outcome is not None and outcome.verified
    state.clear_log()
    with pytest.raises(PushRefusedError) as err:
        _apply(state, conn, "run-old", old_plan, old_segment)
    assert str(err.value) == (
        f"the plan of run run-old for segment newsletter_subscribers of tenant {tenant} is superseded; "
        "nothing was written"
    )
    assert writes(state) == []
    assert set(state.member_uids(tenant, "seg-news")) == new_segment
    rows = conn.execute("SELECT run_id, status, error FROM flowretail.segment_push_runs ORDER BY run_id").fetchall()
    assert rows == [
        ("run-new", "verified", None),
        ("run-old", "superseded", "run run-new pushed a newer plan into this group first; this plan is never applied"),
    ]


def test_a_second_push_into_the_same_group_refuses_while_one_runs(
    state: SimulatorState, conn: Any, database_url: str
) -> None:
    tenant = state.tenant_uids()[0]
    segment = set(customers(state, 200))
    plan = _plan_only(state, conn, "run-2", segment)
    state.clear_log()
    with psycopg.connect(database_url, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s, %s)", (0x464C5047, advisory_lock_key(tenant, "seg-news")))
        with pytest.raises(PushRefusedError) as err:
            _apply(state, conn, "run-2", plan, segment)
    assert str(err.value) == (
        f"another push into group seg-news of tenant {tenant} is running; this one refuses so that "
        "their batches cannot interleave (nothing was written)"
    )
    assert writes(state) == []
    status = conn.execute("SELECT status FROM flowretail.segment_push_runs WHERE run_id = 'run-2'").fetchone()
    assert status == ("planned",)
    outcome = _apply(state, conn, "run-2", plan, segment)
    assert outcome.verified
    assert set(state.member_uids(tenant, "seg-news")) == segment
