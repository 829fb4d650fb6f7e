"""The generated data: deterministic, shaped like a real tenant, spec-valid and deliberately hostile."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import pytest

from pipelines.flowretail import spec
from pipelines.flowretail.deviations import deviation_record, remove_nul
from pipelines.flowretail.schemas import validator_for
from pipelines.flowretail.simulator import FaultConfig, SimulatorConfig, SimulatorState, build_state
from pipelines.flowretail.simulator.data import HOSTILE_GROUP_NAMES, HOSTILE_VALUES, LONG_VALUE
from pipelines.flowretail.spec import LIST_MEMBERS, load_spec
from tests.simulator.helpers import DEVIANT_UIDS, Api, small_config, validate_page

CUSTOMER_UID = re.compile(r"cust-\d{7}")
RFC3339_MS_Z = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


@pytest.fixture(scope="module")
def default_state() -> SimulatorState:
    return build_state(SimulatorConfig())


def _all_customers(state: SimulatorState, tenant: str) -> list[dict[str, Any]]:
    return [state.customer(tenant, uid) for uid in state.customer_uids(tenant)]


def _polite_customers(state: SimulatorState, tenant: str) -> list[dict[str, Any]]:
    """Every customer but the five that break the spec on purpose (tested on their own below)."""
    return [c for c in _all_customers(state, tenant) if c["customerUid"] not in DEVIANT_UIDS]


def _validate_customers(customers: list[dict[str, Any]]) -> None:
    validator = validator_for(LIST_MEMBERS)
    for start in range(0, len(customers), 500):
        chunk = customers[start : start + 500]
        validator.validate({"items": chunk, "paging": {"pageNumber": 1, "pageSize": 500, "totalCount": len(chunk)}})


def test_the_operations_the_code_names_are_in_the_spec() -> None:
    named = (spec.LIST_GROUPS, spec.CREATE_GROUP, spec.GET_GROUP, spec.RENAME_GROUP, spec.DELETE_GROUP)
    assert {*named, spec.LIST_MEMBERS, spec.UPDATE_MEMBERS} <= set(spec.operations())


def test_default_config_shape(default_state: SimulatorState) -> None:
    state = default_state
    assert state.tenant_uids() == ["tenant-1", "tenant-2"]
    assert state.token == "simulator-token"
    for tenant in state.tenant_uids():
        groups = state.groups(tenant)
        assert [g["customerGroupUid"] for g in groups] == [f"grp-{i:04d}" for i in range(1, 13)]
        sizes = [len(state.member_uids(tenant, g["customerGroupUid"])) for g in groups]
        assert sizes[:3] == [0, 1, 100]
        # 3/4 of the 1,900 customers that may be grouped, plus the hostile customers (14) and the
        # five that break the spec forced in.
        assert 1425 <= sizes[3] <= 1425 + 14 + 5
        assert len(set(sizes[4:])) > 4, "the other groups must have uneven sizes"
        customers = state.customer_uids(tenant)
        assert len(customers) == 2000
        assert customers[0] == "cust-0000000" and customers[-1] == "cust-0001999"
        assert all(CUSTOMER_UID.fullmatch(uid) for uid in customers)
        memberships = sum(sizes)
        assert 2.3 * 2000 <= memberships <= 2.6 * 2000
        ungrouped = [uid for uid in customers if not state.customer(tenant, uid)["customerGroupUids"]]
        assert {f"cust-{i:07d}" for i in range(19, 2000, 20)} <= set(ungrouped)


def test_same_seed_gives_the_same_data_and_another_seed_does_not() -> None:
    config = small_config(customers=900, groups=9)
    first, second = build_state(config), build_state(config)
    other = build_state(small_config(customers=900, groups=9, seed=7))
    for tenant in first.tenant_uids():
        assert first.groups(tenant) == second.groups(tenant)
        for group in first.groups(tenant):
            uid = group["customerGroupUid"]
            assert first.member_uids(tenant, uid) == second.member_uids(tenant, uid)
        assert _all_customers(first, tenant) == _all_customers(second, tenant)
    assert _all_customers(first, "tenant-1") != _all_customers(other, "tenant-1")
    assert first.member_uids("tenant-1", "grp-0005") != other.member_uids("tenant-1", "grp-0005")
    assert _all_customers(first, "tenant-1") != _all_customers(first, "tenant-2")


# How customers 13..17 break the spec (data.SPEC_DEVIATIONS), as the tolerant validation sees them.
EXPECTED_DEVIATIONS = {
    "cust-0000013": {"email": "null", "mobile": "null", "credit": "null"},
    "cust-0000014": {"postalCode": "type", "paymentTerms": "type", "ehfEnabled": "type", "relevance": "type"},
    "cust-0000015": {"addresses.type": "enum"},
    "cust-0000016": {"firstname": "nul_removed", "ehf.address": "nul_removed"},
    "cust-0000017": {"email": "missing", "credit": "missing"},
}


def test_every_customer_validates_against_the_spec_but_the_five_that_break_it_on_purpose(
    default_state: SimulatorState,
) -> None:
    for tenant in default_state.tenant_uids():
        customers = _all_customers(default_state, tenant)
        deviant = [c for c in customers if c["customerUid"] in EXPECTED_DEVIATIONS]
        _validate_customers([c for c in customers if c["customerUid"] not in EXPECTED_DEVIATIONS])
        body = {"items": deviant, "paging": {"pageNumber": 1, "pageSize": 5, "totalCount": 5}}
        found = validator_for(LIST_MEMBERS).check(body)
        found += remove_nul(LIST_MEMBERS, deviant, 1, strict=False)
        record = deviation_record(found)
        assert {deviant[i]["customerUid"]: record[i] for i in record} == EXPECTED_DEVIATIONS
        assert deviant[3]["firstname"].count("\x00") == 0 and "\x00" not in str(deviant[3]["ehf"])


def test_spec_deviations_can_be_switched_off() -> None:
    state = build_state(small_config(tenants=1, spec_deviations=False))
    _validate_customers(_all_customers(state, "tenant-1"))


def test_every_required_field_is_filled_with_the_right_shape(default_state: SimulatorState) -> None:
    required = load_spec()["components"]["schemas"]["CustomerResponseSchema"]["required"]
    customers = _polite_customers(default_state, "tenant-1")
    for customer in customers:
        assert set(required) <= set(customer)
        assert RFC3339_MS_Z.fullmatch(customer["createdAt"])
        assert customer["createdAt"] <= customer["lastModifiedAt"]
        assert isinstance(customer["relevance"], float)
        assert isinstance(customer["paymentTerms"], int)
    assert {c["countryCode"] for c in customers} == {"NO", "SE", "DK", "FI"}
    assert {c["customerType"] for c in customers} == {"PERSON", "COMPANY", "B2B"}
    assert Counter(c["customerType"] for c in customers).most_common(1)[0][0] == "PERSON"


def test_customers_look_like_nordic_retail(default_state: SimulatorState) -> None:
    customers = _polite_customers(default_state, "tenant-1")
    prefixes = {"NO": "+47", "SE": "+46", "DK": "+45", "FI": "+358"}
    for customer in customers:
        if customer["mobile"]:
            assert re.fullmatch(re.escape(prefixes[customer["countryCode"]]) + r" ?[\d ]{7,12}", customer["mobile"])
        if customer["customerType"] != "PERSON" and customer["companyName"] not in HOSTILE_VALUES:
            assert customer["vatNumber"].startswith(customer["countryCode"])
        if customer["customerType"] == "PERSON":
            assert customer["vatNumber"] == "" and customer["companyName"] == ""
    norwegian = [c for c in customers if c["countryCode"] == "NO" and c["postalCode"]]
    assert all(re.fullmatch(r"\d{4}", c["postalCode"]) for c in norwegian)
    swedish = [c for c in customers if c["countryCode"] == "SE" and c["postalCode"]]
    assert all(re.fullmatch(r"\d{3} \d{2}", c["postalCode"]) for c in swedish)
    assert any("@" in c["email"] for c in customers) and any(c["email"] == "" for c in customers)
    assert {c["city"] for c in customers} >= {"Oslo", "Stockholm", "Helsinki"}


def test_companies_departments_credit_consents_and_optional_parts(default_state: SimulatorState) -> None:
    tenant = "tenant-1"
    customers = {c["customerUid"]: c for c in _polite_customers(default_state, tenant)}
    departments = [c for c in customers.values() if c["customerParentUid"]]
    assert departments, "some companies must be departments of another company"
    for department in departments:
        parent = customers[department["customerParentUid"]]
        assert department["customerType"] == "COMPANY" == parent["customerType"]
        assert parent["customerParentUid"] == ""
    companies = [c for c in customers.values() if c["customerType"] != "PERSON"]
    persons = [c for c in customers.values() if c["customerType"] == "PERSON"]
    assert sum(1 for p in persons if p["credit"]["limit"] == 0) > 0.9 * len(persons)
    with_credit = [c for c in companies if c["credit"]["limit"] > 0]
    assert len(with_credit) > 0.5 * len(companies)
    assert any(c["credit"]["balance"] > 0.8 * c["credit"]["limit"] for c in with_credit)
    assert any(c["paymentTerms"] > 0 for c in companies) and all(p["paymentTerms"] == 0 for p in persons)
    assert any(c["accountManager"]["tenantUserUid"] for c in companies)
    assert any(c["ehf"] == {"enabled": True, "address": c["ehf"]["address"]} for c in companies)
    assert any(c["defaultStore"] is None for c in customers.values())
    assert any(isinstance(c["defaultStore"], dict) for c in customers.values())
    assert any(c["contacts"] for c in companies) and any(c["addresses"] for c in customers.values())
    assert any(c["extensions"] for c in companies)
    assert any(c["pricelistUid"] == "" for c in customers.values())
    assert any(c["pricelistUid"] != "" for c in customers.values())
    names = {entry["name"] for c in customers.values() for entry in c["consents"]}
    assert names == {"newsletter", "sms", "email_marketing"}
    changed = [c for c in customers.values() if any(n > 1 for n in Counter(e["name"] for e in c["consents"]).values())]
    assert changed, "some customers must have changed a consent over time"
    for customer in changed:
        history = [e for e in customer["consents"] if e["name"] == customer["consents"][0]["name"]]
        assert [e["createdAt"] for e in history] == sorted(e["createdAt"] for e in history)


def test_customer_group_uids_are_exactly_the_memberships(default_state: SimulatorState) -> None:
    tenant = "tenant-2"
    expected: dict[str, list[str]] = {uid: [] for uid in default_state.customer_uids(tenant)}
    for group in default_state.groups(tenant):
        for uid in default_state.member_uids(tenant, group["customerGroupUid"]):
            expected[uid].append(group["customerGroupUid"])
    for uid, groups in expected.items():
        assert default_state.customer(tenant, uid)["customerGroupUids"] == groups


def test_hostile_strings_are_served_to_anyone_loading_the_big_group(default_state: SimulatorState) -> None:
    api = Api(default_state)
    served = [item for page in api.all_member_pages("tenant-1", "grp-0004", 1000) for item in page["items"]]
    values = {item[key] for item in served for key in ("lastname", "address", "internalNote", "firstname")}
    for hostile in HOSTILE_VALUES:
        assert hostile in values, f"{hostile[:30]!r} is not served"
    assert len(LONG_VALUE) == 5000
    by_uid = {item["customerUid"]: item for item in served}
    assert by_uid["cust-0000006"]["lastname"] == "\\N"
    assert by_uid["cust-0000007"]["lastname"] == "NULL"
    assert by_uid["cust-0000009"]["internalNote"] == LONG_VALUE
    assert by_uid["cust-0000010"]["firstname"] == "" == by_uid["cust-0000010"]["email"]
    assert "\t" in by_uid["cust-0000003"]["lastname"] and "\n" in by_uid["cust-0000004"]["address"]
    names = [g["name"] for g in default_state.groups("tenant-1")]
    assert names[4:6] == HOSTILE_GROUP_NAMES


def test_hostile_strings_can_be_switched_off() -> None:
    state = build_state(small_config(tenants=1, hostile_strings=False, spec_deviations=False))
    customers = _all_customers(state, "tenant-1")
    texts = {c[key] for c in customers for key in ("lastname", "address", "internalNote", "city")}
    assert not texts & (set(HOSTILE_VALUES) - {""})
    assert not {g["name"] for g in state.groups("tenant-1")} & set(HOSTILE_GROUP_NAMES)
    _validate_customers(customers)


def test_a_100k_customer_tenant_builds_and_serves_a_page() -> None:
    state = build_state(SimulatorConfig(tenants=1, customers=100_000, groups=100))
    tenant = state.tenant_uids()[0]
    sizes = {g["customerGroupUid"]: len(state.member_uids(tenant, g["customerGroupUid"])) for g in state.groups(tenant)}
    assert len(sizes) == 100
    assert [sizes["grp-0001"], sizes["grp-0002"], sizes["grp-0003"]] == [0, 1, 100]
    assert 5000 <= sizes["grp-0004"] <= 5000 + 200
    assert 2.4 * 100_000 <= sum(sizes.values()) <= 2.6 * 100_000
    biggest = max(sizes, key=lambda uid: sizes[uid])
    response = Api(state).members_page(tenant, biggest, pageNumber=3, pageSize=1000)
    body = response.json()
    validator_for(LIST_MEMBERS).validate(body)
    assert [i["customerUid"] for i in body["items"]] == state.member_uids(tenant, biggest)[2000:3000]
    assert body["paging"] == {"pageNumber": 3, "pageSize": 1000, "totalCount": sizes[biggest]}


@pytest.mark.parametrize(("customers", "groups"), [(0, 0), (0, 4), (1, 1), (5, 3), (30, 12)])
def test_tiny_tenants_are_still_well_formed(customers: int, groups: int) -> None:
    state = build_state(SimulatorConfig(tenants=1, customers=customers, groups=groups))
    tenant = "tenant-1"
    assert len(state.customer_uids(tenant)) == customers
    assert len(state.groups(tenant)) == groups
    for group in state.groups(tenant):
        members = state.member_uids(tenant, group["customerGroupUid"])
        assert set(members) <= set(state.customer_uids(tenant))
        body = Api(state).members_page(tenant, group["customerGroupUid"], pageSize=1000).json()
        validate_page(LIST_MEMBERS, body)
        assert [i["customerUid"] for i in body["items"]] == members
    if groups:
        assert state.member_uids(tenant, "grp-0001") == []


def test_explicit_tenant_uids_override_the_count() -> None:
    state = build_state(SimulatorConfig(tenants=5, tenant_uids=["acme", "nordic_2"], customers=50, groups=4))
    assert state.tenant_uids() == ["acme", "nordic_2"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"page_base": 2}, "page_base"),
        ({"tenant_uids": ["ok", "not ok"]}, "tenant_uids"),
        ({"tenant_uids": ["a", "a"]}, "listed twice"),
        ({"tenant_uids": []}, "at least one"),
        ({"tenants": 0}, "tenants"),
        ({"customers": -1}, "customers"),
        ({"page_size_cap": 0}, "page_size_cap"),
        ({"default_page_size": 0}, "default_page_size"),
        ({"max_uids_per_update": 0}, "max_uids_per_update"),
    ],
)
def test_bad_simulator_config_is_refused_naming_the_field(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SimulatorConfig(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"retry_after": "minutes"}, "retry_after"),
        ({"error_rate": 1.5}, "error_rate"),
        ({"drop_rate": -0.1}, "drop_rate"),
        ({"rate_limit_rps": 0}, "rate_limit_rps"),
        ({"latency_ms": -1}, "latency"),
    ],
)
def test_bad_fault_config_is_refused_naming_the_field(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FaultConfig(**kwargs)
