"""Tenant slices in PostgreSQL: a tenant's build touches only its rows, atomically, with statistics,
while views stay untouched and other tenants build the same models at the same time."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import pytest

from pipelines.sql_models import (
    ModelBuildError,
    ModelConfigError,
    Project,
    build_model,
    load_project,
    run_data_test,
    run_data_tests_of_model,
)
from pipelines.sql_models.data_tests import failure_counts_sql
from tests.sql_models import retail_fixture as fx
from tests.sql_models.conftest import ProjectWriter
from tests.sql_models.helpers import build_project, run_data_tests

SLICED = "{{ config(materialized='incremental') }}\n"
ORDERS = """
create table if not exists public.orders (tenant_uid text, order_uid text, amount integer);
"""


def _orders(conn: psycopg.Connection[Any], rows: list[tuple[str, str, int]]) -> None:
    conn.execute(ORDERS)
    conn.execute("TRUNCATE public.orders")
    with conn.cursor() as cursor:
        cursor.executemany("INSERT INTO public.orders VALUES (%s, %s, %s)", rows)


SOURCES = """
version: 2
sources:
  - name: shop
    schema: public
    tables: [{name: orders}]
"""


def _people(write_project: ProjectWriter, select: str, column_tests: str) -> Project:
    """A project of one model, ``stg_people`` (``select``), with the schema.yml column entries given."""
    schema = "version: 2\nmodels:\n  - name: stg_people\n    columns:\n" + column_tests
    return load_project(write_project({"staging/stg_people.sql": select, "schema.yml": schema}))


def _rows(conn: psycopg.Connection[Any], relation: str) -> set[tuple[Any, ...]]:
    return {tuple(row) for row in conn.execute(f"SELECT * FROM {relation}").fetchall()}


def _oid(conn: psycopg.Connection[Any], relation: str) -> int:
    row = conn.execute("SELECT %s::regclass::oid", (relation,)).fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture
def shop(conn: psycopg.Connection[Any], write_project: ProjectWriter) -> Project:
    _orders(conn, [("t1", "o1", 10), ("t1", "o2", 5), ("t2", "o1", 7)])
    root = write_project(
        {
            "schema.yml": SOURCES,
            "staging/stg_orders.sql": "select tenant_uid, order_uid, amount from {{ source('shop', 'orders') }}",
            "marts/totals.sql": SLICED
            + "select tenant_uid, sum(amount) as total, count(*) as n from {{ ref('stg_orders') }} group by tenant_uid",
        }
    )
    return load_project(root)


def test_a_tenant_build_replaces_only_that_tenants_slice(conn: psycopg.Connection[Any], shop: Project) -> None:
    first = build_project(conn, shop, tenants=["t1"])
    assert [(r.model, r.row_count) for r in first] == [("stg_orders", 2), ("totals", 1)]
    # The first build of a table builds it whole; later builds replace one slice.
    assert _rows(conn, "analytics.totals") == {("t1", 15, 2), ("t2", 7, 1)}
    # ... in one statement: t1's slice, already in the whole table, was not written a second time.
    assert conn.execute("SELECT count(DISTINCT xmin::text) FROM analytics.totals").fetchone() == (1,)

    _orders(conn, [("t1", "o1", 1), ("t2", "o1", 100), ("t2", "o9", 1)])
    build_project(conn, shop, tenants=["t1"])
    assert _rows(conn, "analytics.totals") == {("t1", 1, 1), ("t2", 7, 1)}
    build_project(conn, shop, tenants=["t2"])
    assert _rows(conn, "analytics.totals") == {("t1", 1, 1), ("t2", 101, 2)}

    # A tenant whose rows are gone has an empty slice (not the old one).
    _orders(conn, [("t2", "o1", 100)])
    build_project(conn, shop, tenants=["t1"])
    assert _rows(conn, "analytics.totals") == {("t2", 101, 2)}


def test_a_build_for_several_tenants_replaces_exactly_their_slices(
    conn: psycopg.Connection[Any], shop: Project
) -> None:
    build_project(conn, shop)
    _orders(conn, [("t1", "o1", 1), ("t2", "o1", 100), ("t2", "o9", 1), ("t3", "o1", 5)])
    build_project(conn, shop, tenants=["t3"])

    _orders(conn, [("t2", "o1", 3), ("t3", "o1", 99)])
    results = build_project(conn, shop, tenants=["t1", "t2"])

    # t1's rows are gone (an empty slice, not the old one), t2's replaced, t3 (not in the run) kept.
    assert _rows(conn, "analytics.totals") == {("t2", 3, 1), ("t3", 5, 1)}
    assert [(r.model, r.row_count, r.rows_by_tenant) for r in results] == [
        ("stg_orders", 1, {"t1": 0, "t2": 1}),
        ("totals", 1, {"t1": 0, "t2": 1}),
    ]


def test_rows_outside_the_tenants_of_a_build_fail_it(conn: psycopg.Connection[Any], shop: Project) -> None:
    build_project(conn, shop, tenants=["t1", "t2"])
    (shop.root / "marts" / "totals.sql").write_text(
        SLICED + "select 't3'::text as tenant_uid, 1::bigint as total, 1::bigint as n", "utf-8"
    )
    leaking = load_project(shop.root)

    with pytest.raises(ModelBuildError) as raised:
        build_model(conn, leaking.models["totals"], leaking, tenants=["t1", "t2"])

    assert raised.value.message == (
        "models/marts/totals.sql: built for tenants 't1', 't2', it returned 1 row(s) of another tenant "
        "(or a NULL tenant_uid)"
    )
    assert _rows(conn, "analytics.totals") == {("t1", 15, 2), ("t2", 7, 1)}


def test_unique_over_several_tenants_counts_duplicates_within_each_tenant(
    conn: psycopg.Connection[Any], write_project: ProjectWriter
) -> None:
    project = _people(
        write_project,
        "select * from (values ('t1', 'u1'), ('t2', 'u1'), ('t2', 'u2'), ('t2', 'u2')) as p (tenant_uid, person_uid)",
        "      - name: person_uid\n        tests: [unique]\n",
    )
    build_project(conn, project)
    (test,) = project.tests

    both = run_data_test(conn, test, tenants=["t1", "t2"])

    # u1 in t1 and in t2 is no duplicate for a tenant's run; u2 twice in t2 is.
    assert (both.failing_rows, both.sample) == (1, [{"tenant_uid": "t2", "unique_field": "u2", "n_records": 2}])
    assert run_data_test(conn, test, tenants=["t1"]).passed
    assert run_data_test(conn, test).failing_rows == 2  # over all rows, without tenants, u1 repeats too


def test_a_sliced_table_is_analysed_and_indexed_on_the_tenant(conn: psycopg.Connection[Any], shop: Project) -> None:
    build_project(conn, shop, tenants=["t1"])

    analysed = conn.execute(
        "SELECT attname FROM pg_stats WHERE schemaname = 'analytics' AND tablename = 'totals' ORDER BY attname"
    ).fetchall()
    assert [row[0] for row in analysed] == ["n", "tenant_uid", "total"]
    indexes = conn.execute("SELECT indexdef FROM pg_indexes WHERE schemaname = 'analytics' AND tablename = 'totals'")
    assert [row[0].split(" USING ")[1] for row in indexes.fetchall()] == ["btree (tenant_uid)"]


def test_a_failing_tenant_build_leaves_the_previous_slice(conn: psycopg.Connection[Any], shop: Project) -> None:
    build_project(conn, shop, tenants=["t1"])
    (shop.root / "marts" / "totals.sql").write_text(
        SLICED + "select tenant_uid, sum(100 / (amount - 10)) as total, count(*) as n "
        "from {{ ref('stg_orders') }} group by tenant_uid",
        "utf-8",
    )
    broken = load_project(shop.root)

    with pytest.raises(ModelBuildError, match=r"models/marts/totals\.sql: division by zero"):
        build_model(conn, broken.models["totals"], broken, tenants=["t1"])

    assert _rows(conn, "analytics.totals") == {("t1", 15, 2), ("t2", 7, 1)}


def test_rows_of_another_tenant_fail_the_build(conn: psycopg.Connection[Any], shop: Project) -> None:
    build_project(conn, shop, tenants=["t1"])
    (shop.root / "marts" / "totals.sql").write_text(
        SLICED + "select 't2'::text as tenant_uid, 1::bigint as total, 1::bigint as n", "utf-8"
    )
    leaking = load_project(shop.root)

    with pytest.raises(ModelBuildError) as raised:
        build_model(conn, leaking.models["totals"], leaking, tenants=["t1"])

    assert raised.value.message == (
        "models/marts/totals.sql: built for tenant 't1', it returned 1 row(s) of another tenant (or a NULL tenant_uid)"
    )
    assert _rows(conn, "analytics.totals") == {("t1", 15, 2), ("t2", 7, 1)}


def test_new_columns_rebuild_the_table_whole_once(conn: psycopg.Connection[Any], shop: Project) -> None:
    build_project(conn, shop, tenants=["t1"])
    (shop.root / "marts" / "totals.sql").write_text(
        SLICED + "select tenant_uid, sum(amount) as total from {{ ref('stg_orders') }} group by tenant_uid", "utf-8"
    )
    changed = load_project(shop.root)

    build_model(conn, changed.models["totals"], changed, tenants=["t2"])

    assert _rows(conn, "analytics.totals") == {("t1", 15), ("t2", 7)}


def test_views_are_replaced_only_when_their_sql_changes(conn: psycopg.Connection[Any], shop: Project) -> None:
    build_project(conn, shop, tenants=["t1"])
    view = _oid(conn, "analytics.stg_orders")
    build_project(conn, shop, tenants=["t2"])
    assert _oid(conn, "analytics.stg_orders") == view

    (shop.root / "staging" / "stg_orders.sql").write_text(
        "select tenant_uid, order_uid, amount * 2 as amount from {{ source('shop', 'orders') }}", "utf-8"
    )
    build_project(conn, load_project(shop.root), tenants=["t2"])

    assert _oid(conn, "analytics.stg_orders") != view
    assert _rows(conn, "analytics.totals") == {("t1", 15, 2), ("t2", 14, 1)}


def test_concurrent_tenant_builds_of_the_same_models_do_not_disturb_each_other(
    database_url: str, conn: psycopg.Connection[Any], shop: Project
) -> None:
    _orders(conn, [(f"t{t}", f"o{i}", i) for t in range(1, 5) for i in range(1, 50)])
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def run(tenant: str) -> None:
        try:
            with psycopg.connect(database_url, autocommit=True) as own:
                start.wait()
                for _ in range(5):
                    build_project(own, shop, tenants=[tenant])
                    results = run_data_tests(own, shop, tenants=[tenant])
                    assert all(result.passed for result in results.values())
        except BaseException as error:  # reported below, with the tenant
            errors.append(error)

    threads = [threading.Thread(target=run, args=(f"t{t}",)) for t in range(1, 5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert errors == []
    assert _rows(conn, "analytics.totals") == {(f"t{t}", sum(range(1, 50)), 49) for t in range(1, 5)}


def test_a_relationship_to_a_key_of_another_tenant_fails(
    conn: psycopg.Connection[Any], write_project: ProjectWriter
) -> None:
    root = write_project(
        {
            "staging/stg_people.sql": "select * from (values ('t2', 'u1'), ('t1', 'u2')) as p (tenant_uid, person_uid)",
            "staging/stg_orders.sql": "select * from (values ('t1', 'u1'), ('t1', 'u2')) as o (tenant_uid, person_uid)",
            "schema.yml": """
version: 2
models:
  - name: stg_orders
    columns:
      - name: person_uid
        tests: [{relationships: {to: "ref('stg_people')", field: person_uid}}]
""",
        }
    )
    project = load_project(root)
    build_project(conn, project)
    (test,) = project.tests

    over_all = run_data_test(conn, test)
    for_t1 = run_data_test(conn, test, tenants=["t1"])

    assert (over_all.failing_rows, over_all.sample) == (1, [{"tenant_uid": "t1", "from_field": "u1"}])
    assert (for_t1.failing_rows, for_t1.sample) == (1, [{"tenant_uid": "t1", "from_field": "u1"}])
    assert run_data_test(conn, test, tenants=["t2"]).passed


def test_a_model_spanning_tenants_is_built_whole_and_only_without_a_tenant(
    conn: psycopg.Connection[Any], shop: Project, write_project: ProjectWriter
) -> None:
    root = write_project(
        {
            "marts/grand_total.sql": "{{ config(materialized='table', tenant_scope='all') }}\n"
            "select sum(total) as total from {{ ref('totals') }}"
        }
    )
    project = load_project(root)
    assert [m.name for m in project.cross_tenant_models()] == ["grand_total"]

    assert [r.model for r in build_project(conn, project, tenants=["t1"])] == ["stg_orders", "totals"]
    with pytest.raises(ModelBuildError, match="declared tenant_scope='all'"):
        build_model(conn, project.models["grand_total"], project, tenants=["t1"])
    build_model(conn, project.models["grand_total"], project)
    assert _rows(conn, "analytics.grand_total") == {(22,)}


def test_a_per_tenant_model_may_not_read_a_model_spanning_tenants(write_project: ProjectWriter) -> None:
    root = write_project(
        {
            "marts/everyone.sql": "{{ config(materialized='table', tenant_scope='all') }} select 1 as n",
            "marts/mine.sql": SLICED + "select 't' as tenant_uid, n from {{ ref('everyone') }}",
        }
    )

    with pytest.raises(ModelConfigError) as raised:
        load_project(root)

    assert raised.value.message == (
        "models/marts/mine.sql: ref('everyone') reads a model declared tenant_scope='all' (models/marts/everyone.sql); "
        "a per-tenant model may only read per-tenant models and sources (declare tenant_scope='all' on mine too)"
    )


def test_the_shipped_segments_per_tenant_hold_exactly_that_tenants_customers(
    retail_conn: psycopg.Connection[Any], shipped_project: Project
) -> None:
    build_project(retail_conn, shipped_project, tenants=[fx.OUTDOOR])
    retail_conn.execute("DELETE FROM analytics.newsletter_subscribers WHERE tenant_uid = %s", (fx.BAKERY,))

    build_project(retail_conn, shipped_project, tenants=[fx.OUTDOOR])
    assert _rows(retail_conn, "analytics.newsletter_subscribers") == {
        row for row in fx.expected_newsletter_subscribers() if row[0] == fx.OUTDOOR
    }
    build_project(retail_conn, shipped_project, tenants=[fx.BAKERY])
    assert _rows(retail_conn, "analytics.newsletter_subscribers") == fx.expected_newsletter_subscribers()


def test_a_source_without_statistics_is_analysed_before_a_model_reads_it(
    database_url: str, conn: psycopg.Connection[Any], shop: Project
) -> None:
    with psycopg.connect(database_url, autocommit=True) as loader:
        # only the runner may analyse it here: autovacuum would, after 500 rows, on its own schedule
        loader.execute("ALTER TABLE public.orders SET (autovacuum_enabled = false)")
        loader.execute("INSERT INTO public.orders SELECT 't3', 'o' || n, n FROM generate_series(1, 500) AS n")
        loader.execute("SELECT pg_stat_force_next_flush()")
    for _ in range(100):  # the loader's counts reach the shared statistics when its session ends
        row = conn.execute("SELECT n_live_tup FROM pg_stat_user_tables WHERE relname = 'orders'").fetchone()
        if row and row[0] > 0:
            break
        time.sleep(0.05)
    assert conn.execute("SELECT count(*) FROM pg_stats WHERE tablename = 'orders'").fetchone() == (0,)

    build_project(conn, shop, tenants=["t3"])

    analysed = conn.execute("SELECT attname FROM pg_stats WHERE tablename = 'orders' ORDER BY attname").fetchall()
    assert [row[0] for row in analysed] == ["amount", "order_uid", "tenant_uid"]


def test_a_models_column_tests_share_one_scan_and_match_running_each_alone(
    conn: psycopg.Connection[Any], write_project: ProjectWriter
) -> None:
    rows = "('t1', 'u1', 'gold'), ('t1', NULL, 'tin'), ('t1', 'u3', 'tin'), ('t2', 'u4', NULL), ('t2', 'u5', 'gold')"
    project = _people(
        write_project,
        f"select * from (values {rows}) as p (tenant_uid, person_uid, tier)",
        "      - name: person_uid\n        tests: [not_null, unique]\n"
        "      - name: tier\n        tests: [not_null, {accepted_values: {values: [gold, silver]}}]\n",
    )
    build_project(conn, project)
    tests = project.tests_for("stg_people")

    for tenants in (None, ["t1"], ["t2"], ["t1", "t2"]):
        together = run_data_tests_of_model(conn, tests, tenants=tenants)
        alone = [run_data_test(conn, test, tenants=tenants) for test in tests]
        assert together == alone

    by_name = dict(zip([t.name for t in tests], run_data_tests_of_model(conn, tests, tenants=["t1"]), strict=True))
    assert {name: result.failing_rows for name, result in by_name.items()} == {
        "not_null_stg_people_person_uid": 1,
        "unique_stg_people_person_uid": 0,
        "not_null_stg_people_tier": 0,
        "accepted_values_stg_people_tier": 1,
    }
    assert by_name["accepted_values_stg_people_tier"].sample == [{"value_field": "tin", "n_records": 2}]


def test_the_shared_scan_counts_not_null_and_accepted_values_over_the_tenants_slice(
    write_project: ProjectWriter,
) -> None:
    tests = _people(
        write_project,
        "select 't1' as tenant_uid, 'u1' as person_uid, 'gold' as tier",
        "      - name: person_uid\n        tests: [not_null, unique]\n"
        """      - name: tier\n        tests: [{accepted_values: {values: [gold, "it's"]}}]\n""",
    ).tests_for("stg_people")
    by_row = [test for test in tests if test.kind != "unique"]

    assert failure_counts_sql(by_row, ["t'1"]) == (
        'SELECT count(*) FILTER (WHERE "person_uid" IS NULL), '
        "count(DISTINCT \"tier\") FILTER (WHERE \"tier\" IS NOT NULL AND \"tier\" NOT IN ('gold', 'it''s')) "
        'FROM (SELECT * FROM "analytics"."stg_people" WHERE "tenant_uid" = \'t\'\'1\') AS "tested"'
    )
    assert failure_counts_sql(tests, ["t1"]) is None  # unique needs a GROUP BY of its own
