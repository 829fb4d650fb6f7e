"""Tables of the ``flowretail`` schema: the interface analysts and the push-back read.

Customer snapshot columns mirror ``CustomerResponseSchema`` (camelCase -> snake_case) and are
derived from the merged spec, so the table follows the spec instead of a hand-kept list. A field
the API adds later lands in the jsonb column ``extra_fields`` and in the registry
``customer_fields`` (plain rows, no DDL on the load's path); ``flowretail migrate`` then promotes
it to a real column, up to ``MAX_PROMOTED_FIELDS`` of them (see pipelines/warehouse/migrate.py).

Every statement here is idempotent and runs only from the migrate step, never inside a load:
append new tables, indexes or ``ALTER TABLE … ADD COLUMN IF NOT EXISTS`` to ``create_tables_sql``
and the next run applies them (the schema-version marker is a hash of this list).
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass
from typing import Any

from psycopg import sql

from pipelines.flowretail.spec import load_spec

SCHEMA = "flowretail"
EXTRA_FIELDS_COLUMN = "extra_fields"
# New API fields that may become columns of customer_snapshots; later ones stay in extra_fields
# for good. PostgreSQL stops at 1,600 columns (dropped ones included), about 1,600 distinct keys.
MAX_PROMOTED_FIELDS = 50
MAX_IDENTIFIER_BYTES = 63
# Key and filter columns of each raw table: analysed after every merge that changed the table, so
# the models and checks that read it next never plan on missing or stale statistics.
RAW_TABLE_STATISTICS: dict[str, tuple[str, ...]] = {
    "customer_groups": ("tenant_uid", "customer_group_uid"),
    "customer_group_memberships": ("tenant_uid", "customer_group_uid", "customer_uid"),
    "customer_group_membership_history": ("tenant_uid", "customer_group_uid", "customer_uid", "valid_to"),
    "customer_snapshots": ("tenant_uid", "customer_uid", "valid_to"),
    "load_runs": ("run_id", "tenant_uid", "status"),
}

_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def snake_case(name: str) -> str:
    """customerGroupUid -> customer_group_uid (the column of an API field)."""
    return _CAMEL_BOUNDARY.sub("_", name).lower()


@dataclass(frozen=True)
class Column:
    """One column of a table: its name, its PostgreSQL type, and the API field it mirrors."""

    name: str
    pg_type: str
    api_field: str | None = None

    @property
    def is_json(self) -> bool:
        return self.pg_type == "jsonb"


def _pg_type_for(schema: dict[str, Any], components: dict[str, Any]) -> str:
    ref = schema.get("$ref")
    if ref:
        return _pg_type_for(components[ref.rsplit("/", 1)[1]], components)
    kind = schema.get("type")
    if kind == "string":
        return "timestamptz" if schema.get("format") == "date-time" else "text"
    if kind == "integer":
        return "bigint"
    if kind == "number":
        return "numeric"
    if kind == "boolean":
        return "boolean"
    return "jsonb"


def customer_field_columns() -> list[Column]:
    """Columns for every property of CustomerResponseSchema, in spec order."""
    components = load_spec()["components"]["schemas"]
    properties: dict[str, Any] = components["CustomerResponseSchema"]["properties"]
    return [
        Column(snake_case(field), _pg_type_for(schema, components), field)
        for field, schema in properties.items()
        if field != "customerUid"
    ]


@functools.cache
def _reserved_names() -> frozenset[str]:
    return SNAPSHOT_BOOKKEEPING_COLUMNS | {""} | {c.name for c in customer_field_columns()}


def column_name_for_field(api_field: str) -> str:
    """The column a new API field is promoted to: its snake_case name, or a stable hashed name when
    that would be too long, start with an underscore, or clash with a spec or bookkeeping column."""
    name = snake_case(api_field)
    if len(name.encode("utf-8")) > MAX_IDENTIFIER_BYTES or name.startswith("_") or name in _reserved_names():
        return "x_" + hashlib.blake2b(api_field.encode("utf-8"), digest_size=8).hexdigest()
    return name


def infer_column_type(value: Any) -> str:
    """PostgreSQL type for a field the spec does not know, from one of its JSON values."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "bigint"
    if isinstance(value, float):
        return "numeric"
    if isinstance(value, str):
        return "text"
    return "jsonb"


# Per row, the fields that broke the spec and how (``{"email": {"case": "null"}}``), with the value
# itself where its column's type could not hold it (``{"paymentTerms": {"case": "type", "value": "30"}}``);
# NULL for a row true to the spec. See pipelines/flowretail/deviations.py.
DEVIATIONS_COLUMN = Column("_spec_deviations", "jsonb")
# Columns of customer_snapshots that hold no API field; the rest are fields (spec or promoted).
SNAPSHOT_BOOKKEEPING_COLUMNS = frozenset(
    {
        "tenant_uid",
        "customer_uid",
        "valid_from",
        "valid_to",
        "row_hash",
        "_run_id",
        EXTRA_FIELDS_COLUMN,
        DEVIATIONS_COLUMN.name,
    }
)

GROUP_FIELD_COLUMNS: list[Column] = [
    Column("name", "text", "name"),
    Column("created_by", "text", "createdBy"),
    Column("created_at", "timestamptz", "createdAt"),
    Column("last_modified_by", "text", "lastModifiedBy"),
    Column("last_modified_at", "timestamptz", "lastModifiedAt"),
]


def _columns_sql(columns: list[Column]) -> sql.Composed:
    return sql.SQL(",\n    ").join(sql.SQL("{} {}").format(sql.Identifier(c.name), sql.SQL(c.pg_type)) for c in columns)


def _add_column_sql(table: str, column: str, pg_type: str) -> sql.Composed:
    """Add a column only when it is missing. ``ADD COLUMN IF NOT EXISTS`` alone would take an ACCESS
    EXCLUSIVE lock on every load's start, queueing behind (and then blocking) any reader of the table."""
    return sql.SQL(
        "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = {}::regclass AND attname = {} "
        "AND NOT attisdropped) THEN ALTER TABLE {}.{} ADD COLUMN {} {}; END IF; END $$"
    ).format(
        sql.Literal(f"{SCHEMA}.{table}"),
        sql.Literal(column),
        sql.Identifier(SCHEMA),
        sql.Identifier(table),
        sql.Identifier(column),
        sql.SQL(pg_type),
    )


def create_tables_sql() -> list[sql.Composed]:
    """Idempotent DDL for every table of the schema (PostgreSQL 14 compatible)."""
    s = sql.Identifier(SCHEMA)
    customer_columns = _columns_sql(customer_field_columns())
    group_columns = _columns_sql(GROUP_FIELD_COLUMNS)
    # No CREATE SCHEMA here: PostgreSQL checks CREATE on the database before it sees that the
    # schema exists, so the migrate step creates a schema only when the catalog lacks it.
    return [
        sql.SQL(
            """CREATE TABLE IF NOT EXISTS {}.customer_groups (
    tenant_uid text NOT NULL,
    customer_group_uid text NOT NULL,
    {},
    _loaded_at timestamptz NOT NULL,
    _run_id text NOT NULL,
    PRIMARY KEY (tenant_uid, customer_group_uid)
)"""
        ).format(s, group_columns),
        sql.SQL(
            """CREATE TABLE IF NOT EXISTS {}.customer_group_memberships (
    tenant_uid text NOT NULL,
    customer_group_uid text NOT NULL,
    customer_uid text NOT NULL,
    _loaded_at timestamptz NOT NULL,
    _run_id text NOT NULL,
    PRIMARY KEY (tenant_uid, customer_group_uid, customer_uid)
)"""
        ).format(s),
        sql.SQL(
            """CREATE TABLE IF NOT EXISTS {}.customer_group_membership_history (
    tenant_uid text NOT NULL,
    customer_group_uid text NOT NULL,
    customer_uid text NOT NULL,
    valid_from timestamptz NOT NULL,
    valid_to timestamptz,
    _run_id text NOT NULL,
    PRIMARY KEY (tenant_uid, customer_group_uid, customer_uid, valid_from)
)"""
        ).format(s),
        sql.SQL(
            """CREATE UNIQUE INDEX IF NOT EXISTS customer_group_membership_history_open
    ON {}.customer_group_membership_history (tenant_uid, customer_group_uid, customer_uid)
    WHERE valid_to IS NULL"""
        ).format(s),
        sql.SQL(
            """CREATE TABLE IF NOT EXISTS {}.customer_snapshots (
    tenant_uid text NOT NULL,
    customer_uid text NOT NULL,
    {},
    valid_from timestamptz NOT NULL,
    valid_to timestamptz,
    row_hash text NOT NULL,
    _run_id text NOT NULL,
    PRIMARY KEY (tenant_uid, customer_uid, valid_from)
)"""
        ).format(s, customer_columns),
        sql.SQL(
            """CREATE UNIQUE INDEX IF NOT EXISTS customer_snapshots_current
    ON {}.customer_snapshots (tenant_uid, customer_uid) WHERE valid_to IS NULL"""
        ).format(s),
        sql.SQL(
            """CREATE TABLE IF NOT EXISTS {}.load_runs (
    run_id text NOT NULL,
    tenant_uid text NOT NULL,
    started_at timestamptz NOT NULL,
    finished_at timestamptz,
    status text NOT NULL,
    groups_rows bigint,
    memberships_rows bigint,
    customers_rows bigint,
    membership_periods_opened bigint,
    membership_periods_closed bigint,
    customer_versions_opened bigint,
    customer_versions_closed bigint,
    pages bigint,
    requests bigint,
    retries bigint,
    rate_limited bigint,
    error text,
    PRIMARY KEY (run_id, tenant_uid)
)"""
        ).format(s),
        *(
            _add_column_sql(table, DEVIATIONS_COLUMN.name, "jsonb")
            for table in ("customer_snapshots", "customer_groups")
        ),
        # Per field and case, how many values of the load broke the spec: {"email": {"null": 3}}.
        _add_column_sql("load_runs", "spec_deviations", "jsonb"),
        # The API budget shared by every process holding a token (pipelines/warehouse/api_budget.py).
        sql.SQL(
            """CREATE TABLE IF NOT EXISTS {}.api_budgets (
    token_key text PRIMARY KEY,
    tat timestamptz NOT NULL DEFAULT '-infinity',
    paused_until timestamptz NOT NULL DEFAULT '-infinity',
    updated_at timestamptz NOT NULL DEFAULT now()
)"""
        ).format(s),
        sql.SQL(
            """CREATE TABLE IF NOT EXISTS {}.api_budget_leases (
    token_key text NOT NULL,
    holder uuid NOT NULL,
    slots integer NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (token_key, holder)
)"""
        ).format(s),
        sql.SQL("ALTER TABLE {}.customer_snapshots ADD COLUMN IF NOT EXISTS {} jsonb").format(
            s, sql.Identifier(EXTRA_FIELDS_COLUMN)
        ),
        sql.SQL(
            # The registry of API fields the spec does not know: the load records each once (a plain
            # INSERT … ON CONFLICT DO NOTHING), migrate promotes it to a column or keeps it in extra_fields.
            """CREATE TABLE IF NOT EXISTS {}.customer_fields (
    api_field text PRIMARY KEY,
    pg_type text NOT NULL,
    status text NOT NULL CHECK (status IN ('pending', 'column', 'extra')),
    column_name text UNIQUE,
    first_seen_at timestamptz NOT NULL DEFAULT now(),
    first_seen_run_id text,
    decided_at timestamptz
)"""
        ).format(s),
        sql.SQL(
            """CREATE TABLE IF NOT EXISTS {}.schema_version (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    fingerprint text NOT NULL,
    migrated_at timestamptz NOT NULL
)"""
        ).format(s),
    ]
