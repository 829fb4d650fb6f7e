"""Connection helpers of the warehouse: masked URLs, creating a missing schema (advisory locks: locks.py)."""

from __future__ import annotations

import re
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

_PASSWORD_IN_URL = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]*:)(?P<secret>[^@\s]*)(?P<tail>@)", re.IGNORECASE)
_PASSWORD_IN_DSN = re.compile(r"(?P<head>\bpassword\s*=\s*)(?P<secret>'[^']*'|\S+)", re.IGNORECASE)


def masked_database_url(url: str) -> str:
    """The database URL as logs and messages show it: SQLAlchemy's rendering with the password as ***.

    libpq also takes a password as a query parameter, which that rendering would show, so it is
    hidden too. An empty password stays empty (nothing to hide, and the URL stays usable as is);
    a key=value DSN, which is no URL, is masked as text.
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        return mask_url(url)
    if "password" in parsed.query:
        parsed = parsed.update_query_dict({"password": "***"})
    return parsed.render_as_string(hide_password=bool(parsed.password))


def mask_url(text: str) -> str:
    """Hide passwords in PostgreSQL URLs and key=value DSNs inside free text (a driver's error message),
    where no URL parser applies; a URL on its own goes through ``masked_database_url``."""
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
