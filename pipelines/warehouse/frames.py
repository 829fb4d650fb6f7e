"""One pandas frame per API page, with columns that mirror the API's fields in snake_case.

Frames keep Python objects (``dtype=object``) so integers stay integers, NULL stays None and
every string reaches COPY byte for byte; nested objects and arrays become JSON text for jsonb.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import orjson
import pandas as pd

from pipelines.flowretail.deviations import NO_VALUE_CASES
from pipelines.warehouse.schema import (
    DEVIATIONS_COLUMN,
    EXTRA_FIELDS_COLUMN,
    GROUP_FIELD_COLUMNS,
    Column,
    customer_field_columns,
    infer_column_type,
)


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


GROUP_FRAME_COLUMNS = ["customer_group_uid", *(c.name for c in GROUP_FIELD_COLUMNS), DEVIATIONS_COLUMN.name]
_GROUP_FIELDS = [(c.api_field or "", _kind(c)) for c in GROUP_FIELD_COLUMNS]
_GROUP_INDEX = pd.Index(GROUP_FRAME_COLUMNS)
_GROUP_PLAIN_AT = {field: i for i, (field, kind) in enumerate(_GROUP_FIELDS, start=1) if kind == _PLAIN}


def groups_frame(items: list[dict[str, Any]], deviations: dict[str, dict[str, str]] | None = None) -> pd.DataFrame:
    """Groups of one page: customer_group_uid, name, created_by, ..., _spec_deviations."""
    width = len(GROUP_FRAME_COLUMNS)
    cells = [
        cell
        for item in items
        for cell in (item["customerGroupUid"], *(_cell(item.get(field), kind) for field, kind in _GROUP_FIELDS), None)
    ]
    if deviations:
        _record_deviations(cells, items, deviations, "customerGroupUid", _GROUP_PLAIN_AT, width)
    values = np.fromiter(cells, dtype=object, count=len(cells)).reshape(len(items), width)
    return _object_frame(values, _GROUP_INDEX)


def _record_deviations(
    cells: list[Any],
    items: list[dict[str, Any]],
    deviations: dict[str, dict[str, str]],
    key_field: str,
    plain_at: dict[str, int],
    width: int,
) -> None:
    """Fill the last cell of each deviating item's row (``DEVIATIONS_COLUMN``), in the flat cell list.

    A value whose column is typed (timestamptz, bigint, numeric, boolean) but not of that type
    cannot go there: its column gets NULL and the value itself is kept in the record, so nothing
    is lost. Text columns already hold any value as JSON text and jsonb columns hold any JSON.
    """
    for row, item in enumerate(items):
        record = deviations.get(item[key_field])
        if record is None:
            continue
        start = row * width
        entry: dict[str, dict[str, Any]] = {}
        for path, case in record.items():
            at = plain_at.get(path)
            if at is None or case in NO_VALUE_CASES:
                entry[path] = {"case": case}
            else:
                entry[path] = {"case": case, "value": item[path]}
                cells[start + at] = None
        cells[start + width - 1] = orjson.dumps(entry).decode("utf-8")


_MEMBERSHIP_INDEX = pd.Index(["customer_group_uid", "customer_uid"])


def memberships_frame(customer_group_uid: str, items: list[dict[str, Any]]) -> pd.DataFrame:
    """Memberships of one page of a group's customers."""
    values = np.empty((len(items), 2), dtype=object)
    values[:, 0] = customer_group_uid
    values[:, 1] = [item["customerUid"] for item in items]
    return _object_frame(values, _MEMBERSHIP_INDEX)


def _object_frame(values: np.ndarray[Any, Any], columns: pd.Index) -> pd.DataFrame:
    """A frame over one 2-D object array, without copying it or inferring dtypes.

    Building from a list of rows costs pandas a conversion per column, which at 25-customer pages
    was half of the frame's cost.
    """
    return pd.DataFrame(values, columns=columns, dtype=object, copy=False)


@dataclass
class CustomerColumns:
    """The field columns of ``customer_snapshots`` and the API field each one holds.

    Built from the table itself (``load.read_customer_columns``), so a column migrate promoted is
    known without consulting the spec; the default is the spec's columns, for pure tests. The
    layout is fixed for the whole load: a field without a column goes into ``extra_fields``, and
    one never seen before (not in ``registered``) is reported by ``discover`` for the registry.
    A column whose field is unknown (``api_field`` None) is staged NULL.
    """

    columns: list[Column] = field(default_factory=customer_field_columns)
    registered: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        self._known = frozenset({"customerUid", *(c.api_field for c in self.columns if c.api_field)})
        self._seen = set(self._known | self.registered)
        kinds = [_kind(c) for c in self.columns]
        self.field_names: list[str | None] = [c.api_field for c in self.columns]
        self.json_positions = [i for i, kind in enumerate(kinds, start=1) if kind == _JSON]
        self.text_positions = [i for i, kind in enumerate(kinds, start=1) if kind == _TEXT]
        self.plain_at = {
            name: i
            for i, (name, kind) in enumerate(zip(self.field_names, kinds, strict=True), start=1)
            if kind == _PLAIN and name is not None
        }
        self.index = pd.Index(self.names)

    @property
    def known_fields(self) -> frozenset[str]:
        """API fields that have a column (customerUid included)."""
        return self._known

    def discover(self, items: list[dict[str, Any]]) -> list[tuple[str, str]]:
        """Fields not seen before (neither a column nor registered) with a type inferred from a value."""
        added: list[tuple[str, str]] = []
        seen = self._seen
        for item in items:
            if item.keys() <= seen:  # the usual case, checked in C
                continue
            for key, value in item.items():
                if key not in seen and value is not None:
                    seen.add(key)
                    added.append((key, infer_column_type(value)))
        return added

    @property
    def names(self) -> list[str]:
        return [
            "customer_uid",
            *(c.name for c in self.columns),
            EXTRA_FIELDS_COLUMN,
            "row_hash",
            DEVIATIONS_COLUMN.name,
        ]


def extra_fields(item: dict[str, Any], known: frozenset[str]) -> str | None:
    """JSON text of the item's fields that have no column (NULLs left out), or None when there are none."""
    if item.keys() <= known:
        return None
    extra = {key: value for key, value in item.items() if key not in known and value is not None}
    return orjson.dumps(extra).decode("utf-8") if extra else None


def customers_frame(
    items: list[dict[str, Any]], columns: CustomerColumns, deviations: dict[str, dict[str, str]] | None = None
) -> pd.DataFrame:
    """Customers of one page, one column per field, the fields without a column, the content hash
    and the spec deviations.

    The same values as ``_cell`` per value, converted by position instead: this runs for every
    customer of every page, and a call per value was a fifth of the loader's CPU at small pages.
    Deviations (only on a page that broke the spec) are filled in afterwards, outside this loop.
    """
    # None (a column whose field is unknown) is never a key: dict.get(None) stages NULL there.
    fields = cast(list[str], columns.field_names)
    json_at, text_at = columns.json_positions, columns.text_positions
    known = columns.known_fields
    cells: list[Any] = []
    for item in items:
        get = item.get
        extra = None if item.keys() <= known else extra_fields(item, known)  # the check in C: most items
        row = [item["customerUid"], *[get(name) for name in fields], extra, row_hash(item), None]
        for i in json_at:
            if row[i] is not None:
                row[i] = orjson.dumps(row[i]).decode("utf-8")
        for i in text_at:
            value = row[i]
            if value is not None and value.__class__ is not str:
                row[i] = orjson.dumps(value).decode("utf-8")
        cells.extend(row)
    width = len(columns.index)
    if deviations:
        _record_deviations(cells, items, deviations, "customerUid", columns.plain_at, width)
    # fromiter takes each value as one object, even a list a mistyped field might carry.
    values = np.fromiter(cells, dtype=object, count=len(cells)).reshape(len(items), width)
    return _object_frame(values, columns.index)
