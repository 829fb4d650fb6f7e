"""Session-wide real PostgreSQL: DATABASE_URL when set, else one embedded server for the whole run."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from pipelines.warehouse.embedded import start_embedded_postgres
from tests.helpers import stop_embedded_postgres


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """URL of a server the tests may create databases on.

    The embedded server's data lives in its own temp directory, not pytest's basetemp, because
    pytest prunes old basetemps, which would pull the data out from under a concurrent session.
    """
    configured = os.environ.get("DATABASE_URL")
    if configured:
        yield configured
        return
    root = Path(tempfile.mkdtemp(prefix="flowretail-test-pg-"))
    try:
        yield start_embedded_postgres(root / "data")
    finally:
        stop_embedded_postgres(root / "data")
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def fresh_database(server_url: str, prefix: str = "t") -> Iterator[str]:
    """Create an empty database on the server, yield its URL, drop it afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield urlunsplit(urlsplit(server_url)._replace(path="/" + name))
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def database_url(pg_server_url: str) -> Iterator[str]:
    """A fresh, empty database for one test, dropped afterwards."""
    with fresh_database(pg_server_url) as url:
        yield url


@pytest.fixture(autouse=True)
def _no_leftover_dagster_state_storage() -> Iterator[None]:
    """Dagster keeps the entered instance's definitions-state storage in a context variable; an
    instance entered by an earlier test (``with instance:`` in a run launched in process) can leave it
    pointing at a disposed instance, and the next ``dg.Definitions(...)`` then fails with "undefined
    DagsterInstance weakref". Each test starts without one, as a fresh process would."""
    from dagster._core.storage.defs_state.base import _current_storage

    token = _current_storage.set(None)
    try:
        yield
    finally:
        _current_storage.reset(token)
