"""The shipped production instance, proven with real processes: code server, daemon and webserver on the
shipped deploy/dagster.yaml (PostgreSQL storage, queued runs), a tenant backfill through the daemon and
the queue, and the simulator enforcing the API budget.

Budget: the simulator allows ``BUDGET`` requests per second; ``FLOWRETAIL_RATE_LIMIT`` is 90 % of it
(see ``CLIENT_RATE``). Each run's client limits itself to that rate, and the shipped queue runs one
run per token at a time, so the token's budget holds with no 429 while the loads keep at least 85 %
of it. Once runs share one budget per token, the same settings still hold (the shared budget stays
under the simulator's), so the test keeps its meaning; the headroom can then shrink.
"""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from pipelines.flowretail.simulator import FaultConfig, SimulatorConfig, SimulatorState, build_state, running_simulator
from tests.conftest import fresh_database
from tests.deploy.cluster import (
    Deployment,
    launch_backfill,
    psycopg2_url,
    queue_limits,
    running_deployment,
    start_sensor,
    wait_for_readiness,
    wait_for_runs,
)
from tests.ui.webserver import run_flowretail

BUDGET = 20.0
CLIENT_RATE = 0.9 * BUDGET
"""FLOWRETAIL_RATE_LIMIT. Independent per-process limiters each start with a full bucket, so a step
process joining a stream already at the budget bursts over it (the push's three step processes did:
two 429s at 100 %). 10 % headroom absorbs that until runs share one budget per token."""
PAGE_SIZE = 20


def _api_bound_rate(state: SimulatorState, database_url: str) -> float:
    """Requests per second while the loads paged: each tenant's GETs inside its load's recorded window
    (``load_runs``), after the limiter's opening burst (its bucket starts full)."""
    with psycopg.connect(database_url) as conn:
        windows = conn.execute("SELECT tenant_uid, started_at, finished_at FROM flowretail.load_runs").fetchall()
    requests = seconds = 0.0
    for tenant_uid, started, finished in windows:
        prefix = f"/v2/tenants/{tenant_uid}/"
        stamps = sorted(
            r.at
            for r in state.request_log
            if r.method == "GET" and r.path.startswith(prefix) and started <= r.at <= finished
        )[int(CLIENT_RATE) :]
        if len(stamps) > 1:
            requests += len(stamps) - 1
            seconds += (stamps[-1] - stamps[0]).total_seconds()
    assert seconds > 0, "no API-bound span long enough to measure"
    return requests / seconds


def _only_own_tenant(database_url: str, runs: list[dict[str, object]]) -> None:
    """Each run's rows in load_runs and segment_push_runs belong to the tenant partition of that run."""
    partition = {r["runId"]: r["tags"]["dagster/partition"] for r in runs}  # type: ignore[index]
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


def _prove(pg_server_url: str, tmp_path: Path, tenants: int, timeout: float) -> None:
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
        _run_tick(deployment, uids, warehouse_url, state, timeout)


def _run_tick(
    deployment: Deployment, uids: list[str], warehouse_url: str, state: SimulatorState, timeout: float
) -> None:
    wait_for_readiness(deployment)
    synced = run_flowretail(["tenants", "sync"], deployment.env, deployment.workdir)
    assert f"registered: {', '.join(uids)}" in synced
    start_sensor(deployment, "push_after_warehouse_load")
    launch_backfill(deployment, "warehouse_load", uids)
    watch = wait_for_runs(deployment, {"warehouse_load": len(uids), "segment_push": len(uids)}, timeout)
    limits = queue_limits()
    tenant_runs = [r for r in watch.runs if r["jobName"] in ("warehouse_load", "segment_push")]
    # The daemon's freshness sensor adds check-only runs of its own; they too must not fail.
    assert [r["jobName"] for r in watch.runs if r not in tenant_runs and r["status"] != "SUCCESS"] == []
    statuses = sorted((r["jobName"], r["tags"]["dagster/partition"], r["status"]) for r in tenant_runs)
    assert statuses == sorted((job, uid, "SUCCESS") for job in ("warehouse_load", "segment_push") for uid in uids)
    assert 1 <= watch.peak_in_progress <= limits["max_concurrent_runs"]
    token_limit = next(t["limit"] for t in limits["tag_concurrency_limits"] if t["key"] == "flowretail/token")
    assert watch.peak_per_token <= token_limit
    assert [(r.method, r.path, r.at.isoformat()) for r in state.request_log if r.status == 429] == []
    rate = _api_bound_rate(state, warehouse_url)
    assert rate >= 0.85 * BUDGET, f"{rate:.1f} requests/s while API-bound, budget {BUDGET}"
    _only_own_tenant(warehouse_url, tenant_runs)


@pytest.mark.timeout(1200)
def test_two_tenants_load_and_push_through_the_daemon_queue(pg_server_url: str, tmp_path: Path) -> None:
    _prove(pg_server_url, tmp_path, tenants=2, timeout=900)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_ten_tenants_load_and_push_through_the_daemon_queue(pg_server_url: str, tmp_path: Path) -> None:
    _prove(pg_server_url, tmp_path, tenants=10, timeout=1500)
