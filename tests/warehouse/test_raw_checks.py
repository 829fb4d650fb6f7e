"""The raw tables' check of a load's references, on a real load then corrupted by hand."""

from __future__ import annotations

from typing import Any

import psycopg

from pipelines.ingest.assets import REFERENCES_LOADED_ROWS, _checks
from tests.warehouse.test_load import _load, _state


def test_memberships_without_their_group_or_current_customer_fail_the_references_check(database_url: str) -> None:
    state = _state()
    tenant, other = state.tenant_uids()[:2]
    result = _load(state, database_url, tenant, "run-1")
    _load(state, database_url, other, "run-2")  # the same uids in another tenant must not count
    groups = [g["customerGroupUid"] for g in state.groups(tenant)]
    gone_group = next(g for g in groups if state.member_uids(tenant, g))
    in_gone_group = set(state.member_uids(tenant, gone_group))
    closed = next(u for g in groups if g != gone_group for u in state.member_uids(tenant, g) if u not in in_gone_group)
    expected = len(in_gone_group) + sum(closed in state.member_uids(tenant, g) for g in groups if g != gone_group)
    with psycopg.connect(database_url, autocommit=True) as conn:
        clean = _first_result(conn, result)
        conn.execute(
            "DELETE FROM flowretail.customer_groups WHERE tenant_uid = %s AND customer_group_uid = %s",
            (tenant, gone_group),
        )
        conn.execute(
            "UPDATE flowretail.customer_snapshots SET valid_to = now() "
            "WHERE tenant_uid = %s AND customer_uid = %s AND valid_to IS NULL",
            (tenant, closed),
        )
        corrupted = _first_result(conn, result)

    assert (clean.passed, clean.metadata["orphan_memberships"].value) == (True, 0)
    assert (corrupted.passed, corrupted.metadata["orphan_memberships"].value) == (False, expected)
    assert expected > len(in_gone_group) > 0


def _first_result(conn: psycopg.Connection[Any], result: Any) -> Any:
    first = next(iter(_checks(conn, result)))
    assert first.check_name == REFERENCES_LOADED_ROWS.name
    return first
