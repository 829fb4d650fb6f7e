"""Configuration errors: one line that names the variable and says what is wrong."""

from __future__ import annotations

import certifi
import pytest

from pipelines.settings import ConfigError, load_settings
from tests.helpers import client_config_of


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "FLOWRETAIL_BASE_URL",
        "FLOWRETAIL_TOKEN",
        "FLOWRETAIL_TENANT_UIDS",
        "DATABASE_URL",
        "FLOWRETAIL_PAGE_SIZE",
        "FLOWRETAIL_SCHEDULE_CRON",
        "FLOWRETAIL_SCHEDULE_TIMEZONE",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"FLOWRETAIL_BASE_URL": "http://example.com/v2"},
            "FLOWRETAIL_BASE_URL: must use https unless the host is loopback, got 'http://example.com/v2'",
        ),
        (
            {"FLOWRETAIL_BASE_URL": "https://api.flowretail.com/v2"},
            "FLOWRETAIL_TENANT_UIDS is not set: list the tenant uids to load, comma-separated",
        ),
        (
            {"FLOWRETAIL_TENANT_UIDS": "ok,../etc"},
            "FLOWRETAIL_TENANT_UIDS: tenant uid '../etc' is not a valid UID (allowed: letters, digits, '-' and '_')",
        ),
        ({"FLOWRETAIL_TENANT_UIDS": "a,a"}, "FLOWRETAIL_TENANT_UIDS: lists a tenant twice"),
        ({"FLOWRETAIL_PAGE_SIZE": "0"}, "FLOWRETAIL_PAGE_SIZE: Input should be greater than or equal to 1"),
        (
            {"FLOWRETAIL_PAGE_SIZE": "many"},
            "FLOWRETAIL_PAGE_SIZE: Input should be a valid integer, unable to parse string as an integer",
        ),
        (
            {"FLOWRETAIL_SCHEDULE_CRON": "daily"},
            "FLOWRETAIL_SCHEDULE_CRON: must be a 5-field cron expression such as '0 3 * * *', got 'daily'",
        ),
        (
            {"FLOWRETAIL_SCHEDULE_TIMEZONE": "Mars/Olympus"},
            "FLOWRETAIL_SCHEDULE_TIMEZONE: is not a known IANA time zone: 'Mars/Olympus'",
        ),
    ],
)
def test_invalid_configuration_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert str(err.value) == message
    assert "\n" not in str(err.value)


def test_a_real_tenant_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWRETAIL_BASE_URL", "https://api.stage.flowretail.com/v2/")
    monkeypatch.setenv("FLOWRETAIL_TOKEN", "secret-token-value")
    monkeypatch.setenv("FLOWRETAIL_TENANT_UIDS", " north-1, south_2 ")
    settings = load_settings()
    assert settings.tenant_uids == ["north-1", "south_2"]
    config = client_config_of(settings)
    assert config.base_url == "https://api.stage.flowretail.com/v2"
    assert "secret-token-value" not in repr(settings) + repr(config)


def test_missing_token_is_named() -> None:
    from pipelines.resources import FlowRetailResource

    resource = FlowRetailResource(base_url="https://api.flowretail.com/v2", token=None)
    with pytest.raises(ConfigError, match=r"^FLOWRETAIL_TOKEN is not set and tenant t1 has no token of its own"):
        resource.make_client("t1")


def test_the_api_settings_are_declared_once_and_reach_every_layer(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipelines.flowretail.config import ApiTuning, ClientTuning
    from pipelines.resources import FlowRetailResource
    from pipelines.settings import Settings

    assert set(ApiTuning.model_fields) <= set(Settings.model_fields) & set(FlowRetailResource.model_fields)
    monkeypatch.setenv("FLOWRETAIL_BASE_URL", "https://api.stage.flowretail.com/v2")
    monkeypatch.setenv("FLOWRETAIL_TOKEN", "secret-token-value")
    monkeypatch.setenv("FLOWRETAIL_TENANT_UIDS", "north")
    monkeypatch.setenv("FLOWRETAIL_CA_BUNDLE", certifi.where())
    monkeypatch.setenv("FLOWRETAIL_PAGE_SIZE", "250")
    settings = load_settings()
    tuning = settings.model_dump(include=set(ApiTuning.model_fields))
    resource = FlowRetailResource(base_url="https://api.stage.flowretail.com/v2", token="secret-token-value", **tuning)
    config = resource.make_client("north").config
    assert {name: getattr(config, name) for name in ClientTuning.model_fields} == {
        name: getattr(settings, name) for name in ClientTuning.model_fields
    }
    assert (config.ca_bundle, config.page_size) == (certifi.where(), 250)
    assert client_config_of(settings) == config
