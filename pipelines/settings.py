"""Configuration from the environment, validated at start with one line naming the variable."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from pipelines.flowretail.config import (
    ApiTuning,
    ClientConfig,
    ClientTuning,
    build_client_config,
    check_base_url,
    check_uid,
)
from pipelines.flowretail.errors import UnsafeIdentifierError
from pipelines.flowretail.secrets import clean_token

_ENV_PREFIX = "FLOWRETAIL_"
_CRON_FIELD = re.compile(r"^[\d*/,\-A-Za-z]+$")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class ConfigError(ValueError):
    """Missing or invalid configuration; the message is one line that names the variable."""


class Settings(BaseSettings, ApiTuning):
    """Every environment variable the product reads (see `.env.example`); the API tuning fields
    (``FLOWRETAIL_PAGE_SIZE``, ``FLOWRETAIL_RATE_LIMIT``, ...) are inherited from ``ApiTuning``."""

    model_config = SettingsConfigDict(
        env_prefix=_ENV_PREFIX, extra="ignore", populate_by_name=True, hide_input_in_errors=True
    )

    base_url: str | None = None
    token: SecretStr | None = None
    tenant_uids: Annotated[list[str], NoDecode] = Field(default_factory=list)
    tenants_file: str | None = None
    tenant_tokens: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    shared_budget: bool = True
    schedule_cron: str = "0 3 * * *"
    schedule_timezone: str = "UTC"
    database_url: SecretStr | None = Field(default=None, validation_alias="DATABASE_URL")

    @field_validator("tenant_uids", mode="before")
    @classmethod
    def _split_tenants(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("tenant_uids")
    @classmethod
    def _check_tenants(cls, value: list[str]) -> list[str]:
        for uid in value:
            try:
                check_uid("tenant uid", uid)
            except UnsafeIdentifierError as exc:
                raise ValueError(str(exc).replace("; no request was sent", "")) from None
        if len(set(value)) != len(value):
            raise ValueError("lists a tenant twice")
        return value

    @field_validator("token")
    @classmethod
    def _check_token(cls, value: SecretStr | None) -> SecretStr | None:
        return SecretStr(clean_token(value.get_secret_value())) if value is not None else None

    @field_validator("tenant_tokens", mode="before")
    @classmethod
    def _split_tenant_tokens(cls, value: Any) -> Any:
        """``tenant-a=ACME_TOKEN,tenant-b=OTHER_TOKEN``: each tenant names the variable holding its token."""
        if not isinstance(value, str):
            return value
        pairs: dict[str, str] = {}
        for part in (p.strip() for p in value.split(",")):
            if not part:
                continue
            tenant, sep, name = (x.strip() for x in part.partition("="))
            if not sep or not tenant or not name:
                raise ValueError(f"expected tenant_uid=ENV_VAR_NAME pairs separated by commas, got {part!r}")
            if tenant in pairs:
                raise ValueError(f"names tenant {tenant!r} twice")
            pairs[tenant] = name
        return pairs

    @field_validator("tenant_tokens")
    @classmethod
    def _check_tenant_tokens(cls, value: dict[str, str]) -> dict[str, str]:
        for tenant, name in value.items():
            try:
                check_uid("tenant uid", tenant)
            except UnsafeIdentifierError as exc:
                raise ValueError(str(exc).replace("; no request was sent", "")) from None
            if not _ENV_NAME.fullmatch(name):
                raise ValueError(f"{name!r} (token of tenant {tenant}) is not an environment variable name")
        return value

    def needs_default_token(self) -> bool:
        """FLOWRETAIL_TOKEN is needed unless every configured tenant has a token of its own."""
        return not self.tenant_uids or any(t not in self.tenant_tokens for t in self.tenant_uids)

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str | None) -> str | None:
        return check_base_url(value) if value else None

    @field_validator("schedule_cron")
    @classmethod
    def _check_cron(cls, value: str) -> str:
        fields = value.split()
        if len(fields) != 5 or not all(_CRON_FIELD.match(f) for f in fields):
            raise ValueError(f"must be a 5-field cron expression such as '0 3 * * *', got {value!r}")
        return value

    @field_validator("schedule_timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"is not a known IANA time zone: {value!r}") from None
        return value

    def configured_tenants(self) -> list[str]:
        """FLOWRETAIL_TENANT_UIDS, then the uids of FLOWRETAIL_TENANTS_FILE (one a line, ``#`` comments),
        read on every call so that editing the file adds or removes a tenant without a restart."""
        uids = list(self.tenant_uids)
        if self.tenants_file:
            try:
                lines = Path(self.tenants_file).read_text("utf-8").splitlines()
            except OSError as exc:
                raise ConfigError(f"FLOWRETAIL_TENANTS_FILE: cannot read {self.tenants_file}: {exc.strerror}") from None
            from_file = [line.split("#", 1)[0].strip() for line in lines]
            uids += [uid for uid in from_file if uid and uid not in uids]
            try:
                self._check_tenants(uids)
            except ValueError as exc:
                raise ConfigError(f"FLOWRETAIL_TENANTS_FILE: {exc}") from None
        return uids


def client_config_or_config_error(
    tuning: ClientTuning, base_url: str, token: str, *, share: int = 1, token_env: str = "FLOWRETAIL_TOKEN"
) -> ClientConfig:
    """``build_client_config`` with a validation error turned into a ConfigError naming the variables."""
    try:
        return build_client_config(tuning, base_url, token, share=share, token_env=token_env)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from None


def _env_name(loc: tuple[Any, ...]) -> str:
    field = str(loc[0]) if loc else "?"
    if field in ("database_url", "DATABASE_URL"):
        return "DATABASE_URL"
    return _ENV_PREFIX + field.upper()


def describe_validation_error(exc: ValidationError) -> str:
    """One line per problem, each naming the environment variable."""
    parts = []
    for error in exc.errors():
        message = str(error["msg"]).removeprefix("Value error, ")
        parts.append(f"{_env_name(tuple(error['loc']))}: {message}")
    return "; ".join(parts)


def load_settings() -> Settings:
    """Read the environment; raise ConfigError with one line naming each bad variable."""
    try:
        settings = Settings()
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from None
    if settings.base_url and not settings.tenant_uids and not settings.tenants_file:
        raise ConfigError("FLOWRETAIL_TENANT_UIDS is not set: list the tenant uids to load, comma-separated")
    unknown = sorted(set(settings.tenant_tokens) - set(settings.tenant_uids)) if settings.tenant_uids else []
    if unknown:
        raise ConfigError(
            f"FLOWRETAIL_TENANT_TOKENS: names tenant(s) not in FLOWRETAIL_TENANT_UIDS: {', '.join(unknown)}"
        )
    return settings
