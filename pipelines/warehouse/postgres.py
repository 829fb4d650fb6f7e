"""Connections to the warehouse and the idempotent creation of its schema."""

from __future__ import annotations

import re
import zlib
from typing import Any

import psycopg

from pipelines.warehouse.schema import create_tables_sql

_DDL_LOCK = 0x464C5244  # "FLRD": serialises concurrent first runs creating the same tables

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


async def ensure_warehouse_schema(database_url: str) -> None:
    """Create the flowretail schema and tables when missing (safe to call from concurrent loads)."""
    async with await psycopg.AsyncConnection.connect(database_url) as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_DDL_LOCK,))
        for statement in create_tables_sql():
            await conn.execute(statement)


def ensure_warehouse_schema_sync(conn: psycopg.Connection[Any]) -> None:
    """The same, on an open synchronous connection (inside the caller's transaction)."""
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_DDL_LOCK,))
    for statement in create_tables_sql():
        conn.execute(statement)
