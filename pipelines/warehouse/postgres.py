"""Connection helpers of the warehouse: masked URLs, advisory-lock keys, creating a missing schema."""

from __future__ import annotations

import re
import zlib
from typing import Any

import psycopg
from psycopg import sql

_PASSWORD_IN_URL = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]*:)(?P<secret>[^@\s]*)(?P<tail>@)", re.IGNORECASE)
_PASSWORD_IN_DSN = re.compile(r"(?P<head>\bpassword\s*=\s*)(?P<secret>'[^']*'|\S+)", re.IGNORECASE)


def mask_url(text: str) -> str:
    """Hide passwords in PostgreSQL URLs and key=value DSNs (for logs and error messages)."""
    text = _PASSWORD_IN_URL.sub(lambda m: m["head"] + ("***" if m["secret"] else "") + m["tail"], text)
    return _PASSWORD_IN_DSN.sub(lambda m: m["head"] + "***", text)


def advisory_lock_key(*parts: str) -> int:
    """32-bit key of a PostgreSQL advisory lock on a tenant, or on one thing of a tenant.

    crc32 of the parts joined by a unit separator: stable across processes and versions, so every
    loader and pusher of the same tenant or group computes the same key.
    """
    return zlib.crc32("\x1f".join(parts).encode("utf-8")) - 2**31


def create_schema_if_missing(conn: psycopg.Connection[Any], schema: str) -> bool:
    """Create ``schema`` only when the catalog lacks it; True when this call created it.

    Not ``CREATE SCHEMA IF NOT EXISTS``: PostgreSQL checks CREATE on the database before it looks
    for the schema, so that statement fails for a role that owns an existing schema and nothing else.
    """
    row = conn.execute("SELECT to_regnamespace(%s) IS NULL", (sql.Identifier(schema).as_string(None),)).fetchone()
    if not (row and row[0]):
        return False
    try:
        with conn.transaction():
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    except psycopg.errors.DuplicateSchema:
        return False  # another process created it meanwhile
    return True
