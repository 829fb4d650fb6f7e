"""Ownership against the simulator and a real PostgreSQL: a group the product did not create is never
written without the segment's ``adopt_existing`` opt-in, an adoption keeps its mode and name, a 409 on
create is someone else's group, and a push may not more than double a live group."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pipelines.flowretail.simulator import SimulatorState
from pipelines.segment_push.apply import ForeignGroupError, execute_plan, plan_and_record
from pipelines.segment_push.plan import PushTarget
from tests.segment_push.test_push import TARGET, client_for, conn, customers, push, state, writes

__all__ = ["conn", "state"]

ADOPT = PushTarget(TARGET.segment, TARGET.group_uid, TARGET.group_name, adopt_existing="add_only")


def _registry(conn: Any) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT tenant_uid, customer_group_uid, segment, ownership, status FROM flowretail.segment_push_groups"
    ).fetchall()


def _hand_made(state: SimulatorState, members: list[str]) -> str:
    tenant = state.tenant_uids()[0]
    state.create_group(tenant, "Made by hand", "seg-news")
    state.add_members(tenant, "seg-news", members)
    state.clear_log()
    return tenant


def test_a_foreign_group_is_refused_without_a_single_write(state: SimulatorState, conn: Any) -> None:
    everyone = customers(state, 30)
    tenant = _hand_made(state, everyone[:10])
    plan, outcome = push(state, conn, set(everyone[5:30]), allow=True)
    assert outcome is None and plan.blocked_reasons == [
        f"foreign_group: group seg-news of tenant {tenant} exists and was not created by this product; segment "
        "newsletter_subscribers does not opt in: set adopt_existing='add_only' (or 'mirror') on the segment to "
        "push into it, or choose another push_to_group_uid (nothing was written)"
    ]
    assert writes(state) == []
    assert set(state.member_uids(tenant, "seg-news")) == set(everyone[:10])
    assert _registry(conn) == []
    status = conn.execute("SELECT status FROM flowretail.segment_push_runs").fetchall()
    assert status == [("blocked",)]


def test_an_adopted_group_stays_add_only_and_keeps_its_name(state: SimulatorState, conn: Any) -> None:
    everyone = customers(state, 30)
    tenant = _hand_made(state, everyone[:10])
    plan, outcome = push(state, conn, set(everyone[5:15]), target=ADOPT)
    assert outcome is not None and outcome.verified
    assert plan.group_action == "adopt" and plan.effective_mode == "add_only"
    assert plan.withheld_removes == tuple(sorted(everyone[:5]))
    assert set(state.member_uids(tenant, "seg-news")) == set(everyone[:15])
    assert state.group(tenant, "seg-news")["name"] == "Made by hand"  # type: ignore[index]
    assert _registry(conn) == [(tenant, "seg-news", TARGET.segment, "adopted", "active")]
    plan, outcome = push(state, conn, set(everyone[5:15]), target=ADOPT, run_id="run-2")
    assert outcome is not None and outcome.verified and outcome.calls == 0
    assert plan.effective_mode == "add_only" and plan.removes == ()
    assert set(state.member_uids(tenant, "seg-news")) == set(everyone[:15])


def test_a_takeover_renames_and_mirrors_only_when_the_config_says_so(state: SimulatorState, conn: Any) -> None:
    everyone = customers(state, 30)
    tenant = _hand_made(state, everyone[:10])
    push(state, conn, set(everyone[5:15]), target=ADOPT)
    takeover = PushTarget(
        TARGET.segment, TARGET.group_uid, TARGET.group_name, adopt_existing="mirror", rename_adopted=True
    )
    plan, outcome = push(state, conn, set(everyone[5:15]), target=takeover, run_id="run-2")
    assert outcome is None and [g.name for g in plan.guards if g.blocked] == ["max_remove_fraction"]
    plan, outcome = push(state, conn, set(everyone[5:15]), target=takeover, run_id="run-3", allow=True)
    assert outcome is not None and outcome.verified
    assert plan.effective_mode == "mirror" and plan.removes == tuple(sorted(everyone[:5]))
    assert state.group(tenant, "seg-news")["name"] == TARGET.group_name  # type: ignore[index]
    assert set(state.member_uids(tenant, "seg-news")) == set(everyone[5:15])
    assert _registry(conn) == [(tenant, "seg-news", TARGET.segment, "adopted", "active")]


def _push_racing_a_foreign_create(state: SimulatorState, conn: Any, target: PushTarget, segment: set[str]) -> None:
    """Plan while the uid is free, let someone else create the group, then apply: the create meets 409."""
    tenant = state.tenant_uids()[0]

    async def main() -> None:
        async with client_for(state) as client:
            plan = await plan_and_record(client, conn, "run", tenant, target, frozenset(segment))
            assert plan.group_action == "create"
            state.create_group(tenant, "Someone else's", "seg-news")
            await execute_plan(client, conn, "run", plan, frozenset(segment), 500)

    asyncio.run(main())


def test_a_409_on_create_is_someone_elses_group_and_never_recorded_as_created(state: SimulatorState, conn: Any) -> None:
    tenant = state.tenant_uids()[0]
    segment = set(customers(state, 20))
    with pytest.raises(ForeignGroupError) as err:
        _push_racing_a_foreign_create(state, conn, TARGET, segment)
    assert str(err.value) == (
        f"group seg-news of tenant {tenant} already exists (409 on create) and was not created by this product; "
        "segment newsletter_subscribers does not opt in: set adopt_existing='add_only' (or 'mirror') to push into "
        "it, or choose another push_to_group_uid (no member was written)"
    )
    assert state.member_uids(tenant, "seg-news") == []
    assert state.group(tenant, "seg-news")["name"] == "Someone else's"  # type: ignore[index]
    assert _registry(conn) == []
    row = conn.execute("SELECT status, error FROM flowretail.segment_push_runs").fetchone()
    assert row == ("failed", str(err.value))


def test_a_409_on_create_with_the_opt_in_adopts_and_the_next_run_pushes(state: SimulatorState, conn: Any) -> None:
    tenant = state.tenant_uids()[0]
    segment = set(customers(state, 20))
    with pytest.raises(ForeignGroupError, match="adopted it as the segment opts in"):
        _push_racing_a_foreign_create(state, conn, ADOPT, segment)
    assert _registry(conn) == [(tenant, "seg-news", TARGET.segment, "adopted", "active")]
    assert state.member_uids(tenant, "seg-news") == []
    plan, outcome = push(state, conn, segment, target=ADOPT, run_id="run-2")
    assert outcome is None and plan.blocked_reasons == [
        "max_add_fraction: 20 additions to 0 live members exceed max_add_fraction 1 (0 allowed)"
    ]
    plan, outcome = push(state, conn, segment, target=ADOPT, run_id="run-3", allow=True)
    assert outcome is not None and outcome.verified and plan.effective_mode == "add_only"
    assert set(state.member_uids(tenant, "seg-news")) == segment


def test_a_push_that_would_more_than_double_a_group_is_blocked(state: SimulatorState, conn: Any) -> None:
    tenant = state.tenant_uids()[0]
    everyone = customers(state, 100)
    first, outcome = push(state, conn, set(everyone[:30]))
    assert outcome is not None and outcome.verified and not first.blocked
    state.clear_log()
    plan, outcome = push(state, conn, set(everyone[:61]), run_id="run-2")
    assert outcome is None and plan.blocked_reasons == [
        "max_add_fraction: 31 additions to 30 live members exceed max_add_fraction 1 (30 allowed)"
    ]
    assert writes(state) == [] and set(state.member_uids(tenant, "seg-news")) == set(everyone[:30])
    plan, outcome = push(state, conn, set(everyone[:61]), run_id="run-3", allow=True)
    assert outcome is not None and outcome.verified
    assert set(state.member_uids(tenant, "seg-news")) == set(everyone[:61])


def test_every_guard_override_is_a_run_config_flag_and_a_cli_flag() -> None:
    from pipelines.cli import _parser
    from pipelines.reverse_etl.assets import PushPlanConfig
    from pipelines.segment_push.plan import GUARD_OVERRIDES, GUARDS

    assert GUARD_OVERRIDES == ("allow_large_removal", "allow_large_addition")
    assert set(GUARD_OVERRIDES) <= set(PushPlanConfig.model_fields)
    flags = [g.cli_flag for g in GUARDS if g.cli_flag]
    for command in (["push"], ["run"]):
        parsed = vars(_parser().parse_args([*command, *dict.fromkeys(flags)]))
        assert all(parsed[name] for name in GUARD_OVERRIDES)
