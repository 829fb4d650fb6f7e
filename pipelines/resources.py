"""Dagster resources: typed settings for the Flow Retail client and the warehouse; secrets via EnvVar."""

from __future__ import annotations

from typing import Any

import dagster as dg
import psycopg
from pydantic import Field, SecretStr, ValidationError

from pipelines.flowretail.client import AsyncFlowRetailClient
from pipelines.flowretail.config import ClientConfig
from pipelines.settings import ConfigError
from pipelines.warehouse.postgres import mask_url

_CLIENT_ENV = {
    "base_url": "FLOWRETAIL_BASE_URL",
    "token": "FLOWRETAIL_TOKEN",
    "page_size": "FLOWRETAIL_PAGE_SIZE",
    "page_base": "FLOWRETAIL_PAGE_BASE",
    "rate_limit_per_second": "FLOWRETAIL_RATE_LIMIT",
    "concurrency": "FLOWRETAIL_CONCURRENCY",
}


class FlowRetailResource(dg.ConfigurableResource):  # type: ignore[misc]
    """Connection settings of the Flow Retail API; one client (one connection pool) per step."""

    base_url: str = Field(description="API base URL, e.g. https://api.flowretail.com/v2")
    token: str = Field(description="Integration token; always configured with dg.EnvVar('FLOWRETAIL_TOKEN')")
    page_size: int = Field(default=100, description="Items asked per page (servers may cap it)")
    page_base: int = Field(default=1, description="Number of the first page (0 or 1)")
    groups_sort_by: str = "customerGroupUid"
    members_sort_by: str = "customerUid"
    rate_limit: float = Field(default=20.0, description="Client-side limit, requests per second")
    concurrency: int = Field(default=8, description="Requests in flight at once")
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    max_attempts: int = 6
    push_batch_size: int = Field(default=500, description="Customer uids per add/remove call")
    trust_env: bool = Field(default=False, description="FLOWRETAIL_TRUST_ENV: take proxies/CA files from the env")

    def client_config(self, share: int = 1) -> ClientConfig:
        """The client settings; ``share`` splits the rate limit and concurrency between that many
        processes running at once, so together they stay within the configured budget."""
        try:
            return ClientConfig(
                base_url=self.base_url,
                token=SecretStr(self.token),
                page_size=self.page_size,
                page_base=self.page_base,
                groups_sort_by=self.groups_sort_by,
                members_sort_by=self.members_sort_by,
                rate_limit_per_second=self.rate_limit / share,
                concurrency=max(1, self.concurrency // share),
                connect_timeout=self.connect_timeout,
                read_timeout=self.read_timeout,
                max_attempts=self.max_attempts,
                trust_env=self.trust_env,
            )
        except ValidationError as exc:
            problems = "; ".join(
                f"{_CLIENT_ENV.get(str(e['loc'][0]), str(e['loc'][0]))}: {str(e['msg']).removeprefix('Value error, ')}"
                for e in exc.errors()
            )
            raise ConfigError(problems) from None

    def make_client(self, share: int = 1) -> AsyncFlowRetailClient:
        """A new async client; create it inside the event loop that will use it, and close it."""
        return AsyncFlowRetailClient(self.client_config(share))


class WarehouseResource(dg.ConfigurableResource):  # type: ignore[misc]
    """The PostgreSQL warehouse; the URL comes from dg.EnvVar('DATABASE_URL')."""

    database_url: str = Field(description="PostgreSQL URL; configured with dg.EnvVar('DATABASE_URL')")

    def connect(self, **kwargs: Any) -> psycopg.Connection[Any]:
        try:
            return psycopg.connect(self.database_url, **kwargs)
        except psycopg.OperationalError as exc:
            raise ConfigError(
                f"DATABASE_URL: cannot connect to {mask_url(self.database_url)}: {mask_url(str(exc))}"
            ) from None

    @property
    def masked_url(self) -> str:
        return mask_url(self.database_url)
