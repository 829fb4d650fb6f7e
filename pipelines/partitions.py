"""Tenant partitions: one partition per tenant uid in FLOWRETAIL_TENANT_UIDS."""

from __future__ import annotations

import dagster as dg

from pipelines.settings import load_settings

SIMULATOR_DEFAULT_TENANTS = ["tenant-1", "tenant-2"]


def configured_tenant_uids() -> list[str]:
    """The tenants to load; without a real API configured, the built-in simulator's tenants."""
    settings = load_settings()
    return settings.tenant_uids or list(SIMULATOR_DEFAULT_TENANTS)


tenant_partitions = dg.StaticPartitionsDefinition(configured_tenant_uids())
