"""One pandas frame per API page, with columns that mirror the API's fields in snake_case.

Frames keep Python objects (``dtype=object``) so integers stay integers, NULL stays None and
every string reaches COPY byte for byte; nested objects and arrays become JSON text for jsonb.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import orjson
import pandas as pd

from pipelines.warehouse.schema import (
    GROUP_FIELD_COLUMNS,
    Column,
    customer_field_columns,
    infer_column_type,
    snake_case,
)

MAX_IDENTIFIER_BYTES = 63


def row_hash(item: dict[str, Any]) -> str:
    """Stable content hash of one API object (key order does not matter)."""
    return hashlib.blake2b(orjson.dumps(item, option=orjson.OPT_SORT_KEYS), digest_size=16).hexdigest()


_PLAIN, _JSON, _TEXT = 0, 1, 2


def _kind(column: Column) -> int:
    if column.is_json:
        return _JSON
    return _TEXT if column.pg_type == "text" else _PLAIN


def _cell(value: Any, kind: int) -> Any:
    """COPY value of one API value: nested values (and non-strings in text columns) as JSON text."""
    if value is None or kind == _PLAIN or (kind == _TEXT and value.__class__ is str):
        return value
    return orjson.dumps(value).decode("utf-8")


GROUP_FRAME_COLUMNS = ["customer_group_uid", *(c.name for c in GROUP_FIELD_COLUMNS)]
_GROUP_FIELDS = [(c.api_field or "", _kind(c)) for c in GROUP_FIELD_COLUMNS]


def groups_frame(items: list[dict[str, Any]]) -> pd.DataFrame:
    """Groups of one page: customer_group_uid, name, created_by, ..."""
    rows = [
        [item["customerGroupUid"], *(_cell(item.get(field), kind) for field, kind in _GROUP_FIELDS)] for item in items
    ]
    return pd.DataFrame(rows, columns=GROUP_FRAME_COLUMNS, dtype=object)


def memberships_frame(customer_group_uid: str, items: list[dict[str, Any]]) -> pd.DataFrame:
    """Memberships of one page of a group's customers."""
    return pd.DataFrame(
        [(customer_group_uid, item["customerUid"]) for item in items],
        columns=["customer_group_uid", "customer_uid"],
        dtype=object,
    )


@dataclass
class CustomerColumns:
    """The customer columns known so far: the spec's, plus any field the API added since."""

    columns: list[Column] = field(default_factory=customer_field_columns)

    def __post_init__(self) -> None:
        self._by_field = {c.api_field: c for c in self.columns}
        self._known = {"customerUid", *self._by_field}
        self.fields = [(c.api_field or "", _kind(c)) for c in self.columns]

    def discover(self, items: list[dict[str, Any]]) -> list[Column]:
        """Register fields not seen before and return their new columns (typed from a value)."""
        added: list[Column] = []
        taken = {c.name for c in self.columns} | {"customer_uid", "tenant_uid", "valid_from", "valid_to", "row_hash"}
        known = self._known
        for item in items:
            if item.keys() <= known:  # the usual case, checked in C
                continue
            for key, value in item.items():
                if key == "customerUid" or key in self._by_field or value is None:
                    continue
                name = snake_case(key)
                if len(name.encode("utf-8")) > MAX_IDENTIFIER_BYTES or name in taken or name.startswith("_"):
                    name = "x_" + hashlib.blake2b(key.encode("utf-8"), digest_size=8).hexdigest()
                column = Column(name, infer_column_type(value), key)
                self.columns.append(column)
                self._by_field[key] = column
                known.add(key)
                self.fields.append((key, _kind(column)))
                taken.add(name)
                added.append(column)
        return added

    @property
    def names(self) -> list[str]:
        return ["customer_uid", *(c.name for c in self.columns), "row_hash"]


def customers_frame(items: list[dict[str, Any]], columns: CustomerColumns) -> pd.DataFrame:
    """Customers of one page, one column per field plus the content hash."""
    fields = columns.fields
    rows = [
        [item["customerUid"], *(_cell(item.get(field), kind) for field, kind in fields), row_hash(item)]
        for item in items
    ]
    return pd.DataFrame(rows, columns=columns.names, dtype=object)
