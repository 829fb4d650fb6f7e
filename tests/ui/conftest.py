"""A running Dagster UI on the product's workspace, backed by the built-in simulator and a real PostgreSQL.

``ui_server`` is shared by the UI tests of one run (the webserver takes several seconds to start);
tests that write runs into the instance start their own with ``make_ui_environment`` and ``ui_server_for``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines.flowretail.simulator import SimulatorConfig, SimulatorState, build_state, running_simulator
from tests.conftest import fresh_database
from tests.ui.expected import ExpectedDefinitions, expected_from_definitions
from tests.ui.webserver import (
    MakeUiEnvironment,
    UiEnvironment,
    UiServer,
    prepare_dagster_home,
    product_env,
    ui_server_for,
)

SIMULATOR_CONFIG = SimulatorConfig(tenants=2, customers=300, groups=5)


@pytest.fixture(scope="package")
def expected_definitions() -> ExpectedDefinitions:
    return expected_from_definitions()


@pytest.fixture(scope="package")
def ui_simulator() -> Iterator[tuple[SimulatorState, str]]:
    state = build_state(SIMULATOR_CONFIG)
    with running_simulator(state) as base_url:
        yield state, base_url


@pytest.fixture(scope="package")
def ui_database_url(pg_server_url: str) -> Iterator[str]:
    """Like ``database_url`` (a fresh database, dropped afterwards), for the package-scoped server."""
    with fresh_database(pg_server_url, "t_ui") as url:
        yield url


@pytest.fixture(scope="package")
def make_ui_environment(ui_simulator: tuple[SimulatorState, str]) -> MakeUiEnvironment:
    """``make_ui_environment(database_url, workdir)``: the shared simulator, that database, ``workdir/dagster_home``."""
    state, base_url = ui_simulator

    def make(database_url: str, workdir: Path) -> UiEnvironment:
        home = prepare_dagster_home(workdir / "dagster_home")
        env = product_env(
            base_url=base_url,
            token=state.token,
            tenant_uids=state.tenant_uids(),
            database_url=database_url,
            dagster_home=home,
        )
        return UiEnvironment(env=env, dagster_home=home, workdir=workdir)

    return make


@pytest.fixture(scope="package")
def ui_server(
    make_ui_environment: MakeUiEnvironment, ui_database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[UiServer]:
    """One webserver for the read-only UI tests (nothing has run in its instance)."""
    with ui_server_for(make_ui_environment(ui_database_url, tmp_path_factory.mktemp("ui"))) as server:
        yield server
