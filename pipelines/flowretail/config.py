"""Settings of one Flow Retail client, validated once where they are built."""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr, field_validator

from pipelines.flowretail.errors import UnsafeIdentifierError
from pipelines.flowretail.secrets import clean_token

PRODUCTION_BASE_URL = "https://api.flowretail.com/v2"

_UID = re.compile(r"[A-Za-z0-9_-]{1,256}")


def check_uid(kind: str, value: str) -> str:
    """Refuse a uid that could change a URL path (``../x``, ``a/b``, ``%2F``, spaces, quotes, ...)."""
    if not isinstance(value, str) or not _UID.fullmatch(value):
        raise UnsafeIdentifierError(kind, str(value))
    return value


def is_loopback_host(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_base_url(url: str) -> str:
    """A base URL must be https, except on loopback (the simulator); returned without a trailing slash."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an http(s) URL such as {PRODUCTION_BASE_URL}, got {url!r}")
    if parts.username or parts.password:
        raise ValueError("must not carry credentials; put the token in FLOWRETAIL_TOKEN")
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise ValueError(f"must use https unless the host is loopback, got {url!r}")
    return url.rstrip("/")


DEFAULT_RATE_LIMIT = 20.0


class ClientTuning(BaseModel):
    """The client settings a deployment tunes: declared once, here.

    ``Settings`` reads them from ``FLOWRETAIL_<FIELD>`` environment variables, the Dagster resource
    inherits them as its config fields, and ``ClientConfig`` extends them, so a setting added here
    reaches every layer without being copied by hand (``build_client_config`` passes them all on).
    """

    page_size: int = Field(default=100, ge=1, le=10_000, description="Items asked per page (servers may cap it)")
    page_base: int = Field(default=1, ge=0, le=1, description="Number of the first page (0 or 1)")
    groups_sort_by: str = Field(default="customerGroupUid", description="Stable sort field of group lists")
    members_sort_by: str = Field(default="customerUid", description="Stable sort field of member lists")
    rate_limit: float | None = Field(
        default=DEFAULT_RATE_LIMIT, gt=0, description="Requests per second per token (None: no client limit)"
    )
    concurrency: int = Field(default=8, ge=1, le=256, description="Requests in flight at once per token")
    connect_timeout: float = Field(default=5.0, gt=0, description="Seconds to open a connection")
    read_timeout: float = Field(default=30.0, gt=0, description="Seconds to wait for each chunk of an answer")
    max_attempts: int = Field(default=6, ge=1, le=50, description="Attempts per request before giving up")
    ca_bundle: str | None = Field(default=None, description="PEM file of the CAs to trust instead of the system's")
    trust_env: bool = Field(
        default=False,
        description="Let httpx read HTTP(S)_PROXY/ALL_PROXY, SSL_CERT_FILE and .netrc from the environment",
    )
    strict_spec: bool = Field(default=False, description="Any spec violation fails the load (see deviations.py)")


class ApiTuning(ClientTuning):
    """``ClientTuning`` plus how the push-back batches its writes: what the environment and the Dagster
    resource configure."""

    push_batch_size: int = Field(default=500, ge=1, le=10_000, description="Customer uids per add/remove call")


class ClientConfig(ClientTuning):
    """Everything a client needs; the token is a SecretStr so it never shows in a repr or a log.

    ``rate_limit_per_second`` is accepted as the old name of ``rate_limit``.
    """

    model_config = ConfigDict(frozen=True, populate_by_name=True, hide_input_in_errors=True)

    base_url: str
    token: SecretStr
    token_env: str = Field(
        default="FLOWRETAIL_TOKEN",
        description="Name of the environment variable the token came from: named in errors, never the token",
    )
    rate_limit: float | None = Field(
        default=DEFAULT_RATE_LIMIT, gt=0, validation_alias=AliasChoices("rate_limit", "rate_limit_per_second")
    )
    max_scan_attempts: int = Field(default=3, ge=1, le=20)
    max_total_wait: float = Field(default=120.0, gt=0)
    backoff_initial: float = Field(default=0.5, ge=0)
    backoff_max: float = Field(default=30.0, ge=0)
    max_response_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        return check_base_url(value)

    @field_validator("token")
    @classmethod
    def _token(cls, value: SecretStr) -> SecretStr:
        return SecretStr(clean_token(value.get_secret_value()))


def build_client_config(
    tuning: ClientTuning, base_url: str, token: str, *, share: int = 1, token_env: str = "FLOWRETAIL_TOKEN"
) -> ClientConfig:
    """The one place a ``ClientConfig`` is built from tuned settings: every ``ClientTuning`` field is
    passed on. ``share`` splits the rate and concurrency between that many processes that use the
    token at once without a shared budget, so together they stay within it. ``token_env`` names the
    variable the token was read from (a tenant's own, see ``FLOWRETAIL_TENANT_TOKENS``)."""
    values = {name: getattr(tuning, name) for name in ClientTuning.model_fields}
    if share > 1:
        values["rate_limit"] = values["rate_limit"] / share if values["rate_limit"] else None
        values["concurrency"] = max(1, values["concurrency"] // share)
    return ClientConfig(base_url=base_url, token=SecretStr(token), token_env=token_env, **values)
