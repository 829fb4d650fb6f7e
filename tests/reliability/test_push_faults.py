"""The segment push under every API fault: either a verified group equal to the segment, or a failed
run with a clear message whose partial effect the audit log accounts for exactly, and a rerun that
makes the group equal to the segment."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from pipelines.flowretail.errors import AuthenticationError, NotFoundError, RetriesExhaustedError
from pipelines.flowretail.simulator import SimulatorState
from pipelines.flowretail.spec import CREATE_GROUP, LIST_MEMBERS, UPDATE_MEMBERS
from pipelines.segment_push.apply import ForeignGroupError
from pipelines.segment_push.audit import ensure_push_tables
from pipelines.segment_push.plan import PushTarget
from tests.reliability.conftest import ScenarioRecord
from tests.reliability.support import Interceptor, make_state, run_push, tenant_of

TARGET = PushTarget("rel_segment", "seg-rel", "Reliability segment (warehouse)")
GROUP = TARGET.group_uid


@pytest.fixture
def state() -> SimulatorState:
    return make_state(customers=400, groups=3)


@pytest.fixture
def conn(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(database_url, autocommit=True) as connection:
        ensure_push_tables(connection)
        yield connection


def _segment(state: SimulatorState, start: int = 0, count: int = 180) -> set[str]:
    return set(state.customer_uids(tenant_of(state))[start : start + count])


def _members(state: SimulatorState) -> set[str]:
    return set(state.member_uids(tenant_of(state), GROUP))


def _run_row(conn: psycopg.Connection[Any], run_id: str) -> tuple[Any, ...]:
    row = conn.execute(
        "SELECT status, verified, applied_adds, applied_removes, error FROM flowretail.segment_push_runs "
        "WHERE run_id = %s",
        (run_id,),
    ).fetchone()
    assert row is not None
    return tuple(row)


def _logged_effect(conn: psycopg.Connection[Any], run_id: str) -> tuple[set[str], set[str]]:
    """What the audit log says a run changed: uids of add/remove calls answered 204."""
    rows = conn.execute(
        "SELECT add_uids, remove_uids FROM flowretail.segment_push_log WHERE run_id = %s AND action = 'add_remove' "
        "AND http_status = 204",
        (run_id,),
    ).fetchall()
    return {u for r in rows for u in r[0]}, {u for r in rows for u in r[1]}


def _check_verified(scenario: ScenarioRecord, state: SimulatorState, segment: set[str]) -> None:
    members = _members(state)
    scenario.lost(len(segment - members) + len(members - segment))
    assert members == segment
    assert state.group(tenant_of(state), GROUP)["name"] == TARGET.group_name  # type: ignore[index]


def _check_accounted(
    scenario: ScenarioRecord, conn: psycopg.Connection[Any], state: SimulatorState, start: set[str], run_id: str
) -> None:
    """After a failed push the group is exactly the start state plus the logged batches."""
    added, removed = _logged_effect(conn, run_id)
    expected = (start | added) - removed
    if _members(state) != expected:
        scenario.partial()
    assert _members(state) == expected


def _established(state: SimulatorState, conn: psycopg.Connection[Any]) -> tuple[set[str], set[str]]:
    """A verified first push of 180 customers, then a new segment that needs 3 batches of 50."""
    first = _segment(state, 0, 180)
    _, outcome = run_push(state, conn, TARGET, first, run_id="run-0")
    assert outcome is not None and outcome.verified
    second = _segment(state, 30, 180)  # 30 removes, 30 adds
    return first, second


@pytest.mark.reliability(
    area="push faults",
    injected="server rate limit 3 req/s with Retry-After during a 4-batch push",
    expected="429s waited out; verified; group equals the segment",
)
def test_429_storm_during_a_push(state: SimulatorState, conn: Any, scenario: ScenarioRecord) -> None:
    segment = _segment(state)
    state.faults.rate_limit_rps = 3.0
    _, outcome = run_push(state, conn, TARGET, segment, run_id="run-1", batch_size=50, max_attempts=20)
    state.faults.rate_limit_rps = None
    assert outcome is not None and outcome.verified
    _check_verified(scenario, state, segment)
    rate_limited = sum(r.status == 429 for r in state.request_log)
    assert rate_limited > 0
    scenario.note(f"{rate_limited} x 429")


@pytest.mark.reliability(
    area="push faults",
    injected="500, 502, 503, 504 before each of the first add/remove calls (within the budget)",
    expected="retried (set semantics make it safe); verified",
)
def test_5xx_burst_within_budget(state: SimulatorState, conn: Any, scenario: ScenarioRecord) -> None:
    segment = _segment(state)
    state.script(["500", "502", "503", "504"], operation_id=UPDATE_MEMBERS)
    _, outcome = run_push(state, conn, TARGET, segment, run_id="run-1", batch_size=50)
    assert outcome is not None and outcome.verified and outcome.calls == 5
    _check_verified(scenario, state, segment)


@pytest.mark.reliability(
    area="push faults",
    injected="503 on every attempt of the second add/remove batch",
    expected="run failed with RetriesExhaustedError; group = start + logged batches; rerun verified",
)
def test_5xx_past_budget_between_batches(state: SimulatorState, conn: Any, scenario: ScenarioRecord) -> None:
    start, segment = _established(state, conn)
    state.script(["slow:0"] + ["503"] * 3, operation_id=UPDATE_MEMBERS)
    with pytest.raises(RetriesExhaustedError) as err:
        run_push(state, conn, TARGET, segment, run_id="run-1", batch_size=20, max_attempts=3)
    message = "put-customer-groups-customers: gave up after 3 attempts; last error: HTTP 503"
    assert str(err.value) == message
    assert _run_row(conn, "run-1") == ("failed", False, 20, 0, message)
    _check_accounted(scenario, conn, state, start, "run-1")
    state.clear_script()
    _, outcome = run_push(state, conn, TARGET, segment, run_id="run-2", batch_size=20)
    assert outcome is not None and outcome.verified
    _check_verified(scenario, state, segment)


@pytest.mark.reliability(
    area="push faults",
    injected="connection dropped after the server created the group (POST applied, answer lost)",
    expected="retry meets 409 = a group the product did not create: refused, no member written, not recorded "
    "as created; with adopt_existing the rerun adopts it; verified; exactly one group",
)
def test_dropped_connection_after_create(state: SimulatorState, conn: Any, scenario: ScenarioRecord) -> None:
    segment = _segment(state)
    groups_before = len(state.groups(tenant_of(state)))
    state.script(["drop"], operation_id=CREATE_GROUP)
    with pytest.raises(ForeignGroupError, match=r"already exists \(409 on create\) and was not created by this"):
        run_push(state, conn, TARGET, segment, run_id="run-1", batch_size=50)
    assert [r.status for r in state.request_log if r.operation_id == CREATE_GROUP] == [0, 409]
    assert _members(state) == set()
    assert conn.execute("SELECT ownership FROM flowretail.segment_push_groups").fetchall() == []
    adopt = PushTarget(TARGET.segment, GROUP, TARGET.group_name, adopt_existing="mirror")
    _, outcome = run_push(state, conn, adopt, segment, run_id="run-2", batch_size=50, allow=True)
    assert outcome is not None and outcome.verified
    _check_verified(scenario, state, segment)
    assert len(state.groups(tenant_of(state))) == groups_before + 1
    owner = conn.execute("SELECT ownership FROM flowretail.segment_push_groups").fetchall()
    assert owner == [("adopted",)]


@pytest.mark.reliability(
    area="push faults",
    injected="connection dropped after the server applied an add/remove batch",
    expected="batch resent (set semantics); verified",
)
def test_dropped_connection_after_a_batch(state: SimulatorState, conn: Any, scenario: ScenarioRecord) -> None:
    segment = _segment(state)
    state.script(["slow:0", "drop"], operation_id=UPDATE_MEMBERS)
    _, outcome = run_push(state, conn, TARGET, segment, run_id="run-1", batch_size=50)
    assert outcome is not None and outcome.verified and outcome.applied_adds == len(segment)
    _check_verified(scenario, state, segment)


@pytest.mark.slow
@pytest.mark.reliability(
    area="push faults",
    injected="truncated body on the verifying read-back",
    expected="read retried; verified",
)
def test_truncated_read_back(state: SimulatorState, conn: Any, scenario: ScenarioRecord) -> None:
    segment = _segment(state)
    app = Interceptor(state)

    def truncate_verify(kind: str, path: str, number: int) -> None:
        if kind == "PUT members" and number == 4:
            state.script(["truncate", "truncate"], operation_id=LIST_MEMBERS)

    app.after.append(truncate_verify)
    _, outcome = run_push(state, conn, TARGET, segment, run_id="run-1", batch_size=50, app=app)
    assert outcome is not None and outcome.verified
    assert state.pending_script() == []
    _check_verified(scenario, state, segment)


@pytest.mark.reliability(
    area="push faults",
    injected="an add/remove call answered after the 0.3 s deadline",
    expected="timed out and resent; verified",
)
def test_slow_write_past_the_timeout(state: SimulatorState, conn: Any, scenario: ScenarioRecord) -> None:
    segment = _segment(state)
    state.script(["slow:0", "slow:1.5"], operation_id=UPDATE_MEMBERS)
    _, outcome = run_push(
        state, conn, TARGET, segment, run_id="run-1", batch_size=50, read_timeout=0.1, connect_timeout=0.1
    )
    assert outcome is not None and outcome.verified
    _check_verified(scenario, state, segment)


@pytest.mark.reliability(
    area="push faults",
    injected="group members changing between pages of the plan's live read",
    expected="live read rescanned; plan from the settled state; verified",
)
def test_live_members_changing_while_planning(state: SimulatorState, conn: Any, scenario: ScenarioRecord) -> None:
    _start, segment = _established(state, conn)
    state.faults.mutate_scans = 1
    plan, outcome = run_push(state, conn, TARGET, segment, run_id="run-1", page_size=40, allow=True)
    assert state.faults.mutate_scans == 0
    assert outcome is not None and outcome.verified
    _check_verified(scenario, state, segment)
    assert len(plan.removes) == 31 and len(plan.adds) == 31


@pytest.mark.reliability(
    area="push faults",
    injected="group renamed by a store between batch 1 and batch 2",
    expected="verified only with the declared name (or not verified, then repaired by the rerun)",
)
def test_group_renamed_mid_push(state: SimulatorState, conn: Any, scenario: ScenarioRecord) -> None:
    _start, segment = _established(state, conn)
    app = Interceptor(state)
    tenant = tenant_of(state)

    def rename(kind: str, path: str, number: int) -> None:
        if kind == "PUT members" and number == 1:
            state.rename_group(tenant, GROUP, "Renamed by a store")

    app.after.append(rename)
    _, outcome = run_push(state, conn, TARGET, segment, run_id="run-1", batch_size=20, app=app)
    assert outcome is not None
    name = state.group(tenant, GROUP)["name"]  # type: ignore[index]
    scenario.note(f"after the run: verified={outcome.verified}, name={name!r}")
    if outcome.verified and name != TARGET.group_name:
        scenario.partial()
    assert (outcome.verified, name) in ((True, TARGET.group_name), (False, "Renamed by a store"))
    _, outcome = run_push(state, conn, TARGET, segment, run_id="run-2", batch_size=20)
    assert outcome is not None and outcome.verified
    _check_verified(scenario, state, segment)


@pytest.mark.reliability(
    area="push faults",
    injected="group deleted by a store between batch 1 and batch 2",
    expected="run failed with the 404 named; rerun recreates the group and is verified",
)
def test_group_deleted_mid_push(state: SimulatorState, conn: Any, scenario: ScenarioRecord) -> None:
    _start, segment = _established(state, conn)
    app = Interceptor(state)
    tenant = tenant_of(state)

    def delete(kind: str, path: str, number: int) -> None:
        if kind == "PUT members" and number == 1:
            state.delete_group(tenant, GROUP)

    app.after.append(delete)
    with pytest.raises(NotFoundError) as err:
        run_push(state, conn, TARGET, segment, run_id="run-1", batch_size=20, app=app)
    message = f"put-customer-groups-customers: HTTP 404: customer group '{GROUP}' not found in tenant '{tenant}'"
    assert str(err.value) == message
    assert _run_row(conn, "run-1") == ("failed", False, 20, 0, message)
    assert state.group(tenant, GROUP) is None
    plan, outcome = run_push(state, conn, TARGET, segment, run_id="run-2", batch_size=20)
    assert plan.group_action == "recreate"
    assert outcome is not None and outcome.verified
    _check_verified(scenario, state, segment)


@pytest.mark.reliability(
    area="push faults",
    injected="token revoked after the first add/remove batch",
    expected="AuthenticationError pointing at FLOWRETAIL_TOKEN; group = start + logged batches; rerun verified",
)
def test_token_revoked_mid_push(state: SimulatorState, conn: Any, scenario: ScenarioRecord) -> None:
    start, segment = _established(state, conn)
    app = Interceptor(state)

    def revoke(kind: str, path: str, number: int) -> None:
        if kind == "PUT members" and number == 1:
            state.faults.revoke_token_after = 0

    app.after.append(revoke)
    with pytest.raises(AuthenticationError) as err:
        run_push(state, conn, TARGET, segment, run_id="run-1", batch_size=20, app=app)
    message = (
        "put-customer-groups-customers: HTTP 401: unauthorized: the access token is missing, invalid or revoked; "
        "the token was refused (missing, wrong, revoked or lacking the CUSTOMER permission): check FLOWRETAIL_TOKEN"
    )
    assert str(err.value) == message
    assert _run_row(conn, "run-1") == ("failed", False, 20, 0, message)
    _check_accounted(scenario, conn, state, start, "run-1")
    state.faults.revoke_token_after = None
    _, outcome = run_push(state, conn, TARGET, segment, run_id="run-2", batch_size=20)
    assert outcome is not None and outcome.verified
    _check_verified(scenario, state, segment)


@pytest.mark.reliability(
    area="push faults",
    injected="a server refusing add/remove calls above 120 uids (400, unannounced); segments of 798, 323, 735",
    expected="limit found by binary search once (4 refused), kept in the warehouse; the rerun sends the fewest calls",
)
def test_unknown_batch_limit_is_learned_and_kept(conn: Any, scenario: ScenarioRecord) -> None:
    state = make_state(customers=2000, groups=3, max_uids_per_update=120)
    everyone = state.customer_uids(tenant_of(state))
    targets = [PushTarget(f"seg_{n}", f"seg-limit-{n}", f"Limit {n}") for n in range(3)]
    segments = [set(everyone[n * 600 : n * 600 + size]) for n, size in enumerate((798, 323, 735))]
    for run in ("run-1", "run-2"):
        state.clear_log()
        for target, segment in zip(targets, segments, strict=True):
            _, outcome = run_push(
                state, conn, target, segment, run_id=f"{run}-{target.segment}", batch_size=500, allow=True
            )
            assert outcome is not None and outcome.verified
            members = set(state.member_uids(tenant_of(state), target.group_uid))
            scenario.lost(len(segment ^ members))
            assert members == segment
        statuses = [r.status for r in state.request_log if r.operation_id == UPDATE_MEMBERS]
        scenario.note(f"{run}: {len(statuses)} add/remove calls, {statuses.count(400)} refused")
        if run == "run-1":
            assert (len(statuses), statuses.count(400)) == (22, 4)  # fewest: 7 + 3 + 7 = 17
            segments = [set(everyone[n * 600 + 100 : n * 600 + 100 + len(s)]) for n, s in enumerate(segments)]
        else:
            assert (len(statuses), statuses.count(400)) == (6, 0)  # 200 changes each: 2 calls of 120 at most
