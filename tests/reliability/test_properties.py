"""Property tests against the in-process simulator: paging under any page size, page base, server cap and
mutation schedule; and push plans applied to any start state, with refused uids and split batches."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.flowretail.client import AsyncFlowRetailClient
from pipelines.flowretail.errors import PagingInconsistentError
from pipelines.flowretail.simulator import SimulatorState
from pipelines.segment_push.audit import ensure_push_tables
from pipelines.segment_push.plan import PushTarget
from tests.flowretail.lists import fetch_group_members
from tests.reliability.conftest import ScenarioRecord
from tests.reliability.support import (
    Interceptor,
    PromiseBroken,
    asgi,
    client_config,
    make_state,
    promise,
    run_push,
    tenant_of,
)

_counter = itertools.count()

Mutation = tuple[str, int, int]  # (kind, how many, where)

mutations = st.lists(
    st.tuples(st.sampled_from(["add", "remove"]), st.integers(1, 3), st.integers(0, 10_000)), max_size=6
)


def _apply(state: SimulatorState, tenant: str, group: str, mutation: Mutation) -> None:
    kind, count, where = mutation
    members = state.member_uids(tenant, group)
    if kind == "add":
        outsiders = sorted(set(state.customer_uids(tenant)) - set(members))
        start = where % max(1, len(outsiders))
        state.add_members(tenant, group, outsiders[start : start + count])
    elif members:
        start = where % len(members)
        state.remove_members(tenant, group, members[start : start + count])


def _scan(
    state: SimulatorState, app: Any, tenant: str, group: str, **config: Any
) -> list[dict[str, Any]] | PagingInconsistentError:
    import asyncio

    async def main() -> list[dict[str, Any]]:
        async with AsyncFlowRetailClient(client_config(**config), transport=asgi(state, app)) as client:
            return await fetch_group_members(client, tenant, group)

    try:
        return asyncio.run(main())
    except PagingInconsistentError as exc:
        return exc


@pytest.fixture(scope="module")
def paging_state() -> SimulatorState:
    return make_state(customers=160, groups=2)


@pytest.mark.reliability(
    area="properties",
    injected="any page size, page base 0/1, server cap, concurrency and schedule of adds/removes between pages",
    expected="exactly the final member set, or PagingInconsistentError naming group and tenant",
)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    size=st.integers(0, 90),
    page_size=st.integers(1, 40),
    cap=st.integers(1, 40),
    base=st.sampled_from([0, 1]),
    concurrency=st.integers(1, 8),
    schedule=mutations,
)
def test_paging_yields_the_final_set_or_a_clear_error(
    paging_state: SimulatorState,
    scenario: ScenarioRecord,
    size: int,
    page_size: int,
    cap: int,
    base: int,
    concurrency: int,
    schedule: list[Mutation],
) -> None:
    state = paging_state
    tenant = tenant_of(state)
    group = f"prop-{next(_counter)}"
    state.config.page_size_cap = cap
    state.config.page_base = base
    state.create_group(tenant, "property", group)
    state.add_members(tenant, group, state.customer_uids(tenant)[:size])
    pending = list(schedule)
    app = Interceptor(state)

    def mutate_between_pages(kind: str, path: str, number: int) -> None:
        if kind == "GET members" and number > 1 and pending:
            _apply(state, tenant, group, pending.pop(0))

    app.before.append(mutate_between_pages)
    try:
        result = _scan(state, app, tenant, group, page_size=page_size, page_base=base, concurrency=concurrency)
        final = state.member_uids(tenant, group)
    finally:
        state.delete_group(tenant, group)
    if isinstance(result, PagingInconsistentError):
        assert str(result).startswith(f"customers of group {group} of tenant {tenant}: paged ")
        assert str(result).endswith("the data kept changing during 3 scans")
        return
    uids = [item["customerUid"] for item in result]
    if sorted(uids) != final:
        scenario.lost(len(set(final) - set(uids)))
    assert sorted(uids) == final


@pytest.mark.xfail(
    strict=True,
    raises=PromiseBroken,
    reason=(
        "accepted limitation of page-number paging (a product decision, not a bug): a scan is trusted when every "
        "page reports the same totalCount and the unique uids add up to it (pipelines/flowretail/paging.py "
        "ScanLedger.is_consistent), so one change that removes an already-paged member and adds another between two "
        "pages (count unchanged) cannot be seen by any client of this API; the scan returns the old member and "
        "misses the new one, and the next load corrects it"
    ),
)
@pytest.mark.reliability(
    area="properties",
    injected="between page 1 and page 2: remove a member already paged and add a new one (count unchanged)",
    expected="exactly the final member set, or PagingInconsistentError",
)
def test_a_same_count_replacement_between_pages_is_detected(
    paging_state: SimulatorState, scenario: ScenarioRecord
) -> None:
    state = paging_state
    state.config.page_size_cap = 1000
    state.config.page_base = 1
    tenant = tenant_of(state)
    group = f"prop-{next(_counter)}"
    state.create_group(tenant, "replacement", group)
    everyone = state.customer_uids(tenant)
    state.add_members(tenant, group, everyone[:30])
    app = Interceptor(state)

    def replace_between_pages(kind: str, path: str, number: int) -> None:
        if kind == "GET members" and number == 2:
            state.update_members(tenant, group, add=[everyone[100]], remove=[everyone[0]])

    app.before.append(replace_between_pages)
    try:
        result = _scan(state, app, tenant, group, page_size=10, concurrency=1)
        final = state.member_uids(tenant, group)
    finally:
        state.delete_group(tenant, group)
    if isinstance(result, PagingInconsistentError):
        return
    uids = sorted(item["customerUid"] for item in result)
    wrong = set(uids) ^ set(final)
    scenario.note(f"returned {len(uids)} uids, {len(wrong)} wrong ({sorted(wrong)})")
    if wrong:
        scenario.lost(len(set(final) - set(uids)))
    promise(uids == final, f"wrong uids returned without an error: {sorted(wrong)}")


@pytest.fixture(scope="module")
def push_state() -> SimulatorState:
    return make_state(customers=60, groups=1)


@pytest.fixture
def push_conn(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(database_url, autocommit=True) as connection:
        ensure_push_tables(connection)
        yield connection


GHOSTS = ["ghost-1", "ghost-2", "no such customer", "x'; drop table t; --"]


@pytest.mark.reliability(
    area="properties",
    injected="any start membership, segment (with unknown and malformed uids), mode, batch size and server cap per call",
    expected="verified; group = segment minus refused uids (mirror) or start plus them (add_only); refused = unknown uids",
)
@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    start=st.sets(st.integers(0, 59), max_size=25),
    wanted=st.sets(st.integers(0, 59), max_size=25),
    ghosts=st.sets(st.sampled_from(GHOSTS)),
    mode=st.sampled_from(["mirror", "add_only"]),
    batch_size=st.integers(1, 9),
    server_cap=st.integers(1, 9),
)
def test_push_reaches_the_segment_from_any_start_state(
    push_state: SimulatorState,
    push_conn: psycopg.Connection[Any],
    scenario: ScenarioRecord,
    start: set[int],
    wanted: set[int],
    ghosts: set[str],
    mode: str,
    batch_size: int,
    server_cap: int,
) -> None:
    state = push_state
    tenant = tenant_of(state)
    everyone = state.customer_uids(tenant)
    n = next(_counter)
    target = PushTarget(f"seg_{n}", f"prop-push-{n}", "Property", mode=mode, adopt_existing=mode)  # type: ignore[arg-type]
    start_uids = {everyone[i] for i in start}
    segment = {everyone[i] for i in wanted} | ghosts
    state.config.max_uids_per_update = server_cap
    state.create_group(tenant, "Property", target.group_uid)
    state.add_members(tenant, target.group_uid, start_uids)
    try:
        _plan, outcome = run_push(
            state, push_conn, target, segment, run_id=f"run-{n}", batch_size=batch_size, allow=True
        )
        final = set(state.member_uids(tenant, target.group_uid))
    finally:
        state.delete_group(tenant, target.group_uid)
    real = segment - ghosts
    expected = real if mode == "mirror" else start_uids | real
    assert outcome is not None and outcome.verified
    assert set(outcome.rejected) == ghosts
    if final != expected:
        scenario.lost(len(expected - final))
    assert final == expected
    logged = push_conn.execute(
        "SELECT add_uids, remove_uids FROM flowretail.segment_push_log WHERE run_id = %s AND http_status = 204",
        (f"run-{n}",),
    ).fetchall()
    assert {u for r in logged for u in r[0]} == real - start_uids
    assert {u for r in logged for u in r[1]} == (start_uids - real if mode == "mirror" else set())
    assert all(len(r[0]) + len(r[1]) <= min(batch_size, server_cap) for r in logged)
