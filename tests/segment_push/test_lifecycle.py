"""Lifecycle against the simulator and a real PostgreSQL: orphans are listed with their live size and
last push; a retirement empties in audited batches, deletes through the delete operation, refuses groups
the product does not own, and converges when rerun after a crash between emptying and deleting."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pipelines.flowretail.errors import RetriesExhaustedError
from pipelines.flowretail.simulator import SimulatorState
from pipelines.segment_push.lifecycle import Retirement, RetireRefusedError, find_orphans, retire_group
from pipelines.segment_push.plan import PushTarget
from tests.segment_push.test_push import TARGET, client_for, conn, customers, push, state, writes

__all__ = ["conn", "state"]

DELETE = "delete-customer-groups"
UPDATE = "put-customer-groups-customers"


def _orphans(state: SimulatorState, conn: Any, declared: list[str]) -> list[tuple[Any, ...]]:
    async def main() -> list[tuple[Any, ...]]:
        async with client_for(state) as client:
            found = await find_orphans(client, conn, state.tenant_uids()[0], declared)
            return [(o.group_uid, o.segment, o.ownership, o.live_size, o.last_push_at is not None) for o in found]

    return asyncio.run(main())


def _retire(
    state: SimulatorState,
    conn: Any,
    group: str = "seg-news",
    *,
    run_id: str = "retire-1",
    declared: dict[str, str] | None = None,
    **options: Any,
) -> Retirement:
    async def main() -> Retirement:
        async with client_for(state) as client:
            return await retire_group(
                client, conn, run_id, state.tenant_uids()[0], group, declared=declared or {}, batch_size=7, **options
            )

    return asyncio.run(main())


def _registry(conn: Any) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT customer_group_uid, status, retired_at IS NOT NULL FROM flowretail.segment_push_groups"
    ).fetchall()


def _log(conn: Any, run_id: str) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT action, batch_number, uid_count, http_status FROM flowretail.segment_push_log WHERE run_id = %s "
        "ORDER BY id",
        (run_id,),
    ).fetchall()


def test_a_group_no_segment_declares_is_an_orphan(state: SimulatorState, conn: Any) -> None:
    push(state, conn, set(customers(state, 20)))
    assert _orphans(state, conn, ["seg-news"]) == []
    assert _orphans(state, conn, []) == [("seg-news", TARGET.segment, "created", 20, True)]
    moved = PushTarget(TARGET.segment, "seg-news-2", TARGET.group_name)
    push(state, conn, set(customers(state, 5)), target=moved, run_id="run-2")
    assert _orphans(state, conn, ["seg-news-2"]) == [("seg-news", TARGET.segment, "created", 20, True)]
    state.delete_group(state.tenant_uids()[0], "seg-news")
    assert _orphans(state, conn, ["seg-news-2"]) == [("seg-news", TARGET.segment, "created", None, True)]


def test_retire_empties_in_audited_batches_deletes_and_marks_retired(state: SimulatorState, conn: Any) -> None:
    tenant = state.tenant_uids()[0]
    push(state, conn, set(customers(state, 20)))
    state.clear_log()
    dry = _retire(state, conn, dry_run=True, run_id="dry")
    assert (dry.status, dry.live_before, dry.detail) == (
        "dry_run",
        20,
        "would remove 20 members in 3 call(s), then delete the group",
    )
    assert writes(state) == [] and _log(conn, "dry") == []
    done = _retire(state, conn)
    assert (done.status, done.removed, done.deleted) == ("retired", 20, True)
    assert writes(state) == [("PUT", UPDATE, 204)] * 3 + [("DELETE", DELETE, 204)]
    assert state.group(tenant, "seg-news") is None
    assert _log(conn, "retire-1") == [
        ("retire_remove", 1, 7, 204),
        ("retire_remove", 2, 7, 204),
        ("retire_remove", 3, 6, 204),
        ("delete", None, 0, 204),
    ]
    assert _registry(conn) == [("seg-news", "retired", True)]
    assert _orphans(state, conn, []) == []
    state.clear_log()
    again = _retire(state, conn, run_id="retire-2")
    assert again.status == "retired" and writes(state) == []


def test_keep_group_empties_but_keeps_it(state: SimulatorState, conn: Any) -> None:
    tenant = state.tenant_uids()[0]
    push(state, conn, set(customers(state, 10)))
    done = _retire(state, conn, keep_group=True)
    assert (done.status, done.removed, done.deleted) == ("retired", 10, False)
    assert state.group(tenant, "seg-news") is not None and state.member_uids(tenant, "seg-news") == []
    assert _registry(conn) == [("seg-news", "retired", True)]


def test_retire_refuses_what_the_product_does_not_own_or_still_pushes(state: SimulatorState, conn: Any) -> None:
    tenant = state.tenant_uids()[0]
    theirs = state.groups(tenant)[-1]["customerGroupUid"]
    before = state.member_uids(tenant, theirs)
    state.clear_log()
    with pytest.raises(RetireRefusedError) as err:
        _retire(state, conn, theirs)
    assert str(err.value) == (
        f"group {theirs} of tenant {tenant} is not in flowretail.segment_push_groups: this product never created it, "
        "so it will not empty or delete it (nothing was written)"
    )
    push(state, conn, set(customers(state, 10)))
    state.clear_log()
    with pytest.raises(RetireRefusedError, match="is still declared by segment newsletter_subscribers"):
        _retire(state, conn, declared={"seg-news": TARGET.segment}, run_id="retire-2")
    state.create_group(tenant, "Theirs", "seg-theirs")
    state.add_members(tenant, "seg-theirs", customers(state, 3))
    adopt = PushTarget("other", "seg-theirs", "Theirs", adopt_existing="add_only")
    push(state, conn, set(customers(state, 3)), target=adopt, run_id="run-2")
    state.clear_log()
    with pytest.raises(RetireRefusedError, match="was adopted, not created, by this product"):
        _retire(state, conn, "seg-theirs", run_id="retire-3")
    assert writes(state) == []
    assert state.member_uids(tenant, theirs) == before and len(state.member_uids(tenant, "seg-news")) == 10
    statuses = conn.execute("SELECT run_id, status FROM flowretail.segment_push_retirements ORDER BY run_id").fetchall()
    assert statuses == [("retire-1", "refused"), ("retire-2", "refused"), ("retire-3", "refused")]


def test_a_crash_between_emptying_and_deleting_converges_on_rerun(state: SimulatorState, conn: Any) -> None:
    tenant = state.tenant_uids()[0]
    push(state, conn, set(customers(state, 20)))
    state.script(["503"] * 6, operation_id=DELETE)
    with pytest.raises(RetriesExhaustedError):
        _retire(state, conn)
    assert state.group(tenant, "seg-news") is not None and state.member_uids(tenant, "seg-news") == []
    assert _registry(conn) == [("seg-news", "active", False)]
    assert _log(conn, "retire-1") == [
        ("retire_remove", 1, 7, 204),
        ("retire_remove", 2, 7, 204),
        ("retire_remove", 3, 6, 204),
        ("delete", None, 0, None),
    ]
    failed = conn.execute("SELECT status FROM flowretail.segment_push_retirements").fetchall()
    assert failed == [("failed",)]
    state.clear_script()
    state.clear_log()
    done = _retire(state, conn, run_id="retire-2")
    assert (done.status, done.removed, done.deleted) == ("retired", 0, True)
    assert writes(state) == [("DELETE", DELETE, 204)]
    assert state.group(tenant, "seg-news") is None
    assert _registry(conn) == [("seg-news", "retired", True)]
