"""Data that breaks the spec is loaded as it comes: NULL stays NULL, the JSON form is kept, U+0000 is
removed, every case is counted per field in load_runs; FLOWRETAIL_STRICT_SPEC=1 fails as before."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from pipelines.flowretail.errors import SpecViolationError
from pipelines.flowretail.simulator import SimulatorState
from tests.simulator.helpers import DEVIANT_UIDS
from tests.warehouse.test_load import _load, _state

TENANT = "tenant-1"
# What the simulator's five spec-breaking customers (data.SPEC_DEVIATIONS) leave in load_runs.
COUNTS = {
    "addresses.type": {"enum": 1},
    "credit": {"missing": 1, "null": 1},
    "ehf.address": {"nul_removed": 1},
    "ehfEnabled": {"type": 1},
    "email": {"missing": 1, "null": 1},
    "firstname": {"nul_removed": 1},
    "mobile": {"null": 1},
    "paymentTerms": {"type": 1},
    "postalCode": {"type": 1},
    "relevance": {"type": 1},
}


def _row(conn: psycopg.Connection[Any], uid: str, columns: str) -> tuple[Any, ...]:
    row = conn.execute(
        f"SELECT {columns} FROM flowretail.customer_snapshots WHERE tenant_uid = %s AND customer_uid = %s "
        "AND valid_to IS NULL",
        (TENANT, uid),
    ).fetchone()
    assert row is not None
    return tuple(row)


@pytest.fixture
def state() -> SimulatorState:
    return _state(tenants=1)


def test_spec_breaking_customers_are_loaded_as_they_come(state: SimulatorState, database_url: str) -> None:
    result = _load(state, database_url, TENANT, "run-1")
    assert result.spec_deviations == COUNTS
    api = {uid: state.customer(TENANT, uid) for uid in ("cust-0000014", "cust-0000015", "cust-0000016")}
    with psycopg.connect(database_url) as conn:
        assert _row(conn, "cust-0000013", "email, mobile, credit, _spec_deviations") == (
            None,
            None,
            None,
            {"email": {"case": "null"}, "mobile": {"case": "null"}, "credit": {"case": "null"}},
        )
        assert _row(conn, "cust-0000014", "payment_terms, relevance, ehf_enabled, postal_code, _spec_deviations") == (
            None,
            None,
            None,
            str(api["cust-0000014"]["postalCode"]),
            {
                "paymentTerms": {"case": "type", "value": "30 dager"},
                "relevance": {"case": "type", "value": "high"},
                "ehfEnabled": {"case": "type", "value": "yes"},
                "postalCode": {"case": "type"},
            },
        )
        assert _row(conn, "cust-0000015", "addresses, _spec_deviations") == (
            api["cust-0000015"]["addresses"],
            {"addresses.type": {"case": "enum"}},
        )
        assert api["cust-0000015"]["addresses"][0]["type"] == "PICKUP_POINT"
        served = api["cust-0000016"]["firstname"]
        assert "\x00" in served
        assert _row(conn, "cust-0000016", "firstname, ehf, _spec_deviations") == (
            served.replace("\x00", ""),
            {"enabled": False, "address": ""},
            {"firstname": {"case": "nul_removed"}, "ehf.address": {"case": "nul_removed"}},
        )
        assert _row(conn, "cust-0000017", "email, credit, _spec_deviations") == (
            None,
            None,
            {"email": {"case": "missing"}, "credit": {"case": "missing"}},
        )
        others = conn.execute(
            "SELECT count(*) FROM flowretail.customer_snapshots WHERE _spec_deviations IS NOT NULL "
            "AND customer_uid NOT IN ('cust-0000013', 'cust-0000014', 'cust-0000015', 'cust-0000016', 'cust-0000017')"
        ).fetchone()
        assert others == (0,)
        assert conn.execute(
            "SELECT count(*) FROM flowretail.customer_groups WHERE _spec_deviations IS NOT NULL"
        ).fetchone() == (0,)
        run = conn.execute("SELECT status, spec_deviations FROM flowretail.load_runs WHERE run_id = 'run-1'").fetchone()
    assert run == ("succeeded", COUNTS)

    again = _load(state, database_url, TENANT, "run-2")
    assert (again.customer_versions_opened, again.customer_versions_closed, again.spec_deviations) == (0, 0, COUNTS)


def test_a_load_true_to_the_spec_records_no_deviation(database_url: str) -> None:
    state = _state(tenants=1, spec_deviations=False)
    result = _load(state, database_url, TENANT, "run-1")
    assert result.spec_deviations == {}
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT spec_deviations FROM flowretail.load_runs").fetchone() == ({},)
        assert conn.execute(
            "SELECT count(*) FROM flowretail.customer_snapshots WHERE _spec_deviations IS NOT NULL"
        ).fetchone() == (0,)


def test_strict_mode_fails_as_before_naming_the_first_violation(state: SimulatorState, database_url: str) -> None:
    with pytest.raises(SpecViolationError) as err:
        _load(state, database_url, TENANT, "run-1", strict_spec=True, concurrency=1, page_size=1000)
    # One page per group: the page's first validation error fails its scan with today's message,
    # and only a page true to the spec but for a NUL fails on that. Which group's failure is
    # reported first is up to the event loop, so each group holding a deviant customer gives one.
    first_error = {
        "cust-0000013": ("email", 'null is not of type "string"'),
        "cust-0000014": (
            "postalCode",
            f'{state.customer(TENANT, "cust-0000014")["postalCode"]} is not of type "string"',
        ),
        "cust-0000015": ("addresses[0].type", '"PICKUP_POINT" is not one of "DELIVERY_ADDRESS" or "INVOICE_ADDRESS"'),
        "cust-0000017": ("email", '"email" is a required property'),
        "cust-0000016": ("firstname", "contains U+0000, which PostgreSQL cannot store"),
    }
    expected = set()
    for group in (g["customerGroupUid"] for g in state.groups(TENANT)):
        members = state.member_uids(TENANT, group)
        found = sorted((uid == "cust-0000016", i, uid) for i, uid in enumerate(members) if uid in DEVIANT_UIDS)
        if found:
            _, index, uid = found[0]
            field, problem = first_error[uid]
            expected.add(
                f"get-customer-groups-customers page 1: response breaks the spec at field 'items[{index}].{field}': "
                f"{problem} (reading customers of group {group} of tenant {TENANT})"
            )
    assert str(err.value) in expected
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM flowretail.customer_snapshots").fetchone() == (0,)
        assert conn.execute("SELECT status FROM flowretail.load_runs").fetchone() == ("failed",)
