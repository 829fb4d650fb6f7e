"""The table metadata (pipelines/warehouse/tables.py) creates exactly the physical schema the
hand-written DDL created, and brings older warehouses to that same schema in place."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg

from pipelines.sql_models.built import record_built
from pipelines.warehouse.load import _RUN_ARGUMENTS, TenantLoadResult
from pipelines.warehouse.migrate import ddl_fingerprint, ensure_current_schema, migrate
from pipelines.warehouse.schema import RAW_TABLE_STATISTICS
from pipelines.warehouse.tables import (
    column_names,
    load_runs,
    metadata,
    model_relations,
    table_ddl,
    upsert_sql,
    warehouse_tables,
)
from tests.conftest import fresh_database

BEFORE_METADATA_SQL = Path(__file__).with_name("schema_before_metadata.sql")
RELEASE_SQL = Path(__file__).with_name("release_2026_11_schema.sql")
SCHEMAS = ["flowretail", "analytics"]
CATALOG = {
    "columns": "SELECT table_schema, table_name, ordinal_position, column_name, data_type, column_default, "
    "is_nullable, numeric_precision, numeric_scale, datetime_precision FROM information_schema.columns "
    "WHERE table_schema = ANY(%s) ORDER BY 1, 2, 3",
    "indexes": "SELECT schemaname, tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = ANY(%s) "
    "ORDER BY 1, 2, 3",
    "constraints": "SELECT n.nspname, c.conrelid::regclass::text, c.conname, c.contype, pg_get_constraintdef(c.oid) "
    "FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace WHERE n.nspname = ANY(%s) ORDER BY 1, 2, 3",
    "sequences": "SELECT sequence_schema, sequence_name, data_type, start_value, increment "
    "FROM information_schema.sequences WHERE sequence_schema = ANY(%s) ORDER BY 1, 2",
    "relations": "SELECT n.nspname, c.relname, c.relkind::text FROM pg_class c JOIN pg_namespace n "
    "ON n.oid = c.relnamespace WHERE n.nspname = ANY(%s) ORDER BY 1, 2",
}


def _text_ddl(url: str) -> None:
    """The schema as the release with text DDL built it: the release before, then what it added."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(RELEASE_SQL.read_text("utf-8"))
        conn.execute(BEFORE_METADATA_SQL.read_text("utf-8"))


def _catalog(url: str) -> dict[str, list[tuple[Any, ...]]]:
    with psycopg.connect(url) as conn:
        return {name: conn.execute(query, (SCHEMAS,)).fetchall() for name, query in CATALOG.items()}


def _migrated(url: str) -> dict[str, list[tuple[Any, ...]]]:
    assert migrate(url).ddl_applied
    with psycopg.connect(url, autocommit=True) as conn:
        record_built(conn, "analytics", "a_model", "view")
    return _catalog(url)


def test_the_metadata_creates_exactly_the_schema_the_hand_written_ddl_created(pg_server_url: str) -> None:
    with fresh_database(pg_server_url) as before, fresh_database(pg_server_url) as after:
        _text_ddl(before)
        expected = _catalog(before)
        assert len(expected["columns"]) > 150 and len(expected["indexes"]) == 20
        assert _migrated(after) == expected


def test_a_warehouse_of_the_previous_release_or_of_the_text_ddl_upgrades_to_the_same_schema(
    pg_server_url: str,
) -> None:
    with fresh_database(pg_server_url) as fresh, fresh_database(pg_server_url) as old:
        expected = _migrated(fresh)
        with psycopg.connect(old, autocommit=True) as conn:
            conn.execute(RELEASE_SQL.read_text("utf-8"))
        assert _migrated(old) == expected
    with fresh_database(pg_server_url) as text_ddl:
        _text_ddl(text_ddl)
        with psycopg.connect(text_ddl, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO flowretail.schema_version VALUES (true, 'the fingerprint of the text DDL', now())"
            )
        report = ensure_current_schema(text_ddl)
        assert report is not None and report.ddl_applied
        assert ensure_current_schema(text_ddl) is None
        assert _catalog(text_ddl) == expected
        with psycopg.connect(text_ddl) as conn:
            row = conn.execute("SELECT fingerprint FROM flowretail.schema_version").fetchone()
        assert row == (ddl_fingerprint(),)


def test_a_table_declared_without_a_schema_is_created_in_the_one_given() -> None:
    statements = [s.as_string(None) for s in table_ddl(model_relations, "my schema")]
    assert statements[0].startswith('CREATE TABLE IF NOT EXISTS "my schema"._sql_model_relations (')


def test_every_load_runs_column_comes_from_the_result_or_the_call() -> None:
    fields = set(TenantLoadResult.__dataclass_fields__)
    assert set(column_names(load_runs)) - fields == set(_RUN_ARGUMENTS)
    upsert = upsert_sql(load_runs, keep=("started_at",)).as_string(None)
    assert '"finished_at" = EXCLUDED."finished_at"' in upsert
    assert '"started_at" = EXCLUDED' not in upsert and '"run_id" = EXCLUDED' not in upsert


def test_the_analysed_statistics_name_declared_tables_and_columns() -> None:
    warehouse_tables()
    for table, columns in RAW_TABLE_STATISTICS.items():
        assert set(columns) <= set(column_names(metadata.tables[f"flowretail.{table}"])), table
