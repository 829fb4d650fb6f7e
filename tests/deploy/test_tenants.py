"""Tenants as data: the dynamic partitions follow the configuration (env or file) without a restart,
and importing the code location does no work."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from pipelines.partitions import (
    TENANT_PARTITIONS_NAME,
    plan_tenant_sync,
    sync_tenant_partitions,
    tenant_partitions_sync,
)
from pipelines.settings import ConfigError, load_settings


def test_the_plan_adds_in_configured_order_and_removes_what_is_no_longer_configured() -> None:
    assert plan_tenant_sync(["c", "a", "b"], ["a", "x"]) == (["c", "b"], ["x"])
    assert plan_tenant_sync(["a"], ["a"]) == ([], [])
    assert plan_tenant_sync([], ["a", "b"]) == ([], ["a", "b"])


def test_sync_adds_and_removes_partitions_in_the_instance() -> None:
    instance = dg.DagsterInstance.ephemeral()
    first = sync_tenant_partitions(instance, ["t-1", "t-2"])
    assert (first.added, first.removed, first.registered) == (["t-1", "t-2"], [], ["t-1", "t-2"])
    second = sync_tenant_partitions(instance, ["t-2", "t-3"])
    assert (second.added, second.removed) == (["t-3"], ["t-1"])
    assert sorted(instance.get_dynamic_partitions(TENANT_PARTITIONS_NAME)) == ["t-2", "t-3"]


def test_the_sensor_follows_an_edited_tenants_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    tenants_file = tmp_path / "tenants.txt"
    tenants_file.write_text("# fleet\nacme\nglobex  # since May\n", "utf-8")
    monkeypatch.setenv("FLOWRETAIL_TENANTS_FILE", str(tenants_file))
    monkeypatch.setenv("FLOWRETAIL_TENANT_UIDS", "initech")
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(TENANT_PARTITIONS_NAME, ["initech", "umbrella"])
    result = tenant_partitions_sync(dg.build_sensor_context(instance=instance))
    assert isinstance(result, dg.SensorResult)
    assert [(type(r).__name__, list(r.partition_keys)) for r in result.dynamic_partitions_requests or []] == [
        ("AddDynamicPartitionsRequest", ["acme", "globex"]),
        ("DeleteDynamicPartitionsRequest", ["umbrella"]),
    ]
    sync_tenant_partitions(instance)
    skipped = tenant_partitions_sync(dg.build_sensor_context(instance=instance))
    assert isinstance(skipped, dg.SkipReason)
    tenants_file.write_text("acme\n", "utf-8")
    assert sync_tenant_partitions(instance).removed == ["globex"]


def test_a_bad_uid_in_the_tenants_file_names_the_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    tenants_file = tmp_path / "tenants.txt"
    tenants_file.write_text("acme\nbad uid\n", "utf-8")
    monkeypatch.setenv("FLOWRETAIL_TENANTS_FILE", str(tenants_file))
    with pytest.raises(ConfigError) as raised:
        load_settings().configured_tenants()
    assert str(raised.value) == (
        "FLOWRETAIL_TENANTS_FILE: tenant uid 'bad uid' is not a valid UID (allowed: letters, digits, '-' and '_')"
    )
    monkeypatch.setenv("FLOWRETAIL_TENANTS_FILE", str(tmp_path / "missing.txt"))
    with pytest.raises(ConfigError, match=r"^FLOWRETAIL_TENANTS_FILE: cannot read .*missing.txt: No such file"):
        load_settings().configured_tenants()


def test_importing_the_code_location_reads_no_settings_and_loads_no_models() -> None:
    probe = (
        "import sys, pipelines.definitions as d; "
        "print(sorted(m for m in sys.modules if m.startswith(('pipelines.transform', 'pipelines.reverse_etl', "
        "'pipelines.ingest')))); print(type(d.defs).__name__)"
    )
    env = {"PATH": "/usr/bin:/bin", "FLOWRETAIL_PAGE_SIZE": "not-a-number"}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True).stdout
    assert out.split("\n")[:2] == ["[]", "LazyDefinitions"]
