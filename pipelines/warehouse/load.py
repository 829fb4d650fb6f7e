"""Load one tenant: stream API pages into session-private staging tables, then merge in one transaction.

Why this shape:
- Staging tables are TEMP tables of the load's own connection. A run that fails, is killed or loses
  its connection leaves nothing behind, and the merge is the only statement that touches the
  real tables: one transaction per tenant, so readers see the previous load or this one, never a mix.
- Pages flow from concurrent fetchers to one COPY writer under one page budget shared by every
  group's scan: a page holds a slot from its request until it is staged, so memory holds member
  pages of about 1,000 customers per unit of `concurrency` (``page_budget``), whatever the
  tenant's size or how many groups are paged at once.
- The merge is set-based SQL: current tables are replaced by what was staged, history tables get
  a new period or version only where something changed, so an unchanged API changes nothing.
- No DDL on this path: the schema is migrated before (``migrate.ensure_current_schema``), the
  customer columns are read from the table, and a field without a column goes into the jsonb
  ``extra_fields`` and, once, into the field registry. The merge thus takes row locks only, and
  loads of other tenants and analysts' queries never queue behind it.
- The load holds the migrate lock shared, so no column is promoted between reading the columns
  and merging; the tables it changed are analysed (key and filter columns) before it returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import pandas as pd
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from pipelines.flowretail.client import AsyncFlowRetailClient, PageBudget
from pipelines.flowretail.errors import NotFoundError
from pipelines.progress import progress_logger
from pipelines.warehouse.frames import (
    GROUP_FRAME_COLUMNS,
    CustomerColumns,
    customers_frame,
    groups_frame,
    memberships_frame,
)
from pipelines.warehouse.locks import MIGRATE_LOCK, tenant_load_lock
from pipelines.warehouse.migrate import ensure_current_schema
from pipelines.warehouse.postgres import mask_url, masked_database_url
from pipelines.warehouse.schema import (
    DEVIATIONS_COLUMN,
    EXTRA_FIELDS_COLUMN,
    RAW_TABLE_STATISTICS,
    SCHEMA,
    Column,
    customer_field_columns,
)
from pipelines.warehouse.tables import column_names, load_runs, snapshot_bookkeeping_columns, upsert_sql

logger = logging.getLogger(__name__)

_WRITE_BATCH_PAGES = 32  # pages already queued are written together, in one transaction
_BUDGET_CUSTOMERS_PER_CONNECTION = 1000  # see page_budget
_DEVIATIONS = sql.Identifier(DEVIATIONS_COLUMN.name)
_COLLECT_EVERY_ROWS = 50_000  # staged member rows between the writer's own young-generation collections
_REMEMBERED_CUSTOMERS = 65_536  # customers whose staged copy is remembered at once (~10 MB at most)


def page_budget(concurrency: int, page_size: int) -> int:
    """How many member pages one load may hold at once: 1,000 customers per unit of `concurrency`.

    Every page holds a slot from its request until it is staged, however many groups scan at once,
    so memory follows this figure and not the tenant's size. Counting customers rather than pages
    keeps the bytes the same for small pages while letting the writer batch them (at 25-customer
    pages, 8 slots starved it: the loader then held a 200/s rate limit in 8 of 12 runs, and in 6 of
    6 with this budget; see BENCHMARKS.md).
    """
    return concurrency * max(1, _BUDGET_CUSTOMERS_PER_CONNECTION // page_size)


@contextlib.contextmanager
def _automatic_gc_paused() -> Iterator[None]:
    """Pause Python's automatic cyclic garbage collector while pages stream; the writer collects instead.

    Decoded pages are trees of acyclic dicts and lists that reference counting frees. But with the
    page budget's worth of them alive, the automatic collector kept promoting and re-scanning them
    (and the whole imported heap), a large share of the loader's CPU (BENCHMARKS.md). The writer
    runs a young-generation collection every ``_COLLECT_EVERY_ROWS`` staged rows, so the rare cycle
    (an exception's traceback, say) is still freed while the load runs. Nesting is safe: the
    collector is switched back on only by the call that switched it off.

    The collector belongs to the process, and Python has no switch per thread or task, so the pause
    covers only the member streaming of a load (``_Extract.stage_members``): the group listing, the
    merge and whatever Dagster does around the load run with the collector on, and young cycles of
    other threads are freed by the writer's collections meanwhile. Measured with and without the
    pause before keeping it (BENCHMARKS.md).
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class LoadAlreadyRunningError(RuntimeError):
    """Another load of the same tenant holds the tenant's lock."""


@dataclass
class TenantLoadResult:
    """What one tenant's load did, for load_runs, asset metadata and the CLI summary."""

    tenant_uid: str
    run_id: str
    started_at: datetime
    finished_at: datetime | None = None
    groups_rows: int = 0
    memberships_rows: int = 0
    customers_rows: int = 0
    membership_periods_opened: int = 0
    membership_periods_closed: int = 0
    customer_versions_opened: int = 0
    customer_versions_closed: int = 0
    groups_changed: int = 0
    groups_removed: int = 0
    memberships_added: int = 0
    memberships_removed: int = 0
    groups_deleted_during_load: list[str] = field(default_factory=list)
    api_group_total: int = 0
    api_member_totals: dict[str, int] = field(default_factory=dict)
    pages: int = 0
    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    new_fields: list[str] = field(default_factory=list)
    groups_preview: pd.DataFrame | None = None
    # Per field and case, values that broke the spec and were loaded as they came (groups' fields as
    # "group.<field>"): {"email": {"null": 3}}. Counted over the loaded rows, so once per customer.
    spec_deviations: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def duration_seconds(self) -> float:
        end = self.finished_at or datetime.now(UTC)
        return (end - self.started_at).total_seconds()


@dataclass
class _PageBatch:
    """One unit of work for the staging writer: a page's frames, a group rescan, or a vanished group."""

    kind: Literal["page", "rescan", "vanished"]
    group_uid: str | None = None
    frames: list[tuple[str, pd.DataFrame]] = field(default_factory=list)
    holds_page_slot: bool = False


@dataclass
class _Stager:
    """Owns the staging tables of one load and writes every frame with COPY."""

    conn: psycopg.AsyncConnection[Any]
    customer_columns: CustomerColumns
    new_fields: list[tuple[str, str]] = field(default_factory=list)
    saw_deviations: bool = False  # some staged row broke the spec (see TenantLoadResult.spec_deviations)

    async def create(self) -> None:
        # Staging commits touch only this session's TEMP tables, which no crash can leave useful:
        # waiting for each one's WAL flush bought nothing. The merge turns it back on.
        await self.conn.execute("SET synchronous_commit = off")
        customer_cols = sql.SQL(", ").join(
            sql.SQL("{} {}").format(sql.Identifier(c.name), sql.SQL(c.pg_type))
            for c in [*self.customer_columns.columns, Column(EXTRA_FIELDS_COLUMN, "jsonb")]
        )
        async with self.conn.transaction():
            await self.conn.execute(
                sql.SQL(
                    "CREATE TEMP TABLE stg_groups (customer_group_uid text, name text, created_by text, "
                    "created_at timestamptz, last_modified_by text, last_modified_at timestamptz, {} jsonb)"
                ).format(_DEVIATIONS)
            )
            await self.conn.execute("CREATE TEMP TABLE stg_memberships (customer_group_uid text, customer_uid text)")
            await self.conn.execute(
                # _seq numbers rows in the order they are staged, so the latest copy of a customer
                # seen twice wins; PostgreSQL fills it, the COPY rows do not carry it.
                sql.SQL(
                    "CREATE TEMP TABLE stg_customers (customer_uid text, {}, row_hash text, {} jsonb, _seq bigserial)"
                ).format(customer_cols, _DEVIATIONS)
            )

    async def copy(self, table: str, frames: list[pd.DataFrame]) -> None:
        """COPY the frames' rows into one staging table, one COPY statement per run of frames with
        the same columns."""
        start = 0
        while start < len(frames):
            columns = list(frames[start].columns)
            end = start
            while end < len(frames) and list(frames[end].columns) == columns:
                end += 1
            statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
                sql.Identifier(table), sql.SQL(", ").join(sql.Identifier(c) for c in columns)
            )
            async with self.conn.cursor() as cur, cur.copy(statement) as copy:
                for frame in frames[start:end]:
                    # Frames are all dtype=object, one block: to_numpy is a view, far cheaper than itertuples.
                    for row in frame.to_numpy(dtype=object).tolist():
                        await copy.write_row(row)
            start = end

    async def write(self, batches: list[_PageBatch]) -> None:
        """Apply batches in order; consecutive pages share one transaction and one COPY per table,
        which is most of the per-page cost on the database side."""
        pages: list[_PageBatch] = []
        for batch in [*batches, None]:
            if batch is not None and batch.kind == "page":
                pages.append(batch)
                continue
            if pages:
                await self._write_pages(pages)
                pages = []
            if batch is not None and batch.group_uid:
                if batch.kind == "rescan":
                    await self.restart_group(batch.group_uid)
                elif batch.kind == "vanished":
                    await self.drop_group(batch.group_uid)

    async def _write_pages(self, pages: list[_PageBatch]) -> None:
        by_table: dict[str, list[pd.DataFrame]] = {}
        for page in pages:
            for table, frame in page.frames:
                if not frame.empty:
                    by_table.setdefault(table, []).append(frame)
        async with self.conn.transaction():
            for table, frames in by_table.items():
                await self.copy(table, frames)

    async def restart_group(self, group_uid: str) -> None:
        """Forget what an earlier, inconsistent scan of a group's members staged."""
        await self.conn.execute("DELETE FROM stg_memberships WHERE customer_group_uid = %s", (group_uid,))

    async def drop_group(self, group_uid: str) -> None:
        """A group deleted while the load ran is not part of this load's snapshot."""
        async with self.conn.transaction():
            await self.conn.execute("DELETE FROM stg_memberships WHERE customer_group_uid = %s", (group_uid,))
            await self.conn.execute("DELETE FROM stg_groups WHERE customer_group_uid = %s", (group_uid,))


class StagedCustomers:
    """The content hash each customer was last staged with, so that an unchanged customer met again
    in another group's pages is not staged again.

    A customer is a member of several groups and comes with each membership: most customer rows of
    a load repeat one staged before (64 % at 20,000 customers in 100 groups). The merge keeps the
    latest staged copy of each customer (``_seq``), which a copy with the same hash cannot change,
    so leaving it out changes nothing but the work. Rows that broke the spec are always staged (they
    are counted per row). Memory stays bounded: past ``limit`` customers the memory starts over, and
    a customer it forgot is merely staged again.
    """

    def __init__(self, limit: int = _REMEMBERED_CUSTOMERS) -> None:
        self.limit = limit
        self.hashes: dict[str, str] = {}

    def new_rows(self, frame: pd.DataFrame) -> pd.DataFrame:
        """``frame`` (a ``customers_frame``) without the rows that repeat their customer's staged copy."""
        keep = []
        hashes = self.hashes
        for uid, digest, deviations in zip(
            frame["customer_uid"].tolist(),
            frame["row_hash"].tolist(),
            frame[DEVIATIONS_COLUMN.name].tolist(),
            strict=True,
        ):
            repeat = deviations is None and hashes.get(uid) == digest
            keep.append(not repeat)
            if not repeat:
                if len(hashes) >= self.limit:
                    hashes.clear()
                hashes[uid] = digest
        return frame if all(keep) else frame[keep]


class _Extract:
    """One tenant's extract into the staging tables: the groups, then every group's members.

    Member scans run ``concurrency`` groups at a time and queue their pages; one writer stages them
    in order and gives their page slots back (see ``page_budget``). What the scans and the writer
    share (the queue, the budget, the progress counts) is this object's state.
    """

    def __init__(
        self, client: AsyncFlowRetailClient, stager: _Stager, tenant_uid: str, result: TenantLoadResult
    ) -> None:
        self.client = client
        self.stager = stager
        self.tenant_uid = tenant_uid
        self.result = result
        self.group_uids: list[str] = []
        self.budget = PageBudget(page_budget(client.config.concurrency, client.config.page_size))
        self.queue: asyncio.Queue[_PageBatch | None] = asyncio.Queue()
        self.gate = asyncio.Semaphore(client.config.concurrency)
        self.groups_done = 0
        self.staged_rows = 0
        self.collected_at = 0  # staged_rows at the writer's last collection
        self.staged_customers = StagedCustomers()

    async def run(self) -> None:
        await self.stage_groups()
        progress_logger.info("%s: %d groups listed", self.tenant_uid, len(self.group_uids))
        try:
            await self.stage_members()
        except BaseExceptionGroup as group:
            # The task groups wrap what failed; callers and load_runs get the error itself.
            error = _leading_error(group)
            raise error from error.__cause__

    async def stage_groups(self) -> None:
        """Page the groups into stg_groups; a rescan starts the table over."""
        preview: pd.DataFrame | None = None
        attempt = 0
        async for page in self.client.iter_customer_groups(self.tenant_uid):
            if page.attempt != attempt:
                attempt = page.attempt
                self.group_uids.clear()
                preview = None
                await self.stager.conn.execute("TRUNCATE stg_groups")
            frame = groups_frame(page.items, page.deviations)
            self.stager.saw_deviations |= bool(page.deviations)
            self.group_uids.extend(frame["customer_group_uid"])
            if preview is None:
                preview = frame.head(10)
            await self.stager.write([_PageBatch("page", None, [("stg_groups", frame)])])
            self.result.api_group_total = page.total_count
        self.result.groups_preview = preview if preview is not None else pd.DataFrame(columns=GROUP_FRAME_COLUMNS)

    async def stage_members(self) -> None:
        """Scan every group's members while the writer stages them; the first failure cancels the rest."""
        with _automatic_gc_paused():
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self.write())
                async with asyncio.TaskGroup() as scans:
                    for group_uid in self.group_uids:
                        scans.create_task(self.scan_group(group_uid))
                await self.queue.put(None)

    async def scan_group(self, group_uid: str) -> None:
        """One group's members, ``concurrency`` groups at a time; a group deleted meanwhile is left out."""
        async with self.gate:
            try:
                await self.queue_member_pages(group_uid)
            except NotFoundError:
                logger.warning(
                    "group %s of tenant %s was deleted during the load; leaving it out", group_uid, self.tenant_uid
                )
                self.result.groups_deleted_during_load.append(group_uid)
                self.result.api_member_totals.pop(group_uid, None)
                await self.queue.put(_PageBatch("vanished", group_uid))
            self.groups_done += 1
            progress_logger.info(
                "%s: %d/%d groups paged, %d pages, %d member rows staged, %d requests",
                self.tenant_uid,
                self.groups_done,
                len(self.group_uids),
                self.client.stats.pages,
                self.staged_rows,
                self.client.stats.requests,
            )

    async def queue_member_pages(self, group_uid: str) -> None:
        """Queue each member page as frames holding its page slot; a rescan first drops what was staged."""
        attempt = 0
        async for page in self.client.iter_group_members(self.tenant_uid, group_uid, budget=self.budget):
            if page.attempt != attempt:
                if attempt:
                    await self.queue.put(_PageBatch("rescan", group_uid))
                attempt = page.attempt
            self.stager.new_fields += self.stager.customer_columns.discover(page.items)
            customers = customers_frame(page.items, self.stager.customer_columns, page.deviations)
            frames = [
                ("stg_memberships", memberships_frame(group_uid, page.items)),
                ("stg_customers", self.staged_customers.new_rows(customers)),
            ]
            self.stager.saw_deviations |= bool(page.deviations)
            self.result.api_member_totals[group_uid] = page.total_count
            await self.queue.put(_PageBatch("page", group_uid, frames, holds_page_slot=True))
            del page, frames, customers  # staged pages are freed by the writer, not kept here until the next arrives

    async def write(self) -> None:
        """The one writer: stage queued batches in order until the end marker."""
        finished = False
        while not finished:
            finished = await self.stage_queued()

    async def stage_queued(self) -> bool:
        """Stage what is queued (waiting for one, at most ``_WRITE_BATCH_PAGES``) and give back its page
        slots; True once the end marker came. The batches die with this call."""
        batches: list[_PageBatch] = []
        item = await self.queue.get()
        while item is not None:
            batches.append(item)
            if len(batches) >= _WRITE_BATCH_PAGES or self.queue.empty():
                break
            item = self.queue.get_nowait()
        await self.stager.write(batches)
        self.budget.release(sum(batch.holds_page_slot for batch in batches))
        self.staged_rows += sum(
            len(frame) for batch in batches for table, frame in batch.frames if table == "stg_memberships"
        )
        if self.staged_rows - self.collected_at >= _COLLECT_EVERY_ROWS:
            gc.collect(1)
            self.collected_at = self.staged_rows
        return item is None


def _leading_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first error a task group collected, out of however many groups it is nested in."""
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


def _merge_statements(customer_columns: list[Column]) -> list[tuple[str | None, sql.Composed | sql.SQL]]:
    s = sql.Identifier(SCHEMA)
    group_cols = [sql.Identifier(c) for c in GROUP_FRAME_COLUMNS[1:]]
    cust_cols = [sql.Identifier(c.name) for c in customer_columns]
    cols = sql.SQL(", ").join
    return [
        (
            "groups_removed",
            sql.SQL(
                "DELETE FROM {s}.customer_groups g WHERE g.tenant_uid = %(tenant)s AND NOT EXISTS "
                "(SELECT 1 FROM stg_groups x WHERE x.customer_group_uid = g.customer_group_uid)"
            ).format(s=s),
        ),
        (
            "groups_changed",
            sql.SQL(
                "INSERT INTO {s}.customer_groups (tenant_uid, customer_group_uid, {gc}, _loaded_at, _run_id) "
                "SELECT %(tenant)s, x.customer_group_uid, {xgc}, %(ts)s, %(run)s FROM stg_groups x "
                "ON CONFLICT (tenant_uid, customer_group_uid) DO UPDATE SET ({gc}, _loaded_at, _run_id) = "
                "({egc}, EXCLUDED._loaded_at, EXCLUDED._run_id) "
                "WHERE ({tgc}) IS DISTINCT FROM ({egc})"
            ).format(
                s=s,
                gc=cols(group_cols),
                xgc=cols(sql.SQL("x.{}").format(c) for c in group_cols),
                egc=cols(sql.SQL("EXCLUDED.{}").format(c) for c in group_cols),
                tgc=cols(sql.SQL("customer_groups.{}").format(c) for c in group_cols),
            ),
        ),
        (
            "memberships_removed",
            sql.SQL(
                "DELETE FROM {s}.customer_group_memberships m WHERE m.tenant_uid = %(tenant)s AND NOT EXISTS "
                "(SELECT 1 FROM stg_memberships x WHERE x.customer_group_uid = m.customer_group_uid "
                "AND x.customer_uid = m.customer_uid)"
            ).format(s=s),
        ),
        (
            "memberships_added",
            sql.SQL(
                "INSERT INTO {s}.customer_group_memberships (tenant_uid, customer_group_uid, customer_uid, _loaded_at, _run_id) "
                "SELECT DISTINCT %(tenant)s, x.customer_group_uid, x.customer_uid, %(ts)s, %(run)s FROM stg_memberships x "
                # An anti-join, not ON CONFLICT: the tenant's lock keeps other writers out, and a
                # speculative insert per row cost about twice as much (BENCHMARKS.md, merge).
                "WHERE NOT EXISTS (SELECT 1 FROM {s}.customer_group_memberships m WHERE m.tenant_uid = %(tenant)s "
                "AND m.customer_group_uid = x.customer_group_uid AND m.customer_uid = x.customer_uid)"
            ).format(s=s),
        ),
        (
            "membership_periods_closed",
            sql.SQL(
                "UPDATE {s}.customer_group_membership_history h SET valid_to = %(ts)s "
                "WHERE h.tenant_uid = %(tenant)s AND h.valid_to IS NULL AND NOT EXISTS "
                "(SELECT 1 FROM stg_memberships x WHERE x.customer_group_uid = h.customer_group_uid "
                "AND x.customer_uid = h.customer_uid)"
            ).format(s=s),
        ),
        (
            "membership_periods_opened",
            sql.SQL(
                "INSERT INTO {s}.customer_group_membership_history "
                "(tenant_uid, customer_group_uid, customer_uid, valid_from, valid_to, _run_id) "
                "SELECT DISTINCT %(tenant)s, x.customer_group_uid, x.customer_uid, %(ts)s, NULL::timestamptz, %(run)s "
                "FROM stg_memberships x WHERE NOT EXISTS (SELECT 1 FROM {s}.customer_group_membership_history h "
                "WHERE h.tenant_uid = %(tenant)s AND h.customer_group_uid = x.customer_group_uid "
                "AND h.customer_uid = x.customer_uid AND h.valid_to IS NULL)"
            ).format(s=s),
        ),
        (
            None,
            sql.SQL(
                # Narrow on purpose: which staged row is each member's latest (uid, staging seq, hash),
                # not a second copy of every wide customer row.
                "CREATE TEMP TABLE cur_customers ON COMMIT DROP AS "
                "SELECT DISTINCT ON (c.customer_uid) c.customer_uid, c._seq, c.row_hash "
                "FROM stg_customers c WHERE EXISTS (SELECT 1 FROM stg_memberships m WHERE m.customer_uid = c.customer_uid) "
                "ORDER BY c.customer_uid, c._seq DESC"
            ),
        ),
        (None, sql.SQL("CREATE UNIQUE INDEX ON cur_customers (customer_uid)")),
        (None, sql.SQL("ANALYZE cur_customers (customer_uid, row_hash)")),
        (
            "customer_versions_closed",
            sql.SQL(
                "UPDATE {s}.customer_snapshots v SET valid_to = %(ts)s "
                "WHERE v.tenant_uid = %(tenant)s AND v.valid_to IS NULL AND NOT EXISTS "
                "(SELECT 1 FROM cur_customers c WHERE c.customer_uid = v.customer_uid AND c.row_hash = v.row_hash)"
            ).format(s=s),
        ),
        (
            "customer_versions_opened",
            sql.SQL(
                "INSERT INTO {s}.customer_snapshots "
                "(tenant_uid, customer_uid, {cc}, valid_from, valid_to, row_hash, {d}, _run_id) "
                "SELECT %(tenant)s, c.customer_uid, {xcc}, %(ts)s, NULL::timestamptz, c.row_hash, c.{d}, %(run)s "
                "FROM cur_customers k JOIN stg_customers c ON c.customer_uid = k.customer_uid AND c._seq = k._seq "
                "WHERE NOT EXISTS (SELECT 1 FROM {s}.customer_snapshots v "
                "WHERE v.tenant_uid = %(tenant)s AND v.customer_uid = k.customer_uid AND v.valid_to IS NULL)"
            ).format(s=s, cc=cols(cust_cols), xcc=cols(sql.SQL("c.{}").format(c) for c in cust_cols), d=_DEVIATIONS),
        ),
    ]


async def _merge(
    conn: psycopg.AsyncConnection[Any], stager: _Stager, result: TenantLoadResult, as_of: datetime
) -> None:
    """Apply the staged snapshot to the current and history tables in one transaction."""
    params = {"tenant": result.tenant_uid, "ts": as_of, "run": result.run_id}
    await conn.execute("RESET synchronous_commit")
    await conn.execute("CREATE INDEX ON stg_memberships (customer_group_uid, customer_uid)")
    await conn.execute("CREATE INDEX ON stg_memberships (customer_uid)")
    await conn.execute("CREATE INDEX ON stg_customers (customer_uid)")
    await conn.execute("ANALYZE stg_groups")
    await conn.execute("ANALYZE stg_memberships")
    # Statistics only where the merge joins: analysing the wide jsonb columns cost a third of the merge.
    await conn.execute("ANALYZE stg_customers (customer_uid)")
    columns = [*stager.customer_columns.columns, Column(EXTRA_FIELDS_COLUMN, "jsonb")]
    async with conn.transaction():
        for counter, statement in _merge_statements(columns):
            cur = await conn.execute(statement, params)
            if counter:
                setattr(result, counter, cur.rowcount)
        counts = await (
            await conn.execute(
                sql.SQL(
                    "SELECT (SELECT count(*) FROM {s}.customer_groups WHERE tenant_uid = %(tenant)s), "
                    "(SELECT count(*) FROM {s}.customer_group_memberships WHERE tenant_uid = %(tenant)s), "
                    "(SELECT count(*) FROM {s}.customer_snapshots WHERE tenant_uid = %(tenant)s AND valid_to IS NULL)"
                ).format(s=sql.Identifier(SCHEMA)),
                params,
            )
        ).fetchone()
        assert counts is not None
        result.groups_rows, result.memberships_rows, result.customers_rows = (int(c) for c in counts)
        if stager.saw_deviations:
            result.spec_deviations = await _count_deviations(conn, result.tenant_uid)
        result.finished_at = datetime.now(UTC)
        await _record_run(conn, result, "succeeded", None)


async def _count_deviations(conn: psycopg.AsyncConnection[Any], tenant_uid: str) -> dict[str, dict[str, int]]:
    """Per field and case, the tenant's current rows that broke the spec (all of them from this load:
    an unchanged row has the same content, so the same deviations)."""
    per_table = [
        sql.SQL(
            "SELECT {prefix} || d.key, d.value ->> 'case', count(*) FROM {s}.{t} x "
            "CROSS JOIN LATERAL jsonb_each(x.{d}) d WHERE x.tenant_uid = %(tenant)s AND x.{d} IS NOT NULL{current} "
            "GROUP BY 1, 2"
        ).format(
            prefix=sql.Literal(prefix),
            s=sql.Identifier(SCHEMA),
            t=sql.Identifier(table),
            d=_DEVIATIONS,
            current=sql.SQL(current),
        )
        for table, prefix, current in (
            ("customer_snapshots", "", " AND x.valid_to IS NULL"),
            ("customer_groups", "group.", ""),
        )
    ]
    cur = await conn.execute(sql.SQL(" UNION ALL ").join(per_table) + sql.SQL(" ORDER BY 1, 2"), {"tenant": tenant_uid})
    counts: dict[str, dict[str, int]] = {}
    for path, case, n in await cur.fetchall():
        counts.setdefault(path, {})[case] = int(n)
    return counts


async def read_customer_columns(conn: psycopg.AsyncConnection[Any]) -> CustomerColumns:
    """The field columns of customer_snapshots from the catalog, each with the API field it holds
    (the spec's, or the registry's for a promoted field), plus every registered field name."""
    cur = await conn.execute(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
        "WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
        (f'"{SCHEMA}".customer_snapshots',),
    )
    catalog = [(str(name), str(pg_type)) for name, pg_type in await cur.fetchall()]
    if EXTRA_FIELDS_COLUMN not in {name for name, _ in catalog}:
        raise RuntimeError(
            f"{SCHEMA}.customer_snapshots has no {EXTRA_FIELDS_COLUMN} column: the warehouse schema is older than "
            "this version; run `flowretail migrate`"
        )
    cur = await conn.execute(
        sql.SQL("SELECT api_field, column_name FROM {}.customer_fields").format(sql.Identifier(SCHEMA))
    )
    registry = [(str(api_field), column) for api_field, column in await cur.fetchall()]
    field_of = {c.name: c.api_field for c in customer_field_columns()}
    field_of.update({column: api_field for api_field, column in registry if column is not None})
    columns = [
        Column(name, pg_type, field_of.get(name))
        for name, pg_type in catalog
        if name not in snapshot_bookkeeping_columns()
    ]
    return CustomerColumns(columns, frozenset(api_field for api_field, _ in registry))


async def _record_new_fields(
    conn: psycopg.AsyncConnection[Any], result: TenantLoadResult, fields: list[tuple[str, str]]
) -> None:
    """Register fields seen for the first time, in their own short transaction before the merge:
    two tenants seeing the same new field then never wait for each other's merge."""
    result.new_fields = [api_field for api_field, _ in fields]
    if not fields:
        return
    async with conn.cursor() as cur:
        await cur.executemany(
            sql.SQL(
                "INSERT INTO {}.customer_fields (api_field, pg_type, status, first_seen_run_id) "
                "VALUES (%s, %s, 'pending', %s) ON CONFLICT (api_field) DO NOTHING"
            ).format(sql.Identifier(SCHEMA)),
            [(api_field, pg_type, result.run_id) for api_field, pg_type in fields],
        )


def analyze_statements(result: TenantLoadResult) -> list[sql.Composed]:
    """ANALYZE of the key and filter columns of each raw table this load changed (load_runs always).

    A table the merge left unchanged keeps statistics that still describe it; a brand-new database
    gets every table analysed by its first load, so it plans as well as an old one.
    """
    changed_by = {
        "customer_groups": ("groups_changed", "groups_removed"),
        "customer_group_memberships": ("memberships_added", "memberships_removed"),
        "customer_group_membership_history": ("membership_periods_opened", "membership_periods_closed"),
        "customer_snapshots": ("customer_versions_opened", "customer_versions_closed"),
    }
    return [
        sql.SQL("ANALYZE {} ({})").format(
            sql.Identifier(SCHEMA, table), sql.SQL(", ").join(map(sql.Identifier, columns))
        )
        for table, columns in RAW_TABLE_STATISTICS.items()
        if table not in changed_by or any(getattr(result, counter) for counter in changed_by[table])
    ]


# Columns of load_runs that are no field of TenantLoadResult: the rest are read from the field of the same name.
_RUN_ARGUMENTS = ("status", "error")
# A run's row is written when it starts and again when it ends; the second keeps the first's start.
_RECORD_RUN = upsert_sql(load_runs, keep=("started_at",))


async def _record_run(
    conn: psycopg.AsyncConnection[Any], result: TenantLoadResult, status: str, error: str | None
) -> None:
    row = {name: getattr(result, name) for name in column_names(load_runs) if name not in _RUN_ARGUMENTS}
    row |= {"status": status, "error": error, "spec_deviations": Jsonb(result.spec_deviations)}
    await conn.execute(_RECORD_RUN, row)


async def load_tenant(
    client: AsyncFlowRetailClient,
    database_url: str,
    tenant_uid: str,
    run_id: str,
    *,
    before_merge: Callable[[], Awaitable[None]] | None = None,
) -> TenantLoadResult:
    """Extract one tenant into staging and merge it; on any failure the warehouse is left as it was.

    The client's stats are read as deltas, so one client can serve several tenants in a run.
    """
    started_at = datetime.now(UTC)
    result = TenantLoadResult(tenant_uid=tenant_uid, run_id=run_id, started_at=started_at)
    stats_before = (client.stats.pages, client.stats.requests, client.stats.retries_total, client.stats.rate_limited)
    await asyncio.to_thread(ensure_current_schema, database_url)
    conn = await psycopg.AsyncConnection.connect(database_url, autocommit=True)
    try:
        await _claim_tenant(conn, tenant_uid)
        await _record_run(conn, result, "running", None)
        stager = _Stager(conn, await read_customer_columns(conn))
        await stager.create()
        t0 = time.perf_counter()
        try:
            await _Extract(client, stager, tenant_uid, result).run()
            _take_stats(client, result, stats_before)
            await _record_new_fields(conn, result, stager.new_fields)
            if before_merge is not None:
                await before_merge()
            await _merge(conn, stager, result, started_at)
        except BaseException as exc:
            result.finished_at = datetime.now(UTC)
            _take_stats(client, result, stats_before)
            await _record_failure(database_url, result, exc)
            raise
        for statement in analyze_statements(result):
            await conn.execute(statement)
        logger.info(
            "loaded tenant %s in %.1fs: %d groups, %d memberships, %d customers",
            tenant_uid,
            time.perf_counter() - t0,
            result.groups_rows,
            result.memberships_rows,
            result.customers_rows,
        )
        return result
    finally:
        # Unlock explicitly: a closed client's backend may still hold the lock for a moment, and the
        # next load of the tenant would be refused. A dead connection releases it by itself.
        if not conn.closed:
            with contextlib.suppress(psycopg.Error):
                await conn.execute("SELECT pg_advisory_unlock_all()")  # the tenant's, and the shared migrate lock
        await conn.close()


async def _claim_tenant(conn: psycopg.AsyncConnection[Any], tenant_uid: str) -> None:
    """Take the tenant's lock (refusing when another load holds it) and the migrate lock shared
    (loads run side by side; a migrate that promotes columns waits for them), both until the
    connection unlocks or closes; then mark this tenant's loads that died as interrupted."""
    await conn.execute("SELECT pg_advisory_lock_shared(%s)", (MIGRATE_LOCK,))
    row = await (await conn.execute("SELECT pg_try_advisory_lock(%s, %s)", tenant_load_lock(tenant_uid))).fetchone()
    if not (row and row[0]):
        raise LoadAlreadyRunningError(
            f"another load of tenant {tenant_uid} is running; this one refuses to start so the two cannot mix"
        )
    # Holding the tenant's lock, any 'running' row of this tenant belongs to a dead process.
    await conn.execute(
        sql.SQL(
            "UPDATE {}.load_runs SET status = 'interrupted', finished_at = now(), "
            "error = 'the process ended before the load finished (killed or lost); nothing of it was applied' "
            "WHERE tenant_uid = %s AND status = 'running'"
        ).format(sql.Identifier(SCHEMA)),
        (tenant_uid,),
    )


def _take_stats(client: AsyncFlowRetailClient, result: TenantLoadResult, before: tuple[int, int, int, int]) -> None:
    result.pages = client.stats.pages - before[0]
    result.requests = client.stats.requests - before[1]
    result.retries = client.stats.retries_total - before[2]
    result.rate_limited = client.stats.rate_limited - before[3]


async def _record_failure(database_url: str, result: TenantLoadResult, exc: BaseException) -> None:
    """Best effort: mark the run failed on a fresh connection (the load's own may be gone)."""
    message = f"{type(exc).__name__}: {exc}"[:2000]
    try:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            await _record_run(conn, result, "failed", message)
    except (psycopg.Error, OSError) as db_exc:
        logger.warning(
            "could not record the failed load of %s in %s: %s",
            result.tenant_uid,
            masked_database_url(database_url),
            mask_url(str(db_exc)),
        )
