"""The schema lifecycle: migrate before the loads, new API fields via extra_fields and the registry,
the cap on new columns, no lock waits between loads, fresh statistics, upgrading an old warehouse."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from pipelines.cli import main
from pipelines.flowretail.simulator import FaultConfig
from pipelines.warehouse import migrate as migrate_module
from pipelines.warehouse.load import TenantLoadResult, analyze_statements
from pipelines.warehouse.migrate import (
    MigrationError,
    Privileges,
    Promotion,
    ddl_fingerprint,
    ddl_steps,
    ensure_current_schema,
    migrate,
    missing_privileges,
    plan_promotions,
)
from pipelines.warehouse.schema import (
    MAX_PROMOTED_FIELDS,
    RAW_TABLE_STATISTICS,
    customer_field_columns,
)
from pipelines.warehouse.tables import snapshot_bookkeeping_columns
from tests.warehouse.test_load import _actual_tables, _expected_tables, _first_member, _load, _state

RELEASE_SQL = Path(__file__).with_name("release_2026_11_schema.sql")
SPEC_COLUMNS = len(customer_field_columns())


def _rows(conn: psycopg.Connection[Any], query: str, *params: Any) -> list[tuple[Any, ...]]:
    return conn.execute(query, params).fetchall()


def _field_columns(conn: psycopg.Connection[Any]) -> list[str]:
    spec = {c.name for c in customer_field_columns()} | (snapshot_bookkeeping_columns() - {"extra_fields"})
    return [
        r[0]
        for r in _rows(
            conn,
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'flowretail' "
            "AND table_name = 'customer_snapshots' ORDER BY ordinal_position",
        )
        if r[0] not in spec
    ]


# --- pure pieces -------------------------------------------------------------------------------


def test_plan_promotes_oldest_first_up_to_the_cap_binds_old_columns_and_keeps_clashes() -> None:
    pending = [
        ("loyaltyTier", "text"),
        ("points", "bigint"),
        ("loyalty_tier", "text"),
        ("legacyThing", "bigint"),
        ("late", "jsonb"),
    ]
    promote, keep = plan_promotions(
        pending, {"email": "text", "legacy_thing": "numeric", "older": "text"}, {"email"}, cap=4
    )
    # 'older' (a column an earlier release added) counts against the cap; 'legacy_thing' is bound, not added
    assert promote == [
        Promotion("loyaltyTier", "text", "loyalty_tier"),
        Promotion("points", "bigint", "points"),
        Promotion("legacyThing", "numeric", "legacy_thing", new_column=False),
    ]
    assert keep == ["loyalty_tier", "late"]


def test_missing_privileges_are_one_line_naming_privilege_object_and_role() -> None:
    ok = Privileges("etl", "wh", False, True, {"flowretail": True, "analytics": True})
    assert missing_privileges(ok) is None
    line = missing_privileges(Privileges("etl", "wh", False, False, {"flowretail": False, "analytics": None}))
    assert line == (
        'missing privilege for role "etl": CREATE on database "wh" (schema "analytics" is missing and must be '
        'created); USAGE and CREATE on schema "flowretail" (or its ownership); TEMPORARY on database "wh" (the '
        "load stages pages in temporary tables); a DBA grants it with deploy/grants/etl_role.sql "
        "(see README, Least privilege)"
    )
    assert missing_privileges(Privileges("etl", "wh", True, True, {"flowretail": None, "analytics": None})) is None


def test_the_schema_version_is_a_hash_of_the_statements_so_an_appended_one_is_applied() -> None:
    steps = ddl_steps()
    assert ddl_fingerprint(steps) == ddl_fingerprint()
    appended = [*steps, sql.SQL("CREATE TABLE IF NOT EXISTS flowretail.budget (x int)")]
    assert ddl_fingerprint(appended) != ddl_fingerprint()
    assert not any("CREATE SCHEMA" in s.as_string(None) for s in steps)


def test_only_the_tables_a_load_changed_are_analysed() -> None:
    unchanged = TenantLoadResult("t", "r", started_at=None)  # type: ignore[arg-type]
    assert [s.as_string(None) for s in analyze_statements(unchanged)] == [
        'ANALYZE "flowretail"."load_runs" ("run_id", "tenant_uid", "status")'
    ]
    unchanged.customer_versions_opened = 1
    assert [s.as_string(None).split(" (")[0] for s in analyze_statements(unchanged)] == [
        'ANALYZE "flowretail"."customer_snapshots"',
        'ANALYZE "flowretail"."load_runs"',
    ]


# --- against PostgreSQL ----------------------------------------------------------------------


def test_a_new_api_field_lands_in_extra_fields_and_migrate_promotes_it(database_url: str) -> None:
    state = _state()
    tenant = state.tenant_uids()[0]
    _load(state, database_url, tenant, "run-1")
    uid = _first_member(state, tenant)
    state.update_customer(
        tenant, uid, new_fields=True, loyaltyTier="GOLD", loyaltyPoints=1200, preferences={"a": [1, 2]}, nothing=None
    )
    result = _load(state, database_url, tenant, "run-2")
    assert sorted(result.new_fields) == ["loyaltyPoints", "loyaltyTier", "preferences"]
    current = "FROM flowretail.customer_snapshots WHERE tenant_uid = %s AND customer_uid = %s AND valid_to IS NULL"
    with psycopg.connect(database_url) as conn:
        assert _field_columns(conn) == ["extra_fields"]  # the load added no column
        assert _rows(conn, f"SELECT extra_fields {current}", tenant, uid) == [
            ({"loyaltyTier": "GOLD", "loyaltyPoints": 1200, "preferences": {"a": [1, 2]}},)
        ]
        assert _rows(
            conn,
            "SELECT api_field, pg_type, status, column_name, first_seen_run_id "
            "FROM flowretail.customer_fields ORDER BY 1",
        ) == [
            ("loyaltyPoints", "bigint", "pending", None, "run-2"),
            ("loyaltyTier", "text", "pending", None, "run-2"),
            ("preferences", "jsonb", "pending", None, "run-2"),
        ]
    report = migrate(database_url)
    assert [(p.api_field, p.column_name) for p in report.promoted] == [
        ("loyaltyPoints", "loyalty_points"),
        ("loyaltyTier", "loyalty_tier"),
        ("preferences", "preferences"),
    ]
    with psycopg.connect(database_url) as conn:
        assert _rows(
            conn, f"SELECT loyalty_tier, loyalty_points, preferences, extra_fields {current}", tenant, uid
        ) == [("GOLD", 1200, {"a": [1, 2]}, None)]
        assert {r[0] for r in _rows(conn, "SELECT status FROM flowretail.customer_fields")} == {"column"}
    again = _load(state, database_url, tenant, "run-3")
    assert (again.new_fields, again.customer_versions_opened, again.customer_versions_closed) == ([], 0, 0)
    state.update_customer(tenant, uid, new_fields=True, loyaltyTier="PLATINUM")
    _load(state, database_url, tenant, "run-4")
    with psycopg.connect(database_url) as conn:
        assert _rows(conn, f"SELECT loyalty_tier, extra_fields {current}", tenant, uid) == [("PLATINUM", None)]


def test_a_current_schema_costs_one_read_and_no_lock(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    migrate(database_url)
    monkeypatch.setattr(migrate_module, "DDL_LOCK_TIMEOUT", "300ms")
    with psycopg.connect(database_url) as analyst:
        analyst.execute("LOCK TABLE flowretail.customer_snapshots IN ACCESS EXCLUSIVE MODE")
        assert ensure_current_schema(database_url) is None  # did not touch the locked table
        with psycopg.connect(database_url, autocommit=True) as other:
            other.execute("UPDATE flowretail.schema_version SET fingerprint = 'an older release'")
        started = time.monotonic()
        with pytest.raises(MigrationError, match=r"could not take a lock within lock_timeout 300ms: .*lock timeout"):
            ensure_current_schema(database_url)
        assert time.monotonic() - started < 5
    assert ensure_current_schema(database_url) is not None  # behind, so migrated once the table was free
    assert ensure_current_schema(database_url) is None


def test_a_busy_table_defers_promotion_and_loses_nothing(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    state = _state()
    tenant = state.tenant_uids()[0]
    uid = _first_member(state, tenant)
    state.update_customer(tenant, uid, new_fields=True, loyaltyTier="GOLD")
    _load(state, database_url, tenant, "run-1")
    monkeypatch.setattr(migrate_module, "DDL_LOCK_TIMEOUT", "300ms")
    with psycopg.connect(database_url) as analyst:
        analyst.execute("SELECT count(*) FROM flowretail.customer_snapshots")  # a long report holds ACCESS SHARE
        report = migrate(database_url)
        assert report.promoted == [] and report.deferred is not None
        assert "busy for longer than lock_timeout 300ms" in report.deferred
    with psycopg.connect(database_url) as conn:
        assert _rows(conn, "SELECT status FROM flowretail.customer_fields") == [("pending",)]
        assert _rows(conn, "SELECT extra_fields FROM flowretail.customer_snapshots WHERE customer_uid = %s", uid) == [
            ({"loyaltyTier": "GOLD"},)
        ]
    # the next load's check promotes it once the table is free
    _load(state, database_url, tenant, "run-2")
    with psycopg.connect(database_url) as conn:
        assert _rows(
            conn, "SELECT loyalty_tier, extra_fields FROM flowretail.customer_snapshots WHERE customer_uid = %s", uid
        ) == [("GOLD", None)]


def _wait_until_blocked_by(database_url: str, blocker_pid: int, thread: threading.Thread) -> None:
    deadline = time.monotonic() + 60
    with psycopg.connect(database_url, autocommit=True) as watch:
        while time.monotonic() < deadline:
            assert thread.is_alive(), "the first load ended before it reached its merge"
            row = watch.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))", (blocker_pid,)
            ).fetchone()
            if row and row[0]:
                return
            time.sleep(0.05)
    raise AssertionError("the first load never reached the end of its merge")


def test_two_tenants_loads_and_an_analyst_never_wait_for_each_others_merge(database_url: str) -> None:
    """Tenant 1's merge is held open at its last statement (a test session locks its load_runs row),
    with every row it writes already written. Tenant 2's whole load, seeing the same new API field,
    and an analyst's queries run meanwhile with lock_timeout 2 s: waiting for tenant 1's merge would
    wait until tenant 1 commits, which happens only after they finish, so they would fail."""
    state = _state()
    first, second = state.tenant_uids()
    _load(state, database_url, first, "a-1")
    _load(state, database_url, second, "b-1")
    uids = {tenant: _first_member(state, tenant) for tenant in (first, second)}
    for tenant, uid in uids.items():
        state.update_customer(tenant, uid, new_fields=True, loyaltyTier=f"GOLD-{tenant}", email=f"{tenant}@x.no")
    blocker = psycopg.connect(database_url)
    results: dict[str, Any] = {}

    async def hold_first_merge_open() -> None:
        blocker.execute("SELECT 1 FROM flowretail.load_runs WHERE run_id = 'a-2' FOR UPDATE")

    def first_load() -> None:
        try:
            results[first] = _load(state, database_url, first, "a-2", before_merge=hold_first_merge_open)
        except BaseException as exc:
            results[first] = exc

    thread = threading.Thread(target=first_load)
    thread.start()
    try:
        _wait_until_blocked_by(database_url, blocker.info.backend_pid, thread)
        with psycopg.connect(database_url) as watch:  # tenant 1's open merge holds no ACCESS EXCLUSIVE lock
            assert (
                _rows(
                    watch,
                    "SELECT c.relname FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
                    "WHERE l.mode = 'AccessExclusiveLock' AND c.relnamespace = 'flowretail'::regnamespace",
                )
                == []
            )
        impatient = make_conninfo(database_url, options="-c lock_timeout=2000")
        results[second] = _load(state, impatient, second, "b-2")
        with psycopg.connect(impatient) as analyst:
            seen = [
                row
                for tenant, uid in uids.items()
                for row in _rows(
                    analyst,
                    "SELECT tenant_uid, email, extra_fields FROM flowretail.customer_snapshots "
                    "WHERE tenant_uid = %s AND customer_uid = %s AND valid_to IS NULL",
                    tenant,
                    uid,
                )
            ]
            analyst.execute("SELECT count(*) FROM flowretail.customer_group_memberships")
        assert thread.is_alive(), "tenant 1's merge must still be open"
    finally:
        blocker.commit()
        blocker.close()
        thread.join()
    assert isinstance(results[first], TenantLoadResult), results[first]
    assert results[first].new_fields == ["loyaltyTier"]
    assert results[second].new_fields == []  # tenant 1 registered it before its merge
    # the analyst saw tenant 1 as before its merge and tenant 2 after its own
    assert [(t, e == f"{t}@x.no", x) for t, e, x in seen] == [
        (first, False, None),
        (second, True, {"loyaltyTier": f"GOLD-{second}"}),
    ]
    with psycopg.connect(database_url) as conn:
        for tenant in (first, second):
            assert _expected_tables(state, tenant) == _actual_tables(conn, tenant)
        assert _rows(conn, "SELECT api_field, status FROM flowretail.customer_fields") == [("loyaltyTier", "pending")]


def test_new_fields_beyond_the_cap_stay_in_extra_fields_for_good(database_url: str) -> None:
    state = _state(tenants=1, customers=60, groups=2)
    tenant = state.tenant_uids()[0]
    over = MAX_PROMOTED_FIELDS + 10
    state.faults = FaultConfig(unknown_customer_fields=over)
    first = _load(state, database_url, tenant, "run-1")
    assert len(first.new_fields) == over
    report = migrate(database_url)
    promoted = [f"newField{n:03d}" for n in range(1, MAX_PROMOTED_FIELDS + 1)]
    kept = [f"newField{n:03d}" for n in range(MAX_PROMOTED_FIELDS + 1, over + 1)]
    assert [p.api_field for p in report.promoted] == promoted
    assert report.kept_in_extra == kept
    state.faults = FaultConfig(unknown_customer_fields=over + 1)  # one more field after the cap is reached
    second = _load(state, database_url, tenant, "run-2")
    assert second.new_fields == [f"newField{over + 1:03d}"]
    assert migrate(database_url).kept_in_extra == [f"newField{over + 1:03d}"]
    _load(state, database_url, tenant, "run-3")
    uid = _first_member(state, tenant)
    with psycopg.connect(database_url) as conn:
        columns = _field_columns(conn)
        assert columns == ["extra_fields", *(f"new_field{n:03d}" for n in range(1, MAX_PROMOTED_FIELDS + 1))]
        row = conn.execute(
            "SELECT new_field001, new_field002, new_field003, extra_fields FROM flowretail.customer_snapshots "
            "WHERE tenant_uid = %s AND customer_uid = %s AND valid_to IS NULL",
            (tenant, uid),
        ).fetchone()
        assert row is not None
        assert row[:3] == (f"{uid}-1", {"n": 2}, 3)
        assert row[3] == {f"newField{n:03d}": _value(n, uid) for n in range(MAX_PROMOTED_FIELDS + 1, over + 2)}
        statuses = dict(_rows(conn, "SELECT status, count(*) FROM flowretail.customer_fields GROUP BY 1"))
        assert statuses == {"column": MAX_PROMOTED_FIELDS, "extra": over + 1 - MAX_PROMOTED_FIELDS}


def _value(number: int, uid: str) -> Any:
    from pipelines.flowretail.simulator.faults import unknown_field_value

    return unknown_field_value(number, uid)


def test_the_load_analyses_key_columns_of_the_raw_tables_on_a_brand_new_database(database_url: str) -> None:
    state = _state()
    _load(state, database_url, state.tenant_uids()[0], "run-1")
    with psycopg.connect(database_url) as conn:
        analysed = set(_rows(conn, "SELECT tablename, attname FROM pg_stats WHERE schemaname = 'flowretail'"))
        never_analysed = _rows(
            conn,
            "SELECT relname FROM pg_class WHERE relnamespace = 'flowretail'::regnamespace AND relkind = 'r' "
            "AND relname = ANY(%s) AND reltuples < 0",
            list(RAW_TABLE_STATISTICS),
        )
    assert analysed == {(table, column) for table, columns in RAW_TABLE_STATISTICS.items() for column in columns}
    assert never_analysed == []


def test_a_warehouse_built_by_the_previous_release_upgrades_in_place(database_url: str) -> None:
    state = _state()
    tenant = state.tenant_uids()[0]
    uid = _first_member(state, tenant)
    columns = ", ".join(c.name for c in customer_field_columns())
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(RELEASE_SQL.read_text("utf-8"))
        # what that release's loader did when the API added loyaltyTier, and a load it left behind
        conn.execute("ALTER TABLE flowretail.customer_snapshots ADD COLUMN loyalty_tier text")
        conn.execute(
            f"INSERT INTO flowretail.customer_snapshots (tenant_uid, customer_uid, {columns}, loyalty_tier, "
            "valid_from, row_hash, _run_id) SELECT %s, %s, "
            + ", ".join(["NULL"] * SPEC_COLUMNS)
            + ", 'SILVER', '2026-11-01', 'old-hash', 'old-run'",
            (tenant, uid),
        )
        conn.execute(
            "INSERT INTO flowretail.load_runs (run_id, tenant_uid, started_at, finished_at, status) "
            "VALUES ('old-run', %s, '2026-11-01', '2026-11-01', 'succeeded')",
            (tenant,),
        )
    assert migrate(database_url).ddl_applied
    state.update_customer(tenant, uid, new_fields=True, loyaltyTier="GOLD")
    result = _load(state, database_url, tenant, "run-1")
    assert result.new_fields == ["loyaltyTier"]
    report = migrate(database_url)
    assert report.promoted == [Promotion("loyaltyTier", "text", "loyalty_tier", new_column=False)]
    again = _load(state, database_url, tenant, "run-2")
    assert (again.customer_versions_opened, again.customer_versions_closed) == (0, 0)
    with psycopg.connect(database_url) as conn:
        assert _expected_tables(state, tenant) == _actual_tables(conn, tenant)
        assert _rows(
            conn,
            "SELECT loyalty_tier, extra_fields, valid_to IS NULL FROM flowretail.customer_snapshots "
            "WHERE customer_uid = %s ORDER BY valid_from",
            uid,
        ) == [("SILVER", None, False), ("GOLD", None, True)]
        assert _field_columns(conn) == ["loyalty_tier", "extra_fields"]
        assert _rows(conn, "SELECT count(*) FROM flowretail.segment_push_runs") == [(0,)]


def test_the_migrate_command_creates_then_finds_the_schema_current(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    assert main(["migrate"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "created schema flowretail",
        "created schema analytics",
        "schema brought up to date",
    ]
    assert main(["migrate"]) == 0
    assert capsys.readouterr().out.splitlines() == ["schema already up to date"]
    assert main(["migrate", "--force"]) == 0
    assert capsys.readouterr().out.splitlines() == ["schema brought up to date"]
