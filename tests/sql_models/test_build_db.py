"""Building into PostgreSQL: atomic swaps, failures that keep the old relation, data test results."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from pipelines.sql_models import (
    DataTestError,
    ModelBuildError,
    UnknownModelError,
    build_model,
    load_project,
    run_data_test,
)
from tests.sql_models.helpers import build_project

ProjectWriter = Callable[[dict[str, str]], Path]

SEED_SOURCE = """version: 2
sources:
  - name: fixture
    schema: public
    tables:
      - name: seed
"""
TABLE = "{{ config(materialized='table') }}\n"


def _seed(conn: psycopg.Connection[Any], values: list[int]) -> None:
    conn.execute("CREATE TABLE IF NOT EXISTS public.seed (id serial PRIMARY KEY, v integer)")
    conn.execute("TRUNCATE public.seed")
    with conn.cursor() as cursor:
        cursor.executemany("INSERT INTO public.seed (v) VALUES (%s)", [(value,) for value in values])


def _values(conn: psycopg.Connection[Any], relation: str, column: str = "v") -> list[Any]:
    query = sql.SQL("SELECT {} FROM {} ORDER BY 1").format(sql.Identifier(column), sql.Identifier(*relation.split(".")))
    return [row[0] for row in conn.execute(query).fetchall()]


def _relation_exists(conn: psycopg.Connection[Any], schema: str, name: str) -> bool:
    row = conn.execute(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s",
        (schema, name),
    ).fetchone()
    return bool(row and row[0])


def _wait_until_waiting_on_lock(conn: psycopg.Connection[Any], pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = conn.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
        if row and row[0] == "Lock":
            return
        time.sleep(0.02)
    raise AssertionError(f"backend {pid} never waited on a lock")


class _Background:
    """Run a function in a thread and keep its result or exception for the test to check."""

    def __init__(self, function: Callable[[], Any]) -> None:
        self.result: Any = None
        self.error: BaseException | None = None

        def run() -> None:
            try:
                self.result = function()
            except BaseException as error:
                self.error = error

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def join(self) -> Any:
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "background work did not finish"
        if self.error is not None:
            raise self.error
        return self.result


def test_build_reports_rows_and_catalog_columns(conn: psycopg.Connection[Any], write_project: ProjectWriter) -> None:
    _seed(conn, [1, 2, 3])
    root = write_project(
        {
            "schema.yml": SEED_SOURCE,
            "staging/stg_seed.sql": "select id, v, v::numeric(10, 2) as amount from {{ source('fixture', 'seed') }}",
            "marts/big_seed.sql": TABLE + "select id from {{ ref('stg_seed') }} where v > 1",
        }
    )
    project = load_project(root)

    results = build_project(conn, project)

    assert [(r.model, r.materialized, r.row_count) for r in results] == [
        ("stg_seed", "view", 3),
        ("big_seed", "table", 2),
    ]
    assert [(c.name, c.data_type) for c in results[0].columns] == [
        ("id", "integer"),
        ("v", "integer"),
        ("amount", "numeric(10,2)"),
    ]
    kinds = dict(
        conn.execute(
            "SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'analytics'"
        ).fetchall()
    )
    # The runner's record of what it built (sql_models/built.py) lives beside the models.
    assert kinds == {"stg_seed": "v", "big_seed": "r", "_sql_model_relations": "r", "_sql_model_relations_pkey": "i"}


def test_a_failing_model_keeps_the_previous_relation_and_names_the_file(
    conn: psycopg.Connection[Any], write_project: ProjectWriter
) -> None:
    _seed(conn, [1, 2, 3])
    files = {
        "schema.yml": SEED_SOURCE,
        "marts/seed_totals.sql": TABLE + "select v from {{ source('fixture', 'seed') }}",
    }
    root = write_project(files)
    build_project(conn, load_project(root))
    _seed(conn, [7])
    write_project({"marts/seed_totals.sql": TABLE + "select v, nope from {{ source('fixture', 'seed') }}"})
    broken = load_project(root)

    with pytest.raises(ModelBuildError) as raised:
        build_model(conn, broken.models["seed_totals"], broken)

    assert str(raised.value).startswith("models/marts/seed_totals.sql: ")
    assert 'column "nope" does not exist' in str(raised.value)
    assert raised.value.paths == (root / "marts" / "seed_totals.sql",)
    assert _values(conn, "analytics.seed_totals") == [1, 2, 3]
    assert not _relation_exists(conn, "analytics", "seed_totals__new")


def test_a_failing_view_keeps_the_previous_view(conn: psycopg.Connection[Any], write_project: ProjectWriter) -> None:
    _seed(conn, [4])
    root = write_project(
        {"schema.yml": SEED_SOURCE, "staging/stg_seed.sql": "select v from {{ source('fixture', 'seed') }}"}
    )
    build_project(conn, load_project(root))
    write_project({"staging/stg_seed.sql": "select v / 0 as broken from {{ source('fixture', 'seed') }} where v = 'x'"})

    with pytest.raises(ModelBuildError, match=r"^models/staging/stg_seed\.sql: .*invalid input syntax"):
        build_project(conn, load_project(root))

    assert _values(conn, "analytics.stg_seed") == [4]


def test_build_project_stops_at_the_first_failure(conn: psycopg.Connection[Any], write_project: ProjectWriter) -> None:
    _seed(conn, [1])
    root = write_project(
        {
            "schema.yml": SEED_SOURCE,
            "staging/a_broken.sql": "select missing_column from {{ source('fixture', 'seed') }}",
            "marts/b_after.sql": "select 1 as one",
        }
    )

    with pytest.raises(ModelBuildError, match=r"a_broken\.sql"):
        build_project(conn, load_project(root))

    assert not _relation_exists(conn, "analytics", "b_after")


def test_selection_builds_only_the_named_models(conn: psycopg.Connection[Any], write_project: ProjectWriter) -> None:
    root = write_project(
        {"staging/one.sql": "select 1 as n", "marts/two.sql": "select n + 1 as n from {{ ref('one') }}"}
    )
    project = load_project(root)
    build_project(conn, project, selection=["one"])

    assert _relation_exists(conn, "analytics", "one")
    assert not _relation_exists(conn, "analytics", "two")
    with pytest.raises(UnknownModelError, match="selection names unknown model"):
        build_project(conn, project, selection=["three"])


def test_materialization_can_change_between_builds(conn: psycopg.Connection[Any], write_project: ProjectWriter) -> None:
    root = write_project({"marts/flip.sql": "{{ config(materialized='view') }}\nselect 1 as v"})
    build_project(conn, load_project(root))
    write_project({"marts/flip.sql": TABLE + "select 2 as v"})
    build_project(conn, load_project(root))

    kind = conn.execute("SELECT relkind FROM pg_class WHERE oid = 'analytics.flip'::regclass").fetchone()
    assert kind == ("r",)
    assert _values(conn, "analytics.flip") == [2]


def test_works_on_a_connection_without_autocommit(database_url: str, write_project: ProjectWriter) -> None:
    root = write_project({"marts/plain.sql": TABLE + "select 5 as v"})
    with psycopg.connect(database_url) as builder:
        build_project(builder, load_project(root))
        assert builder.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    with psycopg.connect(database_url, autocommit=True) as reader:
        assert _values(reader, "analytics.plain") == [5]


def test_dependent_views_are_recreated_in_the_same_transaction(
    conn: psycopg.Connection[Any], write_project: ProjectWriter
) -> None:
    _seed(conn, [1, 2])
    root = write_project(
        {
            "schema.yml": SEED_SOURCE,
            "marts/base.sql": TABLE + "select v, v * 10 as old_column from {{ source('fixture', 'seed') }}",
            "marts/over_base.sql": "select * from {{ ref('base') }}",
            "marts/over_over_base.sql": "select v from {{ ref('over_base') }}",
        }
    )
    build_project(conn, load_project(root))
    conn.execute("CREATE SCHEMA reporting")
    conn.execute("CREATE VIEW reporting.hand_made AS SELECT v FROM analytics.base")
    # The table loses old_column; the dependent model is rewritten to match, the hand-made view still fits.
    write_project(
        {
            "marts/base.sql": TABLE + "select v, v * 100 as new_column from {{ source('fixture', 'seed') }}",
            "marts/over_base.sql": "select v, new_column from {{ ref('base') }}",
        }
    )
    project = load_project(root)

    result = build_model(conn, project.models["base"], project)

    assert sorted(result.recreated_dependents) == [
        "analytics.over_base",
        "analytics.over_over_base",
        "reporting.hand_made",
    ]
    assert _values(conn, "analytics.over_base", "new_column") == [100, 200]
    assert _values(conn, "analytics.over_over_base") == [1, 2]
    assert _values(conn, "reporting.hand_made") == [1, 2]


def test_a_dependent_that_no_longer_fits_aborts_the_swap(
    conn: psycopg.Connection[Any], write_project: ProjectWriter
) -> None:
    _seed(conn, [3])
    root = write_project(
        {
            "schema.yml": SEED_SOURCE,
            "marts/base.sql": TABLE + "select v, v as doomed from {{ source('fixture', 'seed') }}",
        }
    )
    build_project(conn, load_project(root))
    conn.execute("CREATE VIEW public.needs_doomed AS SELECT doomed FROM analytics.base")
    write_project({"marts/base.sql": TABLE + "select v + 1 as v from {{ source('fixture', 'seed') }}"})
    project = load_project(root)

    with pytest.raises(ModelBuildError) as raised:
        build_model(conn, project.models["base"], project)

    assert str(raised.value).startswith(
        "models/marts/base.sql: dependent view public.needs_doomed no longer fits the new relation: "
    )
    assert _values(conn, "analytics.base") == [3]
    assert _values(conn, "public.needs_doomed", "doomed") == [3]


def test_readers_queued_behind_the_swap_read_the_new_relation(
    database_url: str, conn: psycopg.Connection[Any], write_project: ProjectWriter
) -> None:
    """A reader holding the old table delays the swap; readers arriving meanwhile get new data."""
    _seed(conn, [1, 1])
    root = write_project(
        {
            "schema.yml": SEED_SOURCE,
            "marts/balances.sql": TABLE + "select v from {{ source('fixture', 'seed') }}",
            "marts/balances_view.sql": "select v from {{ ref('balances') }}",
        }
    )
    project = load_project(root)
    build_project(conn, project)
    _seed(conn, [2, 2, 2])

    with (
        psycopg.connect(database_url) as long_reader,
        psycopg.connect(database_url, autocommit=True) as builder,
        psycopg.connect(database_url, autocommit=True) as table_reader,
        psycopg.connect(database_url, autocommit=True) as view_reader,
    ):
        assert _values(long_reader, "analytics.balances") == [1, 1]  # holds its lock until commit
        build = _Background(lambda: build_model(builder, project.models["balances"], project))
        _wait_until_waiting_on_lock(conn, builder.info.backend_pid)
        read_table = _Background(lambda: _values(table_reader, "analytics.balances"))
        read_view = _Background(lambda: _values(view_reader, "analytics.balances_view"))
        _wait_until_waiting_on_lock(conn, table_reader.info.backend_pid)
        _wait_until_waiting_on_lock(conn, view_reader.info.backend_pid)
        assert _values(long_reader, "analytics.balances") == [1, 1]
        long_reader.commit()

        assert build.join().row_count == 3
        assert read_table.join() == [2, 2, 2]
        assert read_view.join() == [2, 2, 2]


def test_a_concurrent_reader_sees_old_or_new_data_never_an_error(
    database_url: str, conn: psycopg.Connection[Any], write_project: ProjectWriter
) -> None:
    _seed(conn, [1])
    root = write_project(
        {
            "schema.yml": SEED_SOURCE,
            "marts/snapshot.sql": TABLE + "select v from {{ source('fixture', 'seed') }}",
            "marts/snapshot_view.sql": "select v from {{ ref('snapshot') }}",
        }
    )
    project = load_project(root)
    build_project(conn, project)
    stop = threading.Event()
    seen: set[tuple[int, ...]] = set()

    def read_until_stopped() -> None:
        with psycopg.connect(database_url, autocommit=True) as reader:
            while not stop.is_set():
                for relation in ("analytics.snapshot", "analytics.snapshot_view"):
                    seen.add(tuple(_values(reader, relation)))

    readers = [_Background(read_until_stopped) for _ in range(2)]
    try:
        for generation in range(2, 14):
            _seed(conn, [generation] * generation)
            build_project(conn, project)
    finally:
        stop.set()
        for reader in readers:
            reader.join()

    assert seen <= {tuple([generation] * generation) for generation in range(1, 14)}
    assert len(seen) > 1


def test_failing_data_tests_count_and_sample_the_failing_rows(
    conn: psycopg.Connection[Any], write_project: ProjectWriter
) -> None:
    root = write_project(
        {
            "staging/stg_orders.sql": """
                select * from (values
                    ('t1', 'o-1', 'c-1', 'paid'),
                    ('t1', 'o-1', 'c-2', 'paid'),
                    ('t1', 'o-2', null, 'refunded'),
                    ('t2', 'o-1', 'c-9', 'lost'),
                    ('t2', 'o-3', 'c-9', 'lost'),
                    ('t2', 'o-4', 'c-1', 'open')
                ) as orders (tenant_uid, order_uid, customer_uid, status)
            """,
            "staging/stg_people.sql": (
                "{{ config(tenant_scope='all') }} select 'c-1' as customer_uid union all select 'c-2'"
            ),
            "schema.yml": """
version: 2
models:
  - name: stg_orders
    columns:
      - name: order_uid
        tests: [unique]
      - name: customer_uid
        tests:
          - not_null
          - relationships: {to: "ref('stg_people')", field: customer_uid}
      - name: status
        tests:
          - accepted_values: {values: [paid, refunded, open]}
    tests:
      - unique: {column_name: "tenant_uid || ':' || order_uid"}
""",
        }
    )
    project = load_project(root)
    build_project(conn, project)
    tests = {test.name: test for test in project.tests}

    unique = run_data_test(conn, tests["unique_stg_orders_order_uid"])
    assert (unique.failing_rows, unique.sample) == (1, [{"unique_field": "o-1", "n_records": 3}])
    per_tenant = run_data_test(conn, tests["unique_stg_orders_tenant_uid_order_uid"])
    assert (per_tenant.failing_rows, per_tenant.sample) == (1, [{"unique_field": "t1:o-1", "n_records": 2}])
    not_null = run_data_test(conn, tests["not_null_stg_orders_customer_uid"])
    assert not_null.failing_rows == 1
    assert not_null.sample == [{"tenant_uid": "t1", "order_uid": "o-2", "customer_uid": None, "status": "refunded"}]
    relationships = run_data_test(
        conn, tests["relationships_stg_orders_customer_uid__stg_people__customer_uid"], sample_size=1
    )
    assert (relationships.failing_rows, relationships.sample) == (2, [{"from_field": "c-9"}])
    accepted = run_data_test(conn, tests["accepted_values_stg_orders_status"], sample_size=0)
    assert (accepted.failing_rows, accepted.sample, accepted.passed) == (1, [], False)


def test_a_data_test_that_cannot_run_names_schema_yml(
    conn: psycopg.Connection[Any], write_project: ProjectWriter
) -> None:
    root = write_project(
        {
            "staging/stg_x.sql": "select 1 as a",
            "schema.yml": "version: 2\nmodels:\n  - name: stg_x\n    columns: [{name: b, tests: [not_null]}]\n",
        }
    )
    project = load_project(root)
    build_project(conn, project)

    with pytest.raises(
        DataTestError,
        match=r'^models/schema.yml: data test not_null_stg_x_b on model stg_x could not run: column "b" does not exist',
    ):
        run_data_test(conn, project.tests[0])


def test_samples_are_json_compatible(conn: psycopg.Connection[Any], write_project: ProjectWriter) -> None:
    root = write_project(
        {
            "staging/stg_events.sql": (
                "select null::text as customer_uid, timestamptz '2024-05-01 12:00:00+00' as happened_at, "
                "12.50::numeric as amount, date '2024-05-01' as day, '{\"a\": [1, 2]}'::jsonb as payload"
            ),
            "schema.yml": "version: 2\nmodels:\n  - name: stg_events\n    columns: [{name: customer_uid, tests: [not_null]}]\n",
        }
    )
    project = load_project(root)
    build_project(conn, project)
    conn.execute("SET TimeZone = 'UTC'")

    result = run_data_test(conn, project.tests[0])

    assert result.sample == [
        {
            "customer_uid": None,
            "happened_at": "2024-05-01T12:00:00+00:00",
            "amount": "12.50",
            "day": "2024-05-01",
            "payload": {"a": [1, 2]},
        }
    ]
    assert json.loads(json.dumps(result.sample)) == result.sample


def test_a_segment_must_return_exactly_tenant_and_customer(
    conn: psycopg.Connection[Any], write_project: ProjectWriter
) -> None:
    root = write_project({"segments/vip.sql": "select 't' as tenant_uid, 'c' as customer_uid"})
    build_project(conn, load_project(root))
    write_project({"segments/vip.sql": "select 't' as tenant_uid, 'c' as customer_uid, 1 as score"})

    with pytest.raises(ModelBuildError) as raised:
        build_project(conn, load_project(root))

    assert str(raised.value) == (
        "models/segments/vip.sql: a segment must return exactly the columns tenant_uid, customer_uid; "
        "it returns tenant_uid, customer_uid, score"
    )
    assert conn.execute("SELECT * FROM analytics.vip").fetchall() == [("t", "c")]
