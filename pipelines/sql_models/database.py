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
A run still rebuilds dependents afterwards in topological order (the asset graph), which brings
them to their current SQL. Privileges granted on replaced relations are not carried over.

Concurrency of builders. Whole builds (no tenant) expect one builder per target schema at a time:
two of them building the same model would drop each other's ``__new`` relation. Tenant runs may
build the same models at once: the whole rebuilds and view replacements they need take the model's
advisory lock (see "Tenant slices").

Connections. Both autocommit and non-autocommit connections work; inside a transaction opened by
the caller, the steps become savepoints and nothing is visible to readers before the caller commits.

Tenant slices. ``build_model(..., tenants=[T])`` builds what one tenant's run needs, in work that
grows with that tenant's data only (several tenants at once: the same, with ``tenant_uid IN (...)``,
in the same single transaction per model, so the statements are paid once for all of them):
- a table model (``tenant_scope='tenant'``) computes T's rows with every ref and source filtered on
  ``tenant_uid = T``, then deletes T's old rows and inserts the new ones in ONE transaction (dbt's
  incremental ``delete+insert``): readers see the old slice or the new one, and a failing model
  leaves the old slice. Other tenants' runs write their own slices of the same table at the same
  time; they share the model's advisory lock, which a whole rebuild (first build, or the model's
  columns changed) takes exclusively;
- a view is not rebuilt per tenant: it is created or replaced only when its SQL changed (the SQL's
  hash is kept in the view's comment), under the model's lock;
- a model declared ``tenant_scope='all'`` is never built for a tenant.
Every table a build writes is analysed in the transaction that writes it, so the next query (a data
test, a downstream model) is planned with statistics of the rows it reads, even on a new database.
"""

from __future__ import annotations

import datetime
import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from pipelines.sql_models.built import record_built
from pipelines.sql_models.config import TENANT_COLUMN
from pipelines.sql_models.data_tests import DataTest, counted_row_by_row, failure_counts_sql
from pipelines.sql_models.errors import DataTestError, ModelBuildError
from pipelines.sql_models.project import BUILD_SUFFIX, Model, Project, render
from pipelines.sql_models.slices import describe_tenants, tenant_condition
from pipelines.warehouse.locks import model_lock

# The push-back reads segments by these columns; anything else would be silently ignored or fail there.
SEGMENT_COLUMNS = ("tenant_uid", "customer_uid")

# The comment of a view built by the runner: the hash of the SQL it was built from.
_VIEW_COMMENT_PREFIX = "flowretail sql model, sha256 of its SQL: "
_SLICE_TABLE = "__model_slice"

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


_COLUMNS_BY_RELATION_QUERY = """
SELECT a.attname AS name, pg_catalog.format_type(a.atttypid, a.atttypmod) AS data_type
FROM pg_catalog.pg_attribute AS a
WHERE a.attrelid = %(relation)s::regclass AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""

_VIEW_COMMENT_QUERY = """
SELECT pg_catalog.obj_description(c.oid, 'pg_class')
FROM pg_catalog.pg_class AS c
JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = %(schema)s AND c.relname = %(name)s AND c.relkind = 'v'
"""


# Source tables whose statistics miss most of their rows (never analysed, or changed by more than
# autovacuum's default threshold since): a model build analyses them before reading them. The loader
# analyses what it writes, so this normally finds nothing; it keeps a brand-new database (or a loader
# that does not) from planning a tenant's queries on empty statistics, where a filter on one tenant
# is estimated at a handful of rows and a nested loop over a view takes minutes.
# Only sources never analysed: whoever writes a source analyses what it wrote (the product's loads
# analyse the key and filter columns of each raw table they change), and autovacuum keeps the rest
# current. n_mod_since_analyze is no guide here: an ANALYZE of some columns leaves it as it was, so
# every model would analyse every column of a wide source again after each load.
_UNANALYSED_SOURCES_QUERY = """
SELECT schemaname, relname
FROM pg_catalog.pg_stat_user_tables
WHERE schemaname = ANY(%(schemas)s) AND relname = ANY(%(names)s)
  AND last_analyze IS NULL AND last_autoanalyze IS NULL AND n_live_tup > 0
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
    rows_by_tenant: dict[str, int] = field(default_factory=dict)  # a sliced build: each tenant's rows


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


def _relation_columns(conn: psycopg.Connection[Any], relation: sql.Identifier) -> tuple[RelationColumn, ...]:
    rows = conn.execute(_COLUMNS_BY_RELATION_QUERY, {"relation": relation.as_string(conn)}).fetchall()
    return tuple(RelationColumn(str(row[0]), str(row[1])) for row in rows)


def _check_segment(conn: psycopg.Connection[Any], model: Model, relation: sql.Identifier) -> None:
    """A segment returns exactly ``tenant_uid, customer_uid``, one row per customer."""
    columns = tuple(column.name for column in _relation_columns(conn, relation))
    if columns != SEGMENT_COLUMNS:
        raise ModelBuildError(
            f"{model.label}: a segment must return exactly the columns {', '.join(SEGMENT_COLUMNS)}; "
            f"it returns {', '.join(columns)}",
            (model.path,),
        )
    duplicated = conn.execute(
        sql.SQL(
            "SELECT count(*) FROM (SELECT 1 FROM {} GROUP BY tenant_uid, customer_uid HAVING count(*) > 1) AS d"
        ).format(relation)
    ).fetchone()
    if duplicated and duplicated[0]:
        raise ModelBuildError(
            f"{model.label}: a segment must return one row per customer; "
            f"{duplicated[0]} (tenant_uid, customer_uid) pairs appear more than once",
            (model.path,),
        )


def _view_comment(body: str) -> str:
    return _VIEW_COMMENT_PREFIX + hashlib.sha256(body.encode("utf-8")).hexdigest()


def _finish_table(conn: psycopg.Connection[Any], model: Model, relation: sql.Identifier) -> None:
    """Index the tenant column of a sliced table (each tenant's delete finds its rows without a scan
    of the others') and analyse the table before anything reads it.

    A table without the column still builds whole; building it for a tenant then fails, naming it.
    """
    columns = {column.name for column in _relation_columns(conn, relation)}
    if model.config.tenant_sliced and TENANT_COLUMN in columns:
        conn.execute(sql.SQL("CREATE INDEX ON {} ({})").format(relation, sql.Identifier(TENANT_COLUMN)))
    conn.execute(sql.SQL("ANALYZE {}").format(relation))


def _create_new_relation(conn: psycopg.Connection[Any], model: Model, project: Project, body: str) -> None:
    schema = project.target_schema
    new_name = model.name + BUILD_SUFFIX
    new_relation = sql.Identifier(schema, new_name)
    kind = "r" if model.config.is_table else "v"
    try:
        with conn.transaction():
            # Only when missing: PostgreSQL checks CREATE on the database before it looks for the
            # schema, and the product's role usually owns an existing schema and nothing more.
            missing = conn.execute("SELECT to_regnamespace(%s) IS NULL", (sql.Identifier(schema).as_string(None),))
            if missing.fetchone() == (True,):
                conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
            leftover = _relation_kind(conn, schema, new_name)
            if leftover is not None:
                _require_replaceable(model, schema, new_name, leftover[1])
                conn.execute(sql.SQL("DROP {} {} CASCADE").format(_kind_sql(leftover[1]), new_relation))
            conn.execute(_create_sql(kind, new_relation, body))
            if model.is_segment:
                _check_segment(conn, model, new_relation)
            if kind == "r":
                _finish_table(conn, model, new_relation)
            else:
                conn.execute(sql.SQL("COMMENT ON VIEW {} IS {}").format(new_relation, sql.Literal(_view_comment(body))))
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
    new_kind = "TABLE" if model.config.is_table else "VIEW"
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


def _refresh_source_statistics(conn: psycopg.Connection[Any], model: Model, project: Project) -> None:
    """Analyse the sources a model reads that have never been analysed (see the query)."""
    wanted = {
        (project.sources[s.source_name].schema, s.table_name) for s in model.sources if s.source_name in project.sources
    }
    if not wanted:
        return
    with conn.transaction():
        rows = conn.execute(
            _UNANALYSED_SOURCES_QUERY,
            {"schemas": sorted({schema for schema, _ in wanted}), "names": sorted({name for _, name in wanted})},
        ).fetchall()
    for schema, name in rows:
        if (schema, name) in wanted:
            with conn.transaction():
                conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(schema, name)))


def _model_lock(project: Project, model: Model) -> tuple[int, int]:
    return model_lock(project.target_schema, model.name)


def _replace_whole(conn: psycopg.Connection[Any], model: Model, project: Project, body: str) -> tuple[str, ...]:
    _create_new_relation(conn, model, project, body)
    return _swap_into_place(conn, model, project)


def _count(conn: psycopg.Connection[Any], relation: sql.Composable) -> int:
    row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(relation)).fetchone()
    return int(row[0]) if row else 0


def _rows_by_tenant(
    conn: psycopg.Connection[Any], relation: sql.Composable, where: sql.Composable
) -> dict[str | None, int]:
    """Rows per tenant of ``relation`` where ``where`` holds (rows with a NULL tenant under ``None``)."""
    rows = conn.execute(
        sql.SQL("SELECT {t}, count(*) FROM {r} WHERE {w} GROUP BY {t}").format(
            t=sql.Identifier(TENANT_COLUMN), r=relation, w=where
        )
    ).fetchall()
    return {row[0]: int(row[1]) for row in rows}


def _each_tenant(counts: dict[str | None, int], tenants: Sequence[str]) -> dict[str, int]:
    return {tenant: counts.get(tenant, 0) for tenant in tenants}


def _slice_rows(conn: psycopg.Connection[Any], relation: sql.Composable, tenants: Sequence[str]) -> dict[str, int]:
    """Each of ``tenants``' rows in the live ``relation`` (0 for a tenant without any)."""
    with conn.transaction():
        return _each_tenant(_rows_by_tenant(conn, relation, tenant_condition(tenants)), tenants)


def _current_view_comment(conn: psycopg.Connection[Any], schema: str, name: str) -> str | None:
    row = conn.execute(_VIEW_COMMENT_QUERY, {"schema": schema, "name": name}).fetchone()
    return str(row[0]) if row and row[0] is not None else None


def _ensure_view(conn: psycopg.Connection[Any], model: Model, project: Project) -> tuple[str, ...]:
    """Replace the view only when its SQL changed; concurrent tenant runs then issue no DDL at all."""
    body = render(model, project)
    wanted = _view_comment(body)
    if _current_view_comment(conn, project.target_schema, model.name) == wanted:
        return ()
    lock = _model_lock(project, model)
    conn.execute("SELECT pg_advisory_lock(%s, %s)", lock)
    try:
        if _current_view_comment(conn, project.target_schema, model.name) == wanted:
            return ()
        return _replace_whole(conn, model, project, body)
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s, %s)", lock)


def _live_table_fits(conn: psycopg.Connection[Any], project: Project, model: Model, columns: object) -> bool:
    existing = _relation_kind(conn, project.target_schema, model.name)
    if existing is None or existing[1] not in ("r", "p"):
        return False
    return relation_columns(conn, project.target_schema, model.name) == columns


def _write_slice(
    conn: psycopg.Connection[Any], model: Model, project: Project, tenants: Sequence[str]
) -> dict[str, int] | None:
    """Replace ``tenants``' rows in one transaction and return the rows each now has; ``None`` when
    the live table is missing or its columns differ from the model's (a whole rebuild must come first)."""
    live = project.relation(model.name)
    staged = sql.Identifier("pg_temp", _SLICE_TABLE)
    try:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock_shared(%s, %s)", _model_lock(project, model))
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(staged))
            conn.execute(
                sql.SQL("CREATE TEMPORARY TABLE {} ON COMMIT DROP AS\n{}").format(
                    sql.Identifier(_SLICE_TABLE), sql.SQL(render(model, project, tenants))
                )
            )
            if model.is_segment:
                _check_segment(conn, model, staged)
            counts = _require_only_tenants(conn, model, staged, tenants)
            if not _live_table_fits(conn, project, model, _relation_columns(conn, staged)):
                return None
            conn.execute(sql.SQL("DELETE FROM {} WHERE {}").format(live, tenant_condition(tenants)))
            conn.execute(sql.SQL("INSERT INTO {} SELECT * FROM {}").format(live, staged))
            conn.execute(sql.SQL("ANALYZE {}").format(live))
    except ModelBuildError:
        raise
    except psycopg.Error as error:
        raise ModelBuildError(f"{model.label}: {_database_message(error)}", (model.path,)) from error
    return counts


def _require_only_tenants(
    conn: psycopg.Connection[Any], model: Model, staged: sql.Identifier, tenants: Sequence[str]
) -> dict[str, int]:
    """The staged rows per tenant; rows of another tenant would escape every later delete of this slice."""
    if TENANT_COLUMN not in {column.name for column in _relation_columns(conn, staged)}:
        raise ModelBuildError(
            f"{model.label}: a table built per tenant must return a {TENANT_COLUMN} column "
            "(declare tenant_scope='all' in its config if it really spans tenants)",
            (model.path,),
        )
    counts = _rows_by_tenant(conn, staged, sql.SQL("TRUE"))
    strays = sum(n for tenant, n in counts.items() if tenant not in tenants)
    if strays:
        raise ModelBuildError(
            f"{model.label}: built for {describe_tenants(tenants)}, it returned {strays} row(s) of another tenant "
            f"(or a NULL {TENANT_COLUMN})",
            (model.path,),
        )
    return _each_tenant(counts, tenants)


def _rebuild_whole_table(conn: psycopg.Connection[Any], model: Model, project: Project) -> tuple[str, ...] | None:
    """Build the table over all tenants, alone on the model's lock, and return the dependents it
    re-created; ``None`` (nothing built) when the live table already fits, as when another run just
    rebuilt it."""
    lock = _model_lock(project, model)
    conn.execute("SELECT pg_advisory_lock(%s, %s)", lock)
    try:
        body = render(model, project)
        with conn.transaction():
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier("pg_temp", _SLICE_TABLE)))
            conn.execute(
                sql.SQL("CREATE TEMPORARY TABLE {} AS\n{}\nWITH NO DATA").format(
                    sql.Identifier(_SLICE_TABLE), sql.SQL(body)
                )
            )
            fits = _live_table_fits(
                conn, project, model, _relation_columns(conn, sql.Identifier("pg_temp", _SLICE_TABLE))
            )
            conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier("pg_temp", _SLICE_TABLE)))
        return None if fits else _replace_whole(conn, model, project, body)
    except psycopg.Error as error:
        raise ModelBuildError(f"{model.label}: {_database_message(error)}", (model.path,)) from error
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s, %s)", lock)


def _build_for_tenants(
    conn: psycopg.Connection[Any], model: Model, project: Project, tenants: Sequence[str]
) -> tuple[dict[str, int], tuple[str, ...]]:
    if model.config.tenant_scope == "all":
        raise ModelBuildError(
            f"{model.label}: declared tenant_scope='all', so it is built over all tenants, "
            f"not for {describe_tenants(tenants)}",
            (model.path,),
        )
    if not model.config.is_table:
        recreated = _ensure_view(conn, model, project)
        return _slice_rows(conn, project.relation(model.name), tenants), recreated
    with conn.transaction():
        live = _relation_kind(conn, project.target_schema, model.name)
    if live is not None and live[1] in ("r", "p"):  # the usual case: replace these tenants' slice
        written = _write_slice(conn, model, project, tenants)
        if written is not None:
            return written, ()
    # No table yet, or its columns changed: build it whole from every tenant's current rows, which
    # hold these tenants' too (their loads committed before this run), so no slice follows.
    rebuilt = _rebuild_whole_table(conn, model, project)
    if rebuilt is None:  # another run rebuilt it meanwhile, maybe before these tenants' loads
        written = _write_slice(conn, model, project, tenants)
        if written is None:
            raise ModelBuildError(
                f"{model.label}: its table changed again while {describe_tenants(tenants)} was built", (model.path,)
            )
        return written, ()
    return _slice_rows(conn, project.relation(model.name), tenants), rebuilt


def build_model(
    conn: psycopg.Connection[Any], model: Model, project: Project, tenants: Sequence[str] | None = None
) -> BuildResult:
    """Build one model into the project's target schema, replacing the live relation atomically.

    Without ``tenants``, the whole relation is rebuilt; with them, only what those tenants' run
    needs (see the module docstring), ``row_count`` counts their rows and ``rows_by_tenant`` each
    one's. Raises
    ``ModelBuildError`` naming the model file and quoting the database message when the SQL fails;
    the previously built relation (or slice) and its rows are then left as they were.
    """
    started = time.monotonic()
    _refresh_source_statistics(conn, model, project)
    rows_by_tenant: dict[str, int] = {}
    if tenants is None:
        recreated = _replace_whole(conn, model, project, render(model, project))
        with conn.transaction():
            row_count = _count(conn, project.relation(model.name))
    else:
        rows_by_tenant, recreated = _build_for_tenants(conn, model, project, tenants)
        row_count = sum(rows_by_tenant.values())
    record_built(conn, project.target_schema, model.name, model.config.materialized)
    with conn.transaction():
        columns = relation_columns(conn, project.target_schema, model.name)
    return BuildResult(
        model=model.name,
        schema=project.target_schema,
        materialized=model.config.materialized,
        row_count=row_count,
        columns=columns,
        duration_seconds=time.monotonic() - started,
        recreated_dependents=recreated,
        rows_by_tenant=rows_by_tenant,
    )


def run_data_tests_of_model(
    conn: psycopg.Connection[Any],
    tests: Sequence[DataTest],
    sample_size: int = 5,
    tenants: Sequence[str] | None = None,
) -> list[DataTestResult]:
    """Run a model's own tests, in order: the row-by-row ones (not_null, accepted_values) are counted
    together in one scan of the model, and only a test that fails runs its own query, for its sample.

    The others run one by one (``run_data_test``). When the shared scan fails, each test runs alone,
    so the error names the test that caused it.
    """
    by_row = [test for test in tests if counted_row_by_row(test)]
    counted: dict[str, int] = {}
    query = failure_counts_sql(by_row, tenants)
    if query is not None:
        try:
            with conn.transaction():
                row = conn.execute(sql.SQL(query)).fetchone()
            assert row is not None  # an aggregate without GROUP BY returns exactly one row
            counted = {test.name: int(count) for test, count in zip(by_row, row, strict=True)}
        except psycopg.Error:
            counted = {}
    return [
        DataTestResult(failing_rows=0, sample=[])
        if counted.get(test.name) == 0
        else run_data_test(conn, test, sample_size, tenants)
        for test in tests
    ]


def run_data_test(
    conn: psycopg.Connection[Any],
    test: DataTest,
    sample_size: int = 5,
    tenants: Sequence[str] | None = None,
) -> DataTestResult:
    """Run one data test: count its failing rows and fetch up to ``sample_size`` of them.

    With ``tenants``, a test of a per-tenant model checks those tenants' rows only. The sample comes
    from a server-side cursor so a test failing on millions of rows transfers only the rows shown.
    """
    query = sql.SQL(test.sql_for(tenants))
    try:
        with conn.transaction():
            count_row = conn.execute(sql.SQL("SELECT count(*) FROM (\n{}\n) AS failing_rows").format(query)).fetchone()
            failing_rows = int(count_row[0]) if count_row else 0
            sample: list[dict[str, Any]] = []
            if failing_rows and sample_size > 0:  # a passing test would run its query a second time for nothing
                with conn.cursor(name=f"data_test_sample_{id(test):x}", row_factory=dict_row) as cursor:
                    cursor.execute(query)
                    sample = cursor.fetchmany(sample_size)
    except psycopg.Error as error:
        raise DataTestError(
            f"{test.defined_in}: data test {test.name} on model {test.model} could not run: {_database_message(error)}"
        ) from error
    return DataTestResult(
        failing_rows=failing_rows,
        sample=[{column: _json_friendly(value) for column, value in row.items()} for row in sample],
    )
