"""Dagster resources: typed settings for the Flow Retail client and the warehouse; secrets via EnvVar."""

from __future__ import annotations

from typing import Any

import dagster as dg
import psycopg
from pydantic import Field

from pipelines.flowretail.budget import ApiBudget
from pipelines.flowretail.client import AsyncFlowRetailClient
from pipelines.flowretail.config import ApiTuning
from pipelines.flowretail.secrets import clean_token
from pipelines.settings import ConfigError, client_config_or_config_error
from pipelines.warehouse.api_budget import BudgetLimits, SharedBudget
from pipelines.warehouse.postgres import mask_url, masked_database_url


class TenantToken(dg.Config):  # type: ignore[misc]
    """A tenant's own integration token; ``token`` is always ``dg.EnvVar(<token_env>)``."""

    tenant_uid: str
    token_env: str = Field(description="Name of the environment variable holding the token (for messages)")
    token: str


class FlowRetailResource(dg.ConfigurableResource, ApiTuning):  # type: ignore[misc]
    """Connection settings of the Flow Retail API; one client (one connection pool) per step.

    The tuning fields (page size, rate limit, CA bundle, ...) are ``ApiTuning``'s, declared once.
    With ``api_budget_url`` every client draws from the budget its token shares with every other
    process in the warehouse; without it each process keeps its own in-memory limiter.
    """

    base_url: str = Field(description="API base URL, e.g. https://api.flowretail.com/v2")
    token: str | None = Field(
        default=None, description="Integration token of tenants without their own; dg.EnvVar('FLOWRETAIL_TOKEN')"
    )
    tenant_tokens: list[TenantToken] = Field(default_factory=list, description="Tenants with their own token")
    api_budget_url: str | None = Field(
        default=None, description="PostgreSQL holding the shared API budget; dg.EnvVar('DATABASE_URL')"
    )

    def token_for(self, tenant_uid: str | None) -> str:
        """The tenant's own token if it has one, else FLOWRETAIL_TOKEN; the value is never logged."""
        return self._token_and_variable(tenant_uid)[0]

    def token_variable(self, tenant_uid: str | None) -> str:
        """The name of the environment variable the tenant's token comes from (never the token)."""
        own = next((t for t in self.tenant_tokens if t.tenant_uid == tenant_uid), None)
        return own.token_env if own is not None else "FLOWRETAIL_TOKEN"

    def _token_and_variable(self, tenant_uid: str | None) -> tuple[str, str]:
        own = next((t for t in self.tenant_tokens if t.tenant_uid == tenant_uid), None)
        raw = own.token if own is not None else self.token
        name = self.token_variable(tenant_uid)
        if raw is None:
            raise ConfigError(
                f"FLOWRETAIL_TOKEN is not set and tenant {tenant_uid} has no token of its own in FLOWRETAIL_TENANT_TOKENS"
            )
        try:
            return clean_token(raw), name
        except ValueError as exc:
            raise ConfigError(f"{name}: the token {exc}") from None

    def make_client(self, tenant_uid: str | None = None, share: int = 1) -> AsyncFlowRetailClient:
        """A new async client for the tenant's token; create it inside the event loop that will use
        it, and close it. ``share`` splits an in-memory budget between that many processes running
        at once; a shared budget needs no split, it is one budget whoever draws from it."""
        token, variable = self._token_and_variable(tenant_uid)
        shared = self.api_budget_url is not None
        config = client_config_or_config_error(
            self, self.base_url, token, share=1 if shared else share, token_env=variable
        )
        budget: ApiBudget | None = None
        if self.api_budget_url is not None:
            budget = SharedBudget(self.api_budget_url, token, BudgetLimits(config.rate_limit, config.concurrency))
        return AsyncFlowRetailClient(config, budget=budget)


class WarehouseResource(dg.ConfigurableResource):  # type: ignore[misc]
    """The PostgreSQL warehouse; the URL comes from dg.EnvVar('DATABASE_URL')."""

    database_url: str = Field(description="PostgreSQL URL; configured with dg.EnvVar('DATABASE_URL')")

    def connect(self, **kwargs: Any) -> psycopg.Connection[Any]:
        try:
            return psycopg.connect(self.database_url, **kwargs)
        except psycopg.OperationalError as exc:
            raise ConfigError(
                f"DATABASE_URL: cannot connect to {masked_database_url(self.database_url)}: {mask_url(str(exc))}"
            ) from None
