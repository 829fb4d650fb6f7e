"""Dagster metadata read from the warehouse's catalog, shared by the asset stages."""

from __future__ import annotations

from typing import Any

import dagster as dg
import psycopg


def table_schema(conn: psycopg.Connection[Any], schema: str, table: str) -> dg.TableSchema:
    """The column schema of a real table, as the UI shows it (``dagster/column_schema``)."""
    rows = conn.execute(
        "SELECT column_name, data_type, is_nullable FROM information_schema.columns "
        "WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
        (schema, table),
    ).fetchall()
    return dg.TableSchema(
        columns=[
            dg.TableColumn(name, data_type, constraints=dg.TableColumnConstraints(nullable=nullable == "YES"))
            for name, data_type, nullable in rows
        ]
    )
