"""The shipped production instance, proven with real processes: code server, daemon and webserver on the
shipped deploy/dagster.yaml (PostgreSQL storage, queued runs), a tenant backfill through the daemon and
the queue, the push sensor, and the simulator enforcing the API budget.

Budget: the simulator allows ``BUDGET`` requests per second; ``FLOWRETAIL_RATE_LIMIT`` is 90 % of it
(see ``CLIENT_RATE``). Every run draws from the token's one budget in the warehouse, and the shipped
queue lets several runs of the token overlap (``flowretail/token`` limit = ``max_concurrent_runs``),
so the proof checks that together they send no 429 and keep at least 85 % of the budget while any
load is paging. Every run is read back through the webserver's GraphQL API.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from pipelines.flowretail.simulator import FaultConfig, SimulatorConfig, SimulatorState, build_state, running_simulator
from tests.conftest import fresh_database
from tests.deploy.cluster import (
    Deployment,
    RunWatch,
    failure_report,
    launch_backfill,
    peak_overlap,
    psycopg2_url,
    queue_limits,
    run_materializations,
    running_deployment,
    start_sensor,
    wait_for_readiness,
    wait_for_runs,
)
from tests.ui.webserver import run_flowretail

BUDGET = 20.0
CLIENT_RATE = 0.9 * BUDGET
"""FLOWRETAIL_RATE_LIMIT. The shared budget lets a quiet token send half a second's worth at once and
a late send time catch up by half a second: one second's worth of burst, exactly the simulator's
bucket. 10 % headroom keeps network and scheduling jitter from turning that edge into 429s."""
PAGE_SIZE = 20


def _api_bound_rate(state: SimulatorState, database_url: str) -> tuple[float, str]:
    """The token's request rate while at least one load was paging.

    A load pages from its first to its last GET inside its recorded window (``load_runs``). Loads of
    different tenants overlap, so their spans are merged and every request of the token inside the
    merged spans counts (a push paging meanwhile draws from the same budget). The first second's
    worth of each merged span is left out: the budget allows a short burst after a quiet spell."""
    with psycopg.connect(database_url) as conn:
        windows = conn.execute("SELECT tenant_uid, started_at, finished_at FROM flowretail.load_runs").fetchall()
    spans = []
    for tenant_uid, started, finished in windows:
        prefix = f"/v2/tenants/{tenant_uid}/"
        own = [
            r.at
            for r in state.request_log
            if r.method == "GET" and r.path.startswith(prefix) and started <= r.at <= finished
        ]
        if len(own) > 1:
            spans.append((min(own), max(own)))
    merged: list[list[Any]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    every = sorted(r.at for r in state.request_log)
    requests = seconds = 0.0
    detail = []
    for start, end in merged:
        stamps = [at for at in every if start <= at <= end][int(CLIENT_RATE) :]
        if len(stamps) > 1:
            requests += len(stamps) - 1
            seconds += (stamps[-1] - stamps[0]).total_seconds()
            detail.append(f"{len(stamps) - 1} in {(stamps[-1] - stamps[0]).total_seconds():.1f} s")
    assert seconds > 0, "no API-bound span long enough to measure"
    return requests / seconds, f"spans: {', '.join(detail)}; 1-minute load average {os.getloadavg()[0]:.1f}"


def _within_queue_limits(watch: RunWatch, min_overlap: int) -> int:
    """No more runs at once than the shipped limits allow, overall and per tag value (tenant, token),
    both as polled (STARTING included) and from every run's start and end time; returns the peak."""
    limits = queue_limits()
    assert all(r["startTime"] and r["endTime"] for r in watch.runs), [(r["jobName"], r["status"]) for r in watch.runs]
    peak = max(watch.peak_in_progress, peak_overlap([(r["startTime"], r["endTime"]) for r in watch.runs]))
    assert min_overlap <= peak <= limits["max_concurrent_runs"], (peak, limits)
    for tag in limits["tag_concurrency_limits"]:
        by_value: dict[str, list[tuple[float, float]]] = {}
        for run in watch.runs:
            if tag["key"] in run["tags"]:
                by_value.setdefault(run["tags"][tag["key"]], []).append((run["startTime"], run["endTime"]))
        assert by_value, f"no run carries the tag {tag['key']}"
        worst = max(peak_overlap(spans) for spans in by_value.values())
        if tag["key"] == "flowretail/token":
            worst = max(worst, watch.peak_per_token)
        assert worst <= tag["limit"], (tag, worst)
    return peak


def _only_own_tenant(deployment: Deployment, database_url: str, runs: list[dict[str, Any]]) -> None:
    """Each run loaded, modelled and pushed its own tenant partition only.

    Loads and pushes: each run's rows in ``load_runs`` and ``segment_push_runs`` are its tenant's.
    Models: every ``warehouse_load`` run materialized the same per-tenant models, all for its tenant
    (GraphQL), and each tenant's rows in each model are the rows that tenant's run reported building;
    a run that rebuilt or removed another tenant's slice would have changed that tenant's count."""
    partition = {r["runId"]: r["tags"]["dagster/partition"] for r in runs}
    with psycopg.connect(database_url) as conn:
        loads = conn.execute("SELECT run_id, tenant_uid, status FROM flowretail.load_runs").fetchall()
        pushes = conn.execute("SELECT run_id, tenant_uid, status FROM flowretail.segment_push_runs").fetchall()
    assert loads and pushes
    assert [(partition[run_id], status) for run_id, tenant, status in loads] == [
        (tenant, "succeeded") for _, tenant, _ in loads
    ]
    assert [(partition[run_id], status) for run_id, tenant, status in pushes] == [
        (tenant, "verified") for _, tenant, _ in pushes
    ]
    reported: dict[tuple[str, str], int] = {}
    model_sets = set()
    for run in runs:
        if run["jobName"] != "warehouse_load":
            continue
        tenant = partition[run["runId"]]
        events = run_materializations(deployment, run["runId"])
        assert {e["partition"] for e in events} == {tenant}, (tenant, events)
        models = {e["path"][-1]: e["ints"]["dagster/row_count"] for e in events if e["path"][0] == "analytics"}
        model_sets.add(frozenset(models))
        reported.update({(model, tenant): rows for model, rows in models.items()})
    assert len(model_sets) == 1 and "stg_group_memberships" in next(iter(model_sets)), model_sets
    with psycopg.connect(database_url) as conn:
        actual = {}
        for model, tenant in reported:
            query = sql.SQL("SELECT count(*) FROM analytics.{} WHERE tenant_uid = %s").format(sql.Identifier(model))
            row = conn.execute(query, (tenant,)).fetchone()
            actual[(model, tenant)] = row[0] if row else None
    assert actual == reported
    assert all(actual[("stg_group_memberships", tenant)] for tenant in set(partition.values()))


def _prove(pg_server_url: str, tmp_path: Path, tenants: int, timeout: float, min_overlap: int) -> None:
    state = build_state(SimulatorConfig(tenants=tenants, customers=400, groups=6), FaultConfig(rate_limit_rps=BUDGET))
    uids = state.tenant_uids()
    with (
        running_simulator(state) as base_url,
        fresh_database(pg_server_url, "t_wh") as warehouse_url,
        fresh_database(pg_server_url, "t_dagster") as dagster_url,
        running_deployment(
            tmp_path,
            base_url=base_url,
            token=state.token,
            tenant_uids=uids,
            database_url=warehouse_url,
            dagster_postgres_url=psycopg2_url(dagster_url),
            extra_env={"FLOWRETAIL_RATE_LIMIT": str(CLIENT_RATE), "FLOWRETAIL_PAGE_SIZE": str(PAGE_SIZE)},
        ) as deployment,
    ):
        wait_for_readiness(deployment)
        synced = run_flowretail(["tenants", "sync"], deployment.env, deployment.workdir)
        assert f"registered: {', '.join(uids)}" in synced
        start_sensor(deployment, "push_after_warehouse_load")
        launch_backfill(deployment, "warehouse_load", uids)
        watch = wait_for_runs(deployment, {"warehouse_load": len(uids), "segment_push": len(uids)}, timeout)
        tenant_runs = [r for r in watch.runs if r["jobName"] in ("warehouse_load", "segment_push")]
        # The daemon's freshness sensor adds check-only runs of its own; they too must not fail.
        failed = failure_report(deployment, watch.runs)
        assert [r["jobName"] for r in watch.runs if r not in tenant_runs and r["status"] != "SUCCESS"] == [], failed
        statuses = sorted((r["jobName"], r["tags"]["dagster/partition"], r["status"]) for r in tenant_runs)
        expected = sorted((job, uid, "SUCCESS") for job in ("warehouse_load", "segment_push") for uid in uids)
        assert statuses == expected, failed
        _within_queue_limits(watch, min_overlap)
        assert [(r.method, r.path, r.at.isoformat()) for r in state.request_log if r.status == 429] == []
        rate, spans = _api_bound_rate(state, warehouse_url)
        assert rate >= 0.85 * BUDGET, f"{rate:.1f} requests/s while API-bound, budget {BUDGET} ({spans})"
        _only_own_tenant(deployment, warehouse_url, tenant_runs)


@pytest.mark.timeout(1200)
def test_two_tenants_load_and_push_through_the_daemon_queue(pg_server_url: str, tmp_path: Path) -> None:
    _prove(pg_server_url, tmp_path, tenants=2, timeout=900, min_overlap=1)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_ten_tenants_load_and_push_through_the_daemon_queue(pg_server_url: str, tmp_path: Path) -> None:
    # Ten tenants on one token: the shipped queue must let runs of that token overlap.
    _prove(pg_server_url, tmp_path, tenants=10, timeout=1500, min_overlap=2)
