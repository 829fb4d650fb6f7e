"""The one Dagster code location of the product (``dagster dev -w workspace.yaml``).

Nothing is read or built when this module is imported: ``defs`` is a ``@dg.definitions`` loader that
Dagster calls when it loads the code location, and ``build_defs`` caches the result for the process.
The tenants are not part of the definitions at all (dynamic partitions, see ``pipelines.partitions``).
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

import dagster as dg

if TYPE_CHECKING:
    from pipelines.settings import Settings


def resources(settings: Settings) -> dict[str, Any]:
    """The resources of the code location: secrets and URLs bound as ``dg.EnvVar`` (read at run
    time, never stored in run config), the API tuning copied from the settings' ``ApiTuning`` fields."""
    from pipelines.flowretail.config import ApiTuning
    from pipelines.resources import FlowRetailResource, TenantToken, WarehouseResource

    return {
        "flowretail": FlowRetailResource(
            base_url=dg.EnvVar("FLOWRETAIL_BASE_URL"),
            token=dg.EnvVar("FLOWRETAIL_TOKEN") if settings.needs_default_token() else None,
            tenant_tokens=[
                TenantToken(tenant_uid=tenant, token_env=name, token=dg.EnvVar(name))
                for tenant, name in settings.tenant_tokens.items()
            ],
            api_budget_url=dg.EnvVar("DATABASE_URL") if settings.shared_budget else None,
            **settings.model_dump(include=set(ApiTuning.model_fields)),
        ),
        "warehouse": WarehouseResource(database_url=dg.EnvVar("DATABASE_URL")),
    }


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
    from pipelines.reverse_etl.assets import plan_assets, push_after_warehouse_load, push_assets, segment_push_job
    from pipelines.reverse_etl.lifecycle import flowretail_push_orphans, retire_group_job
    from pipelines.settings import load_settings
    from pipelines.transform.assets import model_assets, model_checks

    settings = load_settings()
    return dg.Definitions(
        assets=[flowretail_raw_tables, *model_assets, *plan_assets, *push_assets, flowretail_push_orphans],
        asset_checks=[*model_checks, *raw_freshness_checks],
        jobs=[warehouse_load_job, segment_push_job, retire_group_job, *cross_tenant_jobs],
        schedules=[warehouse_load_schedule(settings)],
        sensors=[push_after_warehouse_load, raw_freshness_sensor, *cross_tenant_sensors, tenant_partitions_sync],
        resources=resources(settings),
    )


@dg.definitions
def defs() -> dg.Definitions:
    """What ``dagster dev``, the code server and the daemon load."""
    return build_defs()
