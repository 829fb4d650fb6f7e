"""dbt's four generic tests compiled to SQL that returns the failing rows.

As in dbt, a test passes when its query returns no row, so the same query both decides the outcome
and shows what is wrong. Identifiers go through ``psycopg.sql.Identifier``; accepted values through
``psycopg.sql.Literal`` because the compiled text is stored and shown, not sent with parameters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from psycopg import sql

from pipelines.sql_models.schema_file import DataTestKind, DeclaredTest, RelationRef

_PLAIN_COLUMN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NAME_NOISE = re.compile(r"[^a-z0-9]+")


@dataclass(frozen=True)
class DataTest:
    """One compiled test of one model column (or column expression).

    ``name`` is unique in the project, e.g. ``unique_stg_customers_customer_uid``; ``defined_in``
    names the file that declares it, for error messages. ``references`` is the model or source
    relation a relationships test reads besides its own model, so an orchestrator can run the test
    only once both exist.
    """

    name: str
    model: str
    column: str
    kind: DataTestKind
    sql: str
    defined_in: str
    references: RelationRef | None = None


def column_sql(column: str) -> sql.Composable:
    """A plain column name becomes a quoted identifier; anything else is a trusted SQL expression.

    Expressions come from ``schema.yml`` (model-level ``column_name:``), which is project code like
    the models themselves.
    """
    if _PLAIN_COLUMN.fullmatch(column):
        return sql.Identifier(column)
    return sql.SQL("({})").format(sql.SQL(column))


def _name_part(text: str) -> str:
    return _NAME_NOISE.sub("_", text.lower()).strip("_")


def data_test_name(model: str, declared: DeclaredTest, target_name: str | None) -> str:
    """dbt-like test name: kind, model, column, and for relationships the referenced relation."""
    name = f"{declared.kind}_{model}_{_name_part(declared.column)}"
    if declared.kind == "relationships" and target_name is not None and declared.field is not None:
        name += f"__{_name_part(target_name)}__{_name_part(declared.field)}"
    return name


def compile_test_sql(declared: DeclaredTest, relation: sql.Composable, target_relation: sql.Composable | None) -> str:
    """SQL returning the rows that make ``declared`` fail on ``relation``."""
    column = column_sql(declared.column)
    query: sql.Composable
    if declared.kind == "unique":
        query = sql.SQL(
            "SELECT {column} AS unique_field, count(*) AS n_records\nFROM {relation}\n"
            "WHERE {column} IS NOT NULL\nGROUP BY {column}\nHAVING count(*) > 1"
        ).format(column=column, relation=relation)
    elif declared.kind == "not_null":
        query = sql.SQL("SELECT *\nFROM {relation}\nWHERE {column} IS NULL").format(column=column, relation=relation)
    elif declared.kind == "accepted_values":
        values = sql.SQL(", ").join(sql.Literal(value) for value in declared.accepted_values)
        query = sql.SQL(
            "SELECT {column} AS value_field, count(*) AS n_records\nFROM {relation}\n"
            "WHERE {column} IS NOT NULL AND {column} NOT IN ({values})\nGROUP BY {column}"
        ).format(column=column, relation=relation, values=values)
    else:
        if target_relation is None or declared.field is None:
            raise ValueError(f"relationships test on {declared.column!r} needs a target relation and field")
        query = sql.SQL(
            "WITH child AS (\n    SELECT {column} AS from_field FROM {relation} WHERE {column} IS NOT NULL\n),\n"
            "parent AS (\n    SELECT {field} AS to_field FROM {target}\n)\n"
            "SELECT child.from_field\nFROM child\nLEFT JOIN parent ON child.from_field = parent.to_field\n"
            "WHERE parent.to_field IS NULL"
        ).format(column=column, relation=relation, field=column_sql(declared.field), target=target_relation)
    return query.as_string(None)
