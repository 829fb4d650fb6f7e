"""Responses that break the spec: a clear error naming operation, page and field, and nothing loaded
from that run (every warehouse table exactly as before); the rerun against a healthy API is exact."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import orjson
import psycopg
import pytest
from starlette.responses import Response, StreamingResponse

from pipelines.flowretail.errors import SpecViolationError
from pipelines.flowretail.simulator import SimulatorState, create_app
from pipelines.flowretail.spec import LIST_GROUPS, LIST_MEMBERS
from tests.reliability.conftest import ScenarioRecord
from tests.reliability.support import (
    check_final,
    check_unchanged,
    dump_tables,
    failed_run_row,
    make_state,
    prime,
    run_load,
    tenant_of,
)
from tests.warehouse.test_spec_deviations import COUNTS

PREFIX = "response breaks the spec at field"

FAST_CASES = {
    (LIST_MEMBERS, "missing_field"),
    (LIST_MEMBERS, "bad_enum"),
    (LIST_MEMBERS, "html"),
    (LIST_GROUPS, "wrong_type"),
    (LIST_GROUPS, "oversized_page"),
}
CASES = [
    pytest.param(*case, id=f"{case[0]}-{case[1]}", marks=() if case[:2] in FAST_CASES else pytest.mark.slow)
    for case in [
        (LIST_MEMBERS, "missing_field", "items[0].email", '"email" is a required property'),
        (LIST_MEMBERS, "wrong_type", "items[0].paymentTerms", '"30" is not of type "integer"'),
        (LIST_MEMBERS, "bad_enum", "items[0].customerType", '"ALIEN" is not one of "COMPANY", "PERSON" or "B2B"'),
        (LIST_MEMBERS, "no_paging", "paging", '"paging" is a required property'),
        (LIST_MEMBERS, "oversized_page", "items", "21 items on a page of size 20"),
        (LIST_MEMBERS, "html", "(body)", "expected application/json, got 'text/html; charset=utf-8'"),
        (LIST_GROUPS, "missing_field", "items[0].name", '"name" is a required property'),
        (LIST_GROUPS, "wrong_type", "items[0].name", '12345 is not of type "string"'),
        (LIST_GROUPS, "no_paging", "paging", '"paging" is a required property'),
        (LIST_GROUPS, "oversized_page", "items", "21 items on a page of size 20"),
        (LIST_GROUPS, "html", "(body)", "expected application/json, got 'text/html; charset=utf-8'"),
    ]
]


@pytest.fixture
def state() -> SimulatorState:
    return make_state(customers=100, groups=4)


@pytest.mark.parametrize(("operation", "outcome", "field", "problem"), CASES)
@pytest.mark.reliability(
    area="bad input",
    injected="every answer of the operation breaks the spec in one way (a data field: with FLOWRETAIL_STRICT_SPEC=1)",
    expected="SpecViolationError naming operation, page 1 and field; no row loaded; rerun exact",
)
def test_spec_breaking_answers_load_nothing(
    state: SimulatorState,
    database_url: str,
    scenario: ScenarioRecord,
    operation: str,
    outcome: str,
    field: str,
    problem: str,
) -> None:
    before = prime(state, database_url)
    state.script([outcome] * 200, operation_id=operation)
    # A data field breaking the spec is loaded as it comes unless strict; paging and the body always fail.
    strict = field.startswith("items[0].")
    with pytest.raises(SpecViolationError) as err:
        run_load(state, database_url, "run-1", page_size=20, concurrency=1, strict_spec=strict)
    reading = (
        r"customers of group [A-Za-z0-9_-]+ of tenant tenant-1"
        if operation == "get-customer-groups-customers"
        else "customer groups of tenant tenant-1"
    )
    message = f"{operation} page 1: {PREFIX} '{field}': {problem}"
    assert re.fullmatch(re.escape(message) + rf" \(reading {reading}\)", str(err.value))
    assert (err.value.operation, err.value.page, err.value.field) == (operation, 1, field)
    check_unchanged(scenario, before, database_url)
    assert failed_run_row(database_url, "run-1") == ("failed", f"SpecViolationError: {err.value}")
    state.clear_script()
    run_load(state, database_url, "run-2")
    check_final(scenario, state, database_url)
    scenario.note(outcome)


@pytest.mark.parametrize("operation", [pytest.param(LIST_GROUPS, marks=pytest.mark.slow), LIST_MEMBERS])
@pytest.mark.reliability(
    area="bad input",
    injected="a page served as Latin-1 (bytes that are not UTF-8)",
    expected="SpecViolationError naming the first bad byte; no row loaded; rerun exact",
)
def test_non_utf8_page(state: SimulatorState, database_url: str, scenario: ScenarioRecord, operation: str) -> None:
    before = prime(state, database_url)
    state.script(["non_utf8"] * 200, operation_id=operation)
    with pytest.raises(SpecViolationError) as err:
        run_load(state, database_url, "run-1", page_size=20, concurrency=1)
    assert (err.value.operation, err.value.page, err.value.field) == (operation, 1, "(body)")
    byte = int(err.value.problem.removeprefix("not valid UTF-8 (byte ").removesuffix(")"))
    reading = "customer groups of tenant tenant-1" if operation == LIST_GROUPS else None
    message = f"{operation} page 1: {PREFIX} '(body)': not valid UTF-8 (byte {byte})"
    assert re.fullmatch(
        re.escape(message)
        + r" \(reading "
        + (re.escape(reading) if reading else r"customers of group [A-Za-z0-9_-]+ of tenant tenant-1")
        + r"\)",
        str(err.value),
    )
    scenario.note(f"first invalid byte at offset {byte}")
    check_unchanged(scenario, before, database_url)
    state.clear_script()
    run_load(state, database_url, "run-2")
    check_final(scenario, state, database_url)


@pytest.mark.parametrize("outcome", ["total_too_low", pytest.param("duplicate_items", marks=pytest.mark.slow)])
@pytest.mark.reliability(
    area="bad input",
    injected="one group-list page with totalCount below its items / a duplicated uid, then healthy answers",
    expected="the contradictory page is never trusted: rescanned, exact tables",
)
def test_a_single_contradictory_page_is_rescanned(
    state: SimulatorState, database_url: str, scenario: ScenarioRecord, outcome: str
) -> None:
    prime(state, database_url)
    state.script([outcome], operation_id=LIST_GROUPS)
    run_load(state, database_url, "run-1", page_size=20)
    check_final(scenario, state, database_url)


@pytest.mark.parametrize("outcome", ["total_too_low", pytest.param("duplicate_items", marks=pytest.mark.slow)])
@pytest.mark.reliability(
    area="bad input",
    injected="every group-list page: totalCount below its items / a duplicated uid",
    expected="SpecViolationError naming operation, page 1 and field; no row loaded; rerun exact",
)
def test_persistent_contradictory_pages_name_page_and_field(
    state: SimulatorState, database_url: str, scenario: ScenarioRecord, outcome: str
) -> None:
    """Regression test: before commit 785c612 this ended in PagingInconsistentError 'the data kept changing'."""
    before = prime(state, database_url)
    groups = state.groups(tenant_of(state))
    count = len(groups)
    state.script([outcome] * 50, operation_id=LIST_GROUPS)
    with pytest.raises(SpecViolationError) as err:
        run_load(state, database_url, "run-1", page_size=20)
    if outcome == "total_too_low":
        field = "paging.totalCount"
        problem = f"totalCount {count - 1} leaves room for {count - 1} items on this page, but it holds {count}"
    else:
        field = f"items[{count - 1}].customerGroupUid"
        problem = f"{groups[0]['customerGroupUid']!r} appears twice on the page"
    message = f"{LIST_GROUPS} page 1: {PREFIX} '{field}': {problem}"
    assert str(err.value) == f"{message} (reading customer groups of tenant {tenant_of(state)})"
    check_unchanged(scenario, before, database_url)
    assert failed_run_row(database_url, "run-1") == ("failed", f"SpecViolationError: {err.value}")
    state.clear_script()
    run_load(state, database_url, "run-2")
    check_final(scenario, state, database_url)


def _big_body() -> bytes:
    """A well-formed member page of 50 MiB and a little more: fifty customers with a 1 MiB note each."""
    item = {"customerUid": "cust-big", "internalNote": "x" * (1024 * 1024)}
    return orjson.dumps({"items": [item] * 50, "paging": {"pageNumber": 1, "pageSize": 20, "totalCount": 50}})


def _big_page_app(state: SimulatorState, group: str, streamed: bool) -> Any:
    """The simulator, except that the member list of ``group`` answers a 50 MB page."""
    inner = create_app(state)

    async def chunks() -> AsyncIterator[bytes]:
        body = _big_body()
        for start in range(0, len(body), 1024 * 1024):
            yield body[start : start + 1024 * 1024]

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].endswith(f"/{group}/customers"):
            if streamed:
                response: Response = StreamingResponse(chunks(), media_type="application/json")
            else:
                response = Response(_big_body(), media_type="application/json")
            await response(scope, receive, send)
            return
        await inner(scope, receive, send)

    return app


@pytest.mark.parametrize(
    "streamed", [pytest.param(False, id="content-length"), pytest.param(True, id="chunked", marks=pytest.mark.slow)]
)
@pytest.mark.reliability(
    area="bad input",
    injected="a 50 MB member page (declared by Content-Length, or streamed without it)",
    expected="refused at the 32 MiB cap naming operation and page; no row loaded; rerun exact",
)
def test_a_50_mb_page_is_refused(
    state: SimulatorState, database_url: str, scenario: ScenarioRecord, streamed: bool
) -> None:
    before = prime(state, database_url)
    tenant = tenant_of(state)
    group = next(
        g["customerGroupUid"] for g in state.groups(tenant) if state.member_uids(tenant, g["customerGroupUid"])
    )
    with pytest.raises(SpecViolationError) as err:
        run_load(state, database_url, "run-1", page_size=20, app=_big_page_app(state, group, streamed))
    size = len(_big_body())
    assert size > 50 * 1024 * 1024
    problem = (
        "response exceeds the 33554432-byte limit"
        if streamed
        else f"response of {size} bytes exceeds the 33554432-byte limit"
    )
    assert str(err.value) == (
        f"{LIST_MEMBERS} page 1: {PREFIX} '(body)': {problem} (reading customers of group {group} of tenant {tenant})"
    )
    check_unchanged(scenario, before, database_url)
    run_load(state, database_url, "run-2")
    check_final(scenario, state, database_url)


@pytest.mark.reliability(
    area="bad input",
    injected="customers that break the spec as real APIs do: email, mobile, credit null or absent; strings "
    "in integer, number and boolean fields; an unknown enum value; U+0000 in text and jsonb",
    expected="loaded as they come (NULL, JSON form, value kept in _spec_deviations, NUL removed); counts per "
    "field in load_runs; FLOWRETAIL_STRICT_SPEC=1 fails naming the field and loads nothing",
)
def test_spec_breaking_customers_are_loaded_as_they_come(database_url: str, scenario: ScenarioRecord) -> None:
    state = make_state(customers=100, groups=4)
    before = dump_tables(database_url)
    with pytest.raises(SpecViolationError, match=r"^get-customer-groups-customers page 1: response breaks the spec"):
        run_load(state, database_url, "run-1", strict_spec=True)
    check_unchanged(scenario, before, database_url)
    result = run_load(state, database_url, "run-2")
    check_final(scenario, state, database_url)
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT spec_deviations FROM flowretail.load_runs WHERE run_id = 'run-2'").fetchone()
    assert row == (COUNTS,) and result.spec_deviations == COUNTS
    scenario.note(f"{sum(n for cases in COUNTS.values() for n in cases.values())} deviating values in 5 customers")
