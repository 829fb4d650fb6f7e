"""Building models into PostgreSQL and running data tests (psycopg 3, synchronous).

Atomic replacement. A model is first created as ``<name>__new`` in its own transaction (a failing
model therefore never touches the live relation), then one short transaction drops the live
relation and renames the new one into place. Readers see the old relation until that transaction
commits and the new one afterwards; a reader queued on the old relation's lock re-resolves the name
once the lock is granted, so it reads the new relation instead of failing.

Dependent views. Dropping a relation that views depend on needs ``CASCADE``, which would make those
views vanish until rebuilt. So the swap transaction first locks the dependent views (outermost
first, the order a reader of such a view takes its locks, which avoids deadlocks), drops with
``CASCADE`` only when dependents exist, and re-creates every dropped view before committing. A
dependent is re-created from its catalog definition; when that no longer fits the new relation (a
column it used is gone) and the dependent is a model of the project, from the model's current SQL.
``build_project`` still rebuilds dependents afterwards in topological order, which brings them to
their current SQL. Privileges granted on replaced relations are not carried over.

Concurrency of builders. One builder per target schema at a time: two processes building the same
model would drop each other's ``__new`` relation.

Connections. Both autocommit and non-autocommit connections work; inside a transaction opened by
the caller, the steps become savepoints and nothing is visible to readers before the caller commits.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from pipelines.sql_models.built import record_built
from pipelines.sql_models.data_tests import DataTest
from pipelines.sql_models.errors import DataTestError, ModelBuildError
from pipelines.sql_models.project import BUILD_SUFFIX, Model, Project, render

# The push-back reads segments by these columns; anything else would be silently ignored or fail there.
SEGMENT_COLUMNS = ("tenant_uid", "customer_uid")

_RELATION_KIND_SQL = {"v": "VIEW", "r": "TABLE", "m": "MATERIALIZED VIEW", "p": "TABLE"}

_RELATION_KIND_QUERY = """
SELECT c.oid, c.relkind
FROM pg_catalog.pg_class AS c
JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = %(schema)s AND c.relname = %(name)s
"""

# Views (and materialized views) depending on a relation, directly or through other views, with the
# length of the longest dependency path: re-creating by increasing depth re-creates every view after
# the views it reads.
_DEPENDENT_VIEWS_QUERY = """
WITH RECURSIVE dependent(oid, depth) AS (
    SELECT rewrite.ev_class, 1
    FROM pg_catalog.pg_depend AS dep
    JOIN pg_catalog.pg_rewrite AS rewrite ON rewrite.oid = dep.objid
    WHERE dep.classid = 'pg_catalog.pg_rewrite'::regclass
      AND dep.refclassid = 'pg_catalog.pg_class'::regclass
      AND dep.refobjid = %(oid)s
      AND rewrite.ev_class <> %(oid)s
    UNION
    SELECT rewrite.ev_class, dependent.depth + 1
    FROM dependent
    JOIN pg_catalog.pg_depend AS dep
      ON dep.refobjid = dependent.oid
     AND dep.classid = 'pg_catalog.pg_rewrite'::regclass
     AND dep.refclassid = 'pg_catalog.pg_class'::regclass
    JOIN pg_catalog.pg_rewrite AS rewrite ON rewrite.oid = dep.objid
    WHERE rewrite.ev_class <> dependent.oid
)
SELECT n.nspname AS schema, c.relname AS name, c.relkind AS kind,
       pg_catalog.pg_get_viewdef(c.oid) AS definition, max(dependent.depth) AS depth
FROM dependent
JOIN pg_catalog.pg_class AS c ON c.oid = dependent.oid
JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
GROUP BY n.nspname, c.relname, c.relkind, c.oid
ORDER BY max(dependent.depth), n.nspname, c.relname
"""

_COLUMNS_QUERY = """
SELECT a.attname AS name, pg_catalog.format_type(a.atttypid, a.atttypmod) AS data_type
FROM pg_catalog.pg_attribute AS a
JOIN pg_catalog.pg_class AS c ON c.oid = a.attrelid
JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = %(schema)s AND c.relname = %(name)s AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""


@dataclass(frozen=True)
class RelationColumn:
    """A column of a built relation as the catalog reports it."""

    name: str
    data_type: str


@dataclass(frozen=True)
class BuildResult:
    """What building one model produced, for logs and asset metadata."""

    model: str
    schema: str
    materialized: str
    row_count: int
    columns: tuple[RelationColumn, ...]
    duration_seconds: float
    recreated_dependents: tuple[str, ...] = ()


@dataclass(frozen=True)
class DataTestResult:
    """How many rows a data test's query returned, and the first few of them.

    Sample values are JSON-compatible (timestamps and dates as ISO text, numerics as text) because
    the sample ends up in logs and run metadata, not in further computation.
    """

    failing_rows: int
    sample: list[dict[str, object]]

    @property
    def passed(self) -> bool:
        return self.failing_rows == 0


@dataclass(frozen=True)
class _DependentView:
    schema: str
    name: str
    kind: str
    definition: str
    depth: int


def _json_friendly(value: object) -> object:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [_json_friendly(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _json_friendly(item) for key, item in value.items()}
    if isinstance(value, bytes | memoryview):
        return bytes(value).hex()
    return str(value)


def _relation_kind(conn: psycopg.Connection[Any], schema: str, name: str) -> tuple[int, str] | None:
    row = conn.execute(_RELATION_KIND_QUERY, {"schema": schema, "name": name}).fetchone()
    if row is None:
        return None
    return int(row[0]), str(row[1])


def _dependent_views(conn: psycopg.Connection[Any], relation_oid: int) -> list[_DependentView]:
    rows = conn.execute(_DEPENDENT_VIEWS_QUERY, {"oid": relation_oid}).fetchall()
    return [_DependentView(str(r[0]), str(r[1]), str(r[2]), str(r[3]), int(r[4])) for r in rows]


def _kind_sql(kind: str) -> sql.SQL:
    return sql.SQL(_RELATION_KIND_SQL[kind])


def _require_replaceable(model: Model, schema: str, name: str, kind: str) -> None:
    if kind not in _RELATION_KIND_SQL:
        raise ModelBuildError(
            f"{model.label}: {schema}.{name} exists and is not a table or view (pg_class.relkind {kind!r}); "
            "refusing to replace it",
            (model.path,),
        )


def _create_sql(kind: str, relation: sql.Identifier, body: str) -> sql.Composed:
    # The body is model SQL, never a value; no parameters are sent with it, so a "%" in it is safe.
    return sql.SQL("CREATE {} {} AS\n{}\n").format(_kind_sql(kind), relation, sql.SQL(body))


def _database_message(error: psycopg.Error) -> str:
    return str(error).strip() or type(error).__name__


def _create_new_relation(conn: psycopg.Connection[Any], model: Model, project: Project, body: str) -> None:
    schema = project.target_schema
    new_name = model.name + BUILD_SUFFIX
    kind = "r" if model.config.materialized == "table" else "v"
    try:
        with conn.transaction():
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
            leftover = _relation_kind(conn, schema, new_name)
            if leftover is not None:
                _require_replaceable(model, schema, new_name, leftover[1])
                conn.execute(
                    sql.SQL("DROP {} {} CASCADE").format(_kind_sql(leftover[1]), sql.Identifier(schema, new_name))
                )
            conn.execute(_create_sql(kind, sql.Identifier(schema, new_name), body))
            if model.is_segment:
                columns = tuple(column.name for column in relation_columns(conn, schema, new_name))
                if columns != SEGMENT_COLUMNS:
                    raise ModelBuildError(
                        f"{model.label}: a segment must return exactly the columns {', '.join(SEGMENT_COLUMNS)}; "
                        f"it returns {', '.join(columns)}",
                        (model.path,),
                    )
                duplicated = conn.execute(
                    sql.SQL(
                        "SELECT count(*) FROM (SELECT 1 FROM {} GROUP BY tenant_uid, customer_uid "
                        "HAVING count(*) > 1) AS d"
                    ).format(sql.Identifier(schema, new_name))
                ).fetchone()
                if duplicated and duplicated[0]:
                    raise ModelBuildError(
                        f"{model.label}: a segment must return one row per customer; "
                        f"{duplicated[0]} (tenant_uid, customer_uid) pairs appear more than once",
                        (model.path,),
                    )
    except psycopg.Error as error:
        raise ModelBuildError(f"{model.label}: {_database_message(error)}", (model.path,)) from error


def _recreate_dependent(conn: psycopg.Connection[Any], view: _DependentView, model: Model, project: Project) -> None:
    relation = sql.Identifier(view.schema, view.name)
    try:
        with conn.transaction():
            conn.execute(_create_sql(view.kind, relation, view.definition.strip().rstrip(";")))
        return
    except psycopg.Error as catalog_error:
        dependent_model = project.models.get(view.name) if view.schema == project.target_schema else None
        if dependent_model is None:
            raise ModelBuildError(
                f"{model.label}: dependent view {view.schema}.{view.name} no longer fits the new relation: "
                f"{_database_message(catalog_error)}",
                (model.path,),
            ) from catalog_error
    try:
        with conn.transaction():
            conn.execute(_create_sql(view.kind, relation, render(dependent_model, project)))
    except psycopg.Error as model_error:
        raise ModelBuildError(
            f"{model.label}: dependent model {dependent_model.label} does not build on the new relation: "
            f"{_database_message(model_error)}",
            (model.path, dependent_model.path),
        ) from model_error


def _swap_into_place(conn: psycopg.Connection[Any], model: Model, project: Project) -> tuple[str, ...]:
    """Replace the live relation by ``<name>__new`` in one transaction; return re-created views."""
    schema = project.target_schema
    live = sql.Identifier(schema, model.name)
    new_kind = "TABLE" if model.config.materialized == "table" else "VIEW"
    recreated: list[str] = []
    try:
        with conn.transaction():
            existing = _relation_kind(conn, schema, model.name)
            if existing is not None:
                _require_replaceable(model, schema, model.name, existing[1])
            dependents = _dependent_views(conn, existing[0]) if existing else []
            # Locking a view also locks what it reads, outermost first: the order readers lock in.
            for view in sorted(dependents, key=lambda v: -v.depth):
                if view.kind != "v":
                    continue
                conn.execute(
                    sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(sql.Identifier(view.schema, view.name))
                )
            if existing is not None:
                cascade = sql.SQL(" CASCADE") if dependents else sql.SQL("")
                conn.execute(sql.SQL("DROP {} {}{}").format(_kind_sql(existing[1]), live, cascade))
            conn.execute(
                sql.SQL("ALTER {} {} RENAME TO {}").format(
                    sql.SQL(new_kind),
                    sql.Identifier(schema, model.name + BUILD_SUFFIX),
                    sql.Identifier(model.name),
                )
            )
            for view in dependents:
                _recreate_dependent(conn, view, model, project)
                recreated.append(f"{view.schema}.{view.name}")
    except ModelBuildError:
        raise
    except psycopg.Error as error:
        raise ModelBuildError(f"{model.label}: {_database_message(error)}", (model.path,)) from error
    return tuple(recreated)


def relation_columns(conn: psycopg.Connection[Any], schema: str, name: str) -> tuple[RelationColumn, ...]:
    """Columns of a relation from the catalog, in table order."""
    rows = conn.execute(_COLUMNS_QUERY, {"schema": schema, "name": name}).fetchall()
    return tuple(RelationColumn(str(row[0]), str(row[1])) for row in rows)


def build_model(conn: psycopg.Connection[Any], model: Model, project: Project) -> BuildResult:
    """Build one model into the project's target schema, replacing the live relation atomically.

    Raises ``ModelBuildError`` naming the model file and quoting the database message when the SQL
    fails; the previously built relation and its rows are then left as they were.
    """
    started = time.monotonic()
    body = render(model, project)
    _create_new_relation(conn, model, project, body)
    recreated = _swap_into_place(conn, model, project)
    record_built(conn, project.target_schema, model.name, model.config.materialized)
    live = project.relation(model.name)
    with conn.transaction():
        count_row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(live)).fetchone()
        columns = relation_columns(conn, project.target_schema, model.name)
    return BuildResult(
        model=model.name,
        schema=project.target_schema,
        materialized=model.config.materialized,
        row_count=int(count_row[0]) if count_row else 0,
        columns=columns,
        duration_seconds=time.monotonic() - started,
        recreated_dependents=recreated,
    )


def build_project(
    conn: psycopg.Connection[Any], project: Project, selection: Iterable[str] | None = None
) -> list[BuildResult]:
    """Build the selected models (all by default) in dependency order; stop at the first failure.

    A failure leaves that model and everything not yet built as they were, so downstream relations
    never mix old and new upstream logic more than a normal partial run would.
    """
    return [build_model(conn, model, project) for model in project.build_order(selection)]


def run_data_test(conn: psycopg.Connection[Any], test: DataTest, sample_size: int = 5) -> DataTestResult:
    """Run one data test: count its failing rows and fetch up to ``sample_size`` of them.

    The sample comes from a server-side cursor so a test failing on millions of rows transfers
    only the rows shown.
    """
    query = sql.SQL(test.sql)
    try:
        with conn.transaction():
            count_row = conn.execute(sql.SQL("SELECT count(*) FROM (\n{}\n) AS failing_rows").format(query)).fetchone()
            with conn.cursor(name=f"data_test_sample_{id(test):x}", row_factory=dict_row) as cursor:
                cursor.execute(query)
                sample = cursor.fetchmany(sample_size) if sample_size > 0 else []
    except psycopg.Error as error:
        raise DataTestError(
            f"{test.defined_in}: data test {test.name} on model {test.model} could not run: {_database_message(error)}"
        ) from error
    return DataTestResult(
        failing_rows=int(count_row[0]) if count_row else 0,
        sample=[{column: _json_friendly(value) for column, value in row.items()} for row in sample],
    )


def run_data_tests(
    conn: psycopg.Connection[Any], project: Project, selection: Iterable[str] | None = None, sample_size: int = 5
) -> dict[str, DataTestResult]:
    """Run the data tests of the selected models (all by default), keyed by test name."""
    models = {model.name for model in project.build_order(selection)}
    return {test.name: run_data_test(conn, test, sample_size) for test in project.tests if test.model in models}
