"""The one Dagster code location of the product (``dagster dev -w workspace.yaml``).

Nothing is read or built when this module is imported: ``defs`` is a ``@dg.definitions`` loader that
Dagster calls when it loads the code location, and ``build_defs`` caches the result for the process.
The tenants are not part of the definitions at all (dynamic partitions, see ``pipelines.partitions``).
"""

from __future__ import annotations

from functools import cache

import dagster as dg


@cache
def build_defs() -> dg.Definitions:
    """Settings, SQL project and push targets are read here, once per process, not at import."""
    from pipelines.ingest.assets import flowretail_raw_tables, raw_freshness_checks, raw_freshness_sensor
    from pipelines.ingest.jobs import (
        cross_tenant_jobs,
        cross_tenant_sensors,
        warehouse_load_job,
        warehouse_load_schedule,
    )
    from pipelines.partitions import tenant_partitions_sync
    from pipelines.resources import FlowRetailResource, WarehouseResource
    from pipelines.reverse_etl.assets import plan_assets, push_after_warehouse_load, push_assets, segment_push_job
    from pipelines.settings import load_settings
    from pipelines.transform.assets import model_assets, model_checks

    _settings = load_settings()
    return dg.Definitions(
        assets=[flowretail_raw_tables, *model_assets, *plan_assets, *push_assets],
        asset_checks=[*model_checks, *raw_freshness_checks],
        jobs=[warehouse_load_job, segment_push_job, *cross_tenant_jobs],
        schedules=[warehouse_load_schedule(_settings)],
        sensors=[push_after_warehouse_load, raw_freshness_sensor, *cross_tenant_sensors, tenant_partitions_sync],
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


@dg.definitions
def defs() -> dg.Definitions:
    """What ``dagster dev``, the code server and the daemon load."""
    return build_defs()


def segment_push_job_def() -> dg.JobDefinition:
    """The resolved ``segment_push`` job, for ``dg.reconstructable``: run outside ``execute_in_process``
    it pushes segments in parallel step processes (its multiprocess executor)."""
    return build_defs().resolve_job_def("segment_push")
