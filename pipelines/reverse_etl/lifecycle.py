"""Dagster side of the group lifecycle: the orphan report of every push, and the retire job.

- ``flowretail_push_orphans`` (per tenant, part of ``segment_push``) lists the registered groups no
  segment declares any more, with a WARNING check: an orphan is a fact to act on, not a failure.
- ``retire_group`` (per tenant) empties and deletes one group the product created; it is the only
  place that deletes a group, and it runs only when asked (``flowretail push --retire``).

No ``from __future__ import annotations``: Dagster inspects the ``context`` annotation.
"""

import asyncio
from collections.abc import Iterator
from typing import Any

import dagster as dg

from pipelines.metadata import md_table, table_schema
from pipelines.partitions import tenant_partitions
from pipelines.resources import FlowRetailResource, WarehouseResource
from pipelines.reverse_etl.assets import ORPHANS_KEY, OWNERS, push_targets
from pipelines.segment_push.audit import ensure_push_tables
from pipelines.segment_push.lifecycle import OrphanGroup, Retirement, find_orphans, record_orphans, retire_group
from pipelines.warehouse.schema import SCHEMA

ORPHAN_CHECK = "no_orphan_groups"


def declared_groups() -> dict[str, str]:
    """Every group uid a current segment pushes to, with that segment."""
    return {target.group_uid: model.name for model, target in push_targets()}


def _orphan_table(orphans: list[OrphanGroup]) -> str:
    return md_table(
        ["group", "last segment", "ownership", "live size", "last push"],
        [
            (
                o.group_uid,
                o.segment,
                o.ownership,
                "gone" if o.live_size is None else o.live_size,
                o.last_push_at.isoformat(timespec="seconds") if o.last_push_at else "never",
            )
            for o in orphans
        ],
    )


@dg.asset(
    key=ORPHANS_KEY,
    partitions_def=tenant_partitions,
    group_name="reverse_etl",
    owners=OWNERS,
    kinds={"python", "postgres"},
    description=(
        "Customer groups this product registered that no segment declares any more (segment file gone or "
        "push_to_group_uid changed), with their live size; recorded in flowretail.segment_push_orphans. "
        "Nothing is deleted: retire a group with `flowretail push --retire GROUP_UID`."
    ),
    check_specs=[
        dg.AssetCheckSpec(
            ORPHAN_CHECK,
            asset=ORPHANS_KEY,
            description="No registered group outlives its segment (a warning: retire or re-declare the group).",
        )
    ],
)
def flowretail_push_orphans(
    context: dg.AssetExecutionContext, flowretail: FlowRetailResource, warehouse: WarehouseResource
) -> Iterator[Any]:
    tenant_uid = context.partition_key
    with warehouse.connect(autocommit=True) as conn:
        ensure_push_tables(conn)

        async def scan() -> list[OrphanGroup]:
            async with flowretail.make_client() as client:
                return await find_orphans(client, conn, tenant_uid, declared_groups())

        orphans = asyncio.run(scan())
        record_orphans(conn, context.run.run_id, tenant_uid, orphans)
        orphan_schema = table_schema(conn, SCHEMA, "segment_push_orphans")
    for orphan in orphans:
        context.log.warning(
            f"orphan group {orphan.group_uid} (last segment {orphan.segment}, live size {orphan.live_size}): "
            "no segment declares it any more"
        )
    table = _orphan_table(orphans) if orphans else "(none)"
    yield dg.MaterializeResult(
        metadata={
            "orphans": dg.MetadataValue.md(table),
            "orphan_count": len(orphans),
            "dagster/column_schema": orphan_schema,
        }
    )
    yield dg.AssetCheckResult(
        check_name=ORPHAN_CHECK,
        passed=not orphans,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"orphan_count": len(orphans), "orphans": dg.MetadataValue.md(table)},
    )


class RetireConfig(dg.Config):  # type: ignore[misc]
    """Run config of ``retire_group``: which group; a dry run only reports; keep_group empties without deleting."""

    group_uid: str
    dry_run: bool = False
    keep_group: bool = False


@dg.op(description="Empty one group the product created in audited batches, then delete it unless kept.")
def retire_customer_group(
    context: dg.OpExecutionContext, config: RetireConfig, flowretail: FlowRetailResource, warehouse: WarehouseResource
) -> None:
    tenant_uid = context.partition_key
    with warehouse.connect(autocommit=True) as conn:
        ensure_push_tables(conn)

        async def retire() -> Retirement:
            async with flowretail.make_client() as client:
                return await retire_group(
                    client,
                    conn,
                    context.run.run_id,
                    tenant_uid,
                    config.group_uid,
                    declared=declared_groups(),
                    batch_size=flowretail.push_batch_size,
                    dry_run=config.dry_run,
                    keep_group=config.keep_group,
                )

        result = asyncio.run(retire())
    context.log.info(f"retire {config.group_uid} / {tenant_uid}: {result.status}: {result.detail}")


@dg.job(
    name="retire_group",
    partitions_def=tenant_partitions,
    description="Retire one customer group of one tenant: empty it, delete it (or keep it empty), mark it retired.",
)
def retire_group_job() -> None:
    retire_customer_group()
