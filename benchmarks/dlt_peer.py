"""The project's load vs dlt's ``rest_api`` source + postgres destination, same simulated tenants, same run.

    .venv/bin/python benchmarks/dlt_peer.py [--scenarios small,field-notes] [--page-size 100]

Scenarios (the simulator runs in its own process, each loader in a fresh interpreter):
- ``small``: 1 tenant, 10,000 customers, 100 groups, no added latency.
- ``field-notes``: 2 tenants x 20,000 customers, 100 groups, 10 ms latency per request (the setup
  of /work/shared/notes/field-notes.md).

dlt is configured as its REST API docs advise for a page-number API: a ``page_number`` paginator
with ``base_page: 1``, ``page_param: "pageNumber"``, ``total_path: "paging.totalCount"``, a parent
resource for the groups and a child resource per group's customers (``{resources.customer_groups.
customerGroupUid}`` in the path, ``include_from_parent``, ``parallelized: True``), data selector
``items``, write disposition ``replace``, one pipeline per tenant, and the thread pool of the
extract step sized to the project's concurrency (``EXTRACT__WORKERS``). dlt reads ``total_path``
as a number of pages while Flow Retail's ``totalCount`` counts items, so dlt stops on the first
empty page: one extra request per non-empty list. Everything else is dlt's default (its postgres
loader writes ``insert_values`` files; ``--dlt-file-format csv`` switches to COPY).

Requests are counted by the simulator (server side), the same way for both tools. Peak RSS is the
loader process tree's (psutil sampling by the parent; dlt's normalize may start processes) and
the loader's own ``ru_maxrss``.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import shutil
import sys
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql
from pydantic import SecretStr

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib

SCRIPT = Path(__file__).resolve()

SCENARIOS: dict[str, dict[str, Any]] = {
    "small": {"tenants": 1, "customers": 10_000, "groups": 100, "latency_ms": 0.0},
    "field-notes": {"tenants": 2, "customers": 20_000, "groups": 100, "latency_ms": 10.0},
}


# ----------------------------------------------------------------------------- workers


def project_worker(args: argparse.Namespace) -> dict[str, Any]:
    from pipelines.flowretail.client import AsyncFlowRetailClient
    from pipelines.flowretail.config import ClientConfig
    from pipelines.warehouse.load import load_tenant

    config = ClientConfig(
        base_url=args.base_url,
        token=SecretStr(args.token),
        page_size=args.page_size,
        rate_limit_per_second=None,
        concurrency=args.concurrency,
    )

    async def main() -> dict[str, Any]:
        totals: dict[str, Any] = {"customers_rows": 0, "memberships_rows": 0, "groups_rows": 0, "member_totals": []}
        async with AsyncFlowRetailClient(config) as client:
            for tenant in args.tenants.split(","):
                result = await load_tenant(client, args.database_url, tenant, "bench-peer")
                totals["customers_rows"] += result.customers_rows
                totals["memberships_rows"] += result.memberships_rows
                totals["groups_rows"] += result.groups_rows
                totals["member_totals"] += [result.api_group_total, *result.api_member_totals.values()]
            totals["client_requests"] = client.stats.requests
        return totals

    return asyncio.run(main())


def dlt_worker(args: argparse.Namespace) -> dict[str, Any]:
    os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
    os.environ.setdefault("RUNTIME__LOG_LEVEL", "WARNING")
    os.environ.setdefault("EXTRACT__WORKERS", str(args.concurrency))
    import dlt
    from dlt.sources.rest_api import rest_api_source

    pipelines_dir = benchlib.BENCH_DIR / "dlt" / uuid.uuid4().hex[:8]
    counts: dict[str, Any] = {"customers_rows": 0, "memberships_rows": 0, "groups_rows": 0}
    try:
        for tenant in args.tenants.split(","):
            source = rest_api_source(
                {
                    "client": {
                        "base_url": args.base_url + "/",
                        "auth": {"type": "bearer", "token": args.token},
                        "paginator": {
                            "type": "page_number",
                            "base_page": 1,
                            "page_param": "pageNumber",
                            "total_path": "paging.totalCount",
                        },
                    },
                    "resource_defaults": {
                        "write_disposition": "replace",
                        "endpoint": {"data_selector": "items", "params": {"pageSize": args.page_size}},
                    },
                    "resources": [
                        {
                            "name": "customer_groups",
                            "primary_key": "customerGroupUid",
                            "endpoint": {
                                "path": f"tenants/{tenant}/customer-groups",
                                "params": {"sortBy": "customerGroupUid", "sortDirection": "ASC"},
                            },
                        },
                        {
                            "name": "group_customers",
                            "parallelized": True,
                            "include_from_parent": ["customerGroupUid"],
                            "endpoint": {
                                "path": f"tenants/{tenant}/customer-groups/"
                                "{resources.customer_groups.customerGroupUid}/customers",
                                "params": {"sortBy": "customerUid", "sortDirection": "ASC"},
                            },
                        },
                    ],
                }
            )
            dataset = "dlt_" + tenant.replace("-", "_")
            pipeline = dlt.pipeline(
                pipeline_name=f"bench_{dataset}",
                destination=dlt.destinations.postgres(credentials=dlt_credentials(args.database_url)),
                dataset_name=dataset,
                pipelines_dir=str(pipelines_dir),
            )
            pipeline.run(source, loader_file_format=args.dlt_file_format)
            with psycopg.connect(args.database_url) as conn:
                for key, table in (("groups_rows", "customer_groups"), ("memberships_rows", "group_customers")):
                    row = conn.execute(
                        sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(dataset), sql.Identifier(table))
                    ).fetchone()
                    counts[key] += int(row[0]) if row else 0
                row = conn.execute(
                    sql.SQL('SELECT count(DISTINCT "customer_uid") FROM {}.group_customers').format(
                        sql.Identifier(dataset)
                    )
                ).fetchone()
                counts["customers_rows"] += int(row[0]) if row else 0
    finally:
        shutil.rmtree(pipelines_dir, ignore_errors=True)
    return counts


def dlt_credentials(url: str) -> str:
    """dlt insists on a host; for a socket-only URL (``postgresql://u:@/db?host=/dir``) a placeholder
    host is added, and libpq lets the ``host`` query parameter (the socket directory) win."""
    parts = urlsplit(url)
    if parts.hostname or "host=" not in parts.query:
        return url
    userinfo = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    return urlunsplit(parts._replace(netloc=userinfo + "localhost"))


def worker(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    cpu0 = time.process_time()
    out = project_worker(args) if args.tool == "project" else dlt_worker(args)
    out["wall_seconds"] = time.perf_counter() - started
    out["cpu_seconds_self"] = time.process_time() - cpu0
    out["ru_maxrss_mib"] = benchlib.own_peak_rss_mib()
    benchlib.emit_result(out)
    return 0


# ----------------------------------------------------------------------------- orchestrator


def run_scenario(pg: benchlib.Postgres, name: str, spec: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    tenants = ",".join(f"tenant-{i}" for i in range(1, spec["tenants"] + 1))
    print(f"scenario {name}: {spec} ...", flush=True)
    out: dict[str, Any] = {"scenario": name, **spec}
    with benchlib.simulator_process(
        tenants=spec["tenants"],
        customers=spec["customers"],
        groups=spec["groups"],
        latency_ms=spec["latency_ms"],
        page_size_cap=max(args.page_size, 1000),
    ) as sim:
        for tool in args.tools.split(","):
            database_url = pg.fresh_database(f"bench_peer_{tool}")
            sim.reset()
            result = benchlib.run_worker(
                SCRIPT,
                [
                    "--worker", "--tool", tool, "--base-url", sim.base_url, "--token", sim.token,
                    "--database-url", database_url, "--tenants", tenants, "--page-size", str(args.page_size),
                    "--concurrency", str(args.concurrency), "--dlt-file-format", args.dlt_file_format,
                ],
                timeout=args.timeout,
            )  # fmt: skip
            server = sim.stats()
            result["server_requests"] = server["requests"]
            result["server_by_status"] = server["by_status"]
            pg.drop_database(database_url)
            out[tool] = result
            print(
                f"  {tool}: {result['wall_seconds']:.1f}s, {server['requests']:,} requests, "
                f"peak RSS {result['tree_peak_rss_mib']:.0f} MiB",
                flush=True,
            )
    totals = out.get("project", {}).get("member_totals")
    if totals:
        # member_totals holds, per tenant, the group total followed by every group's member total
        out["fewest_requests"] = sum(max(1, math.ceil(t / args.page_size)) for t in totals)
        for tool in ("project", "dlt"):
            if tool in out:
                out[tool].pop("member_totals", None)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--tool", choices=("project", "dlt"), help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    parser.add_argument("--token", help=argparse.SUPPRESS)
    parser.add_argument("--database-url", help=argparse.SUPPRESS)
    parser.add_argument("--tenants", help=argparse.SUPPRESS)
    parser.add_argument("--scenarios", default="small,field-notes", help=f"comma-separated: {', '.join(SCENARIOS)}")
    parser.add_argument("--tools", default="project,dlt", help="which loaders to run, in this order")
    parser.add_argument("--page-size", type=int, default=100, help="pageSize for both tools (the product default)")
    parser.add_argument("--concurrency", type=int, default=8, help="project concurrency = dlt extract workers")
    parser.add_argument("--dlt-file-format", default="insert_values", choices=("insert_values", "csv"))
    parser.add_argument("--timeout", type=float, default=1200.0, help="bound on one loader run (s)")
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    pg = benchlib.start_postgres()
    probe = pg.fresh_database("bench_probe")
    facts = benchlib.machine_facts(probe)
    pg.drop_database(probe)
    benchlib.print_facts(facts)

    results = [run_scenario(pg, name, SCENARIOS[name], args) for name in args.scenarios.split(",")]
    facts["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)
    print()
    rows = []
    for r in results:
        for tool in ("project", "dlt"):
            if tool not in r:
                continue
            m = r[tool]
            rows.append([
                r["scenario"], tool, m["wall_seconds"], m["server_requests"], r.get("fewest_requests"),
                m["server_by_status"].get("429", 0), m["tree_peak_rss_mib"], m["ru_maxrss_mib"],
                m["memberships_rows"], m["customers_rows"], m["groups_rows"],
            ])  # fmt: skip
    benchlib.print_table(
        f"Project vs dlt rest_api (page size {args.page_size}, dlt file format {args.dlt_file_format})",
        rows,
        [
            "scenario", "loader", "wall s", "requests", "fewest", "429s", "peak RSS MiB (tree)",
            "ru_maxrss MiB", "membership rows", "distinct customers", "groups",
        ],
    )  # fmt: skip
    ratios = [
        [
            r["scenario"],
            benchlib.ratio(r["project"]["wall_seconds"], r["dlt"]["wall_seconds"]),
            benchlib.ratio(r["project"]["server_requests"], r["dlt"]["server_requests"]),
            benchlib.ratio(r["project"]["tree_peak_rss_mib"], r["dlt"]["tree_peak_rss_mib"]),
        ]
        for r in results
        if "project" in r and "dlt" in r
    ]
    if ratios:
        benchlib.print_table(
            "Ratios project / dlt (below 1: the project is faster, asks less, uses less memory)",
            ratios,
            ["scenario", "wall time", "requests", "peak RSS"],
        )
    path = benchlib.save_results("dlt_peer", {"facts": facts, "args": vars(args), "results": results})
    print(f"results saved to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
