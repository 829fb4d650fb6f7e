"""Ingest stage: the raw ``flowretail`` tables, loaded per tenant partition in one atomic step.

No ``from __future__ import annotations`` here: Dagster inspects the ``context`` annotation at
definition time and needs the real class, not a string.
"""

import asyncio
from typing import Any

import dagster as dg
import pandas as pd
import psycopg
from dagster import AssetExecutionContext
from psycopg import sql

from pipelines.metadata import md_table, table_schema
from pipelines.partitions import tenant_partitions
from pipelines.resources import FlowRetailResource, WarehouseResource
from pipelines.warehouse.load import TenantLoadResult, load_tenant
from pipelines.warehouse.schema import SCHEMA

OWNERS = ["team:data-engineering"]
KINDS = {"python", "postgres", "pandas"}

RAW_TABLES: dict[str, str] = {
    "customer_groups": "Every customer group of the tenant as of its latest successful load (one row per group).",
    "customer_group_memberships": "Exactly the latest membership: one row per (group, customer).",
    "customer_group_membership_history": "One row per continuous period of membership; valid_to is NULL while it lasts.",
    "customer_snapshots": (
        "Customers as slowly changing dimension type 2: a new version only when the customer's content "
        "changed; valid_to is NULL on the current version."
    ),
    "load_runs": "One row per tenant load: timings, status, row counts and API statistics.",
}


def raw_key(table: str) -> dg.AssetKey:
    return dg.AssetKey([SCHEMA, table])


CHECKS: list[tuple[str, str, str]] = [
    ("customer_groups", "primary_key_unique", "No (tenant, group) appears twice."),
    ("customer_group_memberships", "primary_key_unique", "No (tenant, group, customer) appears twice."),
    (
        "customer_group_memberships",
        "references_loaded_rows",
        "Every membership points to a loaded group and to a current customer version.",
    ),
    (
        "customer_group_memberships",
        "counts_match_api",
        "Members loaded per group equal the totalCount the API reported for that group.",
    ),
    ("customer_groups", "counts_match_api", "Groups loaded equal the totalCount the API reported."),
    ("customer_snapshots", "one_current_version", "Each customer has at most one current version."),
    ("load_runs", "fresh", "The tenant's latest successful load finished within the freshness window."),
]

FRESHNESS_HOURS = 26


@dg.multi_asset(
    name="flowretail_raw_tables",
    specs=[
        dg.AssetSpec(
            raw_key(table),
            description=description,
            group_name="ingest",
            owners=OWNERS,
            kinds=KINDS,
            partitions_def=tenant_partitions,
        )
        for table, description in RAW_TABLES.items()
    ],
    check_specs=[
        dg.AssetCheckSpec(name, asset=raw_key(table), description=description, blocking=True)
        for table, name, description in CHECKS
    ],
    partitions_def=tenant_partitions,
    can_subset=False,
)
def flowretail_raw_tables(
    context: AssetExecutionContext, flowretail: FlowRetailResource, warehouse: WarehouseResource
) -> Any:
    """Page a tenant's customer groups and every group's customers into pandas frames, stream them
    with COPY into staging, then merge into the raw tables in one transaction.

    All five tables are one step because they commit together: a failed or killed load leaves the
    previous state of every table intact, and an unchanged API changes nothing.
    """
    tenant_uid = context.partition_key

    async def run() -> TenantLoadResult:
        async with flowretail.make_client() as client:
            return await load_tenant(client, warehouse.database_url, tenant_uid, context.run.run_id)

    result = asyncio.run(run())
    context.log.info(
        f"tenant {tenant_uid}: {result.groups_rows} groups, {result.memberships_rows} memberships, "
        f"{result.customers_rows} current customers in {result.duration_seconds:.1f}s"
    )
    with warehouse.connect() as conn:
        yield from _materializations(conn, result)
        yield from _checks(conn, result)


def _common_metadata(result: TenantLoadResult) -> dict[str, Any]:
    return {
        "tenant_uid": result.tenant_uid,
        "pages": result.pages,
        "requests": result.requests,
        "retries": result.retries,
        "rate_limited_429": result.rate_limited,
        "duration_seconds": round(result.duration_seconds, 3),
    }


def _materializations(conn: psycopg.Connection[Any], result: TenantLoadResult) -> Any:
    common = _common_metadata(result)
    sizes = conn.execute(
        sql.SQL(
            "SELECT count(*), coalesce(max(n), 0), coalesce(avg(n), 0) FROM (SELECT count(*) AS n "
            "FROM {}.customer_group_memberships WHERE tenant_uid = %s GROUP BY customer_group_uid) s"
        ).format(sql.Identifier(SCHEMA)),
        (result.tenant_uid,),
    ).fetchone()
    assert sizes is not None
    preview = result.groups_preview if result.groups_preview is not None else pd.DataFrame()
    per_table: dict[str, dict[str, Any]] = {
        "customer_groups": {
            "dagster/row_count": result.groups_rows,
            "groups_changed": result.groups_changed,
            "groups_removed": result.groups_removed,
            "groups_deleted_during_load": len(result.groups_deleted_during_load),
            "preview": dg.MetadataValue.md(
                md_table(list(preview.columns), preview.itertuples(index=False)) if not preview.empty else "(no groups)"
            ),
        },
        "customer_group_memberships": {
            "dagster/row_count": result.memberships_rows,
            "groups_with_members": int(sizes[0]),
            "max_members_per_group": int(sizes[1]),
            "mean_members_per_group": round(float(sizes[2]), 2),
        },
        "customer_group_membership_history": {
            "periods_opened": result.membership_periods_opened,
            "periods_closed": result.membership_periods_closed,
        },
        "customer_snapshots": {
            "dagster/row_count": result.customers_rows,
            "versions_opened": result.customer_versions_opened,
            "versions_closed": result.customer_versions_closed,
            "new_columns": ", ".join(result.new_columns) or "none",
        },
        "load_runs": {"status": "succeeded"},
    }
    for table, metadata in per_table.items():
        yield dg.MaterializeResult(
            asset_key=raw_key(table),
            metadata={**metadata, **common, "dagster/column_schema": table_schema(conn, SCHEMA, table)},
        )


def _checks(conn: psycopg.Connection[Any], result: TenantLoadResult) -> Any:
    s = sql.Identifier(SCHEMA)
    tenant = result.tenant_uid

    def scalar(query: sql.Composed, *params: Any) -> int:
        row = conn.execute(query, params).fetchone()
        return int(row[0]) if row else 0

    def duplicate_keys_check(table: str, check_name: str, key: list[str], current_only: bool = False) -> Any:
        count = scalar(
            sql.SQL(
                "SELECT count(*) FROM (SELECT 1 FROM {}.{} WHERE tenant_uid = %s{} GROUP BY {} HAVING count(*) > 1) d"
            ).format(
                s,
                sql.Identifier(table),
                sql.SQL(" AND valid_to IS NULL" if current_only else ""),
                sql.SQL(", ").join(map(sql.Identifier, key)),
            ),
            tenant,
        )
        return dg.AssetCheckResult(
            asset_key=raw_key(table), check_name=check_name, passed=count == 0, metadata={"duplicate_keys": count}
        )

    yield duplicate_keys_check("customer_groups", "primary_key_unique", ["customer_group_uid"])
    yield duplicate_keys_check(
        "customer_group_memberships", "primary_key_unique", ["customer_group_uid", "customer_uid"]
    )
    orphans = scalar(
        sql.SQL(
            "SELECT count(*) FROM {s}.customer_group_memberships m WHERE m.tenant_uid = %s AND ("
            "NOT EXISTS (SELECT 1 FROM {s}.customer_groups g WHERE g.tenant_uid = m.tenant_uid "
            "AND g.customer_group_uid = m.customer_group_uid) OR NOT EXISTS (SELECT 1 FROM {s}.customer_snapshots c "
            "WHERE c.tenant_uid = m.tenant_uid AND c.customer_uid = m.customer_uid AND c.valid_to IS NULL))"
        ).format(s=s),
        tenant,
    )
    yield dg.AssetCheckResult(
        asset_key=raw_key("customer_group_memberships"),
        check_name="references_loaded_rows",
        passed=orphans == 0,
        metadata={"orphan_memberships": orphans},
    )
    loaded = dict(
        conn.execute(
            sql.SQL(
                "SELECT customer_group_uid, count(*) FROM {}.customer_group_memberships WHERE tenant_uid = %s "
                "GROUP BY customer_group_uid"
            ).format(s),
            (tenant,),
        ).fetchall()
    )
    mismatched = {
        g: (total, int(loaded.get(g, 0)))
        for g, total in result.api_member_totals.items()
        if int(loaded.get(g, 0)) != total
    }
    yield dg.AssetCheckResult(
        asset_key=raw_key("customer_group_memberships"),
        check_name="counts_match_api",
        passed=not mismatched,
        metadata={
            "groups_checked": len(result.api_member_totals),
            "groups_mismatched": len(mismatched),
            "mismatches": dg.MetadataValue.json(
                {g: {"api": a, "loaded": b} for g, (a, b) in list(mismatched.items())[:20]}
            ),
        },
    )
    expected_groups = result.api_group_total - len(result.groups_deleted_during_load)
    yield dg.AssetCheckResult(
        asset_key=raw_key("customer_groups"),
        check_name="counts_match_api",
        passed=expected_groups == result.groups_rows,
        metadata={
            "api_total_count": result.api_group_total,
            "deleted_during_load": len(result.groups_deleted_during_load),
            "loaded": result.groups_rows,
        },
    )
    yield duplicate_keys_check("customer_snapshots", "one_current_version", ["customer_uid"], current_only=True)
    age_row = conn.execute(
        sql.SQL(
            "SELECT extract(epoch FROM now() - max(finished_at)) FROM {}.load_runs "
            "WHERE tenant_uid = %s AND status = 'succeeded'"
        ).format(s),
        (tenant,),
    ).fetchone()
    age_hours = float(age_row[0]) / 3600 if age_row and age_row[0] is not None else None
    yield dg.AssetCheckResult(
        asset_key=raw_key("load_runs"),
        check_name="fresh",
        passed=age_hours is not None and age_hours <= FRESHNESS_HOURS,
        metadata={
            "hours_since_last_success": round(age_hours, 3) if age_hours is not None else -1.0,
            "max_hours": FRESHNESS_HOURS,
        },
    )
