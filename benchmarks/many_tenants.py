"""Many tenants on one token: the production instance (deploy/dagster.yaml) through the real daemon and queue.

Part 1 starts the code server, `dagster-daemon` and `dagster-webserver` as separate processes on the
shipped deploy/dagster.yaml (PostgreSQL storage, its queue limits as shipped), registers TENANTS
tenant partitions with `flowretail tenants sync`, launches a `warehouse_load` backfill over all of
them and waits. The simulator enforces the token's budget; every run draws from the token's one
budget in the warehouse (FLOWRETAIL_SHARED_BUDGET, the default) at FLOWRETAIL_RATE_LIMIT =
--client-fraction x the budget. Printed: wall time against the floor (the requests the loads needed
/ the budget), 429s, the peak number of PostgreSQL connections and runs in progress, and where a
run's time went (queue wait, start-up, steps) from the runs' event logs.

Part 2 runs two `flowretail load` processes at once, each with its own DAGSTER_HOME (as two pods
would), both holding the same token at the full FLOWRETAIL_RATE_LIMIT and one warehouse: their
combined request rate against the budget (over the whole span and while both were paging), and
their 429s.

    .venv/bin/python benchmarks/many_tenants.py [--tenants 50 --customers 2000 --budget 50]
    .venv/bin/python benchmarks/many_tenants.py --skip-daemon --customers 20000 --budget 25

Nothing is asserted; figures go to BENCHMARKS.md. Every wait is bounded.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import benchlib
import psycopg
import yaml

from pipelines.flowretail.simulator import FaultConfig, SimulatorConfig, SimulatorState, build_state, running_simulator
from tests.deploy.cluster import (
    DEPLOY_DAGSTER_YAML,
    launch_backfill,
    peak_overlap,
    psycopg2_url,
    running_deployment,
    wait_for_runs,
)
from tests.ui.webserver import kill_process_group, prepare_dagster_home, product_env, run_flowretail


@contextmanager
def connection_sampler(server_url: str, interval: float = 0.5) -> Iterator[dict[str, int]]:
    """Samples client connections to the server in the background; ``peak`` holds the most seen."""
    seen = {"peak": 0}
    stop = threading.Event()

    def sample() -> None:
        with psycopg.connect(server_url, autocommit=True) as conn:
            while not stop.is_set():
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
                ).fetchone()
                seen["peak"] = max(seen["peak"], int(row[0]) if row else 0)
                stop.wait(interval)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join(timeout=10)


def request_stats(state: SimulatorState) -> dict[str, Any]:
    """Requests answered, 429s, and the rate between the first and the last request."""
    log = list(state.request_log)
    stamps = sorted(r.at for r in log)
    span = (stamps[-1] - stamps[0]).total_seconds() if len(stamps) > 1 else 0.0
    return {
        "requests": len(log),
        "answered": sum(1 for r in log if r.status != 429),
        "rate_limited_429": sum(1 for r in log if r.status == 429),
        "span_seconds": round(span, 2),
        "rate_per_second": round(len(log) / span, 2) if span else 0.0,
    }


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


_PHASES = """
SELECT r.run_id,
       min(e.timestamp) FILTER (WHERE e.dagster_event_type = 'PIPELINE_ENQUEUED'),
       min(e.timestamp) FILTER (WHERE e.dagster_event_type = 'PIPELINE_STARTING'),
       min(e.timestamp) FILTER (WHERE e.dagster_event_type = 'PIPELINE_START'),
       min(e.timestamp) FILTER (WHERE e.dagster_event_type = 'STEP_START' AND e.step_key = 'flowretail_raw_tables'),
       min(e.timestamp) FILTER (WHERE e.dagster_event_type = 'STEP_SUCCESS' AND e.step_key = 'flowretail_raw_tables'),
       min(e.timestamp) FILTER (WHERE e.dagster_event_type = 'PIPELINE_SUCCESS'),
       count(*)
FROM runs r JOIN event_logs e ON e.run_id = r.run_id
WHERE r.pipeline_name = 'warehouse_load'
GROUP BY r.run_id
"""


def run_phases(dagster_url: str) -> dict[str, Any]:
    """Median seconds of each phase of a warehouse_load run, from the Dagster event log: waiting in the
    queue, launch to start (process start-up, definitions), the load step, the models and checks after
    it; and events written per run."""
    with psycopg.connect(dagster_url) as conn:
        rows = conn.execute(_PHASES).fetchall()
    phases: dict[str, list[float]] = {"queued": [], "start_up": [], "load_step": [], "models_and_checks": []}
    events = []
    for _, enqueued, starting, started, step_start, step_end, success, count in rows:
        if None in (enqueued, starting, started, step_start, step_end, success):
            continue
        phases["queued"].append((starting - enqueued).total_seconds())
        phases["start_up"].append((step_start - starting).total_seconds())
        phases["load_step"].append((step_end - step_start).total_seconds())
        phases["models_and_checks"].append((success - step_end).total_seconds())
        events.append(count)
    out: dict[str, Any] = {f"median_{k}_s": round(statistics.median(v), 1) for k, v in phases.items() if v}
    out["median_events_per_run"] = statistics.median(events) if events else 0
    return out


def through_the_daemon(pg: benchlib.Postgres, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    state = build_state(
        SimulatorConfig(tenants=args.tenants, customers=args.customers, groups=args.groups),
        FaultConfig(rate_limit_rps=args.budget),
    )
    uids = state.tenant_uids()
    warehouse_url, dagster_url = pg.fresh_database("bench_wh"), pg.fresh_database("bench_dg")
    # Every run draws from the token's one budget in the warehouse at this rate (by default 10 % under
    # the simulator's, as tests/deploy: headroom for the budget's one second of burst).
    client_rate = args.client_fraction * args.budget
    env = {"FLOWRETAIL_RATE_LIMIT": str(client_rate), "FLOWRETAIL_PAGE_SIZE": "100"}
    load_before = load_average()
    try:
        with (
            running_simulator(state) as base_url,
            running_deployment(
                workdir,
                base_url=base_url,
                token=state.token,
                tenant_uids=uids,
                database_url=warehouse_url,
                dagster_postgres_url=psycopg2_url(dagster_url),
                extra_env=env,
                dagster_yaml=args.dagster_yaml,
            ) as deployment,
            connection_sampler(pg.server_url) as connections,
        ):
            run_flowretail(["tenants", "sync"], deployment.env, workdir, timeout=600)
            state.clear_log()
            started = time.monotonic()
            launch_backfill(deployment, "warehouse_load", uids)
            watch = wait_for_runs(deployment, {"warehouse_load": len(uids)}, timeout=args.timeout)
            wall = time.monotonic() - started
            load_after = load_average()
        stats = request_stats(state)
        phases = run_phases(dagster_url)
    finally:
        pg.drop_database(warehouse_url)
        pg.drop_database(dagster_url)
    floor = stats["answered"] / args.budget
    limits = yaml.safe_load(args.dagster_yaml.read_text("utf-8"))["concurrency"]["runs"]
    coordinator = yaml.safe_load(args.dagster_yaml.read_text("utf-8"))["run_coordinator"]["config"]
    spans = [(r["startTime"], r["endTime"]) for r in watch.runs if r["startTime"] and r["endTime"]]
    return {
        "tenants": len(uids),
        "customers_per_tenant": args.customers,
        "budget_rps": args.budget,
        "client_rate_rps": client_rate,
        "max_concurrent_runs": limits["max_concurrent_runs"],
        "runs_per_token": next(t["limit"] for t in limits["tag_concurrency_limits"] if t["key"] == "flowretail/token"),
        "dequeue_workers": coordinator.get("dequeue_num_workers", 1) if coordinator.get("dequeue_use_threads") else 1,
        "runs_succeeded": sum(1 for r in watch.runs if r["status"] == "SUCCESS"),
        "runs_failed": sum(1 for r in watch.runs if r["status"] == "FAILURE"),
        "peak_runs_in_progress": max(watch.peak_in_progress, peak_overlap(spans)),
        "wall_seconds": round(wall, 1),
        "floor_seconds": round(floor, 1),
        "wall_over_floor": round(benchlib.ratio(wall, floor), 2),
        "peak_postgres_connections": connections["peak"],
        "load_avg_1m_start": load_before,
        "load_avg_1m_end": load_after,
        **stats,
        **phases,
    }


def both_paging(state: SimulatorState) -> dict[str, Any]:
    """Requests per second while both processes were paging: from the later of the two first requests
    to the earlier of the two last ones (each tenant's requests are one process's)."""
    by_tenant: dict[str, list[Any]] = {}
    for r in state.request_log:
        by_tenant.setdefault(r.path.split("/")[3] if r.path.count("/") > 3 else "", []).append(r.at)
    firsts_lasts = [(min(v), max(v)) for k, v in by_tenant.items() if k]
    if len(firsts_lasts) < 2:
        return {"both_paging_seconds": 0.0, "both_paging_requests": 0, "both_paging_rate": 0.0}
    start, end = max(f for f, _ in firsts_lasts), min(last for _, last in firsts_lasts)
    span = (end - start).total_seconds()
    inside = sum(1 for r in state.request_log if start <= r.at <= end)
    return {
        "both_paging_seconds": round(max(span, 0.0), 2),
        "both_paging_requests": inside if span > 0 else 0,
        "both_paging_rate": round(inside / span, 2) if span > 0 else 0.0,
    }


def two_processes_one_token(pg: benchlib.Postgres, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    state = build_state(
        SimulatorConfig(tenants=2, customers=args.customers, groups=args.groups),
        FaultConfig(rate_limit_rps=args.budget),
    )
    warehouse_url = pg.fresh_database("bench_two")
    load_before = load_average()
    try:
        with running_simulator(state) as base_url:
            procs = []
            for uid in state.tenant_uids():
                home = prepare_dagster_home(workdir / f"home-{uid}")
                env = product_env(
                    base_url=base_url,
                    token=state.token,
                    tenant_uids=state.tenant_uids(),
                    database_url=warehouse_url,
                    dagster_home=home,
                )
                env.update(FLOWRETAIL_RATE_LIMIT=str(args.budget), FLOWRETAIL_PAGE_SIZE="100")
                argv = [sys.executable, "-m", "pipelines.cli", "load", "--tenant", uid]
                # Each command in its own working directory: a command makes its ./.flowretail state
                # owner-only, which in the repository would lock the benchmark's own server (its data
                # is under .flowretail/bench) out of its directory.
                cwd = workdir / f"cwd-{uid}"
                cwd.mkdir(parents=True, exist_ok=True)
                procs.append(
                    subprocess.Popen(
                        argv,
                        cwd=cwd,
                        env=env,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                        start_new_session=True,
                    )
                )
            exits = []
            for proc in procs:
                try:
                    proc.wait(timeout=args.timeout)
                finally:
                    kill_process_group(proc, grace=5.0)
                exits.append(proc.returncode)
        load_after = load_average()
        stats = request_stats(state)
        both = both_paging(state)
    finally:
        pg.drop_database(warehouse_url)
    return {
        "processes": 2,
        "customers_per_process": args.customers,
        "exit_codes": exits,
        "budget_rps": args.budget,
        "combined_over_budget": round(benchlib.ratio(stats["rate_per_second"], args.budget), 2),
        **both,
        "both_paging_over_budget": round(benchlib.ratio(both["both_paging_rate"], args.budget), 2),
        "load_avg_1m_start": load_before,
        "load_avg_1m_end": load_after,
        **stats,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tenants", type=int, default=50)
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--groups", type=int, default=12)
    parser.add_argument("--budget", type=float, default=50.0, help="the token's requests per second")
    parser.add_argument(
        "--client-fraction",
        type=float,
        default=0.9,
        help="part 1: FLOWRETAIL_RATE_LIMIT as a fraction of the budget the simulator enforces",
    )
    parser.add_argument(
        "--dagster-yaml",
        type=Path,
        default=DEPLOY_DAGSTER_YAML,
        help="part 1: the instance file (default: the shipped deploy/dagster.yaml), e.g. to compare queue settings",
    )
    parser.add_argument("--timeout", type=float, default=7200.0)
    parser.add_argument("--skip-daemon", action="store_true", help="only part 2")
    args = parser.parse_args()
    pg = benchlib.start_postgres()
    facts = benchlib.machine_facts(pg.server_url)
    benchlib.print_facts(facts)
    results: dict[str, Any] = {"facts": facts}
    with tempfile.TemporaryDirectory(prefix="flowretail-many-") as tmp:
        if not args.skip_daemon:
            daemon = through_the_daemon(pg, args, Path(tmp) / "daemon")
            results["daemon"] = daemon
            benchlib.print_table("Through the daemon and the queue", [list(daemon.values())], list(daemon))
        two = two_processes_one_token(pg, args, Path(tmp) / "two")
        results["two_processes"] = two
        benchlib.print_table("Two `flowretail load` processes, one token", [list(two.values())], list(two))
    print(f"results: {benchlib.save_results('many_tenants', results)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
