"""What the runner built, against a real PostgreSQL: stale relations are listed, and only the runner's
own relations are ever dropped (views first, never CASCADE)."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from pipelines.sql_models.built import drop_stale_relations, record_built, stale_relations


@pytest.fixture
def conn(database_url: str) -> Any:
    with psycopg.connect(database_url, autocommit=True) as connection:
        connection.execute("DROP SCHEMA IF EXISTS built_test CASCADE")
        connection.execute("CREATE SCHEMA built_test")
        yield connection
        connection.execute("DROP SCHEMA built_test CASCADE")


def _relations(conn: Any) -> set[str]:
    rows = conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'built_test' AND c.relkind IN ('r', 'v')"
    ).fetchall()
    return {r[0] for r in rows}


def test_nothing_is_stale_before_anything_was_built(conn: Any) -> None:
    assert stale_relations(conn, "built_test", []) == []


def test_only_recorded_relations_of_gone_models_are_stale_and_dropped(conn: Any) -> None:
    conn.execute("CREATE TABLE built_test.kept AS SELECT 1 AS x")
    conn.execute("CREATE TABLE built_test.gone AS SELECT 1 AS x")
    conn.execute("CREATE VIEW built_test.gone_view AS SELECT x FROM built_test.gone")
    conn.execute("CREATE TABLE built_test.not_ours AS SELECT 1 AS x")
    for name, kind in (("kept", "table"), ("gone", "table"), ("gone_view", "view")):
        record_built(conn, "built_test", name, kind)
    stale = stale_relations(conn, "built_test", ["kept"])
    assert [(r.name, r.kind) for r in stale] == [("gone", "TABLE"), ("gone_view", "VIEW")]
    assert drop_stale_relations(conn, "built_test", ["kept"]) == ["gone", "gone_view"]
    assert _relations(conn) == {"kept", "not_ours", "_sql_model_relations"}
    assert stale_relations(conn, "built_test", ["kept"]) == []


def test_a_stale_relation_something_else_depends_on_is_not_dropped(conn: Any) -> None:
    conn.execute("CREATE TABLE built_test.gone AS SELECT 1 AS x")
    record_built(conn, "built_test", "gone", "table")
    conn.execute("CREATE VIEW built_test.analyst_view AS SELECT x FROM built_test.gone")
    with pytest.raises(psycopg.errors.DependentObjectsStillExist):
        drop_stale_relations(conn, "built_test", [])
    assert _relations(conn) == {"gone", "analyst_view", "_sql_model_relations"}
    assert [r.name for r in stale_relations(conn, "built_test", [])] == ["gone"]
