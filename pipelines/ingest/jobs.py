"""The scheduled warehouse load: one run per tenant partition."""

from __future__ import annotations

from collections.abc import Iterator

import dagster as dg

from pipelines.partitions import tenant_partitions
from pipelines.settings import load_settings

warehouse_load_job = dg.define_asset_job(
    "warehouse_load",
    selection=dg.AssetSelection.groups("ingest", "transform"),
    description="Load one tenant's raw tables, then rebuild the SQL models on top of them.",
)

_settings = load_settings()


@dg.schedule(
    name="warehouse_load_daily",
    cron_schedule=_settings.schedule_cron,
    execution_timezone=_settings.schedule_timezone,
    job=warehouse_load_job,
    description="Daily load of every configured tenant, one run (partition) per tenant.",
)
def warehouse_load_daily(context: dg.ScheduleEvaluationContext) -> Iterator[dg.RunRequest]:
    """One run request per tenant so tenants load in parallel and fail independently."""
    stamp = context.scheduled_execution_time.isoformat() if context.scheduled_execution_time else "manual"
    for tenant_uid in tenant_partitions.get_partition_keys():
        yield dg.RunRequest(run_key=f"{tenant_uid}:{stamp}", partition_key=tenant_uid)
