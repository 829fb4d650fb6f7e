"""Member lists and member updates over HTTP: paging, sorting, set semantics, atomicity, the reverse index."""

from __future__ import annotations

from typing import Any

import pytest

from pipelines.flowretail.errors import SpecViolationError
from pipelines.flowretail.schemas import validator_for
from pipelines.flowretail.simulator import SimulatorError, SimulatorState, build_state
from pipelines.flowretail.spec import LIST_MEMBERS
from tests.simulator.helpers import Api, group_with, small_config, validate_page

T = "tenant-1"


def _uids(pages: list[dict[str, Any]]) -> list[str]:
    return [item["customerUid"] for page in pages for item in page["items"]]


def _put_members(api: Api, group: str, add: list[str] | None = None, remove: list[str] | None = None) -> Any:
    payload: dict[str, Any] = {}
    if add is not None:
        payload["addCustomerUids"] = add
    if remove is not None:
        payload["removeCustomerUids"] = remove
    return api.put(f"/tenants/{T}/customer-groups/{group}/customers", json=payload)


@pytest.mark.parametrize("page_base", [0, 1])
def test_paging_walks_every_member_once(page_base: int) -> None:
    state = build_state(small_config(page_base=page_base))
    api = Api(state)
    group = group_with(state, T, 120)
    members = state.member_uids(T, group)
    pages = api.all_member_pages(T, group, 7)
    assert _uids(pages) == members
    assert [p["paging"]["pageNumber"] for p in pages] == list(range(page_base, page_base + len(pages)))
    assert {p["paging"]["totalCount"] for p in pages} == {len(members)}
    assert {p["paging"]["pageSize"] for p in pages} == {7}
    assert len(pages) == -(-len(members) // 7)
    assert len(pages[-1]["items"]) == len(members) - 7 * (len(pages) - 1)
    for page in pages:
        validate_page(LIST_MEMBERS, page)
        assert page["items"] == [state.customer(T, item["customerUid"]) for item in page["items"]]
    past = api.members_page(T, group, pageNumber=page_base + 10_000, pageSize=7).json()
    assert past == {
        "items": [],
        "paging": {"pageNumber": page_base + 10_000, "pageSize": 7, "totalCount": len(members)},
    }


def test_page_size_cap_and_default_page_size() -> None:
    state = build_state(small_config(page_size_cap=25, default_page_size=20))
    api = Api(state)
    group = group_with(state, T, 100)
    capped = api.members_page(T, group, pageSize=100).json()
    assert capped["paging"]["pageSize"] == 25 and len(capped["items"]) == 25
    default = api.members_page(T, group).json()
    assert default["paging"] == {"pageNumber": 1, "pageSize": 20, "totalCount": len(state.member_uids(T, group))}
    assert [i["customerUid"] for i in default["items"]] == state.member_uids(T, group)[:20]


def test_empty_and_single_member_groups(api: Api, state: SimulatorState) -> None:
    empty = api.members_page(T, "grp-0001").json()
    assert empty == {"items": [], "paging": {"pageNumber": 1, "pageSize": 50, "totalCount": 0}}
    single = api.members_page(T, "grp-0002").json()
    assert single["paging"]["totalCount"] == 1
    assert [i["customerUid"] for i in single["items"]] == state.member_uids(T, "grp-0002")
    hundred = api.members_page(T, "grp-0003", pageSize=100).json()
    assert len(hundred["items"]) == 100 == hundred["paging"]["totalCount"]


@pytest.mark.parametrize("sort_by", ["customerUid", "lastname", "firstname", "createdAt"])
@pytest.mark.parametrize("direction", ["ASC", "DESC"])
def test_members_sort_by_every_field(api: Api, state: SimulatorState, sort_by: str, direction: str) -> None:
    group = group_with(state, T, 150)
    customers = [state.customer(T, uid) for uid in state.member_uids(T, group)]
    expected = [c["customerUid"] for c in sorted(customers, key=lambda c: (c[sort_by], c["customerUid"]))]
    if direction == "DESC":
        expected.reverse()
    pages = api.all_member_pages(T, group, 40, sortBy=sort_by, sortDirection=direction)
    assert _uids(pages) == expected


def test_sorting_follows_out_of_band_changes(api: Api, state: SimulatorState) -> None:
    group = group_with(state, T, 150)
    last = state.member_uids(T, group)[-1]
    before = api.members_page(T, group, sortBy="lastname", sortDirection="DESC", pageSize=1).json()["items"][0]
    assert before["customerUid"] != last
    state.update_customer(T, last, lastname="\u00ff sorts last")
    first = api.members_page(T, group, sortBy="lastname", sortDirection="DESC", pageSize=1).json()["items"][0]
    assert first["customerUid"] == last and first["lastname"] == "\u00ff sorts last"


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"sortBy": "email"}, "sortBy 'email' is not a sortable field; use one of: customerUid, lastname, firstname"),
        ({"sortBy": "name"}, "sortBy 'name'"),
        ({"sortDirection": "DOWN"}, "sortDirection must be ASC or DESC, got 'DOWN'"),
        ({"pageSize": -5}, "pageSize must be an integer of at least 1, got -5"),
    ],
)
def test_bad_member_list_parameters(api: Api, params: dict[str, Any], fragment: str) -> None:
    response = api.members_page(T, "grp-0003", **params)
    assert response.status_code == 400
    assert fragment in response.json()["message"]


def test_add_and_remove_with_set_semantics(api: Api, state: SimulatorState) -> None:
    outsiders = [uid for uid in state.customer_uids(T) if not state.customer(T, uid)["customerGroupUids"]][:3]
    group = "grp-0002"
    original = state.member_uids(T, group)
    response = _put_members(api, group, add=[*outsiders, outsiders[0]])
    assert response.status_code == 204 and response.content == b""
    assert state.member_uids(T, group) == sorted([*original, *outsiders])
    assert _put_members(api, group, add=outsiders[:1]).status_code == 204
    assert state.member_uids(T, group) == sorted([*original, *outsiders])
    for uid in outsiders:
        assert state.customer(T, uid)["customerGroupUids"] == [group]
    assert _put_members(api, group, remove=[outsiders[1], outsiders[1]], add=[]).status_code == 204
    assert _put_members(api, group, remove=[outsiders[1]]).status_code == 204
    assert state.member_uids(T, group) == sorted([*original, outsiders[0], outsiders[2]])
    assert state.customer(T, outsiders[1])["customerGroupUids"] == []
    served = api.members_page(T, group, pageSize=10).json()
    assert [i["customerUid"] for i in served["items"]] == sorted([*original, outsiders[0], outsiders[2]])
    assert all(group in i["customerGroupUids"] for i in served["items"])


def test_empty_update_is_a_no_op(api: Api, state: SimulatorState) -> None:
    before = state.member_uids(T, "grp-0003")
    assert _put_members(api, "grp-0003").status_code == 204
    assert _put_members(api, "grp-0003", add=[], remove=[]).status_code == 204
    assert state.member_uids(T, "grp-0003") == before


def test_unknown_uids_reject_the_whole_call(api: Api, state: SimulatorState) -> None:
    group = "grp-0003"
    before = state.member_uids(T, group)
    outsider = next(uid for uid in state.customer_uids(T) if uid not in before)
    only_in_other_tenant = state.add_customer("tenant-2", "only-in-two")["customerUid"]
    bad = ["no-such-customer", "a b", "", "cust-9999999", only_in_other_tenant, "no-such-customer"]
    response = _put_members(api, group, add=[outsider, *bad[:3]], remove=[before[0], *bad[3:]])
    assert response.status_code == 400
    body = response.json()
    assert body["invalidCustomerUids"] == ["no-such-customer", "a b", "", "cust-9999999", "only-in-two"]
    assert body["message"] == "5 customer uid(s) are not customers of tenant 'tenant-1'; nothing was changed"
    assert state.member_uids(T, group) == before
    assert group not in state.customer(T, outsider)["customerGroupUids"]
    assert group in state.customer(T, before[0])["customerGroupUids"]


def test_too_many_uids_in_one_update() -> None:
    state = build_state(small_config(max_uids_per_update=4))
    api = Api(state)
    uids = state.customer_uids(T)
    assert _put_members(api, "grp-0001", add=uids[:2], remove=uids[2:4]).status_code == 204
    response = _put_members(api, "grp-0001", add=uids[:3], remove=uids[3:5])
    assert response.status_code == 400
    assert response.json() == {"message": "too many customer uids in one update: 5 (at most 4)"}
    assert state.member_uids(T, "grp-0001") == uids[:2]


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ({"addCustomerUids": "cust-0000001"}, "request body is invalid at addCustomerUids"),
        ({"removeCustomerUids": [1, 2]}, "request body is invalid at removeCustomerUids.0"),
        (
            {"addCustomerUids": ["cust-0000001"], "removeCustomerUids": ["cust-0000001"]},
            "listed in both addCustomerUids and removeCustomerUids: cust-0000001",
        ),
        (["cust-0000001"], "request body is invalid at (body)"),
    ],
)
def test_malformed_member_updates(api: Api, state: SimulatorState, payload: Any, fragment: str) -> None:
    before = state.member_uids(T, "grp-0001")
    response = api.put(f"/tenants/{T}/customer-groups/grp-0001/customers", json=payload)
    assert response.status_code == 400
    assert fragment in response.json()["message"]
    assert "invalidCustomerUids" not in response.json()
    assert state.member_uids(T, "grp-0001") == before


def test_member_update_on_unknown_group_or_tenant(api: Api) -> None:
    assert _put_members(api, "nope", add=["cust-0000001"]).status_code == 404
    response = api.put("/tenants/nope/customer-groups/grp-0001/customers", json={})
    assert response.status_code == 404
    assert response.json() == {"message": "tenant 'nope' not found"}


def test_delete_keeps_the_reverse_index_in_step(api: Api, state: SimulatorState) -> None:
    group = group_with(state, T, 100)
    members = state.member_uids(T, group)
    groups_before = {uid: state.customer(T, uid)["customerGroupUids"] for uid in members}
    assert api.delete(f"/tenants/{T}/customer-groups/{group}").status_code == 204
    for uid in members:
        assert state.customer(T, uid)["customerGroupUids"] == [g for g in groups_before[uid] if g != group]
    api.post(f"/tenants/{T}/customer-groups", json={"name": "again", "customerGroupUid": group})
    assert state.member_uids(T, group) == []
    assert api.members_page(T, group, sortBy="lastname").json()["items"] == []


def test_out_of_band_mutators_share_the_rules(state: SimulatorState) -> None:
    new = state.add_customer(T)
    assert new["customerUid"] == "cust-0000600"
    assert new["customerGroupUids"] == []
    assert state.customer_uids(T)[-1] == "cust-0000600"
    named = state.add_customer(T, "walk-in_1")
    validator_for(LIST_MEMBERS).validate(
        {"items": [new, named], "paging": {"pageNumber": 1, "pageSize": 2, "totalCount": 2}}
    )
    state.add_members(T, "grp-0001", ["walk-in_1", "cust-0000600"])
    assert state.member_uids(T, "grp-0001") == ["cust-0000600", "walk-in_1"]
    assert state.customer(T, "walk-in_1")["customerGroupUids"] == ["grp-0001"]
    state.remove_members(T, "grp-0001", ["walk-in_1"])
    assert state.customer(T, "walk-in_1")["customerGroupUids"] == []
    with pytest.raises(SimulatorError) as err:
        state.add_members(T, "grp-0001", ["ghost"])
    assert (err.value.status, err.value.extra) == (400, {"invalidCustomerUids": ["ghost"]})
    with pytest.raises(SimulatorError) as conflict:
        state.add_customer(T, "walk-in_1")
    assert conflict.value.status == 409
    with pytest.raises(SimulatorError, match="already exists"):
        state.create_group(T, "dup", "grp-0001")
    renamed = state.rename_group(T, "grp-0001", "Back office name")
    assert renamed["lastModifiedBy"] == "backoffice@flowretail.example"


def test_update_customer_bumps_last_modified_and_is_served(api: Api, state: SimulatorState) -> None:
    uid = state.member_uids(T, "grp-0003")[0]
    before = state.customer(T, uid)
    after = state.update_customer(T, uid, email="ny@epost.no", credit={"limit": 1000, "balance": 990})
    assert after["email"] == "ny@epost.no" and after["credit"] == {"limit": 1000, "balance": 990}
    assert after["lastModifiedAt"] > before["lastModifiedAt"]
    assert {k: v for k, v in after.items() if k not in ("email", "credit", "lastModifiedAt")} == {
        k: v for k, v in before.items() if k not in ("email", "credit", "lastModifiedAt")
    }
    served = api.members_page(T, "grp-0003", pageSize=1).json()["items"][0]
    assert served == after
    again = state.update_customer(T, uid, firstname="Kari")
    assert again["email"] == "ny@epost.no" and again["firstname"] == "Kari"
    with pytest.raises(ValueError, match="unknown customer field"):
        state.update_customer(T, uid, shoeSize=44)
    with pytest.raises(ValueError, match="derives them"):
        state.update_customer(T, uid, customerGroupUids=[])
    with pytest.raises(SpecViolationError):
        state.update_customer(T, uid, customerType="ALIEN")
    assert state.customer(T, uid) == again
