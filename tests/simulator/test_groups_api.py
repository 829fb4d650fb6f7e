"""Group operations over HTTP: status codes, exact bodies validated against the spec, auth and errors."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest

from pipelines.flowretail.schemas import validator_for
from pipelines.flowretail.simulator import SimulatorState, build_state
from pipelines.flowretail.spec import CREATE_GROUP, GET_GROUP, LIST_GROUPS, RENAME_GROUP
from tests.simulator.helpers import Api, group_with, small_config

T = "tenant-1"


def test_list_groups_default_page(api: Api, state: SimulatorState) -> None:
    response = api.get(f"/tenants/{T}/customer-groups")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    validator_for(LIST_GROUPS).validate(body)
    assert body == {"items": state.groups(T), "paging": {"pageNumber": 1, "pageSize": 50, "totalCount": 8}}


def test_list_groups_pages_and_past_the_end(api: Api, state: SimulatorState) -> None:
    everything = state.groups(T)
    pages = [
        api.get(f"/tenants/{T}/customer-groups", params={"pageNumber": n, "pageSize": 3}).json() for n in (1, 2, 3)
    ]
    assert [g for page in pages for g in page["items"]] == everything
    assert [len(p["items"]) for p in pages] == [3, 3, 2]
    assert all(p["paging"]["pageSize"] == 3 and p["paging"]["totalCount"] == 8 for p in pages)
    past = api.get(f"/tenants/{T}/customer-groups", params={"pageNumber": 4, "pageSize": 3}).json()
    assert past == {"items": [], "paging": {"pageNumber": 4, "pageSize": 3, "totalCount": 8}}


@pytest.mark.parametrize("sort_by", ["customerGroupUid", "name", "createdAt", "lastModifiedAt"])
@pytest.mark.parametrize("direction", ["ASC", "DESC"])
def test_groups_sort_by_every_field(api: Api, state: SimulatorState, sort_by: str, direction: str) -> None:
    state.create_group(T, "Aaa first by name", "zz-last-by-uid")
    expected = sorted(state.groups(T), key=lambda g: (g[sort_by], g["customerGroupUid"]))
    if direction == "DESC":
        expected.reverse()
    served = []
    for number in (1, 2, 3, 4):
        params = {"pageNumber": number, "pageSize": 3, "sortBy": sort_by, "sortDirection": direction}
        body = api.get(f"/tenants/{T}/customer-groups", params=params).json()
        validator_for(LIST_GROUPS).validate(body)
        served.extend(body["items"])
    assert served == expected


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"sortBy": "shoeSize"}, "sortBy 'shoeSize' is not a sortable field; use one of: customerGroupUid, name"),
        ({"sortBy": "customerUid"}, "sortBy 'customerUid'"),
        ({"sortDirection": "asc"}, "sortDirection must be ASC or DESC"),
        ({"pageSize": 0}, "pageSize must be an integer of at least 1"),
        ({"pageSize": "ten"}, "pageSize must be an integer"),
        ({"pageNumber": 0}, "pageNumber must be at least 1"),
        ({"pageNumber": "1.5"}, "pageNumber must be an integer"),
    ],
)
def test_bad_list_parameters_are_400_naming_the_field(api: Api, params: dict[str, Any], fragment: str) -> None:
    response = api.get(f"/tenants/{T}/customer-groups", params=params)
    assert response.status_code == 400
    assert fragment in response.json()["message"]


def test_page_size_is_capped_silently() -> None:
    api = Api(build_state(small_config(page_size_cap=5)))
    body = api.get(f"/tenants/{T}/customer-groups", params={"pageSize": 1000}).json()
    assert body["paging"] == {"pageNumber": 1, "pageSize": 5, "totalCount": 8}
    assert len(body["items"]) == 5


def test_page_base_zero_for_groups() -> None:
    state = build_state(small_config(page_base=0))
    api = Api(state)
    first = api.get(f"/tenants/{T}/customer-groups", params={"pageNumber": 0, "pageSize": 5}).json()
    second = api.get(f"/tenants/{T}/customer-groups", params={"pageNumber": 1, "pageSize": 5}).json()
    assert first["items"] + second["items"] == state.groups(T)
    assert first["paging"]["pageNumber"] == 0
    assert api.get(f"/tenants/{T}/customer-groups", params={"pageNumber": -1}).status_code == 400
    assert api.get(f"/tenants/{T}/customer-groups").json()["paging"]["pageNumber"] == 0


def test_create_with_uid(api: Api, state: SimulatorState) -> None:
    response = api.post(f"/tenants/{T}/customer-groups", json={"name": 'VIP; "quoted"', "customerGroupUid": "vip_2026"})
    assert response.status_code == 201
    body = response.json()
    validator_for(CREATE_GROUP).validate(body)
    assert body["customerGroupUid"] == "vip_2026"
    assert body["name"] == 'VIP; "quoted"'
    assert body["createdBy"] == body["lastModifiedBy"] == "integration"
    assert body["createdAt"] == body["lastModifiedAt"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", body["createdAt"])
    assert state.group(T, "vip_2026") == body
    assert state.member_uids(T, "vip_2026") == []
    assert [g["customerGroupUid"] for g in state.groups(T)][-1] == "vip_2026"


@pytest.mark.parametrize("payload", [{"name": "Generated"}, {"name": "Generated", "customerGroupUid": ""}])
def test_create_without_uid_generates_one(api: Api, state: SimulatorState, payload: dict[str, Any]) -> None:
    response = api.post(f"/tenants/{T}/customer-groups", json=payload)
    assert response.status_code == 201
    uid = response.json()["customerGroupUid"]
    assert str(uuid.UUID(uid)) == uid
    assert state.group(T, uid) == response.json()


def test_generated_uids_are_deterministic_per_seed() -> None:
    first = Api(build_state(small_config())).post(f"/tenants/{T}/customer-groups", json={"name": "x"}).json()
    second = Api(build_state(small_config())).post(f"/tenants/{T}/customer-groups", json={"name": "x"}).json()
    assert first["customerGroupUid"] == second["customerGroupUid"]


@pytest.mark.parametrize(
    ("payload", "status", "fragment"),
    [
        ({"name": "dup", "customerGroupUid": "grp-0001"}, 409, "customer group 'grp-0001' already exists"),
        ({"name": "bad", "customerGroupUid": "a b"}, 400, "customerGroupUid 'a b' is not a valid UID"),
        ({"name": "bad", "customerGroupUid": "ok/../x"}, 400, "is not a valid UID"),
        ({"customerGroupUid": "no-name"}, 400, "request body is invalid at (body)"),
        ({"name": 42}, 400, "request body is invalid at name"),
        ([], 400, "request body is invalid"),
    ],
)
def test_create_refusals(api: Api, state: SimulatorState, payload: Any, status: int, fragment: str) -> None:
    before = state.groups(T)
    response = api.post(f"/tenants/{T}/customer-groups", json=payload)
    assert response.status_code == status
    assert fragment in response.json()["message"]
    assert state.groups(T) == before


def test_create_with_a_body_that_is_not_json(api: Api) -> None:
    response = api.post(f"/tenants/{T}/customer-groups", content=b"name=x", headers={"content-type": "text/plain"})
    assert response.status_code == 400
    assert response.json() == {"message": "request body is not valid JSON"}
    assert api.post(f"/tenants/{T}/customer-groups").json() == {"message": "request body must be a JSON object"}


def test_get_group(api: Api, state: SimulatorState) -> None:
    response = api.get(f"/tenants/{T}/customer-groups/grp-0003")
    assert response.status_code == 200
    validator_for(GET_GROUP).validate(response.json())
    assert response.json() == state.group(T, "grp-0003")
    assert response.json()["name"] == "Topp 100"


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        (f"/tenants/{T}/customer-groups/nope", 404, "customer group 'nope' not found in tenant 'tenant-1'"),
        ("/tenants/tenant-9/customer-groups/grp-0001", 404, "tenant 'tenant-9' not found"),
        ("/tenants/tenant-9/customer-groups", 404, "tenant 'tenant-9' not found"),
        (f"/tenants/{T}/customer-groups/a%2Fb", 400, "customerGroupUid 'a/b' is not a valid UID"),
        (f"/tenants/{T}/customer-groups/a%20b/customers", 400, "customerGroupUid 'a b' is not a valid UID"),
        ("/tenants/t%C3%A9/customer-groups", 400, "tenantUid 'té' is not a valid UID"),
        (f"/tenants/{T}/customer-groups/", 404, "no such endpoint: GET /v2/tenants/tenant-1/customer-groups/"),
        (f"/tenants/{T}/customers", 404, "no such endpoint"),
        ("/", 404, "no such endpoint: GET /v2/"),
    ],
)
def test_lookup_errors(api: Api, path: str, status: int, message: str) -> None:
    response = api.get(path)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert message in response.json()["message"]


def test_wrong_method_is_405_with_allow(api: Api) -> None:
    response = api.call("PATCH", f"/tenants/{T}/customer-groups/grp-0001")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, PUT, DELETE"
    assert response.json() == {"message": "method PATCH not allowed"}


def test_rename(api: Api, state: SimulatorState) -> None:
    before = state.group(T, "grp-0002")
    assert before is not None
    response = api.put(f"/tenants/{T}/customer-groups/grp-0002", json={"name": 'Renamed, "with" quotes\n'})
    assert response.status_code == 200
    body = response.json()
    validator_for(RENAME_GROUP).validate(body)
    assert body["name"] == 'Renamed, "with" quotes\n'
    assert body["lastModifiedBy"] == "integration"
    assert body["lastModifiedAt"] > before["lastModifiedAt"]
    assert (body["createdAt"], body["createdBy"]) == (before["createdAt"], before["createdBy"])
    assert state.group(T, "grp-0002") == body
    assert state.member_uids(T, "grp-0002") == [state.member_uids(T, "grp-0002")[0]]


def test_rename_without_a_name_changes_nothing(api: Api, state: SimulatorState) -> None:
    before = state.group(T, "grp-0002")
    response = api.put(f"/tenants/{T}/customer-groups/grp-0002", json={})
    assert response.status_code == 200
    assert response.json() == before == state.group(T, "grp-0002")


def test_rename_refusals(api: Api) -> None:
    assert api.put(f"/tenants/{T}/customer-groups/nope", json={"name": "x"}).status_code == 404
    response = api.put(f"/tenants/{T}/customer-groups/grp-0002", json={"name": ["x"]})
    assert response.status_code == 400
    assert "request body is invalid at name" in response.json()["message"]


def test_delete(api: Api, state: SimulatorState) -> None:
    group = group_with(state, T, 50)
    members = state.member_uids(T, group)
    assert all(group in state.customer(T, uid)["customerGroupUids"] for uid in members)
    response = api.delete(f"/tenants/{T}/customer-groups/{group}")
    assert response.status_code == 204
    assert response.content == b""
    assert state.group(T, group) is None
    assert all(group not in state.customer(T, uid)["customerGroupUids"] for uid in members)
    assert api.get(f"/tenants/{T}/customer-groups/{group}").status_code == 404
    assert api.get(f"/tenants/{T}/customer-groups/{group}/customers").status_code == 404
    assert api.delete(f"/tenants/{T}/customer-groups/{group}").status_code == 404
    assert len(state.groups(T)) == 7


def test_groups_of_tenants_are_separate(api: Api, state: SimulatorState) -> None:
    api.post("/tenants/tenant-2/customer-groups", json={"name": "only in 2", "customerGroupUid": "only-two"})
    assert state.group("tenant-2", "only-two") is not None
    assert state.group(T, "only-two") is None
    assert api.get(f"/tenants/{T}/customer-groups/only-two").status_code == 404


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic simulator-token"}, {"Authorization": "Bearer"}],
)
def test_requests_without_the_token_are_401(api: Api, state: SimulatorState, headers: dict[str, str]) -> None:
    for method, path in (
        ("GET", f"/tenants/{T}/customer-groups"),
        ("DELETE", f"/tenants/{T}/customer-groups/grp-0001"),
        ("GET", "/nowhere"),
    ):
        response = api.call(method, path, token=None, headers=headers)
        assert response.status_code == 401
        assert response.json() == {"message": "unauthorized: the access token is missing, invalid or revoked"}
    assert state.group(T, "grp-0001") is not None
    assert [r.status for r in state.request_log] == [401, 401, 401]


def test_a_changed_token_is_enforced(api: Api, state: SimulatorState) -> None:
    state.token = "rotated-token"
    assert api.get(f"/tenants/{T}/customer-groups").status_code == 401
    assert api.get(f"/tenants/{T}/customer-groups", token="rotated-token").status_code == 200
