"""dbt's four generic tests compiled to SQL that returns the failing rows.

As in dbt, a test passes when its query returns no row, so the same query both decides the outcome
and shows what is wrong. Identifiers go through ``psycopg.sql.Identifier``; accepted values through
``psycopg.sql.Literal`` because the compiled text is stored and shown, not sent with parameters.

Tenants. A test of a tenant-scoped model runs on the slice of the tenants a run built
(``sql_for(tenants)``): a run checks exactly the rows it built, whatever other tenants' runs are doing
at the same moment. A relationships test between two tenant relations matches on ``(tenant_uid, key)``,
so a key that only exists in another tenant fails it even when the test runs over all tenants; on a
slice, ``unique`` counts duplicates within each tenant, so a run over several tenants reaches the same
verdict as one run per tenant.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from psycopg import sql

from pipelines.sql_models.config import TENANT_COLUMN
from pipelines.sql_models.schema_file import DataTestKind, DeclaredTest, RelationRef
from pipelines.sql_models.slices import tenant_condition

# A relation a test reads (the class below has a field named ``sql``, which hides the module there).
Relation = sql.Identifier
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
    declared: DeclaredTest | None = None
    relation: Relation | None = None
    target_relation: Relation | None = None
    tenant_scoped: bool = False
    tenant_keyed: bool = False

    def sql_for(self, tenants: Sequence[str] | None) -> str:
        """The test over these tenants' rows, or over all rows (``None``, or an unscoped test)."""
        if tenants is None or not self.tenant_scoped or self.declared is None or self.relation is None:
            return self.sql
        return compile_test_sql(
            self.declared, self.relation, self.target_relation, tenant_keyed=self.tenant_keyed, tenants=tenants
        )


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


def _tenant_slice(relation: sql.Composable, tenants: Sequence[str] | None, alias: str) -> sql.Composable:
    if tenants is None:
        return relation
    return sql.SQL("(SELECT * FROM {} WHERE {}) AS {}").format(
        relation, tenant_condition(tenants), sql.Identifier(alias)
    )


def _relationships_sql(
    declared: DeclaredTest, relation: sql.Composable, target: sql.Composable, tenant_keyed: bool
) -> sql.Composable:
    tenant = sql.Identifier(TENANT_COLUMN)
    child_tenant = sql.SQL("{}, ").format(tenant) if tenant_keyed else sql.SQL("")
    same_tenant = sql.SQL("child.{t} = parent.{t} AND ").format(t=tenant) if tenant_keyed else sql.SQL("")
    return sql.SQL(
        "WITH child AS (\n    SELECT {child_tenant}{column} AS from_field FROM {relation} WHERE {column} IS NOT NULL\n),\n"
        "parent AS (\n    SELECT {child_tenant}{field} AS to_field FROM {target}\n)\n"
        "SELECT {selected}child.from_field\nFROM child\n"
        "LEFT JOIN parent ON {same_tenant}child.from_field = parent.to_field\n"
        "WHERE parent.to_field IS NULL"
    ).format(
        child_tenant=child_tenant,
        selected=sql.SQL("child.{}, ").format(tenant) if tenant_keyed else sql.SQL(""),
        same_tenant=same_tenant,
        column=column_sql(declared.column),
        relation=relation,
        field=column_sql(declared.field or ""),
        target=target,
    )


def compile_test_sql(
    declared: DeclaredTest,
    relation: sql.Composable,
    target_relation: sql.Composable | None,
    *,
    tenant_keyed: bool = False,
    tenants: Sequence[str] | None = None,
) -> str:
    """SQL returning the rows that make ``declared`` fail on ``relation``.

    ``tenants`` restricts both relations to those tenants' rows (and ``unique`` to duplicates within
    a tenant); ``tenant_keyed`` makes a relationships test match on ``(tenant_uid, key)`` instead of
    the key alone.
    """
    column = column_sql(declared.column)
    relation = _tenant_slice(relation, tenants, "tested")
    query: sql.Composable
    if declared.kind == "unique":
        per_tenant = sql.SQL("{}, ").format(sql.Identifier(TENANT_COLUMN)) if tenants is not None else sql.SQL("")
        query = sql.SQL(
            "SELECT {per_tenant}{column} AS unique_field, count(*) AS n_records\nFROM {relation}\n"
            "WHERE {column} IS NOT NULL\nGROUP BY {per_tenant}{column}\nHAVING count(*) > 1"
        ).format(per_tenant=per_tenant, column=column, relation=relation)
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
        target = _tenant_slice(target_relation, tenants, "referenced")
        query = _relationships_sql(declared, relation, target, tenant_keyed)
    return query.as_string(None)


def _failure_count(test: DataTest) -> sql.Composable | None:
    """What ``test``'s query would count, as an aggregate over its model's rows; None when the test
    needs more than one pass over them (unique, relationships)."""
    if test.declared is None:
        return None
    column = column_sql(test.declared.column)
    if test.kind == "not_null":
        return sql.SQL("count(*) FILTER (WHERE {} IS NULL)").format(column)
    if test.kind == "accepted_values":  # one failing row per distinct value outside the list
        values = sql.SQL(", ").join(sql.Literal(value) for value in test.declared.accepted_values)
        return sql.SQL("count(DISTINCT {c}) FILTER (WHERE {c} IS NOT NULL AND {c} NOT IN ({v}))").format(
            c=column, v=values
        )
    return None


def counted_row_by_row(test: DataTest) -> bool:
    """Whether ``test`` can share its model's one counting scan (see ``failure_counts_sql``)."""
    return _failure_count(test) is not None


def failure_counts_sql(tests: Sequence[DataTest], tenants: Sequence[str] | None) -> str | None:
    """One scan counting the failing rows of every test in ``tests`` that reads its model row by row
    (not_null, accepted_values), in their order; None unless they all can and share one relation.

    The model is read once for all of its column tests instead of once per test (a view, once
    computed instead of once per test).
    """
    counts = [_failure_count(test) for test in tests]
    relations = {test.model for test in tests}  # a model's tests all read its relation
    scoped = {test.tenant_scoped for test in tests}
    if not tests or any(c is None for c in counts) or len(relations) != 1 or len(scoped) != 1:
        return None
    relation = tests[0].relation
    assert relation is not None  # _failure_count needs ``declared``, which comes with a relation
    sliced = _tenant_slice(relation, tenants if tests[0].tenant_scoped else None, "tested")
    return (
        sql.SQL("SELECT {} FROM {}")
        .format(sql.SQL(", ").join(c for c in counts if c is not None), sliced)
        .as_string(None)
    )
