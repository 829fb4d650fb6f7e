"""Ingest stage: the raw ``flowretail`` tables, loaded per tenant partition in one atomic step.

No ``from __future__ import annotations`` here: Dagster inspects the ``context`` annotation at
definition time and needs the real class, not a string.
"""

import asyncio
import warnings
from datetime import timedelta
from typing import Any, NamedTuple

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
INGEST_GROUP = "ingest"
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


class RawTableCheck(NamedTuple):
    """A data test on a raw table that PostgreSQL's own constraints do not already enforce."""

    table: str
    name: str
    description: str


REFERENCES_LOADED_ROWS = RawTableCheck(
    "customer_group_memberships",
    "references_loaded_rows",
    "Every membership points to a loaded group and to a current customer version.",
)
MEMBER_COUNTS_MATCH_API = RawTableCheck(
    "customer_group_memberships",
    "counts_match_api",
    "Members loaded per group equal the totalCount the API reported for that group.",
)
GROUP_COUNT_MATCHES_API = RawTableCheck(
    "customer_groups", "counts_match_api", "Groups loaded equal the totalCount the API reported."
)
TRUE_TO_SPEC = RawTableCheck(
    "customer_snapshots",
    "true_to_spec",
    "No loaded value broke the API spec (null, type, enum, format, U+0000); counts per field and case.",
)
CHECKS = (REFERENCES_LOADED_ROWS, MEMBER_COUNTS_MATCH_API, GROUP_COUNT_MATCHES_API)
WARNING_CHECKS = (TRUE_TO_SPEC,)
"""Shown, not guarding: data that broke the spec was loaded as it came (see flowretail/deviations.py)."""
"""Uniqueness of keys and of the current customer version is not re-tested here: the primary keys and
the unique index ``customer_snapshots_current`` make a violating load fail before it commits."""

FRESHNESS_WINDOW = timedelta(hours=26)
"""A daily load plus slack: the raw tables are overdue when no tenant load succeeded for this long."""

with warnings.catch_warnings():
    # Dagster marks these factories superseded by FreshnessPolicy, which open-source Dagster evaluates
    # only behind a preview flag; the checks work on every instance and show up as ordinary checks.
    warnings.filterwarnings("ignore", category=dg.SupersessionWarning)
    raw_freshness_checks = dg.build_last_update_freshness_checks(
        assets=[raw_key(table) for table in RAW_TABLES], lower_bound_delta=FRESHNESS_WINDOW
    )
    raw_freshness_sensor = dg.build_sensor_for_freshness_checks(
        freshness_checks=raw_freshness_checks,
        name="raw_tables_freshness",
        default_status=dg.DefaultSensorStatus.RUNNING,
    )
"""Evaluated by the daemon, so the checks fail when loads stop, not only after a load that ran."""


@dg.multi_asset(
    name="flowretail_raw_tables",
    specs=[
        dg.AssetSpec(
            raw_key(table),
            description=description,
            group_name=INGEST_GROUP,
            owners=OWNERS,
            kinds=KINDS,
            partitions_def=tenant_partitions,
        )
        for table, description in RAW_TABLES.items()
    ],
    check_specs=[
        *(
            dg.AssetCheckSpec(check.name, asset=raw_key(check.table), description=check.description, blocking=True)
            for check in CHECKS
        ),
        *(
            dg.AssetCheckSpec(check.name, asset=raw_key(check.table), description=check.description, blocking=False)
            for check in WARNING_CHECKS
        ),
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
        async with flowretail.make_client(tenant_uid) as client:
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
            "new_fields": ", ".join(result.new_fields) or "none",
            "spec_deviations": dg.MetadataValue.json(result.spec_deviations),
        },
        "load_runs": {"status": "succeeded"},
    }
    for table, metadata in per_table.items():
        yield dg.MaterializeResult(
            asset_key=raw_key(table),
            metadata={**metadata, **common, "dagster/column_schema": table_schema(conn, SCHEMA, table)},
        )


def _check_result(check: RawTableCheck, passed: bool, metadata: dict[str, Any]) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(asset_key=raw_key(check.table), check_name=check.name, passed=passed, metadata=metadata)


def _checks(conn: psycopg.Connection[Any], result: TenantLoadResult) -> Any:
    s = sql.Identifier(SCHEMA)
    tenant = result.tenant_uid
    # Outer joins, not NOT EXISTS ... OR NOT EXISTS: an OR of two subqueries cannot become anti-joins,
    # so PostgreSQL probed both indexes once per membership (0.25 s at 50,000); a group and a current
    # customer version are unique per key, so the joins add no rows.
    row = conn.execute(
        sql.SQL(
            "SELECT count(*) FROM {s}.customer_group_memberships m "
            "LEFT JOIN {s}.customer_groups g ON g.tenant_uid = m.tenant_uid AND g.customer_group_uid = m.customer_group_uid "
            "LEFT JOIN {s}.customer_snapshots c ON c.tenant_uid = m.tenant_uid AND c.customer_uid = m.customer_uid "
            "AND c.valid_to IS NULL "
            "WHERE m.tenant_uid = %s AND (g.customer_group_uid IS NULL OR c.customer_uid IS NULL)"
        ).format(s=s),
        (tenant,),
    ).fetchone()
    orphans = int(row[0]) if row else 0
    yield _check_result(REFERENCES_LOADED_ROWS, orphans == 0, {"orphan_memberships": orphans})
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
    yield _check_result(
        MEMBER_COUNTS_MATCH_API,
        not mismatched,
        {
            "groups_checked": len(result.api_member_totals),
            "groups_mismatched": len(mismatched),
            "mismatches": dg.MetadataValue.json(
                {g: {"api": a, "loaded": b} for g, (a, b) in list(mismatched.items())[:20]}
            ),
        },
    )
    expected_groups = result.api_group_total - len(result.groups_deleted_during_load)
    yield _check_result(
        GROUP_COUNT_MATCHES_API,
        expected_groups == result.groups_rows,
        {
            "api_total_count": result.api_group_total,
            "deleted_during_load": len(result.groups_deleted_during_load),
            "loaded": result.groups_rows,
        },
    )
    yield dg.AssetCheckResult(
        asset_key=raw_key(TRUE_TO_SPEC.table),
        check_name=TRUE_TO_SPEC.name,
        passed=not result.spec_deviations,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "deviating_values": sum(n for cases in result.spec_deviations.values() for n in cases.values()),
            "by_field": dg.MetadataValue.json(result.spec_deviations),
        },
    )
