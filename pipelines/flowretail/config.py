"""Settings of one Flow Retail client, validated once where they are built."""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from pipelines.flowretail.errors import UnsafeIdentifierError
from pipelines.flowretail.secrets import clean_token

PRODUCTION_BASE_URL = "https://api.flowretail.com/v2"
STAGE_BASE_URL = "https://api.stage.flowretail.com/v2"

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


class ClientConfig(BaseModel):
    """Everything a client needs; the token is a SecretStr so it never shows in a repr or a log."""

    model_config = ConfigDict(frozen=True, hide_input_in_errors=True)

    base_url: str
    token: SecretStr
    page_size: int = Field(default=100, ge=1, le=10_000)
    page_base: int = Field(default=1, ge=0, le=1)
    groups_sort_by: str = "customerGroupUid"
    members_sort_by: str = "customerUid"
    max_scan_attempts: int = Field(default=3, ge=1, le=20)
    rate_limit_per_second: float | None = Field(default=20.0, gt=0)
    concurrency: int = Field(default=8, ge=1, le=256)
    connect_timeout: float = Field(default=5.0, gt=0)
    read_timeout: float = Field(default=30.0, gt=0)
    max_attempts: int = Field(default=6, ge=1, le=50)
    max_total_wait: float = Field(default=120.0, gt=0)
    backoff_initial: float = Field(default=0.5, ge=0)
    backoff_max: float = Field(default=30.0, ge=0)
    max_response_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    ca_bundle: str | None = None
    trust_env: bool = False
    strict_spec: bool = False  # True: any spec violation fails the load (see deviations.py)

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        return check_base_url(value)

    @field_validator("token")
    @classmethod
    def _token(cls, value: SecretStr) -> SecretStr:
        return SecretStr(clean_token(value.get_secret_value()))
