"""The HTML report draws charts from what the runs recorded."""

from __future__ import annotations

from pathlib import Path

import psycopg

from pipelines.reporting import read_report_data, write_report
from pipelines.warehouse.migrate import migrate_on


def test_empty_warehouse_gives_a_helpful_page(database_url: str, tmp_path: Path) -> None:
    path = write_report(database_url, tmp_path)
    assert "No runs recorded yet: run <code>make run</code> first." in path.read_text("utf-8")


def test_report_charts_recorded_runs(database_url: str, tmp_path: Path) -> None:
    with psycopg.connect(database_url) as conn:
        migrate_on(conn)
        conn.execute(
            "INSERT INTO flowretail.load_runs (run_id, tenant_uid, started_at, finished_at, status, requests, retries, "
            "rate_limited, pages, memberships_rows) VALUES ('r1', 't1', '2026-01-01T00:00:00Z', "
            "'2026-01-01T00:00:07Z', 'succeeded', 12, 1, 0, 11, 40)"
        )
        conn.execute(
            "INSERT INTO flowretail.customer_group_membership_history VALUES "
            "('t1', 'g', 'c1', '2026-01-01T00:00:00Z', '2026-01-02T00:00:00Z', 'r1'), "
            "('t1', 'g', 'c2', '2026-01-01T00:00:00Z', NULL, 'r1')"
        )
        data = read_report_data(conn)
    assert data.load_runs[["tenant_uid", "seconds", "requests"]].values.tolist() == [["t1", 7.0, 12]]
    assert data.membership_changes[["joined", "left"]].values.tolist() == [[2, 0], [0, 1]]
    html = write_report(database_url, tmp_path).read_text("utf-8")
    assert "Group membership changes per day" in html and "Load durations" in html
    assert html.count("<script") >= 2 and "plotly" in html
