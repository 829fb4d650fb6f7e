"""End-to-end ``load_tenant`` of a simulated tenant over real HTTP: time, requests, memory, rate limit.

    .venv/bin/python benchmarks/end_to_end_load.py [--sizes 10000,1000000] [--skip-rate]

For each size the simulator runs in its own process (``benchmarks/simserver.py``, the project's
simulator plus request counters) and the loader in a fresh interpreter, so the two do not share a
GIL and the loader's peak RSS is its own (``ru_maxrss`` of the loader process, and the parent's
psutil sampling of it). The warehouse is a fresh database on the embedded PostgreSQL (or
``DATABASE_URL``).

Requests are compared with the fewest the totals allow: one page for the group list per
``pageSize`` groups, and for each group ``ceil(members / pageSize)`` pages, where an empty group
still needs its one request to learn that it is empty (the brief's formula counts 0 for it; both
are printed).

Each rate-limited run (``--rate-runs LIMIT:CUSTOMERS,...``) serves a smaller tenant with a small page
cap (``--rate-page-size``, many cheap requests) and a server-side token bucket of LIMIT requests/s;
the client's own limit is set to ``--client-rate-limit`` (default: the same LIMIT). The sustained rate is measured on the server
from the times of the 2xx answers, after the first ``--burst-window`` seconds (both buckets start
full, so the first second may carry up to twice the rate).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
from pydantic import SecretStr

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib

from pipelines.flowretail.client import AsyncFlowRetailClient
from pipelines.flowretail.config import ClientConfig
from pipelines.warehouse.load import load_tenant

SCRIPT = Path(__file__).resolve()


# ----------------------------------------------------------------------------- worker (the loader process)


def worker(args: argparse.Namespace) -> int:
    """Load one tenant and print one JSON line with what happened."""
    peak = {"rss": 0}
    stop = threading.Event()

    def sample() -> None:
        me = psutil.Process()
        while not stop.is_set():
            peak["rss"] = max(peak["rss"], me.memory_info().rss)
            stop.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    rate = None if args.client_rate_limit in (None, 0) else args.client_rate_limit
    config = ClientConfig(
        base_url=args.base_url,
        token=SecretStr(args.token),
        page_size=args.page_size,
        rate_limit_per_second=rate,
        concurrency=args.concurrency,
    )

    async def main() -> dict[str, Any]:
        async with AsyncFlowRetailClient(config) as client:
            started = time.perf_counter()
            result = await load_tenant(client, args.database_url, args.tenant, "bench-e2e")
            wall = time.perf_counter() - started
            return {
                "wall_seconds": wall,
                "load_duration_seconds": result.duration_seconds,
                "groups_rows": result.groups_rows,
                "memberships_rows": result.memberships_rows,
                "customers_rows": result.customers_rows,
                "api_group_total": result.api_group_total,
                "api_member_totals": sorted(result.api_member_totals.values()),
                "pages": result.pages,
                "requests": result.requests,
                "retries": result.retries,
                "rate_limited": result.rate_limited,
                "client_stats": client.stats.as_dict(),
            }

    cpu0 = time.process_time()
    out = asyncio.run(main())
    out["loader_cpu_seconds"] = time.process_time() - cpu0
    stop.set()
    sampler.join(timeout=2)
    out["ru_maxrss_mib"] = benchlib.own_peak_rss_mib()
    out["psutil_peak_rss_mib"] = peak["rss"] / 2**20
    benchlib.emit_result(out)
    return 0


def worker_args(
    sim: benchlib.SimulatorProcess, database_url: str, page_size: int, concurrency: int, rate: float | None
) -> list[str]:
    return [
        "--worker",
        "--base-url", sim.base_url,
        "--token", sim.token,
        "--database-url", database_url,
        "--tenant", "tenant-1",
        "--page-size", str(page_size),
        "--concurrency", str(concurrency),
        "--client-rate-limit", str(rate or 0),
    ]  # fmt: skip


# ----------------------------------------------------------------------------- helpers


def minimum_requests(group_total: int, member_totals: list[int], page_size: int) -> tuple[int, int]:
    """(fewest requests, the brief's formula): the first counts one request for an empty list."""
    pages = max(1, math.ceil(group_total / page_size)) + sum(max(1, math.ceil(t / page_size)) for t in member_totals)
    brief = math.ceil(group_total / page_size) + sum(math.ceil(t / page_size) for t in member_totals)
    return pages, brief


def sustained_rate(times: list[list[float]], skip_seconds: float) -> dict[str, float]:
    """Served (2xx) request rate over the whole run and after the first ``skip_seconds``."""
    served = sorted(t for t, status in times if 200 <= status < 300)
    if len(served) < 2:
        return {"overall": float("nan"), "sustained": float("nan"), "window_seconds": 0.0, "served": len(served)}
    first, last = served[0], served[-1]
    overall = (len(served) - 1) / (last - first)
    start = first + skip_seconds
    window = [t for t in served if t >= start]
    span = last - start
    sustained = (len(window) - 1) / span if len(window) > 1 and span > 0 else float("nan")
    # the worst full second after the burst window, to show the rate does not sag in the middle
    worst = float("nan")
    if span >= 2:
        buckets = [0] * int(span)
        for t in window:
            index = int(t - start)
            if index < len(buckets):
                buckets[index] += 1
        worst = float(min(buckets))
    return {
        "overall": overall,
        "sustained": sustained,
        "window_seconds": span,
        "served": len(served),
        "worst_second": worst,
    }


def py_spy_start(pid: int, out: Path, rate: int = 50) -> Any:
    """Sample a process with py-spy (collapsed stacks); stopped with SIGINT by ``benchlib.stop_process``."""
    import shutil
    import subprocess

    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    out.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [
            exe,
            "record",
            "--pid",
            str(pid),
            "--rate",
            str(rate),
            "--format",
            "raw",
            "--output",
            str(out),
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


# ----------------------------------------------------------------------------- orchestrator


def measure_size(pg: benchlib.Postgres, customers: int, groups: int, args: argparse.Namespace) -> dict[str, Any]:
    print(f"size {customers:,} customers / {groups:,} groups: starting the simulator ...", flush=True)
    t = time.perf_counter()
    with benchlib.simulator_process(customers=customers, groups=groups, page_size_cap=args.page_size) as sim:
        print(f"  simulator ready in {time.perf_counter() - t:.1f}s; loading ...", flush=True)
        database_url = pg.fresh_database("bench_e2e")
        sim.reset()
        server_cpu0 = sim.cpu_seconds()
        result = run_loader(
            sim, worker_args(sim, database_url, args.page_size, args.concurrency, None), args, str(customers)
        )
        print(
            f"  loader result: {json.dumps({k: v for k, v in result.items() if k != 'api_member_totals'})}", flush=True
        )
        result["server_cpu_seconds"] = sim.cpu_seconds() - server_cpu0
        server = sim.stats()
        result["server_requests"] = server["requests"]
        result["server_by_status"] = server["by_status"]
        pg.drop_database(database_url)
    fewest, brief = minimum_requests(result["api_group_total"], result["api_member_totals"], args.page_size)
    result.update(
        customers=customers,
        groups=groups,
        fewest_requests=fewest,
        brief_formula_requests=brief,
        empty_groups=sum(1 for t in result["api_member_totals"] if t == 0),
    )
    result.pop("api_member_totals")
    print(
        f"  done: {result['wall_seconds']:.1f}s, {result['requests']:,} requests (fewest {fewest:,}), "
        f"peak RSS {result['ru_maxrss_mib']:.0f} MiB",
        flush=True,
    )
    return result


def run_loader(
    sim: benchlib.SimulatorProcess, worker_argv: list[str], args: argparse.Namespace, tag: str
) -> dict[str, Any]:
    """Run the loader in a fresh process; with --py-spy-dir, py-spy samples it and the simulator."""
    if not args.py_spy_dir:
        return benchlib.run_worker(SCRIPT, worker_argv, timeout=args.timeout)
    spy = py_spy_start(sim.process.pid, Path(args.py_spy_dir) / f"simulator-{tag}.txt")
    try:
        return run_worker_with_spy(worker_argv, Path(args.py_spy_dir) / f"loader-{tag}.txt", timeout=args.timeout)
    finally:
        spy.send_signal(2)
        spy.wait(timeout=60)


def run_worker_with_spy(worker_argv: list[str], out: Path, *, timeout: float) -> dict[str, Any]:
    """Like ``benchlib.run_worker`` but with py-spy sampling the loader (for the profile notes)."""
    import subprocess

    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, str(SCRIPT), *worker_argv], stdout=subprocess.PIPE, text=True)
    spy = py_spy_start(process.pid, out)
    try:
        stdout, _ = process.communicate(timeout=timeout)
    finally:
        benchlib.stop_process(process)
        spy.wait(timeout=60)
    result: dict[str, Any] = json.loads([line for line in stdout.splitlines() if line.strip()][-1])
    result["process_wall_seconds"] = time.perf_counter() - started
    result["tree_peak_rss_mib"] = float("nan")
    return result


def measure_rate(pg: benchlib.Postgres, limit: float, customers: int, args: argparse.Namespace) -> dict[str, Any]:
    client_limit = args.client_rate_limit or limit
    print(
        f"rate-limited run: {customers:,} customers, page size {args.rate_page_size}, "
        f"server limit {limit:g}/s, client limit {client_limit:g}/s ...",
        flush=True,
    )
    with benchlib.simulator_process(
        customers=customers, groups=args.rate_groups, page_size_cap=args.rate_page_size, rate_limit=limit
    ) as sim:
        database_url = pg.fresh_database("bench_rate")
        time.sleep(1.5)  # let the server's bucket fill up after start
        sim.reset()
        result = run_loader(
            sim,
            worker_args(sim, database_url, args.rate_page_size, args.concurrency, client_limit),
            args,
            f"rate{limit:g}-{customers}",
        )
        server = sim.stats(timestamps=True)
        pg.drop_database(database_url)
    rates = sustained_rate(server["times"], args.burst_window)
    fewest, _brief = minimum_requests(result["api_group_total"], result["api_member_totals"], args.rate_page_size)
    result.pop("api_member_totals")
    result.update(
        server_limit=limit,
        client_limit=client_limit,
        server_requests=server["requests"],
        server_by_status=server["by_status"],
        fewest_requests=fewest,
        **{f"rate_{k}": v for k, v in rates.items()},
    )
    print(
        f"  done: {result['wall_seconds']:.1f}s, sustained {rates['sustained']:.1f}/s "
        f"({rates['sustained'] / limit:.1%} of {limit:g}), 429s: {server['by_status'].get('429', 0)}",
        flush=True,
    )
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    parser.add_argument("--token", help=argparse.SUPPRESS)
    parser.add_argument("--database-url", help=argparse.SUPPRESS)
    parser.add_argument("--tenant", default="tenant-1", help=argparse.SUPPRESS)
    parser.add_argument("--sizes", default="10000,1000000", help="customers per tenant, comma-separated")
    parser.add_argument("--groups", type=int, default=1000, help="groups of the largest size")
    parser.add_argument("--small-groups", type=int, default=100, help="groups of every smaller size")
    parser.add_argument("--page-size", type=int, default=1000, help="client pageSize = simulator cap (its default)")
    parser.add_argument("--concurrency", type=int, default=8, help="client concurrency (the product default)")
    parser.add_argument("--client-rate-limit", type=float, default=None, help="client requests/s (rate run)")
    parser.add_argument("--skip-rate", action="store_true", help="skip the rate-limited run")
    parser.add_argument("--rate-only", action="store_true", help="only the rate-limited run")
    parser.add_argument(
        "--rate-runs",
        default="200:40000,20:10000",
        help="rate-limited runs as LIMIT:CUSTOMERS (simulator requests/s : customers), comma-separated",
    )
    parser.add_argument("--rate-groups", type=int, default=100)
    parser.add_argument("--rate-page-size", type=int, default=25)
    parser.add_argument("--burst-window", type=float, default=2.0, help="seconds left out of the sustained rate")
    parser.add_argument("--timeout", type=float, default=1800.0, help="bound on one loader run (s)")
    parser.add_argument("--py-spy-dir", default=None, help="sample loader and simulator with py-spy into DIR")
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    pg = benchlib.start_postgres()
    probe = pg.fresh_database("bench_probe")
    facts = benchlib.machine_facts(probe)
    pg.drop_database(probe)
    benchlib.print_facts(facts)

    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    runs: list[dict[str, Any]] = []
    if not args.rate_only:
        for size in sizes:
            groups = args.groups if size == max(sizes) else args.small_groups
            runs.append(measure_size(pg, size, groups, args))
    rates = []
    if not args.skip_rate:
        for spec in args.rate_runs.split(","):
            limit, customers = spec.split(":")
            rates.append(measure_rate(pg, float(limit), int(customers), args))
    facts["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)
    print()

    targets: list[list[Any]] = []
    if runs:
        rows = [
            [
                r["customers"], r["groups"], r["memberships_rows"], r["customers_rows"], r["wall_seconds"],
                r["requests"], r["fewest_requests"], r["brief_formula_requests"], r["requests"] - r["fewest_requests"],
                r["retries"], r["requests"] / r["wall_seconds"], r["memberships_rows"] / r["wall_seconds"],
                r["ru_maxrss_mib"], r["loader_cpu_seconds"], r["server_cpu_seconds"],
            ]
            for r in runs
        ]  # fmt: skip
        benchlib.print_table(
            f"load_tenant end to end (page size {args.page_size}, concurrency {args.concurrency}, no client rate limit)",
            rows,
            [
                "customers", "groups", "memberships", "customers loaded", "wall s", "requests", "fewest",
                "brief formula", "extra", "retries", "req/s", "memberships/s", "loader peak RSS MiB",
                "loader CPU s", "simulator CPU s",
            ],
        )  # fmt: skip
        smallest, largest = runs[0], runs[-1]
        growth = benchlib.ratio(largest["ru_maxrss_mib"], smallest["ru_maxrss_mib"])
        targets += [
            [
                "requests = fewest the totals allow (retries aside)",
                ", ".join(f"{r['requests'] - r['retries']} vs {r['fewest_requests']}" for r in runs),
                benchlib.verdict(all(r["requests"] - r["retries"] == r["fewest_requests"] for r in runs)),
            ],
            [
                f"peak RSS {largest['customers']:,} / {smallest['customers']:,} <= 1.5",
                f"{largest['ru_maxrss_mib']:.0f} / {smallest['ru_maxrss_mib']:.0f} MiB = {growth:.2f}",
                benchlib.verdict(growth <= 1.5),
            ],
        ]
    for rate in rates:
        fraction = rate["rate_sustained"] / rate["server_limit"]
        targets.append(
            [
                f"sustained rate >= 90% of the allowed {rate['server_limit']:g}/s",
                f"{rate['rate_sustained']:.1f}/s = {fraction:.1%}",
                benchlib.verdict(fraction >= 0.9),
            ]
        )
    if targets:
        benchlib.print_table("Targets", targets, ["target", "measured", "verdict"])
    if rates:
        benchlib.print_table(
            f"Rate-limited load (page size {args.rate_page_size}, concurrency {args.concurrency})",
            [
                [
                    rate["customers_rows"], rate["server_limit"], rate["client_limit"], rate["wall_seconds"],
                    rate["server_requests"], rate["fewest_requests"], rate["server_by_status"].get("429", 0),
                    rate["rate_overall"], rate["rate_sustained"], rate["rate_worst_second"],
                    rate["rate_sustained"] / rate["server_limit"],
                    1000 * rate["loader_cpu_seconds"] / rate["server_requests"],
                ]
                for rate in rates
            ],
            [
                "customers", "server limit/s", "client limit/s", "wall s", "requests (server)", "fewest", "429s",
                "overall 2xx/s", "sustained 2xx/s", "worst second", "sustained / allowed", "loader CPU ms/request",
            ],
        )  # fmt: skip
    path = benchlib.save_results("end_to_end_load", {"facts": facts, "args": vars(args), "runs": runs, "rates": rates})
    print(f"results saved to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
