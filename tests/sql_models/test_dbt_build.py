"""dbt_like_sql/ stays a dbt project: real dbt builds and tests it, for all tenants and per tenant.

dbt-core 1.10 and dbt-postgres 1.9 pin dependencies of their own, so they live in a venv of their
own (``.venv-dbt`` beside ``.venv``, created on first use; dbt-core 1.11+ cannot be installed here,
its build downloads a parser binary). The test is skipped, saying why, only when pip cannot
install them.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import psycopg
import pytest

from tests.sql_models import retail_fixture as fx
from tests.sql_models.conftest import SHIPPED_MODELS

DBT_VENV = SHIPPED_MODELS.parent / ".venv-dbt"
DBT_REQUIREMENTS = ("dbt-core>=1.10,<1.11", "dbt-postgres>=1.9,<1.10")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dbt() -> Path:
    """The dbt executable of .venv-dbt, installing it when missing."""
    executable = DBT_VENV / "bin" / "dbt"
    if not executable.exists():
        steps = (
            [sys.executable, "-m", "venv", str(DBT_VENV)],
            [str(DBT_VENV / "bin" / "python"), "-m", "pip", "install", "--quiet", *DBT_REQUIREMENTS],
        )
        for step in steps:
            done = subprocess.run(step, capture_output=True, text=True, timeout=900, check=False)
            if done.returncode != 0:
                tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
                pytest.skip(f"dbt is not installable here ({' '.join(DBT_REQUIREMENTS)}): {tail[0]}")
    return executable


def _profiles(directory: Path, database_url: str) -> None:
    url = urlsplit(database_url)
    query = dict(part.split("=", 1) for part in url.query.split("&") if part)
    host = unquote(query.get("host", url.hostname or "localhost"))
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "profiles.yml").write_text(
        "flowretail:\n  target: test\n  outputs:\n    test:\n      type: postgres\n"
        f"      host: '{host}'\n      port: {url.port or 5432}\n      user: '{unquote(url.username or 'postgres')}'\n"
        f"      password: '{unquote(url.password or '')}'\n      dbname: '{url.path.lstrip('/')}'\n"
        "      schema: analytics\n      threads: 2\n",
        "utf-8",
    )


def _dbt(dbt: Path, command: str, project: Path, *extra: str) -> str:
    done = subprocess.run(
        [str(dbt), command, "--project-dir", str(project), "--profiles-dir", str(project / "profiles"), *extra],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    return done.stdout


def _segment_rows(conn: psycopg.Connection[Any], model: str) -> set[tuple[str, str]]:
    rows = conn.execute(f"SELECT tenant_uid, customer_uid FROM analytics.{model}").fetchall()
    assert len(rows) == len(set(rows))
    return {(str(tenant), str(uid)) for tenant, uid in rows}


def test_dbt_builds_and_tests_the_folder_for_all_tenants_then_per_tenant(
    dbt: Path, database_url: str, tmp_path: Path
) -> None:
    project = tmp_path / "dbt_like_sql"
    shutil.copytree(SHIPPED_MODELS, project, ignore=shutil.ignore_patterns("target", "logs", "dbt_packages"))
    _profiles(project / "profiles", database_url)
    with psycopg.connect(database_url, autocommit=True) as conn:
        fx.load_fixture(conn)

        full = _dbt(dbt, "build", project)
        assert "ERROR=0" in full and "PASS=" in full, full[-2000:]
        assert _segment_rows(conn, "newsletter_subscribers") == fx.expected_newsletter_subscribers()
        membership = conn.execute("SELECT DISTINCT segment FROM analytics.segment_membership").fetchall()
        assert {row[0] for row in membership} == {"newsletter_subscribers", "b2b_credit_customers", "credit_at_risk"}

        # A per-tenant run replaces that tenant's slice only: the bakery's rows are touched by nobody.
        conn.execute(
            "UPDATE analytics.newsletter_subscribers SET customer_uid = customer_uid || '-stale' WHERE tenant_uid = %s",
            (fx.BAKERY,),
        )
        _dbt(dbt, "run", project, "--select", "newsletter_subscribers", "--vars", f"{{tenant_uid: {fx.OUTDOOR}}}")
        rows = _segment_rows(conn, "newsletter_subscribers")
    expected = fx.expected_newsletter_subscribers()
    assert {row for row in rows if row[0] == fx.OUTDOOR} == {row for row in expected if row[0] == fx.OUTDOOR}
    assert {row for row in rows if row[0] == fx.BAKERY} == {
        (tenant, uid + "-stale") for tenant, uid in expected if tenant == fx.BAKERY
    }
