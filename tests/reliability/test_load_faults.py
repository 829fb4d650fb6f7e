"""The tenant load under every API fault: either the exact current data, or a clear failure with the
previous warehouse state intact and a rerun that reaches the exact current data."""

from __future__ import annotations

import pytest

from pipelines.flowretail.errors import (
    AuthenticationError,
    PagingInconsistentError,
    RetriesExhaustedError,
)
from pipelines.flowretail.simulator import SimulatorState
from pipelines.flowretail.spec import LIST_GROUPS, LIST_MEMBERS
from tests.reliability.conftest import ScenarioRecord
from tests.reliability.support import (
    Interceptor,
    check_final,
    check_groups_and_members,
    check_unchanged,
    failed_run_row,
    make_state,
    prime,
    run_load,
    tenant_of,
)

AUTH_HINT = (
    "; the token was refused (missing, wrong, revoked or lacking the CUSTOMER permission): check FLOWRETAIL_TOKEN"
)


@pytest.fixture
def state() -> SimulatorState:
    return make_state()


def _statuses(state: SimulatorState) -> list[int]:
    return [r.status for r in state.request_log]


@pytest.mark.reliability(
    area="load faults",
    injected="server rate limit 4 req/s, 429 with Retry-After in seconds",
    expected="every 429 waited out as told; exact tables",
)
def test_429_storm_with_retry_after_seconds(state: SimulatorState, database_url: str, scenario: ScenarioRecord) -> None:
    state.faults.rate_limit_rps = 4.0
    state.faults.retry_after = "seconds"
    result = run_load(state, database_url, "run-1", page_size=60, max_attempts=20)
    state.faults.rate_limit_rps = None
    check_final(scenario, state, database_url)
    assert result.rate_limited == _statuses(state).count(429) > 0
    scenario.note(f"{result.rate_limited} x 429 over {result.requests} requests")


@pytest.mark.slow
@pytest.mark.reliability(
    area="load faults",
    injected="server rate limit 4 req/s, 429 with Retry-After as an HTTP date",
    expected="HTTP-date Retry-After parsed and honoured; exact tables",
)
def test_429_storm_with_retry_after_http_date(
    state: SimulatorState, database_url: str, scenario: ScenarioRecord
) -> None:
    state.faults.rate_limit_rps = 4.0
    state.faults.retry_after = "http-date"
    result = run_load(state, database_url, "run-1", page_size=60, max_attempts=20)
    state.faults.rate_limit_rps = None
    check_final(scenario, state, database_url)
    assert result.rate_limited == _statuses(state).count(429) > 0
    scenario.note(f"{result.rate_limited} x 429 over {result.requests} requests")


@pytest.mark.reliability(
    area="load faults",
    injected="server rate limit 4 req/s, 429 without Retry-After",
    expected="exponential backoff outlasts the storm; exact tables",
)
def test_429_storm_without_retry_after(state: SimulatorState, database_url: str, scenario: ScenarioRecord) -> None:
    state.faults.rate_limit_rps = 4.0
    state.faults.retry_after = "none"
    result = run_load(
        state, database_url, "run-1", page_size=60, max_attempts=30, backoff_initial=0.05, backoff_max=0.6
    )
    state.faults.rate_limit_rps = None
    check_final(scenario, state, database_url)
    assert result.rate_limited == _statuses(state).count(429) > 0
    scenario.note(f"{result.rate_limited} x 429 over {result.requests} requests")


@pytest.mark.reliability(
    area="load faults",
    injected="a burst of 500, 502, 503, 504 on every member list, shorter than the retry budget",
    expected="retried; exact tables",
)
def test_5xx_burst_within_the_retry_budget(state: SimulatorState, database_url: str, scenario: ScenarioRecord) -> None:
    state.script(["500", "502", "503", "504"] * 3, operation_id=LIST_MEMBERS)
    result = run_load(state, database_url, "run-1", max_attempts=6)
    check_final(scenario, state, database_url)
    assert state.pending_script() == []
    assert result.retries == 12


@pytest.mark.reliability(
    area="load faults",
    injected="503 on every attempt at the group list (burst longer than the retry budget)",
    expected="RetriesExhaustedError naming operation and page; previous tables intact; rerun exact",
)
def test_5xx_burst_past_the_retry_budget(state: SimulatorState, database_url: str, scenario: ScenarioRecord) -> None:
    before = prime(state, database_url)
    state.script(["503"] * 4, operation_id=LIST_GROUPS)
    with pytest.raises(RetriesExhaustedError) as err:
        run_load(state, database_url, "run-1", max_attempts=4)
    message = "get-customer-groups page 1: gave up after 4 attempts; last error: HTTP 503"
    assert str(err.value) == message
    check_unchanged(scenario, before, database_url)
    assert failed_run_row(database_url, "run-1") == ("failed", f"RetriesExhaustedError: {message}")
    run_load(state, database_url, "run-2")
    check_final(scenario, state, database_url)


@pytest.mark.reliability(
    area="load faults",
    injected="30% of member-list connections dropped mid-response",
    expected="retried; exact tables",
)
def test_dropped_connections_are_retried(state: SimulatorState, database_url: str, scenario: ScenarioRecord) -> None:
    state.faults.drop_rate = 0.3
    state.faults.faulty_operations = {LIST_MEMBERS}
    state.faults.seed = 11
    result = run_load(state, database_url, "run-1", page_size=40, max_attempts=12)
    state.faults.drop_rate = 0.0
    check_final(scenario, state, database_url)
    drops = _statuses(state).count(0)
    assert drops > 0 and result.retries == drops
    scenario.note(f"{drops} dropped connections")


@pytest.mark.slow
@pytest.mark.reliability(
    area="load faults",
    injected="the group list connection dropped on every attempt",
    expected="RetriesExhaustedError with the transport error; previous tables intact; rerun exact",
)
def test_dropped_connections_past_the_retry_budget(
    state: SimulatorState, database_url: str, scenario: ScenarioRecord
) -> None:
    before = prime(state, database_url)
    state.script(["drop"] * 3, operation_id=LIST_GROUPS)
    with pytest.raises(RetriesExhaustedError) as err:
        run_load(state, database_url, "run-1", max_attempts=3)
    assert str(err.value) == (
        "get-customer-groups page 1: gave up after 3 attempts; last error: SimulatedConnectionDrop: "
        "simulated connection drop: the server closed the connection mid-response"
    )
    check_unchanged(scenario, before, database_url)
    run_load(state, database_url, "run-2")
    check_final(scenario, state, database_url)


@pytest.mark.reliability(
    area="load faults",
    injected="30% of member-list bodies cut in half",
    expected="truncated JSON retried; exact tables",
)
def test_truncated_bodies_are_retried(state: SimulatorState, database_url: str, scenario: ScenarioRecord) -> None:
    state.faults.truncate_rate = 0.3
    state.faults.faulty_operations = {LIST_MEMBERS}
    state.faults.seed = 5
    result = run_load(state, database_url, "run-1", page_size=40, max_attempts=12)
    state.faults.truncate_rate = 0.0
    check_final(scenario, state, database_url)
    assert result.retries > 0
    scenario.note(f"{result.retries} truncated bodies retried")


@pytest.mark.slow
@pytest.mark.reliability(
    area="load faults",
    injected="every member-list body truncated",
    expected="RetriesExhaustedError naming the malformed body; previous tables intact; rerun exact",
)
def test_truncated_bodies_past_the_retry_budget(
    state: SimulatorState, database_url: str, scenario: ScenarioRecord
) -> None:
    before = prime(state, database_url)
    state.script(["truncate"] * 50, operation_id=LIST_MEMBERS)
    with pytest.raises(RetriesExhaustedError) as err:
        run_load(state, database_url, "run-1", max_attempts=3, concurrency=1)
    assert str(err.value) == (
        "get-customer-groups-customers page 1: gave up after 3 attempts; "
        "last error: HTTP 200 with a truncated or malformed JSON body"
    )
    check_unchanged(scenario, before, database_url)
    state.clear_script()
    run_load(state, database_url, "run-2")
    check_final(scenario, state, database_url)


@pytest.mark.reliability(
    area="load faults",
    injected="two answers slower than the 0.3 s deadline",
    expected="timed out, retried; exact tables",
)
def test_slow_answers_past_the_timeout_are_retried(
    state: SimulatorState, database_url: str, scenario: ScenarioRecord
) -> None:
    state.script(["slow:1.5", "slow:1.5"], operation_id=LIST_MEMBERS)
    result = run_load(state, database_url, "run-1", read_timeout=0.1, connect_timeout=0.1)
    check_final(scenario, state, database_url)
    assert result.retries == 2


@pytest.mark.reliability(
    area="load faults",
    injected="the group list slower than the deadline on every attempt",
    expected="RetriesExhaustedError 'no answer in time'; previous tables intact; rerun exact",
)
def test_slow_answers_past_the_retry_budget(state: SimulatorState, database_url: str, scenario: ScenarioRecord) -> None:
    before = prime(state, database_url)
    state.script(["slow:1.5"] * 2, operation_id=LIST_GROUPS)
    with pytest.raises(RetriesExhaustedError) as err:
        run_load(state, database_url, "run-1", read_timeout=0.1, connect_timeout=0.1, max_attempts=2)
    assert str(err.value) == (
        "get-customer-groups page 1: gave up after 2 attempts; last error: TimeoutError: no answer in time"
    )
    check_unchanged(scenario, before, database_url)
    run_load(state, database_url, "run-2")
    check_final(scenario, state, database_url)


@pytest.mark.reliability(
    area="load faults",
    injected="members added and removed between two pages of two member scans",
    expected="rescanned; exactly the data as it ended",
)
def test_data_changing_mid_scan_is_rescanned(
    state: SimulatorState, database_url: str, scenario: ScenarioRecord
) -> None:
    prime(state, database_url)
    state.faults.mutate_scans = 2
    result = run_load(state, database_url, "run-1", page_size=20)
    assert state.faults.mutate_scans == 0
    check_final(scenario, state, database_url)
    scenario.note(f"{result.requests} requests, 2 scans disturbed")


@pytest.mark.reliability(
    area="load faults",
    injected="a group's members change between pages on every scan",
    expected="PagingInconsistentError naming tenant, group and counts; previous tables intact; rerun exact",
)
def test_data_that_never_settles_fails_cleanly(
    state: SimulatorState, database_url: str, scenario: ScenarioRecord
) -> None:
    before = prime(state, database_url)
    tenant = tenant_of(state)
    # With one request at a time the groups are scanned in uid order: the first one with a second
    # page is the first one disturbed, and it can never settle.
    group = next(
        g["customerGroupUid"]
        for g in state.groups(tenant)
        if len(state.member_uids(tenant, g["customerGroupUid"])) > 20
    )
    state.faults.mutate_scans = 100
    with pytest.raises(PagingInconsistentError) as err:
        run_load(state, database_url, "run-1", page_size=20, concurrency=1)
    state.faults.mutate_scans = 0
    total = len(state.member_uids(tenant, group))
    assert str(err.value) == (
        f"customers of group {group} of tenant {tenant}: paged {total - 1} unique items but the API reported "
        f"totalCount {total}; the data kept changing during 3 scans"
    )
    check_unchanged(scenario, before, database_url)
    run_load(state, database_url, "run-2")
    check_final(scenario, state, database_url)


@pytest.mark.reliability(
    area="load faults",
    injected="a group deleted between page 1 and page 2 of its own member scan",
    expected="group left out (404 handled); groups, memberships and customer set exact; rerun exact",
)
def test_group_deleted_during_its_member_scan(
    state: SimulatorState, database_url: str, scenario: ScenarioRecord
) -> None:
    prime(state, database_url)
    tenant = tenant_of(state)
    big = max(state.groups(tenant), key=lambda g: len(state.member_uids(tenant, g["customerGroupUid"])))
    group = big["customerGroupUid"]
    app = Interceptor(state)

    def delete_after_first_page(kind: str, path: str, number: int) -> None:
        if kind == "GET members" and path.endswith(f"/{group}/customers") and state.group(tenant, group):
            state.delete_group(tenant, group)

    app.after.append(delete_after_first_page)
    result = run_load(state, database_url, "run-1", app=app, page_size=20, concurrency=1)
    assert result.groups_deleted_during_load == [group]
    assert state.group(tenant, group) is None
    check_groups_and_members(scenario, state, database_url)
    scenario.note(
        "customers read before the deletion keep the deleted group in customer_group_uids until the next load "
        "(the API has no point-in-time reads); the rerun is exact"
    )
    run_load(state, database_url, "run-2")
    check_final(scenario, state, database_url)


@pytest.mark.reliability(
    area="load faults",
    injected="token revoked after 3 requests (401 from then on)",
    expected="AuthenticationError naming operation and page, pointing at FLOWRETAIL_TOKEN; previous tables intact; rerun exact",
)
def test_token_revoked_mid_run(state: SimulatorState, database_url: str, scenario: ScenarioRecord) -> None:
    before = prime(state, database_url)
    state.clear_log()
    state.faults.revoke_token_after = 3
    with pytest.raises(AuthenticationError) as err:
        run_load(state, database_url, "run-1", page_size=20, concurrency=1)
    assert [r.status for r in state.request_log[:3]] == [200, 200, 200]
    refused = state.request_log[3:]
    assert refused and {r.status for r in refused} == {401}
    page = refused[0].query["pageNumber"]
    message = (
        f"get-customer-groups-customers page {page}: HTTP 401: unauthorized: the access token is missing, "
        f"invalid or revoked{AUTH_HINT}"
    )
    assert str(err.value) == message
    check_unchanged(scenario, before, database_url)
    assert failed_run_row(database_url, "run-1") == ("failed", f"AuthenticationError: {message}")
    state.faults.revoke_token_after = None
    run_load(state, database_url, "run-2")
    check_final(scenario, state, database_url)
