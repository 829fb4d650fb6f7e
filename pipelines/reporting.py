"""`flowretail report`: a small offline HTML report of what the runs recorded, drawn with plotly.

Everything comes from the warehouse (``load_runs``, ``segment_push_runs``, the membership history
and ``analytics.segment_membership``), so the pictures show what an analyst could query. The page
embeds plotly.js once, so it opens without network access.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import psycopg
from plotly.io import to_html

from pipelines.segment_push.status import PushStatus

REPORT_DIR = Path(".flowretail") / "report"


@dataclass(frozen=True)
class ReportData:
    segment_sizes: pd.DataFrame
    membership_changes: pd.DataFrame
    load_runs: pd.DataFrame
    push_runs: pd.DataFrame


def _frame(
    conn: psycopg.Connection[Any],
    relation: str,
    query: str,
    columns: list[str],
    params: tuple[object, ...] | None = None,
) -> pd.DataFrame:
    """The query's rows, or an empty frame while the relation it reads does not exist yet."""
    exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (relation,)).fetchone()
    if not exists or not exists[0]:
        return pd.DataFrame(columns=columns)
    return pd.DataFrame(conn.execute(query, params).fetchall(), columns=columns)


def read_report_data(conn: psycopg.Connection[Any]) -> ReportData:
    segment_sizes = _frame(
        conn,
        "flowretail.segment_push_runs",
        "SELECT planned_at, tenant_uid, segment, segment_count FROM flowretail.segment_push_runs "
        "WHERE status <> %s ORDER BY planned_at",
        ["at", "tenant_uid", "segment", "customers"],
        (PushStatus.DRY_RUN,),
    )
    membership_changes = _frame(
        conn,
        "flowretail.customer_group_membership_history",
        "SELECT day, tenant_uid, sum(joined) AS joined, sum(left_) AS left_ FROM ("
        " SELECT date_trunc('day', valid_from) AS day, tenant_uid, customer_group_uid, 1 AS joined, 0 AS left_"
        " FROM flowretail.customer_group_membership_history"
        " UNION ALL SELECT date_trunc('day', valid_to), tenant_uid, customer_group_uid, 0, 1"
        " FROM flowretail.customer_group_membership_history WHERE valid_to IS NOT NULL) c "
        "GROUP BY 1, 2 ORDER BY 1",
        ["day", "tenant_uid", "joined", "left"],
    )
    load_runs = _frame(
        conn,
        "flowretail.load_runs",
        "SELECT started_at, tenant_uid, status, extract(epoch FROM finished_at - started_at)::float8, requests, "
        "retries, rate_limited, pages, memberships_rows FROM flowretail.load_runs ORDER BY started_at DESC LIMIT 50",
        [
            "started_at",
            "tenant_uid",
            "status",
            "seconds",
            "requests",
            "retries",
            "rate_limited",
            "pages",
            "memberships",
        ],
    )
    push_runs = _frame(
        conn,
        "flowretail.segment_push_runs",
        "SELECT planned_at, tenant_uid, segment, status, applied_adds, applied_removes, calls, verified "
        "FROM flowretail.segment_push_runs ORDER BY planned_at DESC LIMIT 50",
        ["planned_at", "tenant_uid", "segment", "status", "added", "removed", "calls", "verified"],
    )
    return ReportData(segment_sizes, membership_changes, load_runs, push_runs)


def render_report(data: ReportData) -> str:
    """One self-contained HTML page with four charts and the latest runs as tables."""
    parts = [
        to_html(fig, full_html=False, include_plotlyjs="inline" if i == 0 else False)
        for i, fig in enumerate(_figures(data))
    ]
    tables = [
        "<h2>Latest loads</h2>" + data.load_runs.head(10).to_html(index=False, border=0),
        "<h2>Latest pushes</h2>" + data.push_runs.head(10).to_html(index=False, border=0),
    ]
    body = "\n".join(parts) if parts else "<p>No runs recorded yet: run <code>make run</code> first.</p>"
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Flow Retail pipeline report</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{padding:2px 8px}</style>"
        f"</head><body><h1>Flow Retail pipeline report</h1>{body}{''.join(tables)}</body></html>"
    )


def _figures(data: ReportData) -> list[go.Figure]:
    """The charts there is data for (an empty frame draws nothing rather than empty axes)."""
    figures = []
    if not data.segment_sizes.empty:
        figures.append(_segment_sizes_chart(data.segment_sizes))
    if not data.membership_changes.empty:
        figures.append(_membership_changes_chart(data.membership_changes))
    if not data.load_runs.empty:
        figures += _load_charts(data.load_runs)
    return figures


def _segment_sizes_chart(segment_sizes: pd.DataFrame) -> go.Figure:
    return px.line(
        segment_sizes,
        x="at",
        y="customers",
        color="segment",
        line_dash="tenant_uid",
        markers=True,
        title="Segment sizes over time",
    )


def _membership_changes_chart(membership_changes: pd.DataFrame) -> go.Figure:
    """Joins and leaves per day side by side, one panel per tenant."""
    changes = membership_changes.melt(
        id_vars=["day", "tenant_uid"], value_vars=["joined", "left"], var_name="change", value_name="members"
    )
    return px.bar(
        changes,
        x="day",
        y="members",
        color="change",
        facet_col="tenant_uid",
        barmode="group",
        title="Group membership changes per day",
    )


def _load_charts(load_runs: pd.DataFrame) -> list[go.Figure]:
    """Load durations over time (hover for the API statistics), and requests against duration per load."""
    durations = px.bar(
        load_runs.sort_values("started_at"),
        x="started_at",
        y="seconds",
        color="tenant_uid",
        hover_data=["requests", "retries", "rate_limited", "pages", "status"],
        title="Load durations (hover for API stats)",
    )
    requests = px.scatter(
        load_runs, x="requests", y="seconds", color="tenant_uid", size="pages", title="Requests vs duration per load"
    )
    return [durations, requests]


def write_report(database_url: str, directory: Path = REPORT_DIR) -> Path:
    with psycopg.connect(database_url) as conn:
        html = render_report(read_report_data(conn))
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "index.html"
    path.write_text(html, "utf-8")
    return path.resolve()
