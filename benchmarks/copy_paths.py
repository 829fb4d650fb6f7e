"""Write paths into PostgreSQL for the same synthetic customer rows: the project's load vs bare COPY vs to_sql.

    .venv/bin/python benchmarks/copy_paths.py [--rows 200000] [--to-sql-rows 20000] [--repeat 2]

The rows are the simulator's own generated customers (``CustomerFactory.customer``), exactly as a
member list serves them, held in memory so that no HTTP is measured here.

Paths, each on a fresh database:
- project, full: ``load_tenant`` driven by an in-memory client that yields those pages (no HTTP):
  frame building (``customers_frame``/``memberships_frame``), COPY into the TEMP staging tables,
  the set-based merge into current and history tables, load_runs. This is the figure the target is
  judged on.
- project, streaming part only: ``_Extract`` with the same in-memory client: frames built and
  COPYed into the staging tables as the pages arrive, as in the load, without the merge. This is
  the part that compares like for like with the bare COPY and with to_sql, which only write rows.
- project, split: the same steps called one after another, each timed on its own:
  frames, staging COPY (``_Stager.write``), merge (``_merge``). The full run overlaps frame
  building with COPY waits, so the parts add up to a little more than the full run.
- bare COPY (the ceiling): psycopg (sync) ``COPY ... FROM STDIN`` + ``write_row`` of the very
  tuples the project's frames hold, into TEMP tables with the same columns, one transaction.
  Also: into regular (WAL-logged) tables, with async psycopg, and a hand-written "API dicts ->
  tuples -> COPY" loader without pandas and without the content hash.
- pandas ``DataFrame.to_sql`` through SQLAlchemy (psycopg 3 dialect), ``method="multi"``
  (chunksize 1000) and the default executemany, on fewer rows, into regular tables with the same
  column types.

Every path writes the customer rows and one membership row per customer; rows/s counts customers.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import psycopg
from psycopg import sql
from pydantic import SecretStr

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib

from pipelines.flowretail.client import PageBudget, ScanPage
from pipelines.flowretail.config import ClientConfig
from pipelines.flowretail.simulator.data import CustomerFactory, iso_from_ms
from pipelines.flowretail.stats import ClientStats
from pipelines.warehouse import load as project_load
from pipelines.warehouse.frames import CustomerColumns, customers_frame, memberships_frame
from pipelines.warehouse.migrate import migrate
from pipelines.warehouse.schema import EXTRA_FIELDS_COLUMN, Column

TENANT = "tenant-1"


# ----------------------------------------------------------------------------- data


def make_pages(rows: int, page_size: int, group_size: int, seed: int) -> dict[str, list[list[dict[str, Any]]]]:
    """``rows`` generated customers, each in exactly one group, cut into member-list pages."""
    factory = CustomerFactory(seed, 0, rows, hostile=True)
    groups: dict[str, list[list[dict[str, Any]]]] = {}
    for start in range(0, rows, group_size):
        group_uid = f"grp-{start // group_size + 1:04d}"
        pages: list[list[dict[str, Any]]] = []
        for page_start in range(start, min(rows, start + group_size), page_size):
            page = []
            for index in range(page_start, min(rows, start + group_size, page_start + page_size)):
                record = factory.customer(index)
                record["customerGroupUids"] = [group_uid]
                page.append(record)
            pages.append(page)
        groups[group_uid] = pages
    return groups


def group_json(uid: str) -> dict[str, Any]:
    stamp = iso_from_ms(1_600_000_000_000)
    return {
        "customerGroupUid": uid,
        "name": f"Bench {uid}",
        "createdBy": "bench",
        "createdAt": stamp,
        "lastModifiedBy": "bench",
        "lastModifiedAt": stamp,
    }


class InMemoryClient:
    """What ``load_tenant`` uses of ``AsyncFlowRetailClient``, serving pages from memory."""

    def __init__(self, groups: dict[str, list[list[dict[str, Any]]]], page_size: int) -> None:
        self.groups = groups
        self.config = ClientConfig(
            base_url="http://127.0.0.1/v2",
            token=SecretStr("unused-token"),
            page_size=page_size,
            rate_limit_per_second=None,
        )
        self.stats = ClientStats()

    async def iter_customer_groups(self, tenant_uid: str) -> AsyncIterator[ScanPage]:
        items = [group_json(uid) for uid in self.groups]
        self.stats.pages += 1
        yield ScanPage(items, 1, 1, len(items))

    async def iter_group_members(
        self, tenant_uid: str, group_uid: str, *, budget: PageBudget | None = None
    ) -> AsyncIterator[ScanPage]:
        pages = self.groups[group_uid]
        total = sum(len(p) for p in pages)
        for number, page in enumerate(pages, start=1):
            if budget is not None:
                await budget.take()  # as the real client does: the loader releases it once staged
            self.stats.pages += 1
            yield ScanPage(page, number, 1, total)
            await asyncio.sleep(0)  # a real page arrives from a socket: let the writer run


# ----------------------------------------------------------------------------- the project's path


def project_full(groups: dict[str, list[list[dict[str, Any]]]], database_url: str, page_size: int) -> dict[str, Any]:
    client = InMemoryClient(groups, page_size)

    async def main() -> project_load.TenantLoadResult:
        return await project_load.load_tenant(client, database_url, TENANT, "bench-run")  # type: ignore[arg-type]

    started = time.perf_counter()
    result = asyncio.run(main())
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "customers_rows": result.customers_rows, "memberships_rows": result.memberships_rows}


def project_stream(groups: dict[str, list[list[dict[str, Any]]]], database_url: str, page_size: int) -> float:
    """Frames streamed into the staging tables as in the load (``_Extract``), without the merge."""

    async def main() -> float:
        await asyncio.to_thread(migrate, database_url)
        conn = await psycopg.AsyncConnection.connect(database_url, autocommit=True)
        try:
            stager = project_load._Stager(conn, CustomerColumns())
            await stager.create()
            result = project_load.TenantLoadResult(TENANT, "bench-stream", datetime.now(UTC))
            started = time.perf_counter()
            await project_load._Extract(InMemoryClient(groups, page_size), stager, TENANT, result).run()  # type: ignore[arg-type]
            return time.perf_counter() - started
        finally:
            await conn.close()

    return asyncio.run(main())


def project_split(groups: dict[str, list[list[dict[str, Any]]]], database_url: str) -> dict[str, float]:
    """Frames, staging COPY and merge of the project's load, run one after another."""

    async def main() -> dict[str, float]:
        await asyncio.to_thread(migrate, database_url)
        conn = await psycopg.AsyncConnection.connect(database_url, autocommit=True)
        try:
            stager = project_load._Stager(conn, CustomerColumns())
            await stager.create()
            t0 = time.perf_counter()
            batches = [
                project_load._PageBatch(
                    "page", None, [("stg_groups", project_load.groups_frame([group_json(uid) for uid in groups]))]
                )
            ]
            for group_uid, pages in groups.items():
                for page in pages:
                    stager.new_fields += stager.customer_columns.discover(page)
                    frames = [
                        ("stg_memberships", memberships_frame(group_uid, page)),
                        ("stg_customers", customers_frame(page, stager.customer_columns)),
                    ]
                    batches.append(project_load._PageBatch("page", group_uid, frames))
            t1 = time.perf_counter()
            for start in range(0, len(batches), project_load._WRITE_BATCH_PAGES):
                await stager.write(batches[start : start + project_load._WRITE_BATCH_PAGES])
            t2 = time.perf_counter()
            result = project_load.TenantLoadResult(TENANT, "bench-split", datetime.now(UTC))
            await project_load._merge(conn, stager, result, result.started_at)
            t3 = time.perf_counter()
        finally:
            await conn.close()
        return {"frames": t1 - t0, "staging_copy": t2 - t1, "merge": t3 - t2}

    return asyncio.run(main())


# ----------------------------------------------------------------------------- bare COPY


def frame_tuples(
    groups: dict[str, list[list[dict[str, Any]]]],
) -> tuple[list[str], list[Column], list[tuple[Any, ...]], list[tuple[str, str]]]:
    """The exact values the project's frames hold, as plain tuples (built outside any timer)."""
    columns = CustomerColumns()
    customers: list[tuple[Any, ...]] = []
    memberships: list[tuple[str, str]] = []
    for group_uid, pages in groups.items():
        for page in pages:
            columns.discover(page)
            customers.extend(customers_frame(page, columns).itertuples(index=False, name=None))
            memberships.extend(memberships_frame(group_uid, page).itertuples(index=False, name=None))
    return columns.names, [*columns.columns, Column(EXTRA_FIELDS_COLUMN, "jsonb")], customers, memberships


def _create_tables(conn: psycopg.Connection[Any], prefix: str, columns: list[Column], temp: bool) -> None:
    kind = sql.SQL("TEMP TABLE" if temp else "TABLE")
    cols = sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(c.name), sql.SQL(c.pg_type)) for c in columns)
    conn.execute(
        sql.SQL("CREATE {} {} (customer_uid text, {}, row_hash text, _spec_deviations jsonb)").format(
            kind, sql.Identifier(prefix + "_customers"), cols
        )
    )
    conn.execute(
        sql.SQL("CREATE {} {} (customer_group_uid text, customer_uid text)").format(
            kind, sql.Identifier(prefix + "_memberships")
        )
    )


def _copy_statement(table: str, names: list[str]) -> sql.Composed:
    return sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(*table.split(".")), sql.SQL(", ").join(sql.Identifier(n) for n in names)
    )


def bare_copy(
    database_url: str,
    names: list[str],
    columns: list[Column],
    customers: list[tuple[Any, ...]],
    memberships: list[tuple[str, str]],
    *,
    temp: bool,
) -> float:
    with psycopg.connect(database_url) as conn:
        _create_tables(conn, "bare", columns, temp)
        conn.commit()
        started = time.perf_counter()
        with conn.transaction(), conn.cursor() as cur:
            with cur.copy(_copy_statement("bare_customers", names)) as copy:
                for row in customers:
                    copy.write_row(row)
            with cur.copy(_copy_statement("bare_memberships", ["customer_group_uid", "customer_uid"])) as copy:
                for pair in memberships:
                    copy.write_row(pair)
        return time.perf_counter() - started


def bare_copy_into_warehouse_tables(
    database_url: str,
    names: list[str],
    customers: list[tuple[Any, ...]],
    memberships: list[tuple[str, str]],
) -> float:
    """COPY the same rows straight into the tables the load must fill: ``customer_snapshots`` and
    ``customer_group_memberships`` (logged, with their keys and indexes), one transaction.

    The ceiling for putting exactly these rows where they have to land; it skips what makes the
    load a load (staging, diffing against the previous state, history), which is the overhead
    this comparison measures.
    """
    migrate(database_url)
    now = datetime.now(UTC)
    snapshot_names = ["tenant_uid", *names, "valid_from", "_run_id"]
    membership_names = ["tenant_uid", "customer_group_uid", "customer_uid", "_loaded_at", "_run_id"]
    with psycopg.connect(database_url) as conn:
        started = time.perf_counter()
        with conn.transaction(), conn.cursor() as cur:
            with cur.copy(_copy_statement("flowretail.customer_snapshots", snapshot_names)) as copy:
                for row in customers:
                    copy.write_row((TENANT, *row, now, "bare"))
            with cur.copy(_copy_statement("flowretail.customer_group_memberships", membership_names)) as copy:
                for group_uid, customer_uid in memberships:
                    copy.write_row((TENANT, group_uid, customer_uid, now, "bare"))
        return time.perf_counter() - started


def bare_copy_async(
    database_url: str,
    names: list[str],
    columns: list[Column],
    customers: list[tuple[Any, ...]],
    memberships: list[tuple[str, str]],
) -> float:
    async def main() -> float:
        conn = await psycopg.AsyncConnection.connect(database_url)
        try:
            cols = sql.SQL(", ").join(
                sql.SQL("{} {}").format(sql.Identifier(c.name), sql.SQL(c.pg_type)) for c in columns
            )
            await conn.execute(
                sql.SQL(
                    "CREATE TEMP TABLE abare_customers (customer_uid text, {}, row_hash text, _spec_deviations jsonb)"
                ).format(cols)
            )
            await conn.execute("CREATE TEMP TABLE abare_memberships (customer_group_uid text, customer_uid text)")
            await conn.commit()
            started = time.perf_counter()
            async with conn.transaction(), conn.cursor() as cur:
                async with cur.copy(_copy_statement("abare_customers", names)) as copy:
                    for row in customers:
                        await copy.write_row(row)
                async with cur.copy(
                    _copy_statement("abare_memberships", ["customer_group_uid", "customer_uid"])
                ) as copy:
                    for pair in memberships:
                        await copy.write_row(pair)
            return time.perf_counter() - started
        finally:
            await conn.close()

    return asyncio.run(main())


def handwritten_from_dicts(
    database_url: str, groups: dict[str, list[list[dict[str, Any]]]], columns: list[Column]
) -> float:
    """What a careful hand-written loader does: API dicts -> tuples (JSON for nested) -> COPY; no pandas, no hash."""
    fields = [(c.api_field or "", c.is_json or c.pg_type == "text") for c in columns]
    names = ["customer_uid", *(c.name for c in columns)]
    dumps = orjson.dumps

    def cell(value: Any, as_text: bool) -> Any:
        if value is None or isinstance(value, str) or not as_text:
            return value
        return dumps(value).decode()

    with psycopg.connect(database_url) as conn:
        _create_tables(conn, "hand", columns, True)
        conn.commit()
        started = time.perf_counter()
        with conn.transaction(), conn.cursor() as cur:
            with cur.copy(_copy_statement("hand_customers", names)) as copy:
                for pages in groups.values():
                    for page in pages:
                        for item in page:
                            copy.write_row((item["customerUid"], *(cell(item.get(f), t) for f, t in fields)))
            with cur.copy(_copy_statement("hand_memberships", ["customer_group_uid", "customer_uid"])) as copy:
                for group_uid, pages in groups.items():
                    for page in pages:
                        for item in page:
                            copy.write_row((group_uid, item["customerUid"]))
        return time.perf_counter() - started


# ----------------------------------------------------------------------------- pandas to_sql


def to_sql(
    database_url: str,
    names: list[str],
    columns: list[Column],
    customers: list[tuple[Any, ...]],
    memberships: list[tuple[str, str]],
    method: str | None,
) -> float:
    from sqlalchemy import BigInteger, Boolean, Numeric, Text, create_engine
    from sqlalchemy.dialects.postgresql import JSONB, TIMESTAMP

    # to_sql binds every object column as VARCHAR unless told otherwise; a user loading into a table
    # with jsonb/timestamptz columns passes dtype= and keeps nested values as Python objects.
    types: dict[str, Any] = {
        "jsonb": JSONB, "timestamptz": TIMESTAMP(timezone=True), "bigint": BigInteger, "boolean": Boolean,
        "numeric": Numeric, "text": Text,
    }  # fmt: skip
    dtype = {
        "customer_uid": Text(), "row_hash": Text(), "_spec_deviations": JSONB(),
        **{c.name: types[c.pg_type] for c in columns},
    }  # fmt: skip
    json_positions = [position + 1 for position, c in enumerate(columns) if c.is_json]
    decoded = []
    for row in customers:
        values = list(row)
        for position in json_positions:
            if values[position] is not None:
                values[position] = orjson.loads(values[position])
        decoded.append(values)
    customers_df = pd.DataFrame(decoded, columns=names, dtype=object)
    memberships_df = pd.DataFrame(memberships, columns=["customer_group_uid", "customer_uid"], dtype=object)
    prefix = "tosql_multi" if method else "tosql_default"
    with psycopg.connect(database_url, autocommit=True) as conn:
        _create_tables(conn, prefix, columns, False)
    engine = create_engine(benchlib.sqlalchemy_url(database_url))
    try:
        started = time.perf_counter()
        with engine.begin() as connection:
            customers_df.to_sql(
                prefix + "_customers",
                connection,
                if_exists="append",
                index=False,
                method=method,
                chunksize=1000,
                dtype=dtype,
            )
            memberships_df.to_sql(
                prefix + "_memberships", connection, if_exists="append", index=False, method=method, chunksize=1000
            )
        return time.perf_counter() - started
    finally:
        engine.dispose()


# ----------------------------------------------------------------------------- main


def best_of(repeat: int, run: Callable[[], float]) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeat):
        gc.collect()
        times.append(run())
    return min(times), times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000, help="customer rows for the COPY paths")
    parser.add_argument("--to-sql-rows", type=int, default=20_000, help="customer rows for pandas to_sql")
    parser.add_argument("--page-size", type=int, default=1000)
    parser.add_argument("--group-size", type=int, default=10_000, help="customers per group (pages of one scan)")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each COPY path; the best is reported")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    pg = benchlib.start_postgres()
    probe = pg.fresh_database("bench_probe")
    facts = benchlib.machine_facts(probe)
    pg.drop_database(probe)
    benchlib.print_facts(facts)

    print(f"generating {args.rows:,} customers with the simulator's generator ...", flush=True)
    t = time.perf_counter()
    groups = make_pages(args.rows, args.page_size, args.group_size, args.seed)
    names, columns, customers, memberships = frame_tuples(groups)
    # The generated rows (millions of objects) are this script's fixture, alive for the whole run; in
    # a real load only the page budget's worth is. Freezing them keeps Python's cyclic GC from
    # re-scanning them inside whichever path happens to be running, which charges the paths that
    # allocate most (the project's frames) for the fixture's size.
    gc.collect()
    gc.freeze()
    print(
        f"  done in {time.perf_counter() - t:.1f}s ({len(groups)} groups, {len(names)} customer columns)\n", flush=True
    )
    rows = args.rows
    small = min(args.to_sql_rows, rows)

    postmaster = benchlib.postmaster_pid(pg.server_url)
    cpu_of_run: list[tuple[float, float]] = []

    def on_fresh_db(run: Callable[[str], float]) -> Callable[[], float]:
        def wrapped() -> float:
            url = pg.fresh_database("bench_copy")
            try:
                time.sleep(0.5)  # let the postmaster reap the backend that created the database
                client0, server0 = time.process_time(), benchlib.cluster_cpu_seconds(postmaster)
                seconds = run(url)
                time.sleep(0.5)  # ... and the backends of this run, so that their CPU is counted
                cpu_of_run.append((time.process_time() - client0, benchlib.cluster_cpu_seconds(postmaster) - server0))
                return seconds
            finally:
                pg.drop_database(url)

        return wrapped

    measured: dict[str, dict[str, Any]] = {}

    def record(name: str, n: int, best: float, times: list[float]) -> None:
        # CPU of the fastest run (client process + whole PostgreSQL cluster), less sensitive to other load
        client_cpu, server_cpu = cpu_of_run[-len(times) :][times.index(best)]
        cpu_of_run.clear()
        measured[name] = {
            "rows": n, "seconds": best, "all_seconds": times, "rows_per_s": n / best,
            "client_cpu_s": client_cpu, "server_cpu_s": server_cpu, "rows_per_cpu_s": n / (client_cpu + server_cpu),
        }  # fmt: skip
        print(
            f"  {name}: {n / best:,.0f} rows/s (best of {[round(x, 2) for x in times]} s; "
            f"CPU client {client_cpu:.1f}s + PostgreSQL {server_cpu:.1f}s)",
            flush=True,
        )

    print("measuring ...", flush=True)
    best, times = best_of(
        args.repeat, on_fresh_db(lambda u: bare_copy(u, names, columns, customers, memberships, temp=True))
    )
    record("bare COPY, TEMP tables (ceiling)", rows, best, times)
    best, times = best_of(
        args.repeat, on_fresh_db(lambda u: bare_copy(u, names, columns, customers, memberships, temp=False))
    )
    record("bare COPY, logged tables", rows, best, times)
    best, times = best_of(
        args.repeat, on_fresh_db(lambda u: bare_copy_into_warehouse_tables(u, names, customers, memberships))
    )
    record("bare COPY into the warehouse tables (same keys, indexes)", rows, best, times)
    best, times = best_of(
        args.repeat, on_fresh_db(lambda u: bare_copy_async(u, names, columns, customers, memberships))
    )
    record("bare COPY, async psycopg, TEMP", rows, best, times)
    best, times = best_of(args.repeat, on_fresh_db(lambda u: handwritten_from_dicts(u, groups, columns)))
    record("hand-written dicts->tuples->COPY, TEMP", rows, best, times)

    full_runs: list[dict[str, Any]] = []

    def full(url: str) -> float:
        out = project_full(groups, url, args.page_size)
        full_runs.append(out)
        return float(out["seconds"])

    best, times = best_of(args.repeat, on_fresh_db(full))
    record("project load_tenant (frames + staging COPY + merge)", rows, best, times)
    if full_runs[-1]["customers_rows"] != rows:
        print(f"  WARNING: the project loaded {full_runs[-1]['customers_rows']} customers, expected {rows}")

    best, times = best_of(args.repeat, on_fresh_db(lambda u: project_stream(groups, u, args.page_size)))
    record("project streaming part only (frames + staging COPY, no merge)", rows, best, times)

    splits: list[dict[str, float]] = []

    def split(url: str) -> float:
        parts = project_split(groups, url)
        splits.append(parts)
        return sum(parts.values())

    best, times = best_of(args.repeat, on_fresh_db(split))
    split_best = min(splits, key=lambda p: sum(p.values()))
    record("project parts run serially (sum)", rows, best, times)

    best, times = best_of(
        1, on_fresh_db(lambda u: to_sql(u, names, columns, customers[:small], memberships[:small], "multi"))
    )
    record('pandas to_sql(method="multi")', small, best, times)
    best, times = best_of(
        1, on_fresh_db(lambda u: to_sql(u, names, columns, customers[:small], memberships[:small], None))
    )
    record("pandas to_sql (default executemany)", small, best, times)
    print()

    ceiling = measured["bare COPY, TEMP tables (ceiling)"]["rows_per_s"]
    project = measured["project load_tenant (frames + staging COPY + merge)"]["rows_per_s"]
    multi = measured['pandas to_sql(method="multi")']["rows_per_s"]
    ceiling_cpu = measured["bare COPY, TEMP tables (ceiling)"]["rows_per_cpu_s"]
    project_cpu = measured["project load_tenant (frames + staging COPY + merge)"]["rows_per_cpu_s"]
    table = [
        [name, m["rows"], m["seconds"], m["rows_per_s"], benchlib.ratio(m["rows_per_s"], ceiling),
         benchlib.ratio(project, m["rows_per_s"]), m["client_cpu_s"], m["server_cpu_s"], m["rows_per_cpu_s"],
         benchlib.ratio(m["rows_per_cpu_s"], ceiling_cpu)]
        for name, m in measured.items()
    ]  # fmt: skip
    benchlib.print_table(
        f"Write paths, same generated customers ({len(names)} columns) + one membership each",
        table,
        [
            "path", "customer rows", "wall s", "rows/s", "x bare COPY", "project is N x this", "client CPU s",
            "PostgreSQL CPU s", "rows per CPU-s", "x bare COPY (CPU)",
        ],
    )  # fmt: skip
    total_split = sum(split_best.values())
    benchlib.print_table(
        "Where the project's time goes (parts run one after another, best run)",
        [[part, secs, rows / secs, secs / total_split] for part, secs in split_best.items()]
        + [["sum", total_split, rows / total_split, 1.0]],
        ["part", "seconds", "rows/s of this part alone", "share"],
    )
    landed = measured["bare COPY into the warehouse tables (same keys, indexes)"]["rows_per_s"]
    stream = measured["project streaming part only (frames + staging COPY, no merge)"]["rows_per_s"]
    targets = [
        ["project >= 70% of bare COPY (TEMP, no index)", f"{project / ceiling:.0%}",
         benchlib.verdict(project >= 0.7 * ceiling)],
        ["project >= 70% of bare COPY into the warehouse tables", f"{project / landed:.0%}",
         benchlib.verdict(project >= 0.7 * landed)],
        ["(streaming part only, no merge) >= 70% of bare COPY (TEMP)", f"{stream / ceiling:.0%}",
         benchlib.verdict(stream >= 0.7 * ceiling)],
        ['project >= 10x to_sql(method="multi")', f"{project / multi:.1f}x", benchlib.verdict(project >= 10 * multi)],
        ["(same, per CPU-second) project >= 70% of bare COPY", f"{project_cpu / ceiling_cpu:.0%}",
         benchlib.verdict(project_cpu >= 0.7 * ceiling_cpu)],
    ]  # fmt: skip
    benchlib.print_table("Targets", targets, ["target", "measured", "verdict"])
    facts["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)
    print(f"load average at start {facts['load_avg_1m_at_start']}, at end {facts['load_avg_1m_at_end']}")
    path = benchlib.save_results(
        "copy_paths", {"facts": facts, "args": vars(args), "measured": measured, "split": split_best}
    )
    print(f"results saved to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
