"""Hostile identifiers from the API and from configuration never reach a URL path or a SQL string
unescaped: each is refused with a clear error (and nothing requested or loaded), or stored byte-exact."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote

import psycopg
import pytest
from sortedcontainers import SortedList

from pipelines.cli import main
from pipelines.flowretail.errors import SpecViolationError, UnsafeIdentifierError
from pipelines.flowretail.simulator import SimulatorState
from pipelines.flowretail.simulator.state import Group
from pipelines.flowretail.spec import LIST_GROUPS
from pipelines.segment_push.audit import ensure_push_tables
from pipelines.segment_push.plan import PushTarget
from pipelines.settings import ConfigError, load_settings
from tests.reliability.conftest import ScenarioRecord
from tests.reliability.support import (
    check_final,
    check_unchanged,
    dump_tables,
    make_state,
    prime,
    run_load,
    run_push,
    tenant_of,
)

ALLOWED = "(allowed: letters, digits, '-' and '_')"
LONG = "a" * 300

# Values that the spec's unanchored UID pattern ('^[A-Za-z0-9-_]+') lets through: only the client's
# own full-match check stands between them and a URL path.
PASSES_SPEC_PATTERN = [
    "a/b",
    "a/../../admin",
    "a%2Fb",
    "a b",
    "x'; DROP TABLE flowretail.customer_groups; --",
    'q"uote',
    "a\\b",
    "tab\tx",
    LONG,
]
# Values the spec pattern itself refuses.
FAILS_SPEC_PATTERN = ["..", "%2F", " lead", "'quote", "é"]


@pytest.fixture
def state() -> SimulatorState:
    return make_state(customers=100, groups=4)


def _shown(value: str) -> str:
    return repr(value if len(value) <= 80 else value[:77] + "...")


def _insert_raw_group(state: SimulatorState, uid: str) -> None:
    """A group whose uid the API's own create would refuse, as a broken or hostile server might list it."""
    with state.lock:
        tenant = state.tenants[tenant_of(state)]
        stamp = state.now()
        tenant.groups[uid] = Group(uid, "hostile", stamp, "api", stamp, "api", SortedList(), tenant.bump())


def _insert_raw_customer(state: SimulatorState, group: str, uid: str) -> None:
    """A customer with a hostile uid, member of ``group`` (bypassing the simulator's uid rule)."""
    with state.lock:
        tenant = state.tenants[tenant_of(state)]
        index = len(tenant.uids)
        tenant.uids.append(uid)
        tenant.groups_of.append(())
        tenant.added[uid] = index
        tenant.groups[group].members.add(uid)
        tenant.link(index, group)
        tenant.groups[group].version = tenant.bump()


def _paths_mention(state: SimulatorState, value: str) -> list[str]:
    return [r.path for r in state.request_log if value in r.path or value in unquote(r.path)]


@pytest.mark.parametrize(
    "uid",
    [
        pytest.param(v, id=repr(v)[:20], marks=() if v in ("a/b", LONG, PASSES_SPEC_PATTERN[4]) else pytest.mark.slow)
        for v in PASSES_SPEC_PATTERN
    ],
)
@pytest.mark.reliability(
    area="hostile identifiers",
    injected="the group list returns a group uid with '/', '..', '%2F', spaces, quotes, SQL or 300 characters",
    expected="UnsafeIdentifierError before any request with it; no row loaded; the uid never in a URL path",
)
def test_hostile_group_uid_from_the_api_is_refused(
    state: SimulatorState, database_url: str, scenario: ScenarioRecord, uid: str
) -> None:
    before = prime(state, database_url)
    _insert_raw_group(state, uid)
    state.clear_log()
    with pytest.raises(UnsafeIdentifierError) as err:
        run_load(state, database_url, "run-1")
    assert str(err.value) == f"customerGroupUid {_shown(uid)} is not a valid UID {ALLOWED}; no request was sent"
    assert _paths_mention(state, uid) == []
    check_unchanged(scenario, before, database_url)
    with state.lock:
        del state.tenants[tenant_of(state)].groups[uid]
    run_load(state, database_url, "run-2")
    check_final(scenario, state, database_url)


@pytest.mark.parametrize(
    "uid",
    [
        pytest.param(v, id=repr(v)[:20], marks=() if v in ("..", "%2F") else pytest.mark.slow)
        for v in FAILS_SPEC_PATTERN
    ],
)
@pytest.mark.reliability(
    area="hostile identifiers",
    injected="the group list returns a uid the spec pattern refuses ('..', '%2F', leading space or quote, 'é')",
    expected="SpecViolationError naming the field; no row loaded",
)
def test_group_uid_breaking_the_spec_pattern_is_refused(
    state: SimulatorState, database_url: str, scenario: ScenarioRecord, uid: str
) -> None:
    before = prime(state, database_url)
    _insert_raw_group(state, uid)
    position = [g["customerGroupUid"] for g in state.groups(tenant_of(state))].index(uid)
    with pytest.raises(SpecViolationError) as err:
        run_load(state, database_url, "run-1")
    assert (err.value.operation, err.value.page, err.value.field) == (
        LIST_GROUPS,
        1,
        f"items[{position}].customerGroupUid",
    )
    assert str(err.value).startswith(
        f"get-customer-groups page 1: response breaks the spec at field 'items[{position}].customerGroupUid': "
    )
    check_unchanged(scenario, before, database_url)


HOSTILE_CUSTOMER_UIDS = [
    "x'; DROP TABLE flowretail.customer_snapshots; --",
    "a/../../b",
    "a%2Fb",
    'c"q',
    "c\\N",
    "c\t\n",
    "c" + "9" * 299,
]


@pytest.fixture
def push_conn(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(database_url, autocommit=True) as connection:
        ensure_push_tables(connection)
        yield connection


@pytest.mark.reliability(
    area="hostile identifiers",
    injected="customers with uids holding SQL, quotes, '\\N', tabs, newlines, '/..' and 300 characters",
    expected="loaded byte-exact; pushed only inside JSON bodies; the API's refusals recorded byte-exact",
)
def test_hostile_customer_uids_round_trip_byte_exact(
    state: SimulatorState, database_url: str, push_conn: psycopg.Connection[Any], scenario: ScenarioRecord
) -> None:
    tenant = tenant_of(state)
    group = next(
        g["customerGroupUid"] for g in state.groups(tenant) if state.member_uids(tenant, g["customerGroupUid"])
    )
    for uid in HOSTILE_CUSTOMER_UIDS:
        _insert_raw_customer(state, group, uid)
    run_load(state, database_url, "run-1")
    check_final(scenario, state, database_url)
    stored = {
        r[0]
        for r in push_conn.execute(
            "SELECT customer_uid FROM flowretail.customer_group_memberships WHERE customer_uid = ANY(%s)",
            (HOSTILE_CUSTOMER_UIDS,),
        ).fetchall()
    }
    assert stored == set(HOSTILE_CUSTOMER_UIDS)
    assert {t: len(rows) > 0 for t, rows in dump_tables(database_url).items()} == {
        "customer_groups": True,
        "customer_group_memberships": True,
        "customer_group_membership_history": True,
        "customer_snapshots": True,
    }
    # Push a segment holding them: they may only travel inside JSON bodies.
    good = state.member_uids(tenant, group)[:5]
    good = [u for u in good if u not in HOSTILE_CUSTOMER_UIDS]
    target = PushTarget("hostile_seg", "seg-hostile", "Hostile (warehouse)")
    state.clear_log()
    _, outcome = run_push(state, push_conn, target, [*good, *HOSTILE_CUSTOMER_UIDS], run_id="push-1", batch_size=4)
    assert outcome is not None and outcome.verified
    long_uid = HOSTILE_CUSTOMER_UIDS[-1]  # only letters and digits: a valid uid however long, so it is added
    refused = set(HOSTILE_CUSTOMER_UIDS) - {long_uid}
    assert set(outcome.rejected) == refused
    assert set(state.member_uids(tenant, "seg-hostile")) == {*good, long_uid}
    for uid in HOSTILE_CUSTOMER_UIDS:
        assert _paths_mention(state, uid) == []
    sent = {u for r in state.request_log if isinstance(r.json, dict) for u in r.json.get("addCustomerUids", [])}
    assert set(HOSTILE_CUSTOMER_UIDS) <= sent
    rejected = push_conn.execute(
        "SELECT rejected_uids FROM flowretail.segment_push_runs WHERE run_id = 'push-1'"
    ).fetchone()
    assert rejected is not None
    assert sorted(r["customer_uid"] for r in rejected[0]) == sorted(refused)
    logged = {
        u
        for row in push_conn.execute(
            "SELECT add_uids FROM flowretail.segment_push_log WHERE run_id = 'push-1' AND http_status = 400"
        ).fetchall()
        for u in row[0]
    }
    assert refused <= logged
    scenario.note(f"{len(HOSTILE_CUSTOMER_UIDS)} hostile uids stored and refused byte-exact")


TENANT_VALUES = ["../x", "a/b", "%2F", "a b", "x'; drop table t; --", 'q"', "é", "a" * 257]


@pytest.mark.parametrize("tenant", TENANT_VALUES, ids=lambda v: repr(v)[:20])
@pytest.mark.reliability(
    area="hostile identifiers",
    injected="a hostile tenant uid in FLOWRETAIL_TENANT_UIDS",
    expected="exit 2 with one line naming the variable and the value; nothing started",
)
def test_hostile_tenant_uid_in_configuration(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], scenario: ScenarioRecord, tenant: str
) -> None:
    monkeypatch.setenv("FLOWRETAIL_BASE_URL", "http://127.0.0.1:9/v2")
    monkeypatch.setenv("FLOWRETAIL_TOKEN", "unused-token")
    monkeypatch.setenv("FLOWRETAIL_TENANT_UIDS", f"tenant-1,{tenant}")
    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody@127.0.0.1:9/none")
    line = f"FLOWRETAIL_TENANT_UIDS: tenant uid {_shown(tenant)} is not a valid UID {ALLOWED}"
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert str(err.value) == line
    assert main(["load"]) == 2
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("", f"configuration error: {line}\n")


@pytest.mark.reliability(
    area="hostile identifiers",
    injected="a 256-character tenant uid (the longest allowed) and a hostile one passed straight to the loader",
    expected="256 accepted; hostile refused before any request, stored byte-exact in load_runs as failed",
)
def test_hostile_tenant_uid_passed_to_the_loader(
    state: SimulatorState, database_url: str, scenario: ScenarioRecord
) -> None:
    assert load_settings.__name__  # the settings path is covered above; this is the library path
    before = prime(state, database_url)
    hostile = "t'; DELETE FROM flowretail.customer_groups; --"
    state.clear_log()
    with pytest.raises(UnsafeIdentifierError) as err:
        run_load(state, database_url, "run-1", tenant=hostile)
    message = f"tenantUid {hostile!r} is not a valid UID {ALLOWED}; no request was sent"
    assert str(err.value) == message
    assert state.request_log == []
    check_unchanged(scenario, before, database_url)
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT tenant_uid, status, error FROM flowretail.load_runs WHERE run_id = 'run-1'"
        ).fetchone()
    assert row == (hostile, "failed", f"UnsafeIdentifierError: {message}")
    longest = "t" * 256
    with pytest.raises(Exception) as unknown:
        run_load(state, database_url, "run-2", tenant=longest)
    assert str(unknown.value) == f"get-customer-groups page 1: HTTP 404: tenant {longest!r} not found"
    assert [r.path for r in state.request_log] == [f"/v2/tenants/{longest}/customer-groups"]
