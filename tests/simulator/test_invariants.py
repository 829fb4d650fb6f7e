"""Property test: whatever sequence of changes is applied, memberships and the reverse index agree."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.flowretail.simulator import SimulatorError, build_state
from tests.simulator.helpers import Api, small_config

T = "tenant-1"
CUSTOMERS = [f"cust-{i:07d}" for i in range(0, 40)]
GROUPS = ["grp-0001", "grp-0002", "grp-0003", "extra-a", "extra-b"]

_change: st.SearchStrategy[tuple[str, str, list[str]]] = st.one_of(
    st.tuples(st.just("add"), st.sampled_from(GROUPS), st.lists(st.sampled_from(CUSTOMERS), max_size=6)),
    st.tuples(st.just("remove"), st.sampled_from(GROUPS), st.lists(st.sampled_from(CUSTOMERS), max_size=6)),
    st.tuples(st.just("create"), st.sampled_from(GROUPS), st.just([])),
    st.tuples(st.just("delete"), st.sampled_from(GROUPS), st.just([])),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(changes=st.lists(_change, max_size=12))
def test_memberships_and_customer_group_uids_always_agree(changes: list[tuple[str, str, list[str]]]) -> None:
    state = build_state(small_config(tenants=1, customers=60, groups=4))
    for action, group, uids in changes:
        try:
            if action == "add":
                state.add_members(T, group, uids)
            elif action == "remove":
                state.remove_members(T, group, uids)
            elif action == "create":
                state.create_group(T, f"name of {group}", group)
            else:
                state.delete_group(T, group)
        except SimulatorError as exc:
            assert exc.status in (404, 409)
    expected: dict[str, list[str]] = {uid: [] for uid in state.customer_uids(T)}
    for item in state.groups(T):
        members = state.member_uids(T, item["customerGroupUid"])
        assert members == sorted(set(members))
        for uid in members:
            expected[uid].append(item["customerGroupUid"])
    for uid, groups in expected.items():
        assert state.customer(T, uid)["customerGroupUids"] == groups
    api = Api(state)
    for item in state.groups(T):
        served = api.all_member_pages(T, item["customerGroupUid"], 4, sortDirection="DESC")
        uids = [c["customerUid"] for page in served for c in page["items"]]
        assert uids == state.member_uids(T, item["customerGroupUid"])[::-1]
