"""The scheduled warehouse load: one run per registered tenant partition, then the models spanning tenants.

``warehouse_load`` (partitioned by tenant) loads one tenant's raw tables and builds that tenant's
slice of every per-tenant model, so tenants run in parallel and fail independently. Models declared
``tenant_scope='all'`` read every tenant's rows: ``warehouse_models_all_tenants`` builds them once
per tick, launched by the sensor ``models_all_tenants_after_loads`` when every tenant run of that
tick has finished (successfully or not: a failed tenant keeps its previous rows).
"""

from __future__ import annotations

from collections.abc import Iterator

import dagster as dg

from pipelines.ingest.assets import INGEST_GROUP
from pipelines.partitions import DEFAULT_TOKEN_NAME, TENANT_PARTITIONS_NAME, TOKEN_TAG, tenant_run_tags
from pipelines.settings import Settings
from pipelines.transform.assets import ALL_TENANTS_GROUP, TENANT_GROUP, project

# Every tenant run started by one schedule tick carries the tick in this tag.
TICK_TAG = "flowretail/tick"

warehouse_load_job = dg.define_asset_job(
    "warehouse_load",
    selection=dg.AssetSelection.groups(INGEST_GROUP, TENANT_GROUP),
    description="Load one tenant's raw tables, then build that tenant's slice of the SQL models.",
    tags={TOKEN_TAG: DEFAULT_TOKEN_NAME},
    # One process per run, not one per step: a tenant's model slices are small, and a step process
    # costs an interpreter start and a definitions load (seconds, tens of seconds on a busy node) per model.
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
                run_key=f"{tenant_uid}:{stamp}",
                partition_key=tenant_uid,
                tags={**tenant_run_tags(tenant_uid, settings.tenant_tokens), TICK_TAG: stamp},
            )

    return warehouse_load_daily


def finished_ticks(runs: list[dg.DagsterRun], tenants: list[str]) -> list[str]:
    """Ticks whose runs cover every tenant and have all finished, oldest first (pure)."""
    by_tick: dict[str, list[dg.DagsterRun]] = {}
    for run in runs:
        if TICK_TAG in run.tags:
            by_tick.setdefault(run.tags[TICK_TAG], []).append(run)
    done = []
    for tick, tick_runs in sorted(by_tick.items()):
        covered = {run.tags.get("dagster/partition") for run in tick_runs}
        if set(tenants) <= covered and all(run.is_finished for run in tick_runs):
            done.append(tick)
    return done


cross_tenant_jobs: list[dg.UnresolvedAssetJobDefinition] = []
cross_tenant_sensors: list[dg.SensorDefinition] = []

if project.cross_tenant_models():
    models_all_tenants_job = dg.define_asset_job(
        "warehouse_models_all_tenants",
        selection=dg.AssetSelection.groups(ALL_TENANTS_GROUP),
        description="Build the models declared tenant_scope='all', once per tick, after every tenant's load.",
    )

    @dg.sensor(
        name="models_all_tenants_after_loads",
        job=models_all_tenants_job,
        minimum_interval_seconds=60,
        description="Once every tenant run of a schedule tick has finished, build the models spanning tenants.",
    )
    def models_all_tenants_after_loads(context: dg.SensorEvaluationContext) -> Iterator[dg.RunRequest]:
        tenants = list(context.instance.get_dynamic_partitions(TENANT_PARTITIONS_NAME))
        runs = context.instance.get_runs(filters=dg.RunsFilter(job_name="warehouse_load"), limit=4 * len(tenants))
        for tick in finished_ticks(list(runs), tenants):
            yield dg.RunRequest(run_key=f"all-tenants:{tick}", tags={TICK_TAG: tick})

    cross_tenant_jobs.append(models_all_tenants_job)
    cross_tenant_sensors.append(models_all_tenants_after_loads)
