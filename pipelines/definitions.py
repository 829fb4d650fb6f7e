"""The one Dagster code location of the product (``dagster dev -w workspace.yaml``)."""

from __future__ import annotations

import dagster as dg

from pipelines.ingest.assets import flowretail_raw_tables, raw_freshness_checks, raw_freshness_sensor
from pipelines.ingest.jobs import cross_tenant_jobs, cross_tenant_sensors, warehouse_load_daily, warehouse_load_job
from pipelines.resources import FlowRetailResource, WarehouseResource
from pipelines.reverse_etl.assets import plan_assets, push_after_warehouse_load, push_assets, segment_push_job
from pipelines.reverse_etl.lifecycle import flowretail_push_orphans, retire_group_job
from pipelines.settings import load_settings
from pipelines.transform.assets import model_assets, model_checks

_settings = load_settings()

defs = dg.Definitions(
    assets=[flowretail_raw_tables, *model_assets, *plan_assets, *push_assets, flowretail_push_orphans],
    asset_checks=[*model_checks, *raw_freshness_checks],
    jobs=[warehouse_load_job, segment_push_job, retire_group_job, *cross_tenant_jobs],
    schedules=[warehouse_load_daily],
    sensors=[push_after_warehouse_load, raw_freshness_sensor, *cross_tenant_sensors],
    resources={
        "flowretail": FlowRetailResource(
            base_url=dg.EnvVar("FLOWRETAIL_BASE_URL"),
            token=dg.EnvVar("FLOWRETAIL_TOKEN"),
            page_size=_settings.page_size,
            page_base=_settings.page_base,
            groups_sort_by=_settings.groups_sort_by,
            members_sort_by=_settings.members_sort_by,
            rate_limit=_settings.rate_limit,
            concurrency=_settings.concurrency,
            connect_timeout=_settings.connect_timeout,
            read_timeout=_settings.read_timeout,
            max_attempts=_settings.max_attempts,
            push_batch_size=_settings.push_batch_size,
        ),
        "warehouse": WarehouseResource(database_url=dg.EnvVar("DATABASE_URL")),
    },
)
