"""The API's fields as columns of the ``flowretail`` schema: the interface analysts and the push-back read.

Customer snapshot columns mirror ``CustomerResponseSchema`` (camelCase -> snake_case) and are
derived from the merged spec, so the table follows the spec instead of a hand-kept list. A field
the API adds later lands in the jsonb column ``extra_fields`` and in the registry
``customer_fields`` (plain rows, no DDL on the load's path); ``flowretail migrate`` then promotes
it to a real column, up to ``MAX_PROMOTED_FIELDS`` of them (see pipelines/warehouse/migrate.py).

The tables themselves are declared once in pipelines/warehouse/tables.py, which derives their DDL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

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
GROUP_FIELD_COLUMNS: list[Column] = [
    Column("name", "text", "name"),
    Column("created_by", "text", "createdBy"),
    Column("created_at", "timestamptz", "createdAt"),
    Column("last_modified_by", "text", "lastModifiedBy"),
    Column("last_modified_at", "timestamptz", "lastModifiedAt"),
]
