"""What the docs promise: the merged spec matches the shared API docs, and the README's SQL runs."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from pipelines.cli import main
from pipelines.flowretail.simulator import SimulatorConfig, build_state, running_simulator
from pipelines.flowretail.spec import SPEC_FILE, merge_spec_markdown, render_spec

ROOT = Path(__file__).resolve().parents[1]
SHARED_DOCS = ROOT.parent / "shared" / "flowretail-api" / "customer-group-api.md"


@pytest.mark.skipif(not SHARED_DOCS.exists(), reason="../shared/flowretail-api is not beside the checkout")
def test_committed_spec_is_the_merge_of_the_shared_docs() -> None:
    assert SPEC_FILE.read_text("utf-8") == render_spec(merge_spec_markdown(SHARED_DOCS.read_text("utf-8")))


def _readme_sql() -> list[str]:
    section = ROOT.joinpath("README.md").read_text("utf-8").split("### Analyst queries", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sql\n(.*?)```", section, re.DOTALL)


@pytest.fixture
def loaded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, database_url: str) -> Iterator[str]:
    # Two tenants, as the code location's partitions (fixed at its first import) may already list both.
    state = build_state(SimulatorConfig(tenants=2, customers=300, groups=5))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    with running_simulator(state) as base_url:
        for name, value in {
            "FLOWRETAIL_BASE_URL": base_url,
            "FLOWRETAIL_TOKEN": state.token,
            "FLOWRETAIL_TENANT_UIDS": "tenant-1,tenant-2",
            "FLOWRETAIL_RATE_LIMIT": "1000",
            "DATABASE_URL": database_url,
        }.items():
            monkeypatch.setenv(name, value)
        assert main(["run", "--tenant", "tenant-1"]) == 0
        group = "grp-0004"
        state.remove_members("tenant-1", group, state.member_uids("tenant-1", group)[:3])
        assert main(["load", "--tenant", "tenant-1"]) == 0
    yield database_url


def test_every_analyst_query_in_the_readme_runs_and_returns_rows(loaded: str) -> None:
    queries = _readme_sql()
    assert len(queries) == 4
    with psycopg.connect(loaded) as conn:
        results = [conn.execute(query).fetchall() for query in queries]
    sizes, changes, overlap, missing = results
    assert {row[2] for row in sizes} == {"newsletter_subscribers", "b2b_credit_customers", "credit_at_risk"}
    assert sum(1 for row in changes if row[1] == "left") == 3
    assert overlap and overlap[0][0] == "tenant-1"
    assert missing == []
