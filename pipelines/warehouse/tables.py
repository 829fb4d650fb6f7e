"""The product's own tables, declared once as SQLAlchemy Core metadata.

Everything else derives from these declarations: the idempotent DDL that ``flowretail migrate``
applies (``ddl_statements``), the column lists that Python writes and reads (``column_names``,
``upsert_sql``), and the names a new API field may not take. SQLAlchemy only declares and renders
DDL here; psycopg still runs every statement, COPY and the hot path.

Adding a column to a table that already shipped: declare it at the end of the table with
``info=ADDED_LATER`` (nullable or with a server default). A fresh warehouse gets it from
``CREATE TABLE``, an older one from an add-if-missing step; both end with the same column order.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Collection
from typing import Any

import sqlalchemy as sa
from psycopg import sql
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.schema import CreateColumn, CreateIndex, CreateTable

from pipelines.warehouse.schema import (
    DEVIATIONS_COLUMN,
    EXTRA_FIELDS_COLUMN,
    GROUP_FIELD_COLUMNS,
    MAX_IDENTIFIER_BYTES,
    SCHEMA,
    Column,
    customer_field_columns,
    snake_case,
)

# One DDL statement as psycopg runs it.
Statement = sql.SQL | sql.Composed
# A column declared after its table first shipped: older warehouses get it by an add-if-missing step.
ADDED_LATER = {"added_later": True}
_DIALECT = pg.dialect()
_TIMESTAMPTZ = pg.TIMESTAMP(timezone=True)
_PG_TYPES: dict[str, sa.types.TypeEngine[Any]] = {
    "text": sa.Text(),
    "timestamptz": _TIMESTAMPTZ,
    "bigint": sa.BigInteger(),
    "numeric": sa.Numeric(),
    "boolean": sa.Boolean(),
    "jsonb": pg.JSONB(),
}


def _col(name: str, type_: Any, *constraints: Any, default: str | None = None, **kw: Any) -> sa.Column[Any]:
    """A column with an SQL default written as PostgreSQL text (``'-infinity'``, ``now()``, ``'[]'``)."""
    return sa.Column(name, type_, *constraints, server_default=sa.text(default) if default else None, **kw)


def _key(*names: str) -> list[sa.Column[Any]]:
    return [sa.Column(name, sa.Text, primary_key=True) for name in names]


def _field_columns(columns: list[Column]) -> list[sa.Column[Any]]:
    """Columns holding API fields; ``info['api_field']`` names the field each mirrors."""
    return [sa.Column(c.name, _PG_TYPES[c.pg_type], info={"api_field": c.api_field}) for c in columns]


def _required(name: str, type_: Any = sa.Text) -> sa.Column[Any]:
    return sa.Column(name, type_, nullable=False)


def _deviations() -> sa.Column[Any]:
    return sa.Column(DEVIATIONS_COLUMN.name, pg.JSONB, info=ADDED_LATER)


metadata = sa.MetaData(schema=SCHEMA)

load_runs = sa.Table(
    "load_runs",
    metadata,
    *_key("run_id", "tenant_uid"),
    _required("started_at", _TIMESTAMPTZ),
    sa.Column("finished_at", _TIMESTAMPTZ),
    _required("status"),
    *(
        sa.Column(name, sa.BigInteger)
        for name in (
            "groups_rows",
            "memberships_rows",
            "customers_rows",
            "membership_periods_opened",
            "membership_periods_closed",
            "customer_versions_opened",
            "customer_versions_closed",
            "pages",
            "requests",
            "retries",
            "rate_limited",
        )
    ),
    sa.Column("error", sa.Text),
    # Per field and case, how many values of the load broke the spec: {"email": {"null": 3}}.
    sa.Column("spec_deviations", pg.JSONB, info=ADDED_LATER),
)

customer_group_memberships = sa.Table(
    "customer_group_memberships",
    metadata,
    *_key("tenant_uid", "customer_group_uid", "customer_uid"),
    _required("_loaded_at", _TIMESTAMPTZ),
    _required("_run_id"),
)

customer_group_membership_history = sa.Table(
    "customer_group_membership_history",
    metadata,
    *_key("tenant_uid", "customer_group_uid", "customer_uid"),
    sa.Column("valid_from", _TIMESTAMPTZ, primary_key=True),
    sa.Column("valid_to", _TIMESTAMPTZ),
    _required("_run_id"),
)
sa.Index(
    "customer_group_membership_history_open",
    *(customer_group_membership_history.c[n] for n in ("tenant_uid", "customer_group_uid", "customer_uid")),
    unique=True,
    postgresql_where=customer_group_membership_history.c.valid_to.is_(None),
)

# The API budget shared by every process holding a token (pipelines/warehouse/api_budget.py).
api_budgets = sa.Table(
    "api_budgets",
    metadata,
    *_key("token_key"),
    _col("tat", _TIMESTAMPTZ, nullable=False, default="'-infinity'"),
    _col("paused_until", _TIMESTAMPTZ, nullable=False, default="'-infinity'"),
    _col("updated_at", _TIMESTAMPTZ, nullable=False, default="now()"),
)
api_budget_leases = sa.Table(
    "api_budget_leases",
    metadata,
    *_key("token_key"),
    sa.Column("holder", pg.UUID, primary_key=True),
    _required("slots", sa.Integer),
    _required("expires_at", _TIMESTAMPTZ),
)

# The registry of API fields the spec does not know: the load records each once (a plain
# INSERT … ON CONFLICT DO NOTHING), migrate promotes it to a column or keeps it in extra_fields.
customer_fields = sa.Table(
    "customer_fields",
    metadata,
    *_key("api_field"),
    _required("pg_type"),
    _col("status", sa.Text, sa.CheckConstraint("status IN ('pending', 'column', 'extra')"), nullable=False),
    sa.Column("column_name", sa.Text, unique=True),
    _col("first_seen_at", _TIMESTAMPTZ, nullable=False, default="now()"),
    sa.Column("first_seen_run_id", sa.Text),
    sa.Column("decided_at", _TIMESTAMPTZ),
)

schema_version = sa.Table(
    "schema_version",
    metadata,
    _col("singleton", sa.Boolean, sa.CheckConstraint("singleton"), primary_key=True, default="true"),
    _required("fingerprint"),
    _required("migrated_at", _TIMESTAMPTZ),
)

# --- the push's registry and audit trail (pipelines/segment_push/audit.py) ------------------------

segment_push_groups = sa.Table(
    "segment_push_groups",
    metadata,
    *_key("tenant_uid", "customer_group_uid"),
    _required("segment"),
    _col("ownership", sa.Text, sa.CheckConstraint("ownership IN ('created', 'adopted')"), nullable=False),
    _required("since", _TIMESTAMPTZ),
    sa.Column("first_push_done_at", _TIMESTAMPTZ),
    # Lifecycle: 'retired' once `flowretail push --retire` emptied (and, unless kept, deleted) the group.
    _col(
        "status",
        sa.Text,
        sa.CheckConstraint("status IN ('active', 'retired')"),
        nullable=False,
        default="'active'",
        info=ADDED_LATER,
    ),
    sa.Column("retired_at", _TIMESTAMPTZ, info=ADDED_LATER),
)

segment_push_runs = sa.Table(
    "segment_push_runs",
    metadata,
    *_key("run_id", "tenant_uid", "segment"),
    _required("customer_group_uid"),
    _required("status"),
    _col("dry_run", sa.Boolean, nullable=False, default="false"),
    _required("plan_hash"),
    _required("group_action"),
    _required("mode"),
    *(
        _required(name, sa.BigInteger)
        for name in (
            "segment_count",
            "live_count",
            "planned_adds",
            "planned_removes",
            "withheld_removes",
            "drift_added",
            "drift_removed",
        )
    ),
    _col("applied_adds", sa.BigInteger, nullable=False, default="0"),
    _col("applied_removes", sa.BigInteger, nullable=False, default="0"),
    _col("rejected_uids", pg.JSONB, nullable=False, default="'[]'"),
    _col("blocked", pg.JSONB, nullable=False, default="'[]'"),
    sa.Column("verified", sa.Boolean),
    _col("calls", sa.BigInteger, nullable=False, default="0"),
    sa.Column("duration_seconds", pg.DOUBLE_PRECISION),
    _required("plan", pg.JSONB),
    _required("planned_at", _TIMESTAMPTZ),
    sa.Column("finished_at", _TIMESTAMPTZ),
    sa.Column("error", sa.Text),
)

segment_push_log = sa.Table(
    "segment_push_log",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True),  # an integer key alone renders as bigserial
    *(_required(name) for name in ("run_id", "tenant_uid", "segment", "customer_group_uid", "action")),
    _col("uid_count", sa.BigInteger, nullable=False, default="0"),
    sa.Column("batch_number", sa.Integer),
    sa.Column("http_status", sa.Integer),
    sa.Column("error", sa.Text),
    _col("add_uids", pg.JSONB, nullable=False, default="'[]'"),
    _col("remove_uids", pg.JSONB, nullable=False, default="'[]'"),
    _col("at", _TIMESTAMPTZ, nullable=False, default="now()"),
)

segment_push_members = sa.Table(
    "segment_push_members",
    metadata,
    *_key("tenant_uid", "segment", "customer_group_uid", "customer_uid"),
)

segment_push_orphans = sa.Table(
    "segment_push_orphans",
    metadata,
    *_key("run_id", "tenant_uid", "customer_group_uid"),
    _required("segment"),
    _required("ownership"),
    sa.Column("live_size", sa.BigInteger),
    sa.Column("last_push_at", _TIMESTAMPTZ),
    _col("noted_at", _TIMESTAMPTZ, nullable=False, default="now()"),
)

segment_push_retirements = sa.Table(
    "segment_push_retirements",
    metadata,
    *_key("run_id", "tenant_uid", "customer_group_uid"),
    sa.Column("segment", sa.Text),
    _required("dry_run", sa.Boolean),
    _required("keep_group", sa.Boolean),
    _required("status"),
    sa.Column("live_before", sa.BigInteger),
    _col("removed", sa.BigInteger, nullable=False, default="0"),
    _col("deleted", sa.Boolean, nullable=False, default="false"),
    sa.Column("detail", sa.Text),
    _col("at", _TIMESTAMPTZ, nullable=False, default="now()"),
)

# What add/remove call sizes one API installation took and refused for a tenant (see batching.py),
# keyed by the base URL (which never carries credentials), never by anything secret.
segment_push_batch_limits = sa.Table(
    "segment_push_batch_limits",
    metadata,
    *_key("api_base_url", "tenant_uid"),
    _required("accepted", sa.Integer),
    sa.Column("refused", sa.Integer),
    _required("learned_at", _TIMESTAMPTZ),
)

PUSH_TABLES = (
    segment_push_groups,
    segment_push_runs,
    segment_push_log,
    segment_push_members,
    segment_push_orphans,
    segment_push_retirements,
    segment_push_batch_limits,
)

# What the SQL model runner built (pipelines/sql_models/built.py); lives in each target schema.
model_relations = sa.Table(
    "_sql_model_relations",
    sa.MetaData(),
    sa.Column("name", sa.Text, primary_key=True),
    _required("materialized"),
    _required("built_at", _TIMESTAMPTZ),
)


@functools.cache
def customer_tables() -> tuple[sa.Table, sa.Table]:
    """``customer_groups`` and ``customer_snapshots``, whose field columns follow the merged spec
    (built on first use, so importing this module reads no spec)."""
    groups = sa.Table(
        "customer_groups",
        metadata,
        *_key("tenant_uid", "customer_group_uid"),
        *_field_columns(GROUP_FIELD_COLUMNS),
        _required("_loaded_at", _TIMESTAMPTZ),
        _required("_run_id"),
        _deviations(),
    )
    snapshots = sa.Table(
        "customer_snapshots",
        metadata,
        *_key("tenant_uid", "customer_uid"),
        *_field_columns(customer_field_columns()),
        sa.Column("valid_from", _TIMESTAMPTZ, primary_key=True),
        sa.Column("valid_to", _TIMESTAMPTZ),
        _required("row_hash"),
        _required("_run_id"),
        _deviations(),
        sa.Column(EXTRA_FIELDS_COLUMN, pg.JSONB, info=ADDED_LATER),
    )
    sa.Index(
        "customer_snapshots_current",
        snapshots.c.tenant_uid,
        snapshots.c.customer_uid,
        unique=True,
        postgresql_where=snapshots.c.valid_to.is_(None),
    )
    return groups, snapshots


def warehouse_tables() -> list[sa.Table]:
    """Every table ``flowretail migrate`` creates: all of ``metadata``, in the order declared."""
    customer_tables()
    return list(metadata.tables.values())


@functools.cache
def snapshot_bookkeeping_columns() -> frozenset[str]:
    """Columns of customer_snapshots that hold no API field; the rest are fields (spec or promoted)."""
    return frozenset(c.name for c in customer_tables()[1].columns if "api_field" not in c.info)


def column_name_for_field(api_field: str) -> str:
    """The column a new API field is promoted to: its snake_case name, or a stable hashed name when
    that would be too long, start with an underscore, or clash with a column of customer_snapshots."""
    name = snake_case(api_field)
    taken = name == "" or name in customer_tables()[1].columns
    if len(name.encode("utf-8")) > MAX_IDENTIFIER_BYTES or name.startswith("_") or taken:
        return "x_" + hashlib.blake2b(api_field.encode("utf-8"), digest_size=8).hexdigest()
    return name


def column_names(table: sa.Table) -> list[str]:
    return [c.name for c in table.columns]


def _render(element: Any, schema: str | None = None) -> str:
    """One DDL element as PostgreSQL text; ``schema`` places a table declared without one."""
    if schema is None:
        return str(element.compile(dialect=_DIALECT)).strip()
    return str(
        element.compile(dialect=_DIALECT, schema_translate_map={None: schema}, render_schema_translate=True)
    ).strip()


def _add_if_missing(table: sa.Table, column: sa.Column[Any], schema: str | None = None) -> sql.Composed:
    """Add a column only when it is missing. ``ADD COLUMN IF NOT EXISTS`` alone would take an ACCESS
    EXCLUSIVE lock on every run, queueing behind (and then blocking) any reader of the table."""
    return sql.SQL(
        "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = {}::regclass AND attname = {} "
        "AND NOT attisdropped) THEN ALTER TABLE {} ADD COLUMN {}; END IF; END $$"
    ).format(
        sql.Literal(sql.Identifier(str(schema or table.schema), table.name).as_string(None)),
        sql.Literal(column.name),
        sql.Identifier(str(schema or table.schema), table.name),
        sql.SQL(_render(CreateColumn(column))),
    )


def table_ddl(table: sa.Table, schema: str | None = None) -> list[Statement]:
    """Idempotent DDL of one table: create it, add columns declared later, create its indexes."""
    statements: list[Statement] = [sql.SQL(_render(CreateTable(table, if_not_exists=True), schema))]
    statements += [_add_if_missing(table, c, schema) for c in table.columns if c.info.get("added_later")]
    statements += [
        sql.SQL(_render(CreateIndex(index, if_not_exists=True), schema))
        for index in sorted(table.indexes, key=lambda i: str(i.name))
    ]
    return statements


def ddl_statements(tables: Collection[sa.Table] | None = None) -> list[Statement]:
    """Idempotent DDL for the given tables (all of the warehouse's by default), PostgreSQL 14 compatible.

    No CREATE SCHEMA here: PostgreSQL checks CREATE on the database before it sees that the
    schema exists, so the migrate step creates a schema only when the catalog lacks it.
    """
    return [statement for table in (warehouse_tables() if tables is None else tables) for statement in table_ddl(table)]


def upsert_sql(table: sa.Table, *, keep: Collection[str] = ()) -> sql.Composed:
    """INSERT of every column of ``table`` from named placeholders; on a primary-key conflict,
    update every other column except those in ``keep``."""
    names = column_names(table)
    key = [c.name for c in table.primary_key.columns]
    update = [n for n in names if n not in key and n not in keep]
    return sql.SQL("INSERT INTO {} ({}) VALUES ({}) ON CONFLICT ({}) DO UPDATE SET {}").format(
        sql.Identifier(str(table.schema), table.name),
        sql.SQL(", ").join(map(sql.Identifier, names)),
        sql.SQL(", ").join(map(sql.Placeholder, names)),
        sql.SQL(", ").join(map(sql.Identifier, key)),
        sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(n)) for n in update),
    )
