"""Settings reach real Dagster runs: the CA bundle over HTTPS, per-tenant tokens, the shared budget.

Each test builds the code location's resources from the environment it sets (``resources(load_settings())``,
what ``definitions.py`` does at import) and executes the ``warehouse_load`` job in process. The tenants
are the simulator's default ones because the partitions are still fixed when the module is imported.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import psycopg
import pytest
import trustme

from pipelines.flowretail.simulator import SimulatorConfig, SimulatorState, build_state, running_simulator
from pipelines.settings import load_settings
from pipelines.warehouse.api_budget import token_key
from tests.simulator.helpers import https_simulator

_INSTANCES: list[dg.DagsterInstance] = []
TOKEN_ONE = "tok_TENANT_ONE_81c2"
TOKEN_TWO = "tok_TENANT_TWO_d94e"


def _defs_from_environment() -> dg.Definitions:
    from pipelines.definitions import build_defs, resources

    defs = build_defs()
    return dg.Definitions(
        assets=defs.assets, asset_checks=defs.asset_checks, jobs=defs.jobs, resources=resources(load_settings())
    )


def _load(tenant: str) -> dg.ExecuteInProcessResult:
    job = _defs_from_environment().resolve_job_def("warehouse_load")
    _INSTANCES.append(instance := dg.DagsterInstance.ephemeral())  # outlives the result that refers to it
    instance.add_dynamic_partitions("tenants", [tenant])
    return job.execute_in_process(partition_key=tenant, instance=instance, raise_on_error=False)


def _failure_text(result: dg.ExecuteInProcessResult) -> str:
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    return " ".join(str(e.step_failure_data.error.to_string()) for e in failures if e.step_failure_data.error)


def _loaded_groups(database_url: str, tenant: str) -> list[str]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT customer_group_uid FROM flowretail.customer_groups WHERE tenant_uid = %s ORDER BY 1", (tenant,)
        ).fetchall()
    return [r[0] for r in rows]


@contextmanager
def _https_simulator(state: SimulatorState, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """The simulator over HTTPS with a certificate from a throw-away CA; yields the URL and the CA's PEM."""
    ca = trustme.CA()
    leaf = ca.issue_cert("localhost", "127.0.0.1")
    cert, key, ca_pem = tmp_path / "server.pem", tmp_path / "server.key", tmp_path / "ca.pem"
    leaf.private_key_pem.write_to_path(str(key))
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    ca.cert_pem.write_to_path(str(ca_pem))
    with https_simulator(state, cert, key) as base_url:
        yield base_url, ca_pem


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch, database_url: str) -> pytest.MonkeyPatch:
    for name in ("FLOWRETAIL_TOKEN", "FLOWRETAIL_CA_BUNDLE", "FLOWRETAIL_TENANT_TOKENS", "SSL_CERT_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("FLOWRETAIL_RATE_LIMIT", "1000")
    return monkeypatch


def test_a_load_trusts_the_server_only_through_flowretail_ca_bundle(
    environment: pytest.MonkeyPatch, database_url: str, tmp_path: Path
) -> None:
    state = build_state(SimulatorConfig(tenants=2, customers=40, groups=3))
    tenant = state.tenant_uids()[0]
    with _https_simulator(state, tmp_path) as (base_url, ca_pem):
        environment.setenv("FLOWRETAIL_BASE_URL", base_url)
        environment.setenv("FLOWRETAIL_TOKEN", state.token)
        environment.setenv("FLOWRETAIL_TENANT_UIDS", ",".join(state.tenant_uids()))
        environment.setenv("FLOWRETAIL_MAX_ATTEMPTS", "1")
        untrusted = _load(tenant)
        assert not untrusted.success
        assert "CERTIFICATE_VERIFY_FAILED" in _failure_text(untrusted)
        assert state.request_log == []
        assert _loaded_groups(database_url, tenant) == []
        environment.setenv("FLOWRETAIL_CA_BUNDLE", str(ca_pem))
        trusted = _load(tenant)
    assert trusted.success, _failure_text(trusted)
    assert _loaded_groups(database_url, tenant) == sorted(g["customerGroupUid"] for g in state.groups(tenant))


def test_each_tenant_loads_with_its_own_token_and_budget(environment: pytest.MonkeyPatch, database_url: str) -> None:
    state = build_state(SimulatorConfig(tenants=2, customers=40, groups=3))
    one, two = state.tenant_uids()
    state.tenant_tokens = {one: TOKEN_ONE, two: TOKEN_TWO}
    environment.setenv("FLOWRETAIL_TENANT_UIDS", f"{one},{two}")
    environment.setenv("FLOWRETAIL_TENANT_TOKENS", f"{one}=TOKEN_OF_ONE, {two}=TOKEN_OF_TWO")
    environment.setenv("TOKEN_OF_ONE", f" {TOKEN_ONE}\n")
    environment.setenv("TOKEN_OF_TWO", TOKEN_TWO)
    with running_simulator(state) as base_url:
        environment.setenv("FLOWRETAIL_BASE_URL", base_url)
        results = {tenant: _load(tenant) for tenant in (one, two)}
        environment.setenv("TOKEN_OF_ONE", TOKEN_TWO)
        swapped = _load(one)
    for tenant, result in results.items():
        assert result.success, _failure_text(result)
        assert _loaded_groups(database_url, tenant) == sorted(g["customerGroupUid"] for g in state.groups(tenant))
    assert not swapped.success
    # The refusal names the variable the tenant's token came from, not FLOWRETAIL_TOKEN (unset here).
    assert "the token was refused" in _failure_text(swapped) and "check TOKEN_OF_ONE" in _failure_text(swapped)
    assert "FLOWRETAIL_TOKEN" not in _failure_text(swapped)
    with psycopg.connect(database_url) as conn:
        keys = {r[0] for r in conn.execute("SELECT token_key FROM flowretail.api_budgets")}
    assert keys == {token_key(TOKEN_ONE), token_key(TOKEN_TWO)}
    logged = " ".join(repr(e) for r in (*results.values(), swapped) for e in r.all_events)
    assert TOKEN_ONE not in logged and TOKEN_TWO not in logged
    assert TOKEN_ONE not in str(results[one].dagster_run.run_config)


def test_a_tenant_token_variable_must_name_a_configured_tenant(environment: pytest.MonkeyPatch) -> None:
    from pipelines.settings import ConfigError

    environment.setenv("FLOWRETAIL_BASE_URL", "https://api.flowretail.com/v2")
    environment.setenv("FLOWRETAIL_TENANT_UIDS", "north")
    environment.setenv("FLOWRETAIL_TENANT_TOKENS", "south=SOUTH_TOKEN")
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert str(err.value) == "FLOWRETAIL_TENANT_TOKENS: names tenant(s) not in FLOWRETAIL_TENANT_UIDS: south"
    environment.setenv("FLOWRETAIL_TENANT_TOKENS", "north=not a name")
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert str(err.value) == (
        "FLOWRETAIL_TENANT_TOKENS: 'not a name' (token of tenant north) is not an environment variable name"
    )
