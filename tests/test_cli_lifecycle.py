"""`flowretail` lifecycle end to end: orphans and stale model relations in the summary and --json,
`push --retire` (dry, refused, done) and `run --drop-stale-models` dropping only the runner's relations."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from pipelines.cli import main
from pipelines.flowretail.simulator import SimulatorState
from pipelines.sql_models.built import record_built
from tests.test_cli import env

__all__ = ["env"]


def _plant(state: SimulatorState, database_url: str) -> list[str]:
    """A group registered by a segment that is gone, a relation built for a gone model, one not built by us."""
    members = state.customer_uids("tenant-1")[:12]
    state.create_group("tenant-1", "Old segment (warehouse)", "segment-old")
    state.add_members("tenant-1", "segment-old", members)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO flowretail.segment_push_groups (tenant_uid, customer_group_uid, segment, ownership, since) "
            "VALUES ('tenant-1', 'segment-old', 'old_segment', 'created', now())"
        )
        conn.execute("CREATE TABLE analytics.old_segment AS SELECT 'tenant-1'::text AS tenant_uid")
        record_built(conn, "analytics", "old_segment", "table")
        conn.execute("CREATE TABLE analytics.not_ours (x int)")
    return members


def _relations(database_url: str) -> set[str]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'analytics'").fetchall()
    return {r[0] for r in rows}


def test_orphans_retire_and_stale_models(env: tuple[SimulatorState, str], capsys: pytest.CaptureFixture[str]) -> None:
    state, database_url = env
    assert main(["run", "--tenant", "tenant-1"]) == 0
    _plant(state, database_url)
    capsys.readouterr()
    assert main(["push", "--tenant", "tenant-1", "--segment", "newsletter_subscribers", "--json"]) == 0
    summary: dict[str, Any] = json.loads(capsys.readouterr().out)
    assert [
        (o["tenant_uid"], o["customer_group_uid"], o["segment"], o["live_size"], o["last_push_at"])
        for o in summary["orphans"]
    ] == [("tenant-1", "segment-old", "old_segment", 12, None)]
    assert [(r["name"], r["kind"], r["dropped"]) for r in summary["stale_models"]] == [("old_segment", "TABLE", False)]

    state.clear_log()
    assert main(["push", "--retire", "segment-old", "--dry-run", "--json"]) == 0
    dry = json.loads(capsys.readouterr().out)["retirements"]
    assert [(r["tenant_uid"], r["status"], r["detail"]) for r in dry] == [
        ("tenant-1", "dry_run", "would remove 12 members in 1 call(s), then delete the group")
    ]
    assert [r for r in state.request_log if r.method != "GET"] == []

    foreign = state.groups("tenant-1")[0]["customerGroupUid"]
    assert main(["push", "--retire", foreign, "--tenant", "tenant-1"]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: retire of {foreign} for tenant tenant-1 refused: group {foreign} of tenant tenant-1 is not in "
        "flowretail.segment_push_groups: this product never created it, so it will not empty or delete it "
        "(nothing was written)"
    ]
    assert [r for r in state.request_log if r.method != "GET"] == []

    assert main(["push", "--retire", "segment-old"]) == 0
    out = capsys.readouterr().out
    assert "Retirements" in out and "removed 12 members in 1 call(s), then delete the group" in out
    assert state.group("tenant-1", "segment-old") is None
    with psycopg.connect(database_url) as conn:
        assert conn.execute(
            "SELECT status FROM flowretail.segment_push_groups WHERE customer_group_uid = 'segment-old'"
        ).fetchall() == [("retired",)]
        assert conn.execute(
            "SELECT action, http_status FROM flowretail.segment_push_log WHERE customer_group_uid = 'segment-old' "
            "ORDER BY id"
        ).fetchall() == [("retire_remove", 204), ("delete", 204)]

    assert main(["run", "--tenant", "tenant-1", "--drop-stale-models", "--json"]) == 0
    final = json.loads(capsys.readouterr().out)
    assert final["orphans"] == []
    assert [(r["name"], r["dropped"]) for r in final["stale_models"]] == [("old_segment", True)]
    assert "old_segment" not in _relations(database_url) and "not_ours" in _relations(database_url)
