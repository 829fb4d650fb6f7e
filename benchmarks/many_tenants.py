"""Many tenants on one token: the production instance (deploy/dagster.yaml) through the real daemon and queue.

Part 1 starts the code server, `dagster-daemon` and `dagster-webserver` as separate processes on the
shipped deploy/dagster.yaml (PostgreSQL storage), registers TENANTS tenant partitions with
`flowretail tenants sync`, launches a `warehouse_load` backfill over all of them and waits. The
simulator enforces the token's budget (FLOWRETAIL_RATE_LIMIT). Printed: wall time against the floor
(the requests the loads needed / the budget), 429s, and the peak number of PostgreSQL connections.

Part 2 runs two `flowretail load` processes at once, each with its own DAGSTER_HOME (as two pods
would), both holding the same token at the full FLOWRETAIL_RATE_LIMIT: their combined request rate
against the budget, and their 429s (each process limits itself; nothing is shared between them).

    .venv/bin/python benchmarks/many_tenants.py [--tenants 50 --customers 2000 --budget 50]

Nothing is asserted; figures go to BENCHMARKS.md. Every wait is bounded.
"""

from __future__ import annotations

import argparse
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

from pipelines.flowretail.simulator import FaultConfig, SimulatorConfig, SimulatorState, build_state, running_simulator
from tests.deploy.cluster import launch_backfill, psycopg2_url, queue_limits, running_deployment, wait_for_runs
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


def through_the_daemon(pg: benchlib.Postgres, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    state = build_state(
        SimulatorConfig(tenants=args.tenants, customers=args.customers, groups=args.groups),
        FaultConfig(rate_limit_rps=args.budget),
    )
    uids = state.tenant_uids()
    warehouse_url, dagster_url = pg.fresh_database("bench_wh"), pg.fresh_database("bench_dg")
    # 10 % under the enforced budget, as tests/deploy does: per-process limiters burst when a process
    # joins a stream already at the budget.
    env = {"FLOWRETAIL_RATE_LIMIT": str(0.9 * args.budget), "FLOWRETAIL_PAGE_SIZE": "100"}
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
            ) as deployment,
            connection_sampler(pg.server_url) as connections,
        ):
            run_flowretail(["tenants", "sync"], deployment.env, workdir, timeout=600)
            state.clear_log()
            started = time.monotonic()
            launch_backfill(deployment, "warehouse_load", uids)
            watch = wait_for_runs(deployment, {"warehouse_load": len(uids)}, timeout=args.timeout)
            wall = time.monotonic() - started
        stats = request_stats(state)
    finally:
        pg.drop_database(warehouse_url)
        pg.drop_database(dagster_url)
    floor = stats["answered"] / args.budget
    return {
        "tenants": len(uids),
        "customers_per_tenant": args.customers,
        "budget_rps": args.budget,
        "queue": queue_limits(),
        "runs_succeeded": sum(1 for r in watch.runs if r["status"] == "SUCCESS"),
        "runs_failed": sum(1 for r in watch.runs if r["status"] == "FAILURE"),
        "peak_runs_in_progress": watch.peak_in_progress,
        "wall_seconds": round(wall, 1),
        "floor_seconds": round(floor, 1),
        "wall_over_floor": round(benchlib.ratio(wall, floor), 2),
        "peak_postgres_connections": connections["peak"],
        **stats,
    }


def two_processes_one_token(pg: benchlib.Postgres, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    state = build_state(
        SimulatorConfig(tenants=2, customers=args.customers, groups=args.groups),
        FaultConfig(rate_limit_rps=args.budget),
    )
    warehouse_url = pg.fresh_database("bench_two")
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
                procs.append(
                    subprocess.Popen(
                        argv,
                        cwd=benchlib.REPO,
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
        stats = request_stats(state)
    finally:
        pg.drop_database(warehouse_url)
    return {
        "processes": 2,
        "exit_codes": exits,
        "budget_rps": args.budget,
        "combined_over_budget": round(benchlib.ratio(stats["rate_per_second"], args.budget), 2),
        **stats,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tenants", type=int, default=50)
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--groups", type=int, default=12)
    parser.add_argument("--budget", type=float, default=50.0, help="the token's requests per second")
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
