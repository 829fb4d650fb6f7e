"""The scheduled warehouse load: one run per registered tenant partition."""

from __future__ import annotations

from collections.abc import Iterator

import dagster as dg

from pipelines.partitions import DEFAULT_TOKEN_NAME, TENANT_PARTITIONS_NAME, TOKEN_TAG, tenant_run_tags
from pipelines.settings import Settings

warehouse_load_job = dg.define_asset_job(
    "warehouse_load",
    selection=dg.AssetSelection.groups("ingest", "transform"),
    description="Load one tenant's raw tables, then rebuild the SQL models on top of them.",
    tags={TOKEN_TAG: DEFAULT_TOKEN_NAME},
    # One process per run, not one per step: the model steps take one advisory lock in turn anyway, and
    # a step process costs an interpreter start (seconds, tens of seconds on a busy node) per model.
    executor_def=dg.in_process_executor,
)


def warehouse_load_schedule(settings: Settings) -> dg.ScheduleDefinition:
    """The daily schedule; built when the definitions load (cron and time zone come from the settings)."""

    @dg.schedule(
        name="warehouse_load_daily",
        cron_schedule=settings.schedule_cron,
        execution_timezone=settings.schedule_timezone,
        job=warehouse_load_job,
        description="Daily load of every registered tenant, one run (partition) per tenant, queued "
        "behind the instance's run limits.",
    )
    def warehouse_load_daily(context: dg.ScheduleEvaluationContext) -> Iterator[dg.RunRequest]:
        """One run request per tenant registered at tick time (the instance's partitions, not the code's),
        so tenants load in parallel, fail independently and can be added without a redeploy."""
        stamp = context.scheduled_execution_time.isoformat() if context.scheduled_execution_time else "manual"
        for tenant_uid in context.instance.get_dynamic_partitions(TENANT_PARTITIONS_NAME):
            yield dg.RunRequest(
                run_key=f"{tenant_uid}:{stamp}", partition_key=tenant_uid, tags=tenant_run_tags(tenant_uid)
            )

    return warehouse_load_daily
