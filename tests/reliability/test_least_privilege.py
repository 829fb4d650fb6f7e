"""Least privilege: the product runs as a role that owns its two schemas and nothing more.

The roles come from the shipped grant files, run with psql as a DBA would, on the test server.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from pipelines.cli import main
from pipelines.warehouse.embedded import bundled_psql
from tests.test_cli import simulated_product

GRANTS = Path(__file__).resolve().parents[2] / "deploy" / "grants"


def _as_role(database_url: str, role: str) -> str:
    """The same database, connected as ``role`` (the test server trusts local connections)."""
    parts = urlsplit(database_url)
    return urlunsplit(parts._replace(netloc=f"{role}@{parts.netloc.rpartition('@')[2]}"))


def _psql(database_url: str, grant_file: str, **variables: str) -> None:
    command = [str(bundled_psql()), database_url, "-q", "-X", "-f", str(GRANTS / grant_file)]
    for name, value in variables.items():
        command += ["-v", f"{name}={value}"]
    subprocess.run(command, check=True, capture_output=True, text=True)


@dataclass(frozen=True)
class Roles:
    etl: str
    analyst: str
    person: str  # a login role that holds the analysts' role


@pytest.fixture
def roles(database_url: str) -> Iterator[Roles]:
    suffix = uuid.uuid4().hex[:8]
    created = Roles(f"etl_{suffix}", f"analyst_{suffix}", f"alice_{suffix}")
    try:
        yield created
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            for role in created.__dict__.values():
                exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
                if exists:
                    conn.execute(sql.SQL("DROP OWNED BY {} CASCADE").format(sql.Identifier(role)))
                    conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


@pytest.fixture
def product_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    with simulated_product(monkeypatch, tmp_path):
        yield


@pytest.mark.reliability(
    area="least privilege",
    injected="the product runs as a role made by deploy/grants/etl_role.sql: owns flowretail and analytics, no CREATE on the database",
    expected="load, models and push succeed; every object is the role's own; the analysts' role reads and cannot write",
)
def test_the_etl_role_loads_models_and_pushes_and_the_analysts_only_read(
    database_url: str,
    roles: Roles,
    product_env: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _psql(database_url, "etl_role.sql", etl_role=roles.etl)
    _psql(database_url, "analyst_role.sql", etl_role=roles.etl, analyst_role=roles.analyst)
    with psycopg.connect(database_url, autocommit=True) as dba:
        dba.execute(
            sql.SQL("CREATE ROLE {} LOGIN IN ROLE {}").format(
                sql.Identifier(roles.person), sql.Identifier(roles.analyst)
            )
        )
    monkeypatch.setenv("DATABASE_URL", _as_role(database_url, roles.etl))

    assert main(["run", "--json"]) == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out)
    assert summary["problems"] == []
    assert [(r["tenant_uid"], r["status"]) for r in summary["loads"]] == [
        ("tenant-1", "succeeded"),
        ("tenant-2", "succeeded"),
    ]
    assert summary["pushes"] and {p["status"] for p in summary["pushes"]} == {"verified"}

    with psycopg.connect(database_url) as dba:
        # the role still has no privilege beyond its schemas; everything the run made is its own
        assert dba.execute(
            "SELECT has_database_privilege(%s, current_database(), 'CREATE')", (roles.etl,)
        ).fetchone() == (False,)
        owners = dba.execute(
            "SELECT DISTINCT pg_get_userbyid(c.relowner) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname IN ('flowretail', 'analytics') AND c.relkind IN ('r', 'v')"
        ).fetchall()
        assert owners == [(roles.etl,)]
    with psycopg.connect(_as_role(database_url, roles.person)) as analyst:
        segments = analyst.execute("SELECT count(*) FROM analytics.segment_membership").fetchone()
        runs = analyst.execute("SELECT count(*) FROM flowretail.segment_push_runs").fetchone()
        assert segments is not None and segments[0] > 0
        assert runs is not None and runs[0] == len(summary["pushes"])
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied for table load_runs"):
            analyst.execute("DELETE FROM flowretail.load_runs")


@pytest.mark.reliability(
    area="least privilege",
    injected="the DBA created flowretail for the role but not analytics; the role may not create schemas",
    expected="the run stops with one line naming the privilege, the object and the role; nothing created",
)
def test_a_missing_privilege_stops_the_run_with_one_line(
    database_url: str,
    roles: Roles,
    product_env: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The DBA created flowretail for the role but forgot analytics, and the role may not create schemas."""
    database = urlsplit(database_url).path.lstrip("/")
    with psycopg.connect(database_url, autocommit=True) as dba:
        dba.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(roles.etl)))
        dba.execute(
            sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}").format(
                sql.Identifier(database), sql.Identifier(roles.etl)
            )
        )
        dba.execute(sql.SQL("CREATE SCHEMA flowretail AUTHORIZATION {}").format(sql.Identifier(roles.etl)))
    monkeypatch.setenv("DATABASE_URL", _as_role(database_url, roles.etl))

    assert main(["run"]) == 1
    out, err = capsys.readouterr()
    assert err.splitlines() == [
        f'error: missing privilege for role "{roles.etl}": CREATE on database "{database}" (schema "analytics" is '
        "missing and must be created); a DBA grants it with deploy/grants/etl_role.sql (see README, Least privilege)"
    ]
    assert "Loads" not in out and "UndefinedTable" not in out + err
    with psycopg.connect(database_url) as dba:
        assert dba.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'flowretail'").fetchone() == (0,)

    assert main(["migrate"]) == 1
    assert capsys.readouterr().err == err
