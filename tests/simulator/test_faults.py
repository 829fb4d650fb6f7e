"""Fault injection: every scripted outcome, every random family, throttling, revocation and data changes."""

from __future__ import annotations

import asyncio
import email.utils
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest

from pipelines.flowretail.errors import SpecViolationError
from pipelines.flowretail.schemas import validator_for
from pipelines.flowretail.simulator import OUTCOMES, FaultConfig, SimulatedConnectionDrop, SimulatorState, build_state
from pipelines.flowretail.spec import LIST_GROUPS, LIST_MEMBERS, UPDATE_MEMBERS
from tests.simulator.helpers import Api, group_with, small_config

T = "tenant-1"
GROUPS = f"/tenants/{T}/customer-groups"


def _members(group: str) -> str:
    return f"{GROUPS}/{group}/customers"


def test_outcomes_cover_the_documented_list() -> None:
    assert (
        frozenset(
            {
                "429",
                "500",
                "502",
                "503",
                "504",
                "400",
                "401",
                "404",
                "drop",
                "truncate",
                "html",
                "non_utf8",
                "missing_field",
                "wrong_type",
                "bad_enum",
                "no_paging",
                "total_too_low",
                "oversized_page",
                "duplicate_items",
                "bomb",
                "total_too_high",
                "too_many_pages",
            }
        )
        == OUTCOMES
    )


@pytest.mark.parametrize(
    ("outcome", "message"),
    [
        ("400", "bad request (scripted)"),
        ("401", "unauthorized: the access token is missing, invalid or revoked"),
        ("404", "not found (scripted)"),
        ("500", "internal server error"),
        ("502", "bad gateway"),
        ("503", "service unavailable"),
        ("504", "gateway timeout"),
    ],
)
def test_scripted_status_then_back_to_normal(api: Api, state: SimulatorState, outcome: str, message: str) -> None:
    state.script([outcome])
    failed = api.get(GROUPS)
    assert failed.status_code == int(outcome)
    assert failed.json() == {"message": message}
    assert api.get(GROUPS).json()["items"] == state.groups(T)
    assert [r.status for r in state.request_log] == [int(outcome), 200]


@pytest.mark.parametrize(("style", "seconds"), [("seconds", "1"), ("http-date", None), ("none", None)])
def test_scripted_429_writes_retry_after_per_config(
    api: Api, state: SimulatorState, style: str, seconds: str | None
) -> None:
    state.faults.retry_after = style
    state.script(["429"])
    response = api.get(GROUPS)
    assert response.status_code == 429
    assert response.json() == {"message": "too many requests: slow down"}
    header = response.headers.get("retry-after")
    if style == "seconds":
        assert header == seconds
    elif style == "none":
        assert header is None
    else:
        assert header is not None and header.endswith(" GMT")
        delay = (email.utils.parsedate_to_datetime(header) - datetime.now(UTC)).total_seconds()
        assert 0 <= delay <= 2.01


def test_scripted_429_with_explicit_seconds(api: Api, state: SimulatorState) -> None:
    state.script(["429:0", "429:3"])
    assert api.get(GROUPS).headers["retry-after"] == "0"
    assert api.get(GROUPS).headers["retry-after"] == "3"


def test_drop_raises_a_transport_error_after_applying_the_change(api: Api, state: SimulatorState) -> None:
    outsider = next(uid for uid in state.customer_uids(T) if uid not in state.member_uids(T, "grp-0002"))
    state.script(["drop"], operation_id=UPDATE_MEMBERS)
    with pytest.raises(httpx.RemoteProtocolError) as err:
        api.put(_members("grp-0002"), json={"addCustomerUids": [outsider]})
    assert isinstance(err.value, SimulatedConnectionDrop)
    assert isinstance(err.value, httpx.TransportError)
    assert outsider in state.member_uids(T, "grp-0002")
    record = state.request_log[-1]
    assert (record.status, record.operation_id, record.json) == (0, UPDATE_MEMBERS, {"addCustomerUids": [outsider]})


def test_truncate_cuts_a_valid_body_in_half(api: Api, state: SimulatorState) -> None:
    full = api.get(GROUPS).content
    state.script(["truncate"])
    response = api.get(GROUPS)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.content == full[: len(full) // 2]
    # Compressed like every answer; the length on the wire is the compressed one.
    assert int(response.headers["content-length"]) == response.num_bytes_downloaded < len(full) // 2
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(response.content)


def test_truncate_leaves_bodiless_answers_alone(api: Api, state: SimulatorState) -> None:
    state.script(["truncate"], operation_id="delete-customer-groups")
    assert api.delete(f"{GROUPS}/grp-0001").status_code == 204
    assert state.pending_script() == []


def test_slow_answers_late_but_correctly(api: Api, state: SimulatorState) -> None:
    state.script(["slow:0.3"])
    started = time.perf_counter()
    response = api.get(GROUPS)
    assert time.perf_counter() - started >= 0.3
    assert response.json()["items"] == state.groups(T)


def test_html_instead_of_json(api: Api, state: SimulatorState) -> None:
    state.script(["html"])
    response = api.get(GROUPS)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.content.startswith(b"<!DOCTYPE html>")


def test_html_on_a_write_applies_nothing(api: Api, state: SimulatorState) -> None:
    state.script(["html"])
    assert api.post(GROUPS, json={"name": "x", "customerGroupUid": "never"}).status_code == 200
    assert state.group(T, "never") is None


def test_non_utf8_body(api: Api, state: SimulatorState) -> None:
    state.script(["non_utf8"], operation_id=LIST_MEMBERS)
    response = api.get(_members("grp-0003"), params={"pageSize": 5})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    with pytest.raises(UnicodeDecodeError):
        response.content.decode("utf-8")
    assert b'"note": "Bl\xe5b\xe6rsyltet\xf8y"' in response.content


@pytest.mark.parametrize(
    ("outcome", "operation", "field"),
    [
        ("missing_field", LIST_GROUPS, "items[0].name"),
        ("missing_field", LIST_MEMBERS, "items[0].email"),
        ("wrong_type", LIST_GROUPS, "items[0].name"),
        ("wrong_type", LIST_MEMBERS, "items[0].paymentTerms"),
        ("bad_enum", LIST_MEMBERS, "items[0].customerType"),
        ("no_paging", LIST_GROUPS, "paging"),
        ("no_paging", LIST_MEMBERS, "paging"),
    ],
)
def test_spec_breaking_list_bodies_fail_validation_at_the_field(outcome: str, operation: str, field: str) -> None:
    # Without the customers that break the spec on purpose, so the scripted fault is the first error.
    state = build_state(small_config(spec_deviations=False))
    api = Api(state)
    path = GROUPS if operation == LIST_GROUPS else _members("grp-0003")
    state.script([outcome], operation_id=operation)
    body = api.get(path, params={"pageSize": 10}).json()
    with pytest.raises(SpecViolationError) as err:
        validator_for(operation).validate(body, page=1)
    assert err.value.field == field
    if outcome == "bad_enum":
        assert body["items"][0]["customerType"] == "ALIEN"
    validator_for(operation).validate(api.get(path, params={"pageSize": 10}).json())


def test_total_too_low(api: Api, state: SimulatorState) -> None:
    state.script(["total_too_low"], operation_id=LIST_MEMBERS)
    body = api.get(_members("grp-0003"), params={"pageSize": 10}).json()
    assert len(body["items"]) == 10
    assert body["paging"] == {"pageNumber": 1, "pageSize": 10, "totalCount": 9}


def test_oversized_page(api: Api, state: SimulatorState) -> None:
    state.script(["oversized_page"], operation_id=LIST_MEMBERS)
    body = api.get(_members("grp-0003"), params={"pageSize": 10, "pageNumber": 2}).json()
    assert body["paging"] == {"pageNumber": 2, "pageSize": 10, "totalCount": 100}
    assert [i["customerUid"] for i in body["items"]] == state.member_uids(T, "grp-0003")[10:21]


def test_oversized_page_on_a_short_list_pads_with_copies(api: Api, state: SimulatorState) -> None:
    state.script(["oversized_page"], operation_id=LIST_MEMBERS)
    body = api.get(_members("grp-0002"), params={"pageSize": 3}).json()
    assert body["paging"]["pageSize"] == 3
    assert len(body["items"]) == 4
    assert len({i["customerUid"] for i in body["items"]}) == 1


def test_duplicate_items(api: Api, state: SimulatorState) -> None:
    state.script(["duplicate_items"], operation_id=LIST_GROUPS)
    body = api.get(GROUPS, params={"pageSize": 4}).json()
    assert [g["customerGroupUid"] for g in body["items"]] == ["grp-0001", "grp-0002", "grp-0003", "grp-0001"]
    assert body["paging"]["totalCount"] == 8


def test_scripted_outcomes_match_their_operation_in_order(api: Api, state: SimulatorState) -> None:
    state.script(["503", "500"], operation_id=LIST_MEMBERS)
    state.script(["502"])
    assert api.get(_members("grp-0003")).status_code == 503
    assert api.get(GROUPS).status_code == 502
    assert api.get(GROUPS).status_code == 200
    assert state.pending_script() == [("500", LIST_MEMBERS)]
    state.clear_script()
    assert api.get(_members("grp-0003")).status_code == 200


def test_unknown_outcomes_are_refused(state: SimulatorState) -> None:
    for bad in ("418", "slow", "slow:x", "slow:-1", "drop:1", "teapot"):
        with pytest.raises(ValueError, match="outcome"):
            state.script([bad])
    assert state.pending_script() == []


def test_scripted_outcomes_come_after_authentication(api: Api, state: SimulatorState) -> None:
    state.script(["500"])
    assert api.get(GROUPS, token="wrong").status_code == 401
    assert api.get(GROUPS).status_code == 500


def _statuses(api: Api, count: int, path: str = GROUPS) -> list[int]:
    async def main() -> list[int]:
        out = []
        async with api.client() as client:
            for _ in range(count):
                try:
                    out.append((await client.get(path)).status_code)
                except httpx.RemoteProtocolError:
                    out.append(0)
        return out

    return asyncio.run(main())


def test_random_errors_use_every_5xx_and_follow_the_seed(api: Api, state: SimulatorState) -> None:
    state.faults = FaultConfig(error_rate=1.0, seed=3)
    statuses = _statuses(api, 40)
    assert set(statuses) == {500, 502, 503, 504}
    state.faults = FaultConfig(error_rate=0.5, seed=11)
    first = _statuses(api, 60)
    state.faults = FaultConfig(error_rate=0.5, seed=11)
    assert _statuses(api, 60) == first
    assert 15 <= sum(1 for s in first if s != 200) <= 45
    state.faults.error_rate = 0.0
    assert set(_statuses(api, 5)) == {200}


def test_random_drops_and_truncations(api: Api, state: SimulatorState) -> None:
    state.faults.drop_rate = 1.0
    assert _statuses(api, 5) == [0] * 5
    assert [r.status for r in state.request_log[-5:]] == [0] * 5
    state.faults.drop_rate = 0.0
    state.faults.truncate_rate = 1.0
    response = api.get(GROUPS)
    assert response.status_code == 200
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(response.content)


def test_random_faults_only_hit_the_listed_operations(api: Api, state: SimulatorState) -> None:
    state.faults = FaultConfig(error_rate=1.0, faulty_operations={LIST_MEMBERS})
    assert set(_statuses(api, 5)) == {200}
    assert set(_statuses(api, 5, _members("grp-0003"))) <= {500, 502, 503, 504}


def test_latency_and_jitter(api: Api, state: SimulatorState) -> None:
    state.faults = FaultConfig(latency_ms=60, latency_jitter_ms=20)
    started = time.perf_counter()
    _statuses(api, 3)
    assert time.perf_counter() - started >= 0.18


def test_rate_limit_bucket_answers_429_with_a_retry_after(api: Api, state: SimulatorState) -> None:
    state.faults = FaultConfig(rate_limit_rps=5)
    statuses = _statuses(api, 8)
    assert statuses == [200] * 5 + [429] * 3
    limited = api.get(GROUPS)
    assert limited.status_code == 429 and limited.headers["retry-after"] == "1"
    time.sleep(0.25)
    assert api.get(GROUPS).status_code == 200
    state.faults.retry_after = "none"
    state.faults.rate_limit_rps = 1
    assert _statuses(api, 3)[1:] == [429, 429]
    assert "retry-after" not in api.get(GROUPS).headers
    state.faults.rate_limit_rps = None
    assert set(_statuses(api, 10)) == {200}


def test_revoked_token_after_n_requests(api: Api, state: SimulatorState) -> None:
    state.faults.revoke_token_after = 3
    assert _statuses(api, 5) == [200, 200, 200, 401, 401]
    state.faults.revoke_token_after = None
    assert _statuses(api, 2) == [200, 200]
    state.faults = FaultConfig(revoke_token_after=1)
    assert _statuses(api, 2) == [200, 401]


def test_mutate_scans_shifts_pages_between_the_first_and_second_page(api: Api, state: SimulatorState) -> None:
    group = group_with(state, T, 200)
    before = state.member_uids(T, group)
    small = "grp-0002"
    state.faults.mutate_scans = 1
    api.get(_members(small), params={"pageSize": 50})
    assert state.faults.mutate_scans == 1, "a one-page list has no second page to disturb"
    page1 = api.get(_members(group), params={"pageNumber": 1, "pageSize": 50}).json()
    assert [i["customerUid"] for i in page1["items"]] == before[:50]
    assert state.faults.mutate_scans == 0
    after = state.member_uids(T, group)
    assert after == ["0-scan-999998", *before[:-1]]
    page2 = api.get(_members(group), params={"pageNumber": 2, "pageSize": 50}).json()
    assert page2["items"][0]["customerUid"] == before[49], "the last item of page 1 is served again"
    assert page2["paging"]["totalCount"] == page1["paging"]["totalCount"] == len(before)
    newcomer = state.customer(T, "0-scan-999998")
    assert newcomer["customerGroupUids"] == [group]
    validator_for(LIST_MEMBERS).validate({"items": [newcomer], "paging": page1["paging"]})
    assert group not in state.customer(T, before[-1])["customerGroupUids"]
    api.get(_members(group), params={"pageNumber": 1, "pageSize": 50})
    assert state.member_uids(T, group) == after


def test_mutate_scans_counts_down_over_several_scans(api: Api, state: SimulatorState) -> None:
    group = group_with(state, T, 200)
    state.faults.mutate_scans = 2
    for _ in range(3):
        api.get(_members(group), params={"pageNumber": 1, "pageSize": 50})
    assert state.member_uids(T, group)[:2] == ["0-scan-999997", "0-scan-999998"]
    assert state.faults.mutate_scans == 0


def test_delete_groups_after_the_last_page_of_the_group_list(api: Api, state: SimulatorState) -> None:
    state.faults.delete_groups_after_list = 2
    listed = []
    for number in (1, 2):
        listed += api.get(GROUPS, params={"pageNumber": number, "pageSize": 5}).json()["items"]
        if number == 1:
            assert len(state.groups(T)) == 8
    assert [g["customerGroupUid"] for g in listed] == [f"grp-{i:04d}" for i in range(1, 9)]
    assert [g["customerGroupUid"] for g in state.groups(T)] == [f"grp-{i:04d}" for i in range(1, 7)]
    assert state.faults.delete_groups_after_list == 0
    for gone in ("grp-0007", "grp-0008"):
        assert api.get(_members(gone)).status_code == 404
        assert api.get(f"{GROUPS}/{gone}").status_code == 404
    api.get(GROUPS)
    assert len(state.groups(T)) == 6


def test_faults_do_not_fire_data_changes_on_faulted_answers(api: Api, state: SimulatorState) -> None:
    state.faults.delete_groups_after_list = 1
    state.script(["503"])
    api.get(GROUPS)
    assert len(state.groups(T)) == 8


def test_request_log_records_everything_without_the_token() -> None:
    state = build_state(small_config())
    state.token = "very-secret-token-123"
    api = Api(state)
    state.script(["503"])
    api.get(GROUPS, token="very-secret-token-123", params={"pageSize": 2})
    api.get(GROUPS, token="very-secret-token-123", params={"pageSize": 2})
    api.post(GROUPS, token="very-secret-token-123", json={"name": "n", "customerGroupUid": "g1"})
    api.get(GROUPS, token="wrong")
    records = state.request_log
    assert [(r.method, r.path, r.operation_id, r.status) for r in records] == [
        ("GET", "/v2/tenants/tenant-1/customer-groups", LIST_GROUPS, 503),
        ("GET", "/v2/tenants/tenant-1/customer-groups", LIST_GROUPS, 200),
        ("POST", "/v2/tenants/tenant-1/customer-groups", "post-customer-groups", 201),
        ("GET", "/v2/tenants/tenant-1/customer-groups", LIST_GROUPS, 401),
    ]
    assert records[0].query == {"pageSize": "2"}
    assert records[2].json == {"name": "n", "customerGroupUid": "g1"}
    assert records[0].json is None
    assert all(r.at.tzinfo is not None for r in records)
    assert records[0].at <= records[-1].at
    assert "very-secret-token-123" not in repr(records) + repr(state)
    state.clear_log()
    assert state.request_log == []


def test_the_token_never_appears_in_any_answer() -> None:
    state = build_state(small_config())
    state.token = "very-secret-token-123"
    api = Api(state)
    bodies: list[Any] = []
    for outcome in ("401", "429", "500", "400", "404"):
        state.script([outcome])
        bodies.append(api.get(GROUPS, token="very-secret-token-123").content)
    bodies.append(api.get(GROUPS, token="not-it").content)
    bodies.append(api.get(GROUPS, token="very-secret-token-123", params={"sortBy": "x"}).content)
    assert all(b"very-secret-token-123" not in body for body in bodies)
