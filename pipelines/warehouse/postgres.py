"""Connection helpers of the warehouse: masked URLs, creating a missing schema (advisory locks: locks.py)."""

from __future__ import annotations

import re
from typing import Any

import psycopg
from psycopg import sql

_PASSWORD_IN_URL = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]*:)(?P<secret>[^@\s]*)(?P<tail>@)", re.IGNORECASE)
_PASSWORD_IN_DSN = re.compile(r"(?P<head>\bpassword\s*=\s*)(?P<secret>'[^']*'|\S+)", re.IGNORECASE)


def mask_url(text: str) -> str:
    """Hide passwords in PostgreSQL URLs and key=value DSNs (for logs and error messages)."""
    text = _PASSWORD_IN_URL.sub(lambda m: m["head"] + ("***" if m["secret"] else "") + m["tail"], text)
    return _PASSWORD_IN_DSN.sub(lambda m: m["head"] + "***", text)


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
