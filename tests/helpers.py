"""Small helpers shared by tests of several areas."""

from __future__ import annotations

from pipelines.flowretail.config import ClientConfig
from pipelines.settings import Settings, client_config_or_config_error


def client_config_of(settings: Settings) -> ClientConfig:
    """The client settings the product builds for a tenant using FLOWRETAIL_TOKEN: the settings'
    API tuning through ``client_config_or_config_error``, as ``FlowRetailResource.make_client`` does."""
    assert settings.base_url and settings.token, "set FLOWRETAIL_BASE_URL and FLOWRETAIL_TOKEN"
    return client_config_or_config_error(settings, settings.base_url, settings.token.get_secret_value())
