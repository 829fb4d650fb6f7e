"""Data that breaks the spec but can be loaded as it comes: which values, and what was wrong with them.

Real APIs return ``null`` for fields the spec calls required, values of another type, enum values
the spec does not list, and strings holding U+0000 (valid JSON, but PostgreSQL stores it in
neither text nor jsonb). Failing a whole tenant's load for one such customer, on every run, loses
more than it protects. So a list page is held to the spec strictly only where the load relies on
it: the paging object, the list's shape (``items`` an array of objects) and each item's key
(``customerUid`` or ``customerGroupUid``). A violation inside any other field of an item becomes
a ``Deviation`` that travels with the page, and the loader keeps the value (see
``pipelines.warehouse.frames``). ``FLOWRETAIL_STRICT_SPEC=1`` turns all of this off again.

Validation stays cheap: a page is first checked whole (in Rust); only a page that fails is walked
error by error, and only a body whose raw bytes contain the escape ``\\u0000`` is searched for NULs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from pipelines.flowretail.errors import SpecViolationError

KEY_FIELDS = frozenset({"customerUid", "customerGroupUid"})
NUL_ESCAPE = b"\\u0000"  # how JSON writes U+0000 inside a string (a raw NUL byte is not valid JSON)

# Cases that leave nothing to keep beyond the NULL the column gets (or the value as stored).
NO_VALUE_CASES = frozenset({"null", "missing", "nul_removed"})

_CASE_OF_KIND = {
    "Type": "type",
    "AnyOf": "type",
    "OneOfNotValid": "type",
    "OneOfMultipleValid": "type",
    "Enum": "enum",
    "Format": "format",
    "Pattern": "pattern",
    "Required": "missing",
}


@dataclass(frozen=True)
class Deviation:
    """One value of a list item that breaks the spec: the item's position on its page, the field
    path without array indices (``email``, ``credit.limit``, ``contacts.role``) and the case."""

    item: int
    field: str
    case: str


def tolerable(path: list[str | int], kind_name: str, required: str | None, instance: Any) -> Deviation | None:
    """The deviation a validation error amounts to, or None when the load relies on that part."""
    if len(path) < 2 or path[0] != "items" or not isinstance(path[1], int):
        return None
    rest = [*path[2:], *([required] if required is not None else [])]
    if not rest or rest[0] in KEY_FIELDS:
        return None
    case = "null" if instance is None and required is None else _CASE_OF_KIND.get(kind_name, kind_name.lower())
    return Deviation(path[1], ".".join(part for part in rest if isinstance(part, str)), case)


def remove_nul(operation: str, items: list[Any], page: int | None, *, strict: bool) -> list[Deviation]:
    """Remove U+0000 from every string and key of the items (each item is replaced by its clean copy).

    One deviation per field path where a NUL was found. A NUL in an item's key is never removed
    (two keys could become one): it is an error, as is any NUL in strict mode.
    """
    found: list[Deviation] = []
    for index, item in enumerate(items):
        if not _may_hold_nul(item):
            continue
        paths: dict[str, None] = {}
        clean = _without_nul(item, "", paths)
        if not paths:
            continue
        refused = next((path for path in paths if strict or path.split(".")[0] in KEY_FIELDS), None)
        if refused is not None:
            raise SpecViolationError(
                operation, f"items[{index}].{refused}", "contains U+0000, which PostgreSQL cannot store", page
            )
        items[index] = clean
        found.extend(Deviation(index, path, "nul_removed") for path in paths)
    return found


def _may_hold_nul(item: Any) -> bool:
    """Whether an item can hold U+0000 anywhere, asked of its JSON text in C.

    A page with one NUL used to have all of its items walked and copied in Python, a hundred times
    the work of the one that needed it. JSON escapes U+0000 in strings and keys alike, so an item
    whose text lacks the escape holds none; a false alarm (an escaped backslash before ``u0000``)
    only costs the walk, which then finds nothing.
    """
    try:
        return NUL_ESCAPE in orjson.dumps(item)
    except orjson.JSONEncodeError:  # not from a JSON body (an int past 64 bits, say): walk it
        return True


def _without_nul(value: Any, path: str, paths: dict[str, None]) -> Any:
    """The value with U+0000 removed from its strings and keys; each path where one was found is noted."""
    if isinstance(value, str):
        if "\x00" in value:
            paths[path] = None
            return value.replace("\x00", "")
        return value
    if isinstance(value, list):
        return [_without_nul(inner, path, paths) for inner in value]
    if isinstance(value, dict):
        out = {}
        for key, inner in value.items():
            clean_key = key.replace("\x00", "")
            inner_path = f"{path}.{clean_key}" if path else clean_key
            if clean_key != key:
                paths[inner_path] = None
            out[clean_key] = _without_nul(inner, inner_path, paths)
        return out
    return value


def deviation_record(found: list[Deviation]) -> dict[int, dict[str, str]]:
    """Per item position: field path -> case, the first case of a field path winning."""
    record: dict[int, dict[str, str]] = {}
    for deviation in found:
        record.setdefault(deviation.item, {}).setdefault(deviation.field, deviation.case)
    return record
