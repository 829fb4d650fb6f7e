"""Tenant partitions as data: one dynamic partition per configured tenant, kept in sync from configuration.

The tenant list lives in the Dagster instance (``DynamicPartitionsDefinition(name="tenants")``), not
in the code: adding or removing a tenant is a change to the configuration (``FLOWRETAIL_TENANT_UIDS``
or the file named by ``FLOWRETAIL_TENANTS_FILE``) followed by a sync, done every minute by the
``tenant_partitions_sync`` sensor and on demand by ``flowretail tenants sync``. No process restarts,
and nothing is read when this module is imported.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import dagster as dg

from pipelines.settings import load_settings

SIMULATOR_DEFAULT_TENANTS = ["tenant-1", "tenant-2"]
TENANT_PARTITIONS_NAME = "tenants"
TOKEN_TAG = "flowretail/token"
"""Run tag naming the API token a run spends (its budget); the default token is ``default``.
deploy/dagster.yaml limits concurrent runs per value of this tag."""
DEFAULT_TOKEN_NAME = "default"

tenant_partitions = dg.DynamicPartitionsDefinition(name=TENANT_PARTITIONS_NAME)
"""The one declaration of the tenant partitions; every tenant-sliced asset uses it."""


def configured_tenant_uids() -> list[str]:
    """The tenants the configuration lists now; without a real API configured, the simulator's tenants."""
    settings = load_settings()
    return settings.configured_tenants() or list(SIMULATOR_DEFAULT_TENANTS)


@dataclass(frozen=True)
class TenantSync:
    """What a sync changed: partitions added and deleted, and the registered tenants afterwards."""

    added: list[str]
    removed: list[str]
    registered: list[str]


def plan_tenant_sync(configured: Sequence[str], registered: Sequence[str]) -> tuple[list[str], list[str]]:
    """(to add, to remove) so that the registered partitions equal the configured tenants, in configured order."""
    known = set(registered)
    wanted = set(configured)
    return [t for t in configured if t not in known], [t for t in registered if t not in wanted]


def sync_tenant_partitions(instance: dg.DagsterInstance, configured: Sequence[str] | None = None) -> TenantSync:
    """Make the instance's tenant partitions equal the configured tenants (idempotent)."""
    wanted = list(configured) if configured is not None else configured_tenant_uids()
    to_add, to_remove = plan_tenant_sync(wanted, instance.get_dynamic_partitions(TENANT_PARTITIONS_NAME))
    if to_add:
        instance.add_dynamic_partitions(TENANT_PARTITIONS_NAME, to_add)
    for tenant_uid in to_remove:
        instance.delete_dynamic_partition(TENANT_PARTITIONS_NAME, tenant_uid)
    return TenantSync(to_add, to_remove, list(instance.get_dynamic_partitions(TENANT_PARTITIONS_NAME)))


# Dagster's documented run tags for one run over a range of partitions (what a single-run backfill sets).
PARTITION_RANGE_START_TAG = "dagster/asset_partition_range_start"
PARTITION_RANGE_END_TAG = "dagster/asset_partition_range_end"


def consecutive_tenants(registered: Sequence[str], chosen: Collection[str]) -> list[list[str]]:
    """``chosen`` cut into runs of tenants that are consecutive among the ``registered`` partitions
    (pure): one partition-range run covers each. All tenants, or all that loaded, make one run."""
    ranges: list[list[str]] = []
    current: list[str] = []
    for tenant_uid in registered:
        if tenant_uid in chosen:
            current.append(tenant_uid)
        elif current:
            ranges.append(current)
            current = []
    return [*ranges, current] if current else ranges


def partition_range_tags(tenants: Sequence[str]) -> dict[str, str]:
    """The tags of one run over the consecutive tenant partitions ``tenants[0]`` to ``tenants[-1]``."""
    return {PARTITION_RANGE_START_TAG: tenants[0], PARTITION_RANGE_END_TAG: tenants[-1]}


def tenant_run_tags(tenant_uid: str, tenant_tokens: Mapping[str, str]) -> dict[str, str]:
    """Run tags of a tenant's scheduled and sensor-started runs, read by the run queue's per-token
    limit: the name of the variable holding the tenant's own token (``tenant_tokens``, from
    ``FLOWRETAIL_TENANT_TOKENS``; a name, never the secret), else ``default``. Runs started without
    them (a backfill from the UI) carry the jobs' ``default``."""
    return {TOKEN_TAG: tenant_tokens.get(tenant_uid, DEFAULT_TOKEN_NAME)}


@dg.sensor(
    name="tenant_partitions_sync",
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Keeps the `tenants` partitions equal to the configured tenants, so a tenant is added "
    "or removed by configuration alone (no redeploy).",
)
def tenant_partitions_sync(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    """Adds and deletes partitions through the sensor's result, so each change is logged on its tick."""
    to_add, to_remove = plan_tenant_sync(
        configured_tenant_uids(), context.instance.get_dynamic_partitions(TENANT_PARTITIONS_NAME)
    )
    if not to_add and not to_remove:
        return dg.SkipReason("the tenant partitions already match the configuration")
    requests: list[dg.AddDynamicPartitionsRequest | dg.DeleteDynamicPartitionsRequest] = []
    if to_add:
        requests.append(tenant_partitions.build_add_request(to_add))
    if to_remove:
        requests.append(tenant_partitions.build_delete_request(to_remove))
    return dg.SensorResult(dynamic_partitions_requests=requests)
